"""Frame sampling: pick frames evenly over a whole video without holding it in memory."""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import av
import cv2
import numpy as np

from .container import (
    MAX_FPS,
    X264_FIXED_BUILD,
    AnimatedWebP,
    ContainerFacts,
    Undecodable,
    VideoError,
    animated_webp,
    container_facts,
    has_odd_rate,
    open_container,
    refuse_without_video,
    video_streams,
)
from .decoders import Capture, Opener, PillowCapture, PyAVCapture, ToRGB, open_with_opencv
from .timing import Timeline, TimeRange

log = logging.getLogger(__name__)


# Where the key frames are not known: past this many frames between two chosen frames, seeking
# to each one is cheaper than decoding through (bench/pipeline.py measures the crossover).
SEEK_MIN_GAP_FRAMES = 150
# What PyAV's seek to a key frame and its decoding cost, in frames decoded in one pass by OpenCV,
# and each frame PyAV decodes from there (its decoder runs one thread, OpenCV's one a core): about
# the 90th percentiles of 127 public clips (11.3 and 2.1; medians 8.2 and 1.4; bench/seek_costs.py),
# so that frames are moved off their even spread only where that is cheaper for nearly any video.
SEEK_COST_FRAMES = 12
SOUGHT_FRAME_COST = 2
# Codecs whose pictures that no other refers to a pass over the video need not decode where
# they are not wanted (`PyAVCapture.pass_over_unreferenced`): their packets tell them
PASSED_OVER_CODECS = frozenset({"h264", "hevc"})
# Frames are kept no larger than this on their longest side: 100 frames of a 4K phone video
# would otherwise hold 2.5 GB, and 112 px face crops need no more.
MAX_FRAME_SIDE = 1920
# Frames larger than this are refused when the video is opened, before any is read: frames of
# 16000 pixels square, near the largest FFmpeg decodes, took 5.4 GB of memory and 14 s each to
# read. 8K video (7680×4320) and 360° cameras' 11K (10560×5280) pass.
MAX_FRAME_PIXELS = 8192 * 8192
# What a folder of videos is searched for; a file named outright is tried whatever its name
# (uploads are checked by decoding them).
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".vob", ".wmv", ".flv", ".3gp", ".ts", ".mts", ".m2ts"}
    | {".dv", ".ogv", ".gif", ".webp", ".h264", ".264", ".hevc", ".h265"}  # the last four: raw streams, as CCTV recorders export
)
T = TypeVar("T")
Progress = Callable[[float], None]  # called with the fraction of the work done, 0–1


NO_FRAMES = "The video has no decodable frames."
SINGLE_PICTURE = "This file holds a single picture, not a video: the detector judges a face over time."
CUT_BEFORE_TWO_PICTURES = (
    "The file ends early, before its second picture, as an unfinished download or copy leaves a file, and the "
    "detector judges a face over time: download it again, or upload a complete copy."
)
NO_DATA = (
    "The file holds zeros where the video's frames should be, as a download that did not finish leaves it: "
    "download it again, or upload a copy that plays."
)


class FramesTooLarge(VideoError):
    """The video's frames are larger than `MAX_FRAME_PIXELS`."""


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
    # the file ends before the video does: before the length stated, within a frame's data, or
    # in zeros where its end never arrived (`ends_in_zeros`)
    cut_short: bool = False
    ends_in_zeros: bool = False

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
            "ends_in_zeros": self.ends_in_zeros,
        }


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


def videos_in_folder(folder: str | Path) -> list[Path]:
    """The videos in a folder and its subfolders, by suffix, hidden ones left out, in path order."""
    folder = Path(folder)
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    )  # fmt: skip


# A picture that a damaged file breaks fails to decode alone: the frames after it decode again.
# The stream ends where this many frames in a row fail (a second or more of video).
FAILED_GRABS_AT_THE_END = 25
# A pass reports its progress at least this often, in frames decoded, also where the frames
# chosen lie far apart (a long video with few key frames): the bar moves, and the analysis can
# be stopped there.
PROGRESS_EVERY_FRAMES = 64


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
    capture: Capture, wanted: list[int], to_rgb: ToRGB, progress: Progress | None = None, seek_first: bool = False
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
        if progress and (index in targets or index % PROGRESS_EVERY_FRAMES == 0):
            progress(_share_read(index, wanted))
        index += 1
    return got_idx, got, index


def _share_read(index: int, wanted: list[int]) -> float:
    """How far a pass at frame `index` is through the `wanted` frames: 0 up to the first."""
    first, last = wanted[0], wanted[-1]
    return min(1.0, max(0.0, (index - first) / (last - first))) if last > first else 1.0


