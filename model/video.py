"""Frame sampling: pick frames evenly over a whole video without holding it in memory."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np

log = logging.getLogger(__name__)

# Past this many frames between two chosen frames, seeking to each one is cheaper
# than decoding through (bench/pipeline.py measures the crossover).
SEEK_MIN_GAP_FRAMES = 150
# Frames are kept no larger than this on their longest side: 100 frames of a 4K phone video
# would otherwise hold 2.5 GB, and 112 px face crops need no more.
MAX_FRAME_SIDE = 1920
T = TypeVar("T")
Progress = Callable[[float], None]  # called with the fraction of the work done, 0–1


class VideoError(ValueError):
    """The file is not a video we can decode."""


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 3),
            "frame_count": self.frame_count,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class SampledFrames:
    info: VideoInfo
    indices: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # RGB uint8, H×W×3
    method: str = "sequential"
    scale: float = 1.0  # frame pixels per video pixel: below 1 where frames were shrunk


def sample_indices(frame_count: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `frame_count` frames (centre of each slice)."""
    if frame_count <= 0 or count <= 0:
        return []
    count = min(count, frame_count)
    step = frame_count / count
    return sorted({min(frame_count - 1, int(step * (i + 0.5))) for i in range(count)})


def _open(path: str | Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError("This file could not be opened as a video.")
    return capture


@dataclass
class _ToRGB:
    """Decoded BGR frame → RGB, shrunk to `max_side` if larger; remembers the decoded size."""

    max_side: int
    decoded_shape: tuple[int, int] = (0, 0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.decoded_shape = frame.shape[:2]
        scale = self.max_side / max(frame.shape[:2])
        if scale < 1:
            size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _count_frames(capture: cv2.VideoCapture, limit: int | None = None) -> int:
    count = 0
    while (limit is None or count < limit) and capture.grab():
        count += 1
    return count


def _read_sequential(
    capture: cv2.VideoCapture, wanted: list[int], to_rgb: _ToRGB, progress: Progress | None = None
) -> tuple[list[int], list[np.ndarray], int]:
    """One decoding pass; only the chosen frames are converted. Returns frames read and frames seen."""
    targets = set(wanted)
    last = max(wanted)
    got_idx, got = [], []
    index = 0
    while index <= last and capture.grab():
        if index in targets:
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                got_idx.append(index)
                got.append(to_rgb(frame))
                if progress:
                    progress(index / last if last else 1.0)
        index += 1
    return got_idx, got, index


def _read_seeking(
    capture: cv2.VideoCapture, wanted: list[int], to_rgb: _ToRGB, progress: Progress | None = None
) -> tuple[list[int], list[np.ndarray]]:
    got_idx, got = [], []
    for done, index in enumerate(wanted, 1):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if ok and frame is not None:
            got_idx.append(index)
            got.append(to_rgb(frame))
        if progress:
            progress(done / len(wanted))
    return got_idx, got


def probe_video(path: str | Path) -> VideoInfo:
    """Stream facts from the container; the frame count may be wrong or missing (0).

    A file that holds a single picture (a photo, which FFmpeg opens like a one-frame video) is
    refused: the detector judges a face over time, and was calibrated on sequences of frames."""
    info = _with_capture(path, _info)
    if info.frame_count <= 1:  # a photo, or a header that does not say: see if a second frame follows
        decodable = _with_capture(path, lambda capture: _count_frames(capture, limit=2))
        if decodable == 0:
            raise VideoError("The video has no decodable frames.")
        if decodable == 1:
            raise VideoError("This file holds a single picture, not a video: the detector judges a face over time.")
    return info


def _info(capture: cv2.VideoCapture) -> VideoInfo:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if fps <= 0 or fps > 1000:
        fps = 25.0
    count = max(count, 0)
    return VideoInfo(width, height, fps, count, count / fps if count else 0.0)


def read_frames(
    path: str | Path,
    count: int,
    seek_min_gap: int = SEEK_MIN_GAP_FRAMES,
    progress: Progress | None = None,
    max_side: int = MAX_FRAME_SIDE,
) -> SampledFrames:
    """Decode `count` frames spread evenly over the whole video, as RGB arrays no larger than
    `max_side` on their longest side (`scale` says how much they were shrunk).

    Short clips are read in one sequential pass (grab everything, retrieve only the chosen
    frames); long ones seek near each chosen frame. A missing or wrong frame count is
    corrected by counting, and rotation metadata is applied by OpenCV's decoder. `progress`
    hears how far through the chosen frames the reading is.
    """
    to_rgb = _ToRGB(max_side)
    info = probe_video(path)
    if info.frame_count <= 0:
        info.frame_count = _counted(path)
    wanted = sample_indices(info.frame_count, count)
    if not wanted:
        raise VideoError("The video has no decodable frames.")
    method = "seek" if info.frame_count / len(wanted) >= seek_min_gap else "sequential"
    if method == "seek":
        indices, frames = _with_capture(path, lambda c: _read_seeking(c, wanted, to_rgb, progress))
        if len(indices) < len(wanted) // 2:  # the container lies about its length
            method, info.frame_count = "sequential", _counted(path)
            wanted = sample_indices(info.frame_count, count)
    if method == "sequential":
        indices, frames, seen = _with_capture(path, lambda c: _read_sequential(c, wanted, to_rgb, progress))
        if 0 < seen <= max(wanted):
            # Fewer frames than the header said: sample again over what is really there.
            log.info("header said %d frames, stream has %d", info.frame_count, seen)
            info.frame_count = seen
            wanted = sample_indices(seen, count)
            indices, frames, _ = _with_capture(path, lambda c: _read_sequential(c, wanted, to_rgb, progress))
    if not frames:
        raise VideoError("The video has no decodable frames.")
    info.height, info.width = to_rgb.decoded_shape  # after rotation
    info.duration_s = info.frame_count / info.fps
    return SampledFrames(info, indices, frames, method, frames[0].shape[0] / info.height)


def _with_capture(path: str | Path, read: Callable[[cv2.VideoCapture], T]) -> T:
    capture = _open(path)
    try:
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return read(capture)
    finally:
        capture.release()


def _counted(path: str | Path) -> int:
    return _with_capture(path, _count_frames)
