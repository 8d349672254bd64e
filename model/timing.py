"""Times in a video: clock times as people type and read them, the part of a video to examine,
and when each of its frames is shown."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


_TIME = re.compile(r"(?:(\d+):)??(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)")


def parse_time(text: str) -> float:
    """Seconds from "90", "90.5", "1:30" or "1:02:03.5"; ValueError for anything else."""
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a time: write seconds (90) or minutes and seconds (1:30).")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    if (match.group(2) and seconds >= 60) or (match.group(1) and minutes >= 60):
        raise ValueError(f"'{text}' is not a time: minutes and seconds after a colon run from 0 to 59.")
    return 3600 * hours + 60 * minutes + seconds


def format_time(seconds: float) -> str:
    """'1:30', '1:30.5' or '1:02:03' for a number of seconds (to a tenth)."""
    whole, tenth = divmod(round(seconds * 10), 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
    return text + (f".{tenth}" if tenth else "")


class OutsideVideo(ValueError):
    """The part of the video asked for begins after the video ends."""


@dataclass(frozen=True)
class TimeRange:
    """The part of a video to examine, in seconds from its start; `end_s` None: to its end."""

    start_s: float = 0.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise ValueError("The start of the part to examine must be a time from 0 on.")
        if self.end_s is not None and not (math.isfinite(self.end_s) and self.end_s > self.start_s):
            raise ValueError("The end of the part to examine must come after its start.")

    @property
    def whole(self) -> bool:
        return self.start_s == 0 and self.end_s is None

    def frames(self, timeline: Timeline) -> tuple[int, int]:
        """The first frame of this part and the frame after its last; OutsideVideo where the part
        begins after the video ends."""
        first = timeline.frame_at(self.start_s)
        if first >= timeline.frame_count or self.start_s >= timeline.duration_s:
            raise OutsideVideo(
                f"The video is {format_time(timeline.duration_s)} long: the part to examine must start before its end, not at"
                f" {format_time(self.start_s)}."
            )
        if self.end_s is None:
            return first, timeline.frame_count
        return first, min(timeline.frame_count, max(first + 1, timeline.first_from(self.end_s)))


@dataclass(frozen=True)
class Timeline:
    """When each frame is shown: frame number / average frame rate, or, where the frame rate
    varies (phones in low light, screen recordings) and that is off by more than half a frame,
    the container's own presentation times (`shown_s`, seconds from the first frame)."""

    fps: float
    frame_count: int
    shown_s: np.ndarray | None = None

    @classmethod
    def of(cls, fps: float, frame_count: int, shown_s: np.ndarray | None = None) -> Timeline:
        """The timeline of `frame_count` frames at an average `fps`, with the container's times
        where they are there for every frame and depart from that average."""
        if shown_s is None or len(shown_s) != frame_count:
            return cls(fps, frame_count)
        off = np.abs(shown_s - np.arange(frame_count) / fps).max(initial=0.0)
        return cls(fps, frame_count, shown_s if off > 0.5 / fps else None)

    @property
    def duration_s(self) -> float:
        if self.shown_s is None or self.frame_count < 2:
            return self.frame_count / self.fps
        return float(2 * self.shown_s[-1] - self.shown_s[-2])  # the last frame lasts as long as the one before

    def time_s(self, index: int) -> float:
        """When frame `index` is shown (the frame count: when the video ends)."""
        if self.shown_s is None:
            return index / self.fps
        return float(self.shown_s[index]) if index < self.frame_count else self.duration_s

    def frame_at(self, seconds: float) -> int:
        """The frame on show at `seconds`."""
        if self.shown_s is None:
            return math.floor(seconds * self.fps + 1e-9)
        return int(np.searchsorted(self.shown_s, seconds + 1e-9, side="right")) - 1

    def first_from(self, seconds: float) -> int:
        """The first frame shown at `seconds` or later."""
        if self.shown_s is None:
            return math.ceil(seconds * self.fps - 1e-9)
        return int(np.searchsorted(self.shown_s, seconds - 1e-9, side="left"))

    def spread(self, span: tuple[int, int], count: int) -> list[int]:
        """Up to `count` frames spread evenly over the time of frames span[0] to span[1] − 1 (the
        one on show at the middle of each slice): where the rate varies, a screen recording's
        still minute gets its share, not only its bursts; a frame on show for several slices
        is read once."""
        if self.shown_s is None:
            return sample_indices(span[1], count, span[0])
        start, end = self.time_s(span[0]), self.time_s(span[1])
        step = (end - start) / count
        return sorted({min(span[1] - 1, max(span[0], self.frame_at(start + step * (i + 0.5)))) for i in range(count)})


def sample_indices(frame_count: int, count: int, start: int = 0) -> list[int]:
    """`count` frame indices spread evenly over frames `start` to `frame_count` − 1 (centre of each slice)."""
    span = frame_count - start
    if span <= 0 or count <= 0:
        return []
    count = min(count, span)
    step = span / count
    return sorted({min(frame_count - 1, start + int(step * (i + 0.5))) for i in range(count)})