def _read_by_times(
    capture: PyAVCapture,
    wanted: list[int],
    to_rgb: ToRGB,
    progress: Progress | None = None,
    uncounted: frozenset[int] = frozenset(),
    stop: Callable[[], bool] = lambda: False,
) -> tuple[list[int], list[np.ndarray], int]:
    """One decoding pass to the end, or until every wanted frame is found, each frame placed by
    its presentation time rather than by counting: a stretch of a damaged file that does not
    decode swallows frames unseen (OpenCV's grab passes over packets that decode to nothing), and
    the decoder puts out the frames it held back before that stretch after it. Returns the frames
    read, and how many of those before the last one decoded did not decode, `uncounted` aside
    and the pictures `PyAVCapture.passed_over` counted as decoded. `stop`: asked before each frame."""
    targets, got, decoded = set(wanted), {}, set()
    heard_at = -1  # the frame last reported: the decoder's order is not always the display order
    while len(got) < len(targets) and not stop() and (index := capture.grab_shown()) is not None:
        decoded.add(index)
        if index in targets and index not in got:
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                got[index] = to_rgb(frame)
        further = index // PROGRESS_EVERY_FRAMES > heard_at // PROGRESS_EVERY_FRAMES
        if progress and index > heard_at and (index in targets or further):
            heard_at = index
            progress(_share_read(index, wanted))
    indices = sorted(got)
    last = max(decoded, default=-1)
    decoded |= {index for index in capture.passed_over if index < last}  # as good as decoded
    not_counted = sum(index < last and index not in decoded for index in uncounted)
    return indices, [got[index] for index in indices], last + 1 - len(decoded) - not_counted


def _read_passing_over(
    capture: PyAVCapture, wanted: list[int], to_rgb: ToRGB, progress: Progress | None, frame_threads: bool
) -> tuple[list[int], list[np.ndarray], int] | None:
    """`_read_by_times`, decoding no picture that no other refers to unless wanted
    (`PyAVCapture.pass_over_unreferenced`), on the decoder's frame threads or on one thread
    (`PyAVCapture.decode_on_threads`). On frame threads, None once a picture is found damaged:
    they patch it over differently from one reading to the next."""
    capture.pass_over_unreferenced(wanted)
    capture.decode_on_threads(frame_threads)
    read = _read_by_times(capture, wanted, to_rgb, progress, stop=lambda: frame_threads and capture.damaged)
    return None if frame_threads and capture.damaged else read


