"""Frame sampling: pick frames evenly over a whole video without holding it in memory."""
from __future__ import annotations

import functools
import io
import itertools
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple, Protocol, TypeVar

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

log = logging.getLogger(__name__)

# OpenCV's FFmpeg writes its complaints straight to stderr (an AV1 stream it has only a
# hardware decoder for, a truncated upload's missing index), bypassing logging; every such
# failure reaches the caller as a VideoError instead. Read at the first capture; a value the
# user set is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

# Where the key frames are not known: past this many frames between two chosen frames, seeking
# to each one is cheaper than decoding through (bench/pipeline.py measures the crossover).
SEEK_MIN_GAP_FRAMES = 150
# What PyAV's seek to a key frame and its decoding cost, in frames decoded in one pass by OpenCV,
# and each frame PyAV decodes from there (its decoder runs one thread, OpenCV's one a core): about
# the 90th percentiles of 127 public clips (11.3 and 2.1; medians 8.2 and 1.4; bench/seek_costs.py),
# so that frames are moved off their even spread only where that is cheaper for nearly any video.
SEEK_COST_FRAMES = 12
SOUGHT_FRAME_COST = 2
# Frames are kept no larger than this on their longest side: 100 frames of a 4K phone video
# would otherwise hold 2.5 GB, and 112 px face crops need no more.
MAX_FRAME_SIDE = 1920
# What a folder of videos is searched for; a file named outright is tried whatever its name
# (uploads are checked by decoding them).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".vob", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts"}
    | {".dv", ".ogv", ".gif", ".webp", ".h264", ".264", ".hevc", ".h265"}  # the last four: raw streams, as CCTV recorders export
)
T = TypeVar("T")
Progress = Callable[[float], None]  # called with the fraction of the work done, 0–1


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """The picture as it is displayed: `rotation` is PyAV's frame rotation, the degrees
    counter-clockwise that the display turns the stored picture (a phone's portrait video)."""
    if not rotation:
        return image
    return np.ascontiguousarray(np.rot90(image, round(rotation / 90) % 4))


# HDR video as phones record it (HLG: iPhones; PQ: HDR10) by FFmpeg's AVColorTransferCharacteristic
HDR_TRANSFERS = {16: "pq", 18: "hlg"}
BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]], np.float32)
_HLG_A, _HLG_B, _HLG_C = 0.17883277, 0.28466892, 0.55991073
_HLG_REFERENCE_WHITE = 0.2647  # scene light at 75% signal, where BT.2408 puts SDR white
_PQ_REFERENCE_WHITE_NITS = 203.0  # BT.2408
_KNEE = 0.9  # above this share of SDR white, brighter light is rolled off, not clipped
_LUT_RANGE = 4.0  # light this many times SDR white and more is shown as white


def _hdr_to_linear(signal: np.ndarray, transfer: str) -> np.ndarray:
    """Linear light relative to SDR white (1.0) from HLG or PQ code values in [0, 1]."""
    signal = signal.astype(np.float32)
    if transfer == "hlg":
        scene = np.where(signal <= 0.5, signal**2 / 3, (np.exp((signal - _HLG_C) / _HLG_A) + _HLG_B) / 12)
        return scene / _HLG_REFERENCE_WHITE
    m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    power = signal ** (1 / m2)
    nits = 10000 * (np.maximum(power - c1, 0) / (c2 - c3 * power)) ** (1 / m1)
    return nits / _PQ_REFERENCE_WHITE_NITS


def sdr_from_hdr(rgb: np.ndarray, transfer: str) -> np.ndarray:
    """An HDR picture (BT.2020 RGB, HLG or PQ code values as 16-bit integers) as the 8-bit BT.709
    picture an SDR video of the scene would hold: the detector learnt from SDR video only, and HDR
    code values read as they are look flat and dark to it (model card, "HDR video")."""
    linear = _linear_lut(transfer)[rgb].reshape(-1, 3) @ BT2020_TO_BT709.T
    # looked up by the square root of light, which keeps the steps near black fine
    index = np.round(np.sqrt(np.clip(linear, 0, _LUT_RANGE) / _LUT_RANGE) * 65535).astype(np.uint16)
    return _sdr_lut()[index].reshape(rgb.shape)


@functools.cache
def _linear_lut(transfer: str) -> np.ndarray:
    return _hdr_to_linear(np.arange(65536) / 65535, transfer).astype(np.float32)


@functools.cache
def _sdr_lut() -> np.ndarray:
    """8-bit SDR code value by the square root of linear light (up to _LUT_RANGE × SDR white)."""
    linear = (np.arange(65536) / 65535) ** 2 * _LUT_RANGE
    rolled = np.where(linear <= _KNEE, linear, _KNEE + (1 - _KNEE) * (1 - np.exp(-(linear - _KNEE) / (1 - _KNEE))))
    return np.round(255 * rolled ** (1 / 2.4)).astype(np.uint8)  # display gamma 2.4, as SDR video is watched


class VideoError(ValueError):
    """The file is not a video we can decode."""


class _Undecodable(VideoError):
    """Nothing could be decoded: perhaps a codec that the other decoder knows."""


class OutsideVideo(ValueError):
    """The part of the video asked for begins after the video ends."""


# FFmpeg's AVFieldOrder values for interlaced pictures: top or bottom field first, coded in either order
INTERLACED_FIELD_ORDERS = frozenset({2, 3, 4, 5})
# FFmpeg's names of containers with no index (MPEG transport streams, as broadcasts, camcorders'
# .mts and saved live streams are; MPEG program streams, as .mpg and DVDs' .vob are): a seek
# searches them by time
UNINDEXED_FORMATS = frozenset({"mpegts", "mpeg"})
# NAL unit types (`_EntryPoints`): IDR pictures by codec, HEVC's CRA picture, and its leading
# pictures, those that refer to the group of pictures before (RASL) and those that do not (RADL)
IDR_TYPES = {"h264": frozenset({5}), "hevc": frozenset({19, 20})}
HEVC_CRA = 21
HEVC_RASL, HEVC_LEADING = frozenset({8, 9}), frozenset({6, 7, 8, 9})
# Frame rates above this are a time base taken for a rate (FFmpeg gives raw DV, as camcorder
# captures are stored, an average rate of 60,000), not a video's.
MAX_FPS = 1000.0
NOT_OPENED = "This file could not be opened as a video."
NO_FRAMES = "The video has no decodable frames."
SOUND_ONLY = "This file holds sound but no video."
NO_DATA = (
    "The file holds zeros where the video's frames should be, as a download that did not finish leaves it: "
    "download it again, or upload a copy that plays."
)


class Capture(Protocol):
    """What the readers use of cv2.VideoCapture."""

    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    codec: str = ""  # FFmpeg's name for the picture's codec (h264, gif, …); empty where unknown
    # the length the container's header states, where the file holds fewer of the frames it
    # counts (cut short: an unfinished download or copy); None where it holds them all
    stated_duration_s: float | None = None
    # the file ends before the video does: before the length stated, or within a frame's data
    cut_short: bool = False

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 3),
            "frame_count": self.frame_count,
            "duration_s": round(self.duration_s, 3),
            "codec": self.codec,
            "stated_duration_s": None if self.stated_duration_s is None else round(self.stated_duration_s, 3),
            "cut_short": self.cut_short,
        }


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


@dataclass
class SampledFrames:
    info: VideoInfo
    timeline: Timeline  # when each of the video's frames is shown
    indices: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # RGB uint8, H×W×3
    method: str = "sequential"
    scale: float = 1.0  # frame pixels per video pixel: below 1 where frames were shrunk
    span: tuple[int, int] = (0, 0)  # the frames sampled from: first, and the one after the last
    stream: int | None = None  # the index of the video stream read, among the file's, where PyAV told it
    # frames sampled from that do not decode cleanly: their data is zeros, or refers to such
    # (`_Spoiled`), or they did not decode at all, as far as the reading went (`_read_by_times`)
    undecoded: int = 0

    @property
    def span_s(self) -> tuple[float, float]:
        """The part of the video sampled from, in seconds."""
        return self.timeline.time_s(self.span[0]), self.timeline.time_s(self.span[1])


def sample_indices(frame_count: int, count: int, start: int = 0) -> list[int]:
    """`count` frame indices spread evenly over frames `start` to `frame_count` − 1 (centre of each slice)."""
    span = frame_count - start
    if span <= 0 or count <= 0:
        return []
    count = min(count, span)
    step = span / count
    return sorted({min(frame_count - 1, start + int(step * (i + 0.5))) for i in range(count)})


def videos_in_folder(folder: str | Path) -> list[Path]:
    """The videos in a folder and its subfolders, by suffix, hidden ones left out, in path order."""
    folder = Path(folder)
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    )  # fmt: skip


