"""The decoders behind one reader's interface (cv2.VideoCapture's): OpenCV's, PyAV's for what
OpenCV cannot decode or reads wrong, and Pillow's for animated WebP; and their pictures turned
into RGB as a player shows them."""
from __future__ import annotations

import functools
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

from .container import (
    HDR_TRANSFERS,
    NOT_OPENED,
    UNINDEXED_FORMATS,
    AnimatedWebP,
    MainStream,
    NalLayout,
    Undecodable,
    VideoError,
    assume_x264_build,
    demux,
    frame_rate,
    nal_layout,
    not_opened,
    open_container,
    read_main_stream,
    referred_to_by_none,
    refuse_without_video,
    video_streams,
)


# OpenCV's FFmpeg writes its complaints straight to stderr (an AV1 stream it has only a
# hardware decoder for, a truncated upload's missing index), bypassing logging; every such
# failure reaches the caller as a VideoError instead. Read at the first capture; a value the
# user set is kept.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
# So does OpenCV itself, at its level WARNING, where FFmpeg opens a file but finds no stream's
# parameters in it (a damaged header) and where it tries the file as a numbered image sequence
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def upright(image: np.ndarray, rotation: float) -> np.ndarray:
    """The picture as it is displayed: `rotation` is PyAV's frame rotation, the degrees
    counter-clockwise that the display turns the stored picture (a phone's portrait video)."""
    if not rotation:
        return image
    return np.ascontiguousarray(np.rot90(image, round(rotation / 90) % 4))


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


class Capture(Protocol):
    """What the readers use of cv2.VideoCapture."""

    def grab(self) -> bool: ...
    def retrieve(self) -> tuple[bool, np.ndarray | None]: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def set(self, prop: int, value: float) -> bool: ...
    def release(self) -> None: ...


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