def _read_seeking(
    capture: Capture, wanted: list[int], to_rgb: ToRGB, progress: Progress | None = None
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
    if webp := _animated_webp(path):
        return _probe(path, partial(PillowCapture, webp=webp))
    if _probed_by_pyav(path):
        return _probe(path, PyAVCapture)
    info = _decoded_by_either(lambda open_capture: _probe(path, open_capture))
    if info.frame_count <= 0 and (frames := container_facts(path).untimed_frames):
        info.frame_count, info.duration_s = frames, frames / info.fps
    return info


def _probed_by_pyav(path: str | Path) -> bool:
    """Whether the container, as declared, holds several video streams or an odd rate (False
    where FFmpeg cannot open it: the decoders then say why); VideoError for a file with no video
    to judge (`refuse_without_video`), FramesTooLarge where its frames are larger than
    `MAX_FRAME_PIXELS`."""
    try:
        with open_container(path) as container:
            refuse_without_video(container)
            streams = video_streams(container)
            if len(streams) == 1:  # before another decoder opens it, which decodes a frame
                _refuse_frames_too_large(streams[0].codec_context.width, streams[0].codec_context.height)
            return len(streams) > 1 or (len(streams) == 1 and has_odd_rate(streams[0]))
    except (av.FFmpegError, OSError):
        return False


def _probe(path: str | Path, open_capture: Opener) -> VideoInfo:
    info = _with_capture(open_capture, path, _info)
    _refuse_frames_too_large(info.width, info.height)
    if info.frame_count <= 1:  # a photo, or a header that does not say: see if a second frame follows
        decodable = _with_capture(open_capture, path, lambda capture: _count_frames(capture, limit=2))
        if decodable == 0:
            raise Undecodable(NO_FRAMES)
        if decodable == 1:
            raise VideoError(CUT_BEFORE_TWO_PICTURES if _cut_short(path) else SINGLE_PICTURE)
    return info


def _animated_webp(path: str | Path) -> AnimatedWebP | None:
    """`animated_webp(path)`; Undecodable for one that holds no frame whole."""
    if (webp := animated_webp(path)) and not webp.durations_ms:
        raise Undecodable(CUT_BEFORE_TWO_PICTURES if webp.cut_short else NO_FRAMES)
    return webp


def _cut_short(path: str | Path) -> bool:
    """Whether the file ends early, as `ContainerFacts.cut_short` tells it."""
    if webp := animated_webp(path):
        return webp.cut_short
    try:
        return container_facts(path).cut_short
    except (VideoError, av.FFmpegError, OSError):
        return False


def _refuse_frames_too_large(width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise FramesTooLarge(
            f"The video's frames are {width}×{height} pixels, more than this detector reads"
            f" ({MAX_FRAME_PIXELS / 1e6:.0f} million: 8K video passes). A copy at a usual size, 4K or less,"
            f" is judged the same way: frames are shrunk to {MAX_FRAME_SIDE} pixels at most."
        )


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
    `undecoded`, and the rest are read by their times, or sought by PyAV; in Matroska, WebM and
    MPEG transport streams, whose demuxers pass over zeros, leaving no packet, the frames they
    held are counted (`truncation.PassedOver`). Rotation metadata is applied by the decoder, and pixels
    that are not square are stretched as a player shows them. Where the frame rate varies, the
    frames are spread evenly in time, and a part and the frames' times (`timeline`) follow the
    container's presentation times rather than the average rate. OpenCV decodes; what it cannot,
    PyAV does: AV1, interlaced pictures, of which only the top field is kept, HDR ones (HLG, PQ),
    tone-mapped to SDR, a file with several video streams, of which the one a player shows is
    read, and raw DV, whose average rate is a time base's; and H.264 and HEVC read in one pass
    from the start, where PyAV's decoder, told the frames wanted, passes over the pictures between
    them that no other refers to (most B-frames: the same frames, read a third faster), unless the
    file is cut short; where a picture is found damaged, the pass is made again on one thread,
    which patches damage over the same way every time (a frame a thread does not). Pillow
    decodes animated WebP, which FFmpeg cannot. `progress` hears how far through the chosen
    frames the reading is (0 while the packets are read). OutsideVideo where the part begins
    after the end; FramesTooLarge where the frames are larger than `MAX_FRAME_PIXELS`, before
    any is read.
    """
    if webp := _animated_webp(path):  # which FFmpeg cannot decode
        shown_s = np.cumsum([0, *webp.durations_ms[:-1]]) / 1000
        facts = ContainerFacts(shown_s=shown_s, codec="webp", cut_short=webp.cut_short)
        pillow = partial(PillowCapture, webp=webp)  # the frame chunks read once, not by every capture
        return _sample(path, count, seek_min_gap, progress, max_side, part, pillow, facts)
    facts = container_facts(path, heartbeat=(lambda: progress(0.0)) if progress else None)
    _refuse_frames_too_large(*facts.stored_size)
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
        raise Undecodable(NO_FRAMES)
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
    facts: ContainerFacts | None = None,
) -> SampledFrames:
    facts = facts or container_facts(path)
    shown_s = facts.shown_s
    to_rgb = ToRGB(max_side, facts.interlaced, facts.hdr, facts.pixel_aspect, facts.stored_size)
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
    # A frame a stretch of zeros spoils is not read: a decoder would patch it over from an earlier
    # picture; nor is one the file ends within (a decoder gives it patched over below where its
    # data stops), which is not counted as undecoded: the file is told as cut short.
    unfinished = frozenset({facts.unfinished} if timed and facts.unfinished is not None else ())
    unread = spoiled | unfinished
    wanted = [index for index in wanted if index not in unread]
    if not wanted:  # no other decoder would find more
        raise VideoError(NO_DATA)
    # A seek finds a frame by its time: recordings joined end to end repeat their times, and a
    # raw stream (H.264 or HEVC as CCTV recorders and dashcams export it) has none, where
    # OpenCV's seek moves nowhere and says it did; PyAV's finds one by an entry point's bytes.
    seekable = shown_s is not None or facts.sought_by_bytes
    # In a file with no index, OpenCV's seek may land on a later key frame and take it for the
    # frame asked for; PyAV's finds a frame by its packet's time (in a raw stream, as above). Past
    # zeros, which it passes over unseen, OpenCV's misses frames. An old x264 build's video
    # decodes wrong from a key frame past the first unless the decoder is told the build, which
    # OpenCV's cannot be (`assume_x264_build`).
    old_x264 = facts.x264_build is not None and facts.x264_build < X264_FIXED_BUILD
    by_pyav = facts.unindexed or facts.sought_by_bytes or bool(unread) or old_x264
    pyav = partial(PyAVCapture, stream_index=facts.main_stream, timing=facts.timing)  # the packets not read again
    seek_capture = pyav if by_pyav and open_capture is open_with_opencv else open_capture
    undecoded, passes_over = 0, False
    by_cost = seek_min_gap is None and seekable and timed and len(facts.key_frames) > 0
    if by_cost:
        # A seek decodes from the key frame before the frame sought, up to a group of pictures
        # (x264 writes 250 frames by default; a phone may write a second's) for each frame; the
        # key frame nearest it, alone. PyAV's seek lands on it; OpenCV's on the key frame before it.
        at_keys = _near_key_frames(wanted, facts.key_frames, span, unread)
        method = "seek" if _seeking_is_cheaper(at_keys, facts.key_frames) else "sequential"
        if method == "seek":
            wanted, seek_capture = at_keys, pyav
    else:
        seek_min_gap = seek_min_gap or SEEK_MIN_GAP_FRAMES
        method = "seek" if seekable and (span[1] - span[0]) / len(wanted) >= seek_min_gap else "sequential"
    if method == "seek":
        indices, frames = _with_capture(seek_capture, path, lambda c: _read_seeking(c, wanted, to_rgb, progress))
        if len(indices) < len(wanted) // 2 and seek_capture is open_with_opencv:
            # OpenCV cannot seek in a container without an index (a browser's WebM recording); PyAV can
            indices, frames = _with_capture(pyav, path, lambda c: _read_seeking(c, wanted, to_rgb, progress))
        if len(indices) < len(wanted) // 2:  # the container lies about its length
            method, timeline = "sequential", counted(with_capture(_count_frames))
            wanted, span = _wanted(timeline, count, part)
    if method == "sequential":
        # cheaper than decoding up to a part far in
        if by_cost:
            seek_first = _frames_decoded_to_reach(wanted[0], facts.key_frames) < wanted[0] + 1
            first_capture = pyav if seek_first else open_capture
        else:
            seek_first = seekable and wanted[0] >= seek_min_gap
            first_capture = seek_capture if seek_first else open_capture
        # PyAV's decoder, told the frames wanted, passes over the pictures between them that no
        # other refers to (`PyAVCapture.pass_over_unreferenced`), where OpenCV's decodes them all
        read_as_before = seek_first or unread or facts.cut_short or facts.interlaced
        passes_over = timed and facts.codec in PASSED_OVER_CODECS and not read_as_before
        if passes_over:
            passing_over = partial(_read_passing_over, wanted=wanted, to_rgb=to_rgb, progress=progress)
            if passed := _with_capture(pyav, path, partial(passing_over, frame_threads=True)):
                indices, frames, undecoded = passed
                # fewer frames than wanted: read as before, each picture decoded (and its progress heard again)
                passes_over = not undecoded and len(indices) == len(wanted)
            else:  # a damaged file: read on one thread, which patches its damage over the same way every time
                indices, frames, undecoded = _with_capture(pyav, path, partial(passing_over, frame_threads=False))
                passes_over = bool(frames)
    if method == "sequential" and unread:
        # Zeros in the file: OpenCV passes over them unseen, and would number every later frame
        # early. A frame cut short that fails is counted where the decoder is, which may hold
        # frames shown before it back: they would be numbered late.
        log.info("%d frames of the file are zeros, refer to such, or are cut short: read by their times", len(unread))
        # the frame cut short is no damage: the file is told as cut short
        indices, frames, undecoded = _with_capture(pyav, path, lambda c: _read_by_times(c, wanted, to_rgb, progress, unfinished))
    elif method == "sequential" and not passes_over:
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
        raise Undecodable(NO_FRAMES)
    lost = sum(count for index, count in facts.lost if span[0] <= index < span[1]) if timed else 0
    undecoded = max(undecoded, sum(span[0] <= index < span[1] for index in spoiled) + lost)
    info.height, info.width = to_rgb.decoded_shape  # after rotation
    info.codec = facts.codec
    info.duration_s = timeline.duration_s
    info.stated_duration_s = facts.stated_s
    info.cut_short, info.ends_in_zeros = facts.cut_short, facts.ends_in_zeros
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


def _near_key_frames(wanted: list[int], key_frames: np.ndarray, span: tuple[int, int], unread: frozenset[int]) -> list[int]:
    """Each wanted frame moved to the key frame nearest it within half the gap between wanted
    frames (so within its share of the span), where one is free: a seek to it decodes it alone."""
    reach = (span[1] - span[0]) / len(wanted) / 2
    keys = np.array([k for k in key_frames.tolist() if span[0] <= k < span[1] and k not in unread], dtype=np.int64)
    chosen: list[int] = []
    for index in wanted:
        near = [k for k in keys[np.abs(keys - index) <= reach].tolist() if k not in chosen]
        chosen.append(min(near, key=lambda k: abs(k - index)) if near else index)
    return sorted(set(chosen))


def _decoded_by_either(attempt: Callable[[Opener], T]) -> T:
    """`attempt` with OpenCV's decoder, and again with PyAV's where OpenCV's decodes nothing."""
    try:
        return attempt(open_with_opencv)
    except Undecodable as opencv_error:
        try:
            result = attempt(PyAVCapture)
        except Undecodable:
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