def _moving_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams that are not a cover picture attached to the file (an MP3's album art)."""
    return [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]


def _refuse_sound(container: av.container.InputContainer) -> None:
    """A recording of sound, with no video or a cover picture alone, is a mistake worth naming
    (a voice memo, a song), not a video to judge by its cover, nor a codec to try elsewhere."""
    if container.streams.audio and not _moving_streams(container):
        raise VideoError(SOUND_ONLY)


# How far from its place in the stream a frame may be shown: H.264 and HEVC reorder at most 16
# frames; twice that, so that no stream of one recording is taken for several.
MAX_REORDERED_FRAMES = 32


class _MainStream(NamedTuple):
    stream: av.VideoStream
    times: np.ndarray | None  # presentation times in display order, in the stream's time base
    joined_frames: int = 0  # the frames of recordings joined end to end, each timed from zero (else 0)
    # (presentation, decoding) times of the key frames, in display order, where `times` is known
    keys: np.ndarray = np.empty((0, 2), dtype=np.int64)
    # A raw stream's (H.264 or HEVC as CCTV recorders and dashcams export it), whose packets carry
    # no times: its frames, one a packet, and where a decoder can start (`_EntryPoints`)
    untimed_frames: int = 0
    entry_points: np.ndarray = np.empty((0, 2), dtype=np.int64)
    packets: int = 0  # the stream's packets found in the file, hidden ones too (where `times` is known)
    # the frames (indices into `times`) whose data is zeros, or refers to such a frame (`_Spoiled`)
    spoiled: frozenset[int] = frozenset()
    # where a Matroska or WebM demuxer passed over zeros (`_PassedOver`): (the index into `times`
    # of the frame after them, how many frames they held, as the times on either side tell)
    lost: tuple[tuple[int, int], ...] = ()
    # the file ends within a frame's data, as a download or copy cut short leaves it (`_ends_within_frames`)
    ends_within_frames: bool = False


class _EntryPoints:
    """Where decoding a raw H.264 or HEVC stream can start, found from its packets, which carry no
    times but are its frames in order: (the first frame a decoder started there gives, counted in
    display order, the packet's byte position). Each IDR picture begins a closed group of
    pictures, from which every later frame decodes and no earlier one. An HEVC CRA picture begins
    an open one: its leading pictures that refer to the group before (RASL), shown before it, are
    left out by a decoder started there, which gives the frame after them first; they are counted
    from their NAL unit types. H.264's recovery points begin open groups too, but no NAL unit type
    tells their leading pictures, so a decoder is not started at them: frames counted from there
    would be off."""

    def __init__(self, codec: str):
        self._codec = codec
        self._points: list[tuple[int, int]] = []
        self._open: list[int] | None = None  # [frame, position, RASL pictures] of the last CRA picture

    def add(self, packet: av.Packet, frame: int) -> None:
        if self._codec not in IDR_TYPES or packet.pos is None or not (packet.is_keyframe or self._open):
            return
        types = _nal_unit_types(bytes(packet), self._codec)
        if self._open and not packet.is_keyframe and types & HEVC_LEADING:
            self._open[2] += bool(types & HEVC_RASL)
            return
        self._close_open_group()
        if not packet.is_keyframe:
            return
        if types & IDR_TYPES[self._codec]:
            self._points.append((frame, packet.pos))
        elif self._codec == "hevc" and HEVC_CRA in types:
            self._open = [frame, packet.pos, 0]

    def _close_open_group(self) -> None:
        if self._open:
            frame, position, left_out = self._open
            self._points.append((frame + left_out, position))
            self._open = None

    def found(self) -> np.ndarray:
        self._close_open_group()
        return np.array(self._points, dtype=np.int64).reshape(-1, 2)


class _Spoiled:
    """The frames a stretch of zeros spoils, found from the packets in decoding order: a download
    written in parts (a download manager, a file-sharing program) leaves zeros where a part never
    arrived, which no coded picture is (an uncompressed one may be: a black frame). Each frame
    after such a packet, or after zeros the demuxer passed over (`_PassedOver`), until the next
    key frame may refer to a picture lost, and is taken for spoiled too: a decoder patches it over
    from an earlier picture, which a reading would then take for what the video showed there."""

    def __init__(self, stream: av.VideoStream):
        codec = stream.codec_context.codec
        self._coded = not (codec.intra_only and codec.lossless)
        self._spoiling = False
        self._latest: int | None = None  # the latest presentation time so far
        self._times: list[int] = []  # presentation times of the frames spoiled
        self._holes: list[tuple[int, int]] = []  # (the latest time before zeros passed over, the time after)

    def add(self, packet: av.Packet, passed_over: bool = False) -> None:
        """`passed_over`: whether the demuxer passed over zeros before this packet (`_PassedOver`)."""
        if packet.pts is None:
            return
        if passed_over and self._latest is not None:
            self._holes.append((self._latest, packet.pts))
        self._latest = packet.pts if self._latest is None else max(self._latest, packet.pts)
        if not self._coded:
            return
        # the first bytes alone tell nearly every packet, without a look at the rest
        zeroed = not any(memoryview(packet)[:16]) and not np.frombuffer(packet, np.uint8).any()
        self._spoiling = zeroed or ((passed_over or self._spoiling) and not packet.is_keyframe)
        if self._spoiling:
            self._times.append(packet.pts)

    def spoiled(self, shown: np.ndarray) -> frozenset[int]:
        """The frames spoiled, as indices into all the frames' times (`shown`, sorted)."""
        return frozenset(np.searchsorted(shown, self._times).tolist())

    def lost(self, shown: np.ndarray) -> tuple[tuple[int, int], ...]:
        """Each stretch passed over: (the index into `shown` of the frame after it, how many frames
        it held, at least one), counted in the typical gap between the frames' times (`shown`, sorted)."""
        step = float(np.median(np.diff(shown))) if len(shown) > 1 else 0.0
        return tuple(
            (int(np.searchsorted(shown, after)), max(1, round((after - before) / step) - 1) if step > 0 else 1)
            for before, after in self._holes
        )


# A Matroska or WebM file's blocks follow one another but for a few bytes of headers; this many
# zeros between two are data lost
MIN_LOST_BYTES = 4096


class _PassedOver:
    """Where a Matroska or WebM demuxer passed over zeros: a download written in parts leaves them
    where a part never arrived, and the demuxer, unlike an MP4's, finds no packet there, only the
    next cluster after them. Seen between two packets of any stream, in the order they lie."""

    def __init__(self, path: str):
        self._path = path
        self._end: int | None = None  # where the last packet ends

    def before(self, packet: av.Packet) -> bool:
        if packet.pos is None or packet.pos < 0:
            return False
        start, self._end = self._end, max(self._end or 0, packet.pos + packet.size)
        if start is None or packet.pos - start < MIN_LOST_BYTES:
            return False
        # the zeros begin near the start of the gap: a missing part's edge falls in the packet before it
        with open(self._path, "rb") as file:
            return bytes(MIN_LOST_BYTES) in _read_at(file, start, min(packet.pos - start, 1 << 20))


# Matroska's elements that may follow a file's last block, by ID: those that hold frames (a
# block, a block group, a cluster), and the rest (a block group's other children, a cluster's,
# padding, checksums, and the segment's index, tags, chapters and attachments written after the
# clusters)
MATROSKA_FRAME_ELEMENTS = frozenset({0xA3, 0xA0, 0xA1, 0xAF, 0x1F43B675})
MATROSKA_OTHER_ELEMENTS = frozenset(
    {0x9B, 0xFB, 0xFA, 0xA4, 0x75A1, 0x75A2, 0xE7, 0xAB, 0xA7, 0x5854, 0xEC, 0xBF}
    | {0x1C53BB6B, 0x1254C367, 0x1043A770, 0x1941A469, 0x114D9B74, 0x1549A966, 0x1654AE6B}
)
MATROSKA_CLUSTER = 0x1F43B675
# A walk from the last block to the end of the file gives up after this many elements
MAX_TRAILING_ELEMENTS = 10_000


def _ebml_number(data: bytes, at: int) -> tuple[int, int] | None:
    """An EBML variable-length number at `at`: (its value with the length marker, its length in
    bytes), or None where `data` ends within it or its first byte is not one."""
    if at >= len(data) or not data[at]:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    return int.from_bytes(data[at : at + length], "big"), length


def _ebml_size(value: int, length: int) -> int | None:
    """An EBML element's size from its variable-length number (`_ebml_number`): the value without
    its length marker; None where its bits are all ones, a size not known (a live recording's cluster)."""
    size = value & ((1 << 7 * length) - 1)
    return None if size == (1 << 7 * length) - 1 else size


def _matroska_ends_within_block(path: str, position: int, size: int) -> bool:
    """Whether a Matroska or WebM file ends within a block, or a cluster, after the one holding
    its last packet (`position`, `size`: the packet's, as FFmpeg's demuxer gives it, where the
    block's data begins). Its demuxer leaves out a block the file ends within. A browser's
    recording states no length to compare (`_length_cut_short`): cut short, it ends so."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        # the block's ID and size just before its data: where it ends
        before = _read_at(file, max(position - 9, 0), min(position, 9))
        for length in range(1, 9):
            number = _ebml_number(before, len(before) - length)
            if number is not None and number[1] == length and len(before) > length and before[-length - 1] in (0xA3, 0xA1):
                block_size = _ebml_size(*number)
                if block_size is not None and block_size >= size:
                    at = position + block_size
                    break
        else:
            return False  # not laid out as expected: nothing told
        for _ in range(MAX_TRAILING_ELEMENTS):
            if at >= file_size:
                return at > file_size
            header = _read_at(file, at, 12)
            element, size_field = _ebml_number(header, 0), None
            if element is not None:
                size_field = _ebml_number(header, element[1])
            if element is None or size_field is None:
                # the file ends within the element's header; else not an element: nothing told
                return len(header) < 12 and header[0] in (0xA3, 0xA0, MATROSKA_CLUSTER >> 24)
            (kind, id_length), (value, size_length) = element, size_field
            content = _ebml_size(value, size_length)
            if kind not in MATROSKA_FRAME_ELEMENTS | MATROSKA_OTHER_ELEMENTS or (content is None and kind != MATROSKA_CLUSTER):
                return False
            start = at + id_length + size_length
            if content is None:  # a live recording's cluster: its elements follow
                at = start
            elif start + content > file_size:
                return kind in MATROSKA_FRAME_ELEMENTS
            else:
                at = start + content
    return False


def _nal_unit_types(access_unit: bytes, codec: str) -> set[int]:
    """The types of the NAL units of an H.264 or HEVC access unit in Annex B form, as raw streams
    store them: each unit follows a 00 00 01 start code."""
    starts = [match.end() for match in re.finditer(b"\x00\x00\x01", access_unit) if match.end() < len(access_unit)]
    if codec == "h264":
        return {access_unit[start] & 0x1F for start in starts}
    return {(access_unit[start] >> 1) & 0x3F for start in starts}


def _restarts(times: list[int]) -> bool:
    """Whether presentation times, in the order the packets come, start again (recordings joined
    end to end, each timed from zero): a frame's place in time is further from its place in the
    stream than reordering explains."""
    order = np.argsort(np.array(times, dtype=np.int64), kind="stable")
    return bool((np.abs(order - np.arange(len(order))) > MAX_REORDERED_FRAMES).any())


def _main_stream(container: av.container.InputContainer) -> _MainStream:
    """The video stream a player shows, and its presentation times in display order, in its time
    base, from its packets alone (nothing is decoded; None where they are missing or unreadable,
    or start again). Where a file holds several (a preview or a cover picture beside the
    recording, a second camera), that is the one with the most frames, and never an attached
    cover picture."""
    streams = _moving_streams(container) or list(container.streams.video)
    times: dict[int, list[int | None]] = {stream.index: [] for stream in streams}
    keys: dict[int, list[tuple[int, int]]] = {stream.index: [] for stream in streams}
    entry_points = {stream.index: _EntryPoints(stream.codec_context.codec.canonical_name) for stream in streams}
    spoiled = {stream.index: _Spoiled(stream) for stream in streams}
    packets = dict.fromkeys(times, 0)
    # in Matroska and WebM, every stream's packets, to see the bytes between them
    passed_over = _PassedOver(container.name) if container.format.name == "matroska,webm" else None
    after_zeros: set[int] = set()  # the streams whose next packet follows zeros passed over
    last: av.Packet | None = None  # the last packet with data, of any stream
    try:
        for packet in container.demux():  # every stream's: the file may end within any one's
            last = packet if packet.size else last
            if passed_over and passed_over.before(packet):
                after_zeros = set(times)
            if packet.stream.index not in times:
                continue
            if packet.size or packet.dts is not None:  # not the empty packet that ends a stream
                packets[packet.stream.index] += 1
            if packet.size and not packet.is_discard:
                index = packet.stream.index
                if packet.pts is None:
                    entry_points[index].add(packet, len(times[index]))
                spoiled[index].add(packet, index in after_zeros)
                after_zeros.discard(index)
                times[index].append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    keys[index].append((packet.pts, packet.pts if packet.dts is None else packet.dts))
    except av.FFmpegError:
        return _MainStream(streams[0], None)
    stream = max(streams, key=lambda candidate: len(times[candidate.index]))  # the first of equals
    shown = times[stream.index]
    ends_within = _ends_within_frames(container, last)
    if shown and all(time is None for time in shown):  # a raw stream
        found = entry_points[stream.index].found()
        return _MainStream(stream, None, untimed_frames=len(shown), entry_points=found, ends_within_frames=ends_within)
    if not shown or None in shown:
        return _MainStream(stream, None, ends_within_frames=ends_within)
    if _restarts(shown):
        return _MainStream(stream, None, joined_frames=len(shown), ends_within_frames=ends_within)
    key_times = np.array(sorted(keys[stream.index]), dtype=np.int64).reshape(-1, 2)
    sorted_times = np.sort(np.array(shown, dtype=np.int64))
    damage = spoiled[stream.index]
    return _MainStream(
        stream,
        sorted_times,
        keys=key_times,
        packets=packets[stream.index],
        spoiled=damage.spoiled(sorted_times),
        lost=damage.lost(sorted_times),
        ends_within_frames=ends_within,
    )


# An MPEG transport stream is made of packets of one of these sizes (188 bytes; 192 in a
# camcorder's M2TS; 204 with error correction): a file that stops within one was cut
TS_PACKET_SIZES = (188, 192, 204)


def _ends_within_frames(container: av.container.InputContainer, last: av.Packet | None) -> bool:
    """Whether the file ends within the data of its frames, as a download or copy cut short
    leaves it: told where the container states no length to compare (`_length_cut_short`), as a
    fragmented MP4 (a screen recorder's, a stream saved), a browser's WebM recording or an MPEG
    transport or program stream does not. `last`: the last packet read, of any stream. FFmpeg's
    demuxers flag a packet they read short (FLV, AVI), but Matroska's leaves it out, a transport
    stream's keeps it unflagged, a program stream's parser puts out an unflagged frame after it,
    and an MP4's may stop at a sound packet past the end before the video's packets before it."""
    if last is None:
        return False
    formats = container.format.name.split(",")
    if "matroska" in formats:
        return last.pos is not None and last.pos > 0 and _matroska_ends_within_block(container.name, last.pos, last.size)
    if "mpegts" in formats:
        return all(os.path.getsize(container.name) % size for size in TS_PACKET_SIZES)
    if "mp4" in formats:
        return _mp4_ends_within_media(container.name)
    if "mpeg" in formats:
        return _program_stream_ends_within_packet(container.name)
    return last.is_corrupt


# An MPEG program stream's start codes (00 00 01, then one of these): a pack's header, the
# stream's end; the packets of streams of frames (private, as DVDs' sound; MPEG audio; video)
MPEG_PACK, MPEG_END = 0xBA, 0xB9
MPEG_FRAME_STREAMS = frozenset({0xBD, *range(0xC0, 0xF0)})
# bytes read from a program stream's end: its packs are 2 KiB on a DVD, a packet at most 64 KiB
MPEG_TAIL_BYTES = 1 << 18


def _program_stream_ends_within_packet(path: str) -> bool:
    """Whether an MPEG program stream (.mpg, .vob, a camcorder's .mod) ends within a packet of
    frames, as its length states it, or within a pack's header: its packs are walked from the
    first pack header in its last bytes from which they follow one another unbroken to the end."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        start = max(file_size - MPEG_TAIL_BYTES, 0)
        tail = _read_at(file, start, file_size - start)
    for pack in re.finditer(b"\x00\x00\x01\xba", tail):
        if (ends_within := _packs_end_within_packet(tail, pack.start())) is not None:
            return ends_within
    return False


def _packs_end_within_packet(data: bytes, at: int) -> bool | None:
    """From the pack header at `at`: whether `data` ends within a packet of frames or a pack's
    header; None where what follows is not packs and packets one after another."""
    while at < len(data):
        code = data[at : at + 4]
        if not b"\x00\x00\x01".startswith(code[:3]):
            return None
        if len(code) < 4:
            return False  # the end within a start code: of what, it does not tell
        kind = code[3]
        if kind == MPEG_PACK:
            header = data[at + 4 : at + 14]
            if not header:
                return True
            if header[0] & 0xC0 == 0x40:  # MPEG-2: 14 bytes, and stuffing
                size = 14 + (header[9] & 7 if len(header) == 10 else 0)
            elif header[0] & 0xF0 == 0x20:  # MPEG-1
                size = 12
            else:
                return None
        elif kind == MPEG_END:
            size = 4
        elif kind > MPEG_END:  # a system header or a packet: its length follows
            if len(data) - at < 6:
                return kind in MPEG_FRAME_STREAMS
            size = 6 + int.from_bytes(data[at + 4 : at + 6], "big")
        else:
            return None
        if at + size > len(data):
            return kind in MPEG_FRAME_STREAMS or kind == MPEG_PACK
        at += size
    return False


# An MP4's top-level boxes that hold or describe its frames' data
MP4_MEDIA_BOXES = frozenset({b"mdat", b"moof"})
# A walk over an MP4's top-level boxes gives up after this many (a fragmented one has two a fragment)
MAX_TOP_BOXES = 100_000


def _mp4_boxes(file: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """An MP4's (or QuickTime file's) top-level boxes: (where each begins, its size as stated,
    its kind), up to the last whose header is whole; one whose size is 0 (up to the end of the
    file) or not a size ends the walk."""
    at = 0
    for _ in range(MAX_TOP_BOXES):
        header = _read_at(file, at, 16)
        if len(header) < 8:
            return
        size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if size == 1 and len(header) == 16:  # a 64-bit size follows
            size = int.from_bytes(header[8:16], "big")
        if size < 8:
            return
        yield at, size, kind
        at += size


def _mp4_ends_within_media(path: str) -> bool:
    """Whether an MP4 (or QuickTime) file ends within a box of media data, or a fragment's
    header, as its size states it, or right after a fragment's header, or within the header of
    the box that follows it (its media data)."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        at, size, kind = 0, 0, b""
        for at, size, kind in _mp4_boxes(file):
            if at + size > file_size:
                return kind in MP4_MEDIA_BOXES
        # the file ends right after the last box whole, or within the header of the next
        return kind == b"moof" and at + size + 8 > file_size


def _mp4_whole_fragments(path: str | Path) -> int:
    """Where an MP4 cut within a fragment's header ends its whole fragments (bytes), else 0."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        return next((at for at, size, kind in _mp4_boxes(file) if kind == b"moof" and at + size > file_size), 0)


class _FilePrefix(io.RawIOBase):
    """The first `length` bytes of a file, read as the whole of it."""

    def __init__(self, path: str | Path, length: int):
        super().__init__()
        self.name = str(path)  # PyAV's container takes it for its name
        self._file = open(path, "rb")
        self._length = length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wanted = max(0, min(len(buffer), self._length - self._file.tell()))
        return self._file.readinto(memoryview(buffer)[:wanted]) if wanted else 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        origin = {os.SEEK_SET: 0, os.SEEK_CUR: self._file.tell(), os.SEEK_END: self._length}[whence]
        return self._file.seek(origin + offset)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_container(path: str | Path) -> av.container.InputContainer:
    """PyAV's container of the file. An MP4 cut within a fragment's header, whose header FFmpeg
    cannot read, is opened as far as its whole fragments go (the cut is told from the file
    itself, `_mp4_ends_within_media`)."""
    try:
        return av.open(str(path))
    except av.FFmpegError:  # the end of the file, or invalid data, where the fragment's header stops
        if not (whole := _mp4_whole_fragments(path)):
            raise
    log.info("%s ends within a fragment's header: read up to it", path)
    return av.open(_FilePrefix(path, whole))


class _ContainerFacts(NamedTuple):
    # when each frame is shown, in seconds from the first, in display order, as the container
    # records it; None where it does not
    shown_s: np.ndarray | None
    interlaced: bool = False
    hdr: str | None = None  # "hlg" or "pq"
    several_streams: bool = False  # of video: OpenCV reads the first, whichever a player shows
    codec: str = ""
    main_stream: int | None = None  # the index of the stream a player shows, among all the file's
    pixel_aspect: float = 1.0  # see `pixel_aspect`
    stored_size: tuple[int, int] = (0, 0)  # (width, height) as coded, before any rotation
    # an average rate no video has (raw DV): OpenCV then counts and seeks in ticks of the time base
    odd_rate: bool = False
    # the frames of recordings joined end to end (`_restarts`), counted from their packets, else
    # 0: the header's length is the first one's, and a seek by time may land in any of them
    joined_frames: int = 0
    # no index to seek by (`UNINDEXED_FORMATS`): OpenCV's seek may land on a later key frame,
    # and take it for the frame it was asked for
    unindexed: bool = False
    # the container stores no frame count (Matroska, WebM, MPEG streams): OpenCV's is then its
    # duration times the average rate, which may leave out the last frame
    count_estimated: bool = False
    # a raw stream's frames, counted from its packets, which carry no times (else 0): OpenCV's
    # count is then a guess from the bitrate, or none
    untimed_frames: int = 0
    # a raw stream that a decoder can start at its first frame and further on: it is sought by
    # the byte position of the last entry point before a frame (`_EntryPoints`), not by time
    sought_by_bytes: bool = False
    # the length the header states, where the file holds fewer frames than the header counts
    # (`VideoInfo.stated_duration_s`), else None
    stated_s: float | None = None
    # the file ends within a frame's data or before the length the header states (`stated_s`)
    cut_short: bool = False
    # the frames (indices into `shown_s`) whose data is zeros, or refers to such a frame (`_Spoiled`)
    spoiled: frozenset[int] = frozenset()
    # frames lost where a Matroska or WebM demuxer passed over zeros: (the index into `shown_s` of
    # the frame after them, how many)
    lost: tuple[tuple[int, int], ...] = ()
    # the key frames (indices into `shown_s`), from which a decoder starts
    key_frames: np.ndarray = np.empty(0, dtype=np.int64)
    # the main stream's packets as read here, for PyAV's seeks (the stream itself is closed)
    timing: _MainStream | None = None


def _container_facts(path: str | Path) -> _ContainerFacts:
    """What the container tells without decoding the video."""
    try:
        with _open_container(path) as container:
            _refuse_sound(container)
            if not container.streams.video:
                return _ContainerFacts(None)
            main_stream = _main_stream(container)
            stream, times, joined_frames = main_stream.stream, main_stream.times, main_stream.joined_frames
            entries = main_stream.entry_points
            sought_by_bytes = len(entries) > 1 and entries[0, 0] == 0
            interlaced = stream.codec_context.field_order in INTERLACED_FIELD_ORDERS
            hdr = HDR_TRANSFERS.get(stream.codec_context.color_trc)
            time_base = stream.time_base  # these read while the container is open
            several = len(container.streams.video) > 1
            odd_rate = _odd_rate(stream)
            aspect, stored = pixel_aspect(stream), (stream.codec_context.width, stream.codec_context.height)
            codec = stream.codec_context.codec.canonical_name  # av1, not the decoder's name (libdav1d)
            main = stream.index
            unindexed = container.format.name in UNINDEXED_FORMATS
            count_estimated = not stream.frames
            stated_s = _length_cut_short(stream, main_stream)
    except (av.FFmpegError, OSError):
        return _ContainerFacts(None)
    shown_s = None if times is None or time_base is None else (times - times[0]) * float(time_base)
    key_frames = np.empty(0, dtype=np.int64) if times is None else np.searchsorted(times, main_stream.keys[:, 0])
    return _ContainerFacts(
        shown_s,
        interlaced,
        hdr,
        several,
        codec,
        main_stream=main,
        pixel_aspect=aspect,
        stored_size=stored,
        odd_rate=odd_rate,
        joined_frames=joined_frames,
        unindexed=unindexed,
        count_estimated=count_estimated,
        untimed_frames=main_stream.untimed_frames,
        sought_by_bytes=sought_by_bytes,
        stated_s=stated_s,
        cut_short=stated_s is not None or main_stream.ends_within_frames,
        spoiled=main_stream.spoiled,
        lost=main_stream.lost,
        key_frames=key_frames,
        timing=main_stream,
    )


# How far a Matroska track's stated length may run past its last frame held before the file is
# taken for cut short
CUT_SHORT_MIN_S = 1.0


def _length_cut_short(stream: av.VideoStream, main: _MainStream) -> float | None:
    """The length the container states for the stream, where the file holds less of it (cut off
    in a download or a copy), else None. An MP4's index counts frames whose data is not there
    (web videos store the index first, so a cut file still opens; an edit list's hidden frames
    are there all the same). A Matroska or WebM track states its length in a tag (DURATION, as
    FFmpeg and mkvmerge write it; a browser's recording has none), past the last frame held."""
    rate = float(frame_rate(stream) or 25)
    if stream.frames:
        if not 0 < main.packets < stream.frames:
            return None
        # an AVI's length is its frames at its one rate; FFmpeg's for a cut one is a guess from its size
        timed = stream.duration and stream.time_base and stream.container.format.name != "avi"
        return float(stream.duration * stream.time_base) if timed else stream.frames / rate
    try:
        stated = parse_time(stream.metadata.get("DURATION", ""))
    except ValueError:
        return None
    if main.times is None or not len(main.times):
        return None
    held = float(main.times[-1] * stream.time_base) + 1 / rate
    return stated if stated - held > max(CUT_SHORT_MIN_S, 0.05 * stated) else None


def pixel_aspect(stream: av.VideoStream) -> float:
    """How much wider than tall a stored pixel is shown (DVDs, DV and HDV store 4:3 and 16:9
    pictures in fewer or more columns than they show, and players stretch them); 1 where unstated."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(ratio) if ratio and 0.25 <= ratio <= 4 else 1.0


def shown_size(width: int, height: int, aspect: float, turned: bool = False) -> tuple[int, int]:
    """(width, height) of a decoded picture as a player shows it: its stored columns stretched by
    the `aspect` of its pixels, which a quarter turn (`turned`) has made its rows."""
    if turned:
        return width, max(1, round(height * aspect))
    return max(1, round(width * aspect)), height


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` at `size` (width, height): averaged where it shrinks, interpolated where it grows."""
    if size == (image.shape[1], image.shape[0]):
        return image
    shrinking = size[0] <= image.shape[1] and size[1] <= image.shape[0]
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _odd_rate(stream: av.VideoStream) -> bool:
    return float(stream.average_rate or 0) > MAX_FPS


def frame_rate(stream: av.VideoStream) -> Fraction | None:
    """The stream's frame rate: its average, else FFmpeg's guess, else the codec's (None if none
    is a video's)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate):
        if rate and 0 < rate <= MAX_FPS:
            return rate
    return None


def _open(path: str | Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise _Undecodable(NOT_OPENED)
    return capture


class PyAVCapture:
    """cv2.VideoCapture's readers' part over PyAV's FFmpeg, for codecs OpenCV's FFmpeg cannot
    decode: AV1 (what video sites serve and newer phones record), for which OpenCV's build has
    only the hardware decoder and PyAV's has dav1d; and for what OpenCV reads wrong (`read_frames`
    says what). Of several video streams it reads the one a player shows (`_main_stream`).
    Frames come out as BGR, as OpenCV's do."""

    def __init__(self, path: str | Path, stream_index: int | None = None, timing: _MainStream | None = None):
        """`stream_index`: the stream to read, where the caller has chosen it already; `timing`:
        its packets' times, where the caller has read them (`_ContainerFacts.timing`)."""
        try:
            self._container = _open_container(path)
        except (av.FFmpegError, OSError) as error:
            raise _Undecodable(NOT_OPENED) from error
        try:
            _refuse_sound(self._container)
            if not self._container.streams.video:
                raise _Undecodable(NOT_OPENED)
        except VideoError:
            self._container.close()
            raise
        self._timing = timing  # the packets' times (`_stream_timing`)
        if stream_index is not None:
            self._stream = self._container.streams[stream_index]
        elif len(self._container.streams.video) > 1:  # which one a player shows takes a look at the packets
            with _open_container(path) as container:
                self._timing = _main_stream(container)
                index = self._timing.stream.index  # read while that container is open
            self._stream = self._container.streams[index]
        else:
            self._stream = self._container.streams.video[0]
        self._hdr = HDR_TRANSFERS.get(self._stream.codec_context.color_trc)
        self._frames = self._decoded()
        self._frame: av.VideoFrame | None = None
        self._upright = False
        self._skip_before: int | None = None  # after a seek: the first presentation time wanted
        self._path = path

    def _decoded(self) -> Iterator[av.VideoFrame | None]:
        """The stream's frames from where the container stands; None for a packet that does not
        decode (a damaged file), after which decoding goes on, as OpenCV's does."""
        try:
            for packet in self._container.demux(self._stream):
                try:
                    yield from packet.decode()
                except av.FFmpegError:
                    yield None
        except av.FFmpegError:  # the container cannot be read on (a truncated file): the end
            return

    def grab(self) -> bool:
        """False at the end, and for a frame that did not decode (see `_grabs`)."""
        for frame in self._frames:
            if frame is None and self._skip_before is None:
                break
            if frame is not None and (self._skip_before is None or frame.pts is None or frame.pts >= self._skip_before):
                self._skip_before = None
                self._frame = frame
                return True
        self._frame = None
        return False

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        if self._frame is None:
            return False, None
        if self._hdr:  # 16 bits a channel, left for `_ToRGB` to tone-map, so that it has the stream's 10 bits
            image = self._frame.reformat(format="bgr48le", src_colorspace=Colorspace.BT2020).to_ndarray()
        else:
            image = self._frame.to_ndarray(format="bgr24")
        return True, upright(image, self._frame.rotation) if self._upright else image

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        codec = self._stream.codec_context
        values = {
            cv2.CAP_PROP_FRAME_WIDTH: codec.width,
            cv2.CAP_PROP_FRAME_HEIGHT: codec.height,
            cv2.CAP_PROP_FPS: float(frame_rate(self._stream) or 0),
            cv2.CAP_PROP_FRAME_COUNT: self._stream.frames,
        }
        return float(values.get(prop, 0))

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_ORIENTATION_AUTO:
            self._upright = bool(value)
        elif prop == cv2.CAP_PROP_POS_FRAMES:
            # to the key frame before the wanted one, then decode up to it
            index = int(value)
            timing = self._stream_timing()
            shown, keys = timing.times, timing.keys
            if shown is None and len(timing.entry_points):
                return self._seek_by_bytes(index, timing.entry_points)
            start = self._stream.start_time or 0
            if shown is not None and index < len(shown):
                target = int(shown[index])
            else:
                fps = self.get(cv2.CAP_PROP_FPS) or 25.0
                target = start + round((index - 0.5) / fps / self._stream.time_base)
            # The key frame shown last before the wanted frame, where the packets tell it, by its
            # presentation time: an index (MP4, Matroska) is searched by those, and its decoding
            # time, earlier where frames are reordered, would land on the key frame before it, a
            # group of pictures early. MPEG transport and program streams, which have none, are
            # searched by decoding times, and a seek lands on the first key frame from the time sought.
            key = np.searchsorted(keys[:, 0], target, side="right") - 1
            by_decoding_time = self._container.format.name in UNINDEXED_FORMATS
            first_try = int(keys[key, int(by_decoding_time)]) if key >= 0 else max(target, start)
            seek_to, back_s = first_try, 0.0
            while True:
                try:
                    self._container.seek(seek_to, stream=self._stream, backward=True)
                except av.FFmpegError:  # an unseekable stream: read nothing, so the reader falls back to one pass
                    self._frames = iter(())
                    return False
                self._frames = self._decoded()
                self._skip_before = None
                landed = self.grab()
                if landed and seek_to == first_try and key >= 0 and self._frame.key_frame and self._frame.pts is not None:
                    # The key frame sought, where its time lies before the next key frame's: an
                    # MPEG program stream's demuxer times the first frame after a seek a frame late.
                    following = keys[key + 1, 0] if key + 1 < len(keys) else np.iinfo(np.int64).max
                    if keys[key, 0] < self._frame.pts < following:
                        self._frame.pts = int(keys[key, 0])
                # Where it lands past the wanted frame all the same, or at the end: from further
                # back, then, and before the first frame at the last.
                if (landed and (self._frame.pts is None or self._frame.pts <= target)) or seek_to < start:
                    break
                back_s = max(1.0, 2 * back_s)
                seek_to = first_try - round(back_s / self._stream.time_base)
            self._frames = itertools.chain([self._frame] if landed else [], self._frames)
            self._skip_before = target
        else:
            return False
        return True

    def grab_shown(self) -> int | None:
        """The next frame that decodes, and where it is shown: its index among the frames the
        container times (`_MainStream.times`, which must be known); None at the end. A frame
        that does not decode is passed over, and one the decoder held back is put out late, so
        the frames' order is the decoder's, not always the display order."""
        times = self._stream_timing().times
        for frame in self._frames:
            if frame is not None and frame.pts is not None:
                index = int(np.searchsorted(times, frame.pts))
                if index < len(times) and times[index] == frame.pts:
                    self._frame = frame
                    return index
        self._frame = None
        return None

    def _stream_timing(self) -> _MainStream:
        if self._timing is None:  # read from the packets once, when a seek or `grab_shown` needs them
            with _open_container(self._path) as container:
                self._timing = _main_stream(container)
        return self._timing

    def _seek_by_bytes(self, index: int, entry_points: np.ndarray) -> bool:
        """To frame `index` of a raw stream, whose packets carry no times but are its frames in
        order: decoded from the last entry point before it (`_EntryPoints`), counting frames."""
        entry = np.searchsorted(entry_points[:, 0], index, side="right") - 1
        try:
            if entry < 0:  # `read_frames` seeks only a stream that a decoder can start at its first frame
                raise ValueError(f"frame {index} comes before the stream's first entry point")
            first, position = (int(value) for value in entry_points[entry])
            self._container.seek(position, unsupported_byte_offset=True)
        except (ValueError, av.FFmpegError):  # read nothing, so the reader falls back to one pass
            self._frames = iter(())
            return False
        self._skip_before = None
        self._frames = itertools.islice(self._decoded(), index - first, None)
        return True

    def release(self) -> None:
        self._container.close()


# Browsers show an animated picture's frames that claim no time, or next to none, for 100 ms, as
# FFmpeg's GIF reader does.
MIN_PICTURE_FRAME_MS, PICTURE_FRAME_MS = 11, 100


def animated_webp_durations(path: str | Path) -> list[int] | None:
    """How long each frame of an animated WebP is shown, in milliseconds, from its frame chunks
    (nothing is decoded); None for any other file, a still WebP among them."""
    try:
        with open(path, "rb") as file:
            head = file.read(21)
            # RIFF, WEBP, and a VP8X chunk whose flags say "animation"
            if len(head) < 21 or head[:4] != b"RIFF" or head[8:16] != b"WEBPVP8X" or not head[20] & 0x02:
                return None
            durations, position = [], 12
            while len(chunk := _read_at(file, position, 24)) >= 8:
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"ANMF" and len(chunk) >= 23:
                    shown = int.from_bytes(chunk[20:23], "little")  # after the frame's offset and size
                    durations.append(shown if shown >= MIN_PICTURE_FRAME_MS else PICTURE_FRAME_MS)
                position += 8 + size + size % 2
    except OSError:
        return None
    return durations


def damaged_pictures(
    path: str | Path, span_s: tuple[float, float], stop: threading.Event | None = None, stream_index: int | None = None
) -> int:
    """How many coded pictures do not decode cleanly (bit errors, lost data: what a player, and
    OpenCV, patch over unseen) in the span `span_s` (seconds from the first frame), decoded from
    the key frame before it, until `stop` is set. FFmpeg is asked to fail on such pictures
    (`err_detect=explode`) rather than conceal them; pictures that no other refers to are left
    out. Where the span starts past the first frame, the group of pictures sought into is not
    counted: an open group's pictures may refer to the one before. One thread: it is meant to
    run beside the analysis, on what that leaves idle. `stream_index`: the video stream to check
    (`SampledFrames.stream`), else the first. 0 for what FFmpeg does not decode (animated WebP)
    or cannot open."""
    if animated_webp_durations(path):
        return 0
    try:
        with _open_container(path) as container:
            if not container.streams.video:
                return 0
            stream = container.streams.video[0] if stream_index is None else container.streams[stream_index]
            return _count_damaged(container, stream, span_s, stop or threading.Event())
    except (av.FFmpegError, OSError):
        return 0


def _count_damaged(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    span_s: tuple[float, float],
    stop: threading.Event,
) -> int:
    stream.codec_context.thread_count = 1
    # Half the work or less: no deblocking (the pictures themselves are not looked at), and no
    # pictures that no other refers to, whose damage spoils themselves alone.
    stream.codec_context.skip_frame = "NONREF"
    stream.codec_context.options = {"err_detect": "explode", "skip_loop_filter": "all"}
    first = stream.start_time or 0
    tick = float(stream.time_base or 0)
    start_s, end_s = span_s
    keys_to_pass = 0  # key frames to pass before a picture's failure counts
    if start_s > 0 and tick and stream.start_time is not None:  # a raw stream's packets carry no times to seek by
        container.seek(first + int(start_s / tick), stream=stream, backward=True)
        keys_to_pass = 2
    damaged = 0
    failed: av.Packet | None = None  # the latest picture that failed, counted once another follows it
    try:
        for packet in container.demux(stream):
            if failed is not None and packet.size:
                damaged, failed = damaged + 1, None
            if stop.is_set() or (packet.pts is not None and tick and (packet.pts - first) * tick > end_s):
                break
            keys_to_pass -= keys_to_pass > 0 and packet.is_keyframe
            try:
                stream.codec_context.decode(packet)  # the last packet, with no data, flushes
            except av.error.InvalidDataError:
                if keys_to_pass:
                    continue
                if packet.size:
                    failed = packet
                else:
                    damaged += 1
    except av.FFmpegError:  # the container itself broken further on
        damaged += 1
    # the last picture, unfinished where the file was cut short, is told so (`_ends_within_frames`)
    return damaged + (failed is not None and not _ends_within_frames(container, failed))


def _read_at(file: BinaryIO, position: int, size: int) -> bytes:
    file.seek(position)
    return file.read(size)


class PillowCapture:
    """cv2.VideoCapture's readers' part over Pillow, for animated WebP (stickers, and what GIF
    sites serve in place of GIFs), which FFmpeg's decoder cannot decode. Each frame is drawn over
    the previous ones as a browser draws it, and what it leaves transparent over white. Frames
    come out as BGR, as OpenCV's do."""

    def __init__(self, path: str | Path, durations: list[int]):
        """`durations`: `animated_webp_durations(path)`, read once by the caller."""
        try:
            self._image = Image.open(path)
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise _Undecodable(NOT_OPENED) from error
        self._durations = durations
        self._next = 0  # the frame the next grab takes

    def grab(self) -> bool:
        if self._next >= getattr(self._image, "n_frames", 1):
            return False
        self._image.seek(self._next)  # decoded when retrieved
        self._next += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        try:
            picture = self._image.convert("RGBA")
        except (OSError, EOFError):  # a truncated file
            return False, None
        canvas = Image.new("RGBA", picture.size, (255, 255, 255, 255))
        return True, cv2.cvtColor(np.asarray(Image.alpha_composite(canvas, picture).convert("RGB")), cv2.COLOR_RGB2BGR)

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        values = {
            cv2.CAP_PROP_FRAME_WIDTH: self._image.width,
            cv2.CAP_PROP_FRAME_HEIGHT: self._image.height,
            cv2.CAP_PROP_FPS: 1000 * len(self._durations) / sum(self._durations),
            cv2.CAP_PROP_FRAME_COUNT: getattr(self._image, "n_frames", 1),
        }
        return float(values.get(prop, 0))

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self._next = int(value)  # frames before it are decoded on the way, as each builds on the last
            return True
        return False

    def release(self) -> None:
        self._image.close()


Opener = Callable[[str | Path], Capture]


@dataclass
class _ToRGB:
    """Decoded BGR frame → RGB, shrunk to `max_side` if larger; remembers the decoded size.
    With `one_field`, an interlaced picture keeps its top field alone, stretched to full height:
    its two fields are shot a field apart, and the combs they leave where the face moves would
    read as the edges of a pasted face (real clips woven so scored higher: model card, "Interlaced video").
    With `hdr`, the frame holds 16-bit HDR code values (PyAVCapture's), tone-mapped once shrunk.
    Pixels that are not square (`pixel_aspect`) are stretched as a player shows them, so that a
    face keeps its shape; `decoded_shape` is the picture's size as shown."""

    max_side: int
    one_field: bool = False
    hdr: str | None = None
    pixel_aspect: float = 1.0
    stored_size: tuple[int, int] = (0, 0)  # (width, height) as coded, to tell a picture turned a quarter
    decoded_shape: tuple[int, int] = (0, 0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.one_field:
            frame = cv2.resize(frame[::2], (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        height, width = frame.shape[:2]
        turned = (height, width) == self.stored_size and width != height
        width, height = shown_size(width, height, self.pixel_aspect, turned)
        self.decoded_shape = height, width
        scale = min(1.0, self.max_side / max(width, height))
        frame = resized(frame, (round(width * scale), round(height * scale)))
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return sdr_from_hdr(rgb, self.hdr) if self.hdr and rgb.dtype == np.uint16 else rgb


# A picture that a damaged file breaks fails to decode alone: the frames after it decode again.
# The stream ends where this many frames in a row fail (a second or more of video).
FAILED_GRABS_AT_THE_END = 25


def _grabs(capture: Capture) -> Iterator[bool]:
    """Each frame of the stream in order: whether it decoded (`grab`). Frames that fail are
    counted where frames that decode follow them; read as the end of the stream, a broken
    picture left the rest of a damaged file unseen and its length taken for what came before."""
    failed = 0
    while failed < FAILED_GRABS_AT_THE_END:
        if capture.grab():
            yield from itertools.repeat(False, failed)
            failed = 0
            yield True
        else:
            failed += 1


def _count_frames(capture: Capture, limit: int | None = None) -> int:
    return sum(1 for _ in itertools.islice(_grabs(capture), limit))


def _read_sequential(
    capture: Capture, wanted: list[int], to_rgb: _ToRGB, progress: Progress | None = None, seek_first: bool = False
) -> tuple[list[int], list[np.ndarray], int]:
    """One decoding pass, from the start or (`seek_first`) from the first wanted frame; only the
    wanted frames are converted. Returns the frames read and the index the pass ended at."""
    targets = set(wanted)
    first, last = wanted[0], wanted[-1]
    index = first if seek_first and capture.set(cv2.CAP_PROP_POS_FRAMES, first) else 0
    got_idx, got = [], []
    grabs = _grabs(capture)
    while index <= last and (decoded := next(grabs, None)) is not None:
        if decoded and index in targets:
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                got_idx.append(index)
                got.append(to_rgb(frame))
                if progress:
                    progress((index - first) / (last - first) if last > first else 1.0)
        index += 1
    return got_idx, got, index


def _read_by_times(
    capture: PyAVCapture, wanted: list[int], to_rgb: _ToRGB, progress: Progress | None = None
) -> tuple[list[int], list[np.ndarray], int]:
    """One decoding pass to the end, or until every wanted frame is found, each frame placed by
    its presentation time rather than by counting: a stretch of a damaged file that does not
    decode swallows frames unseen (OpenCV's grab passes over packets that decode to nothing), and
    the decoder puts out the frames it held back before that stretch after it. Returns the frames
    read, and how many of those before the last one decoded did not decode."""
    targets, got, decoded = set(wanted), {}, set()
    while len(got) < len(targets) and (index := capture.grab_shown()) is not None:
        decoded.add(index)
        if index in targets and index not in got:
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                got[index] = to_rgb(frame)
                if progress:
                    progress(len(got) / len(targets))
    indices = sorted(got)
    return indices, [got[index] for index in indices], max(decoded, default=-1) + 1 - len(decoded)


def _read_seeking(
    capture: Capture, wanted: list[int], to_rgb: _ToRGB, progress: Progress | None = None
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
    refused: the detector judges a face over time, and was calibrated on sequences of frames.
    A file with several video streams is probed by PyAV, which takes the one a player shows, as
    is one whose average rate no video has (raw DV); an animated WebP is probed by Pillow. A
    recording of sound is refused as such, also where it carries a cover picture. A raw stream,
    whose header states no length, is counted from its packets."""
    if durations := animated_webp_durations(path):
        return _probe(path, partial(PillowCapture, durations=durations))
    if _probed_by_pyav(path):
        return _probe(path, PyAVCapture)
    info = _decoded_by_either(lambda open_capture: _probe(path, open_capture))
    if info.frame_count <= 0 and (frames := _container_facts(path).untimed_frames):
        info.frame_count, info.duration_s = frames, frames / info.fps
    return info


def _probed_by_pyav(path: str | Path) -> bool:
    """Whether the container, as declared, holds several video streams or an odd rate (False
    where FFmpeg cannot open it: the decoders then say why); VideoError for a recording of sound."""
    try:
        with _open_container(path) as container:
            _refuse_sound(container)
            streams = container.streams.video
            return len(streams) > 1 or (len(streams) == 1 and _odd_rate(streams[0]))
    except (av.FFmpegError, OSError):
        return False


def _probe(path: str | Path, open_capture: Opener) -> VideoInfo:
    info = _with_capture(open_capture, path, _info)
    if info.frame_count <= 1:  # a photo, or a header that does not say: see if a second frame follows
        decodable = _with_capture(open_capture, path, lambda capture: _count_frames(capture, limit=2))
        if decodable == 0:
            raise _Undecodable(NO_FRAMES)
        if decodable == 1:
            raise VideoError("This file holds a single picture, not a video: the detector judges a face over time.")
    return info


def _info(capture: Capture) -> VideoInfo:
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if fps <= 0 or fps > MAX_FPS:
        fps = 25.0
    count = max(count, 0)
    return VideoInfo(width, height, fps, count, count / fps if count else 0.0)


def read_frames(
    path: str | Path,
    count: int,
    seek_min_gap: int | None = None,
    progress: Progress | None = None,
    max_side: int = MAX_FRAME_SIDE,
    part: TimeRange = TimeRange(),
) -> SampledFrames:
    """Decode `count` frames spread evenly over the whole video, or over a `part` of it, as RGB
    arrays no larger than `max_side` on their longest side (`scale` says how much they were shrunk).

    The frames are read in one sequential pass (grab everything, retrieve only the chosen frames;
    a part far into the video is sought first), or by a seek to each, whichever decodes fewer
    frames (`_seeking_is_cheaper`). A seek decodes from the key frame before the frame sought, so
    each frame is then moved to the key frame nearest it within half the gap between them, where
    there is one, which PyAV decodes alone. Where the key frames are not known, or `seek_min_gap`
    is given, frames that many or more apart (`SEEK_MIN_GAP_FRAMES`) are sought as they are
    (through PyAV where OpenCV cannot seek, as in a browser's WebM recording, or may land on a
    later key frame unawares, as in MPEG transport and program streams: none has an index; a raw
    stream, whose packets carry no times to seek by, is sought by its bytes or read in one pass),
    and a part that many frames in is sought first. A frame count missing from the header
    is taken from the container's packets, without decoding, as is one the container does not store
    (an estimate from the duration, which may be a frame short), one that counts frames an edit list
    hides (a clip trimmed without re-encoding), or one that counts only the first of recordings
    joined end to end, each timed from zero, which are read in one pass (a seek by time might land
    in any of them); a wrong one is corrected by counting. Where a pass decodes fewer frames than
    the file holds timed packets for, a stretch of a damaged file did not decode: the frames are
    then placed by their times (`_read_by_times`; `undecoded` counts those that did not decode),
    and the length stays the packets'. Frames whose data is zeros, as an unfinished download
    leaves them, and those that refer to them, are found from the packets (`_Spoiled`): they are
    not read (a decoder patches them over from an earlier picture), they are counted in
    `undecoded`, and the rest are read by their times, or sought by PyAV; in Matroska and WebM,
    whose demuxer passes over zeros, leaving no packet, the frames they held are counted
    (`_PassedOver`). Rotation metadata is applied by the decoder, and pixels
    that are not square are stretched as a player shows them. Where the frame rate varies, the
    frames are spread evenly in time, and a part and the frames' times (`timeline`) follow the
    container's presentation times rather than the average rate. OpenCV decodes; what it cannot,
    PyAV does: AV1, interlaced pictures, of which only the top field is kept, HDR ones (HLG, PQ),
    tone-mapped to SDR, a file with several video streams, of which the one a player shows is
    read, and raw DV, whose average rate is a time base's. Pillow decodes animated WebP, which
    FFmpeg cannot. `progress` hears how far through the chosen frames the reading is.
    OutsideVideo where the part begins after the end.
    """
    if durations := animated_webp_durations(path):  # which FFmpeg cannot decode
        facts = _ContainerFacts(shown_s=np.cumsum([0, *durations[:-1]]) / 1000, codec="webp")
        pillow = partial(PillowCapture, durations=durations)  # the frame chunks read once, not by every capture
        return _sample(path, count, seek_min_gap, progress, max_side, part, pillow, facts)
    facts = _container_facts(path)
    # OpenCV's FFmpeg turns interlaced pictures into black ones, reads HDR ones without tone mapping,
    # of several video streams, the first (perhaps a cover picture), and where the average rate is
    # odd, counts and seeks in ticks of the time base
    if facts.interlaced or facts.hdr or facts.several_streams or facts.odd_rate:
        # the stream chosen once here, not by every capture the reading opens
        pyav = partial(PyAVCapture, stream_index=facts.main_stream, timing=facts.timing)
        return _sample(path, count, seek_min_gap, progress, max_side, part, pyav, facts)
    return _decoded_by_either(lambda open_capture: _sample(path, count, seek_min_gap, progress, max_side, part, open_capture, facts))


def _wanted(timeline: Timeline, count: int, part: TimeRange) -> tuple[list[int], tuple[int, int]]:
    """The frames to read and the span they are spread over."""
    if timeline.frame_count <= 0:
        raise _Undecodable(NO_FRAMES)
    span = part.frames(timeline)
    return timeline.spread(span, count), span


def _sample(
    path: str | Path,
    count: int,
    seek_min_gap: int,
    progress: Progress | None,
    max_side: int,
    part: TimeRange,
    open_capture: Opener,
    facts: _ContainerFacts | None = None,
) -> SampledFrames:
    facts = facts or _container_facts(path)
    shown_s = facts.shown_s
    to_rgb = _ToRGB(max_side, facts.interlaced, facts.hdr, facts.pixel_aspect, facts.stored_size)
    info = _probe(path, open_capture)
    with_capture = partial(_with_capture, open_capture, path)

    def counted(frame_count: int) -> Timeline:
        info.frame_count = frame_count
        return Timeline.of(info.fps, frame_count, shown_s)

    if facts.joined_frames:
        timeline = counted(facts.joined_frames)
    elif shown_s is not None and (len(shown_s) < info.frame_count or info.frame_count <= 0 or facts.count_estimated):
        # The packets, not decoded, where an edit list hides frames the header counts (a clip
        # trimmed without re-encoding), or the header's count is none (a browser's recording) or
        # an estimate (an MPEG program stream's may be a frame short).
        timeline = counted(len(shown_s))
    elif facts.untimed_frames:  # a raw stream's packets, not decoded
        timeline = counted(facts.untimed_frames)
    elif info.frame_count > 0:
        timeline = counted(info.frame_count)
    else:
        timeline = counted(with_capture(_count_frames))
    wanted, span = _wanted(timeline, count, part)
    timed = shown_s is not None and len(shown_s) == timeline.frame_count
    spoiled = facts.spoiled if timed else frozenset()
    # a frame a stretch of zeros spoils is not read: a decoder would patch it over from an earlier picture
    wanted = [index for index in wanted if index not in spoiled]
    if not wanted:  # no other decoder would find more
        raise VideoError(NO_DATA)
    # A seek finds a frame by its time: recordings joined end to end repeat their times, and a
    # raw stream (H.264 or HEVC as CCTV recorders and dashcams export it) has none, where
    # OpenCV's seek moves nowhere and says it did; PyAV's finds one by an entry point's bytes.
    seekable = shown_s is not None or facts.sought_by_bytes
    # In a file with no index, OpenCV's seek may land on a later key frame and take it for the
    # frame asked for; PyAV's finds a frame by its packet's time (in a raw stream, as above). Past
    # zeros, which it passes over unseen, OpenCV's misses frames.
    by_pyav = facts.unindexed or facts.sought_by_bytes or bool(spoiled)
    pyav = partial(PyAVCapture, stream_index=facts.main_stream, timing=facts.timing)  # the packets not read again
    seek_capture = pyav if by_pyav and open_capture is _open else open_capture
    undecoded = 0
    by_cost = seek_min_gap is None and seekable and timed and len(facts.key_frames) > 0
    if by_cost:
        # A seek decodes from the key frame before the frame sought, up to a group of pictures
        # (x264 writes 250 frames by default; a phone may write a second's) for each frame; the
        # key frame nearest it, alone. PyAV's seek lands on it; OpenCV's on the key frame before it.
        at_keys = _near_key_frames(wanted, facts.key_frames, span, spoiled)
        method = "seek" if _seeking_is_cheaper(at_keys, facts.key_frames) else "sequential"
        if method == "seek":
            wanted, seek_capture = at_keys, pyav
    else:
        seek_min_gap = seek_min_gap or SEEK_MIN_GAP_FRAMES
        method = "seek" if seekable and (span[1] - span[0]) / len(wanted) >= seek_min_gap else "sequential"
    if method == "seek":
        indices, frames = _with_capture(seek_capture, path, lambda c: _read_seeking(c, wanted, to_rgb, progress))
        if len(indices) < len(wanted) // 2 and seek_capture is _open:
            # OpenCV cannot seek in a container without an index (a browser's WebM recording); PyAV can
            indices, frames = _with_capture(pyav, path, lambda c: _read_seeking(c, wanted, to_rgb, progress))
        if len(indices) < len(wanted) // 2:  # the container lies about its length
            method, timeline = "sequential", counted(with_capture(_count_frames))
            wanted, span = _wanted(timeline, count, part)
    if method == "sequential" and spoiled:
        # zeros in the file: OpenCV passes over them unseen, and would number every later frame early
        log.info("%d frames of the file are zeros or refer to such: read by their times", len(spoiled))
        indices, frames, undecoded = _with_capture(pyav, path, lambda c: _read_by_times(c, wanted, to_rgb, progress))
    elif method == "sequential":
        # cheaper than decoding up to a part far in
        if by_cost:
            seek_first = _frames_decoded_to_reach(wanted[0], facts.key_frames) < wanted[0] + 1
            first_capture = pyav if seek_first else open_capture
        else:
            seek_first = seekable and wanted[0] >= seek_min_gap
            first_capture = seek_capture if seek_first else open_capture
        indices, frames, seen = _with_capture(first_capture, path, lambda c: _read_sequential(c, wanted, to_rgb, progress, seek_first))
        if seen <= wanted[-1] and frames and timed:
            # Frames decoded, but fewer than the file holds packets for, each timed: a damaged
            # stretch did not decode (no intact file of the 181 timed ones here decodes fewer); the
            # frames after it are found by their times, and the length stays the packets'. (Where
            # none decoded, the decoder could not: PyAV's is tried, `_decoded_by_either`.)
            log.info("the pass ended at frame %d of the %d the file holds: read again by their times", seen, len(shown_s))
            indices, frames, undecoded = _with_capture(pyav, path, lambda c: _read_by_times(c, wanted, to_rgb, progress))
        elif seen <= wanted[-1]:
            # Fewer frames than the header said: sample again over what is really there (counted
            # afresh where the pass began with a seek, which may itself have missed).
            timeline = counted(with_capture(_count_frames) if seek_first else seen)
            wanted, span = _wanted(timeline, count, part)  # none left: nothing decodes
            log.info("the header's frame count was wrong: the stream has %d frames", info.frame_count)
            indices, frames, _ = with_capture(lambda c: _read_sequential(c, wanted, to_rgb, progress))
    if not frames:
        raise _Undecodable(NO_FRAMES)
    lost = sum(count for index, count in facts.lost if span[0] <= index < span[1]) if timed else 0
    undecoded = max(undecoded, sum(span[0] <= index < span[1] for index in spoiled) + lost)
    info.height, info.width = to_rgb.decoded_shape  # after rotation
    info.codec = facts.codec
    info.duration_s = timeline.duration_s
    info.stated_duration_s = facts.stated_s
    info.cut_short = facts.cut_short
    scale = frames[0].shape[0] / info.height
    return SampledFrames(info, timeline, indices, frames, method, scale, span, facts.main_stream, undecoded)


def _frames_decoded_to_reach(index: int, key_frames: np.ndarray) -> int:
    """What a seek to frame `index` costs, in frames decoded in one pass: the seek to the key
    frame before it, and the frames decoded from there (`SEEK_COST_FRAMES`)."""
    before = int(np.searchsorted(key_frames, index, side="right")) - 1
    return SEEK_COST_FRAMES + (index - (int(key_frames[before]) if before >= 0 else 0)) * SOUGHT_FRAME_COST


def _seeking_is_cheaper(wanted: list[int], key_frames: np.ndarray) -> bool:
    """Whether a seek to each wanted frame costs less than one pass through the last of them,
    from the first (reached by a seek where that is cheaper than decoding from the start)."""
    seeks = sum(_frames_decoded_to_reach(index, key_frames) for index in wanted)
    one_pass = min(wanted[0] + 1, _frames_decoded_to_reach(wanted[0], key_frames)) + wanted[-1] - wanted[0]
    return seeks < one_pass


def _near_key_frames(wanted: list[int], key_frames: np.ndarray, span: tuple[int, int], spoiled: frozenset[int]) -> list[int]:
    """Each wanted frame moved to the key frame nearest it within half the gap between wanted
    frames (so within its share of the span), where one is free: a seek to it decodes it alone."""
    reach = (span[1] - span[0]) / len(wanted) / 2
    keys = np.array([k for k in key_frames.tolist() if span[0] <= k < span[1] and k not in spoiled], dtype=np.int64)
    chosen: list[int] = []
    for index in wanted:
        near = [k for k in keys[np.abs(keys - index) <= reach].tolist() if k not in chosen]
        chosen.append(min(near, key=lambda k: abs(k - index)) if near else index)
    return sorted(set(chosen))


def _decoded_by_either(attempt: Callable[[Opener], T]) -> T:
    """`attempt` with OpenCV's decoder, and again with PyAV's where OpenCV's decodes nothing."""
    try:
        return attempt(_open)
    except _Undecodable as opencv_error:
        try:
            result = attempt(PyAVCapture)
        except _Undecodable:
            raise opencv_error from None
        log.info("decoded with PyAV: OpenCV could not (%s)", opencv_error)
        return result


def _with_capture(open_capture: Opener, path: str | Path, read: Callable[[Capture], T]) -> T:
    capture = open_capture(path)
    try:
        capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return read(capture)
    finally:
        capture.release()