def open_with_opencv(path: str | Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise not_opened(path)
    return capture


class PyAVCapture:
    """cv2.VideoCapture's readers' part over PyAV's FFmpeg, for codecs OpenCV's FFmpeg cannot
    decode: AV1 (what video sites serve and newer phones record), for which OpenCV's build has
    only the hardware decoder and PyAV's has dav1d; and for what OpenCV reads wrong (`read_frames`
    says what). Of several video streams it reads the one a player shows (`read_main_stream`).
    Frames come out as BGR, as OpenCV's do."""

    def __init__(self, path: str | Path, stream_index: int | None = None, timing: MainStream | None = None):
        """`stream_index`: the stream to read, where the caller has chosen it already; `timing`:
        its packets' times, where the caller has read them (`ContainerFacts.timing`)."""
        try:
            self._container = open_container(path)
        except (av.FFmpegError, OSError) as error:
            raise not_opened(path) from error
        try:
            refuse_without_video(self._container)
            if not (streams := video_streams(self._container)):
                raise Undecodable(NOT_OPENED)
        except VideoError:
            self._container.close()
            raise
        self._timing = timing  # the packets' times (`_stream_timing`)
        if stream_index is not None:
            self._stream = self._container.streams[stream_index]
        elif len(streams) > 1:  # which one a player shows takes a look at the packets
            with open_container(path) as container:
                self._timing = read_main_stream(container)
                index = self._timing.stream.index  # read while that container is open
            self._stream = self._container.streams[index]
        else:
            self._stream = streams[0]
        self._hdr = HDR_TRANSFERS.get(self._stream.codec_context.color_trc)
        self._frames = self._decoded()
        self._frame: av.VideoFrame | None = None
        self._upright = False
        self._skip_before: int | None = None  # after a seek: the first presentation time wanted
        self._wanted_times: frozenset[int] | None = None  # see `pass_over_unreferenced`
        self._layout: NalLayout | None = None  # how to tell such pictures, read from the stream once then
        self._passed_over: list[int] = []  # presentation times of the pictures passed over
        # whether a picture did not decode, or came out patched over (or refers to such): damage
        self.damaged = False
        self._path = path

    def _decoded(self) -> Iterator[av.VideoFrame | None]:
        """The stream's frames from where the container stands; None for a packet that does not
        decode (a damaged file), after which decoding goes on, as OpenCV's does."""
        try:
            for packet in demux(self._container, self._stream):
                unwanted = self._wanted_times is not None and packet.pts is not None and packet.pts not in self._wanted_times
                if unwanted and referred_to_by_none(packet, self._layout):
                    self._passed_over.append(packet.pts)
                    continue
                try:
                    for frame in packet.decode():
                        self.damaged = self.damaged or frame.is_corrupt
                        yield frame
                except av.FFmpegError:
                    self.damaged = True
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
        if self._hdr:  # 16 bits a channel, left for `ToRGB` to tone-map, so that it has the stream's 10 bits
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
            assume_x264_build(self._stream.codec_context, timing.x264_build)  # the first picture, which states it, not decoded
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

    def pass_over_unreferenced(self, wanted: list[int]) -> None:
        """From here on, a picture that no other refers to (`referred_to_by_none`: most B-frames)
        is not decoded unless it is one of the frames `wanted` (indices into `MainStream.times`,
        which must be known): a third of the pictures or more, where there are B-frames.
        `passed_over` says which were not."""
        times = self._stream_timing().times
        self._wanted_times = frozenset(int(times[index]) for index in wanted)
        self._layout = nal_layout(self._stream.codec_context)

    def decode_on_threads(self, frame_threads: bool) -> None:
        """Has the decoder decode a frame a thread, a thread a core, as OpenCV's does, or
        (not `frame_threads`) all on one thread. Called before the first frame is decoded. Frame
        threads are for one pass, not for seeks, which would wait for the frames the threads hold
        back; they patch a damaged picture over differently from one decoding to the next (slice
        threads, PyAV's default, differently from one thread too); `damaged` tells such a
        picture, which on frame threads fails rather than come out patched over: HEVC's decoder
        flags none it patches. One thread patches it the same way every time."""
        if frame_threads:
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.options = {"err_detect": "explode"}
        else:
            self._stream.thread_count = 1

    @property
    def passed_over(self) -> set[int]:
        """The frames `pass_over_unreferenced` did not decode, as indices into `MainStream.times`."""
        times = self._stream_timing().times
        return set(np.searchsorted(times, self._passed_over).tolist())

    def grab_shown(self) -> int | None:
        """The next frame that decodes, and where it is shown: its index among the frames the
        container times (`MainStream.times`, which must be known); None at the end. A frame
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

    def _stream_timing(self) -> MainStream:
        if self._timing is None:  # read from the packets once, when a seek or `grab_shown` needs them
            with open_container(self._path) as container:
                self._timing = read_main_stream(container)
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


class PillowCapture:
    """cv2.VideoCapture's readers' part over Pillow, for animated WebP (stickers, and what GIF
    sites serve in place of GIFs), which FFmpeg's decoder cannot decode. Each frame is drawn over
    the previous ones as a browser draws it, and what it leaves transparent over white. Frames
    come out as BGR, as OpenCV's do."""

    def __init__(self, path: str | Path, webp: AnimatedWebP):
        """`webp`: `animated_webp(path)`, read once by the caller. Of a file cut short, which
        libwebp refuses whole, the frames held whole are read."""
        try:
            self._image = Image.open(_whole_chunks(path, webp.whole_bytes) if webp.cut_short else path)
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise Undecodable(NOT_OPENED) from error
        self._durations = webp.durations_ms
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


def _whole_chunks(path: str | Path, whole_bytes: int) -> io.BytesIO:
    """A RIFF file's first `whole_bytes`, its header stating that length (libwebp reads the whole
    file into memory all the same)."""
    with open(path, "rb") as file:
        data = bytearray(file.read(whole_bytes))
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    return io.BytesIO(data)


Opener = Callable[[str | Path], Capture]


@dataclass
class ToRGB:
    """Decoded BGR frame → RGB, shrunk to `max_side` if larger; remembers the decoded size.
    With `one_field`, an interlaced picture keeps its top field alone, stretched to full height:
    its two fields are shot a field apart, and the combs they leave where the face moves would
    read as the edges of a pasted face (real clips woven so scored higher: model card, "Interlaced video").
    With `hdr`, the frame holds 16-bit HDR code values (PyAVCapture's), tone-mapped once shrunk.
    Pixels that are not square (`pixel_aspect`) are stretched as a player shows them, so that a
    face keeps its shape; `decoded_shape` is the picture's size as shown. A picture that changes
    size mid-way (a browser's recording as its bandwidth changes; a stream joined to another) is
    given at its first size, as OpenCV's reader gives it, so that its frames are one picture to
    compare and follow faces through."""

    max_side: int
    one_field: bool = False
    hdr: str | None = None
    pixel_aspect: float = 1.0
    stored_size: tuple[int, int] = (0, 0)  # (width, height) as coded, to tell a picture turned a quarter
    decoded_shape: tuple[int, int] = (0, 0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.one_field:
            frame = cv2.resize(frame[::2], (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        if self.decoded_shape == (0, 0):
            height, width = frame.shape[:2]
            turned = (height, width) == self.stored_size and width != height
            width, height = shown_size(width, height, self.pixel_aspect, turned)
            self.decoded_shape = height, width
        height, width = self.decoded_shape
        scale = min(1.0, self.max_side / max(width, height))
        frame = resized(frame, (round(width * scale), round(height * scale)))
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return sdr_from_hdr(rgb, self.hdr) if self.hdr and rgb.dtype == np.uint16 else rgb

