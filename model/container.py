"""What a video file's container tells without decoding its pictures: which video stream a player
shows, when each frame is shown, the key frames, frames whose data is zeros or lost, whether the
file was cut short (its bytes read format by format in `truncation`)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import av
import numpy as np

from .timing import parse_time
from .truncation import (
    MIN_LOST_BYTES,
    PassedOver,
    data_end,
    gif_ends_within_block,
    matroska_ends_within_block,
    mp4_ends_within_media,
    mp4_index_missing,
    mp4_whole_fragments,
    program_stream_ends_within_packet,
    read_at,
    transport_stream_ends_within_packet,
    transport_stream_pes_unfinished,
    zeros_begin_within,
)

log = logging.getLogger(__name__)


class VideoError(ValueError):
    """The file is not a video we can decode."""


class Undecodable(VideoError):
    """Nothing could be decoded: perhaps a codec that the other decoder knows."""


class IndexMissing(Undecodable):
    """An MP4 or QuickTime recording's frames without their index (`mp4_index_missing`)."""


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
# H.264's NAL unit types of a picture's slices, and the bits of a NAL unit's header that say
# whether other pictures refer to it (`referred_to_by_none`)
H264_SLICES = frozenset({1, 5})
H264_REFERENCE_IDC = 0x60
# HEVC's NAL unit types below this are a picture's slices; of those, the even ones up to 14 are
# sub-layer non-reference pictures: no later picture of their temporal sub-layer refers to them,
# and none of a higher one may (`referred_to_by_none`). HEVC's sequence parameter set's type.
HEVC_SLICES_BELOW = 32
HEVC_SUB_LAYER_NON_REFERENCE = frozenset(range(0, 15, 2))
HEVC_SPS = 33
# where HEVC's configuration record's parameter sets begin (the number of their arrays)
HEVC_PARAMETER_SETS_AT = 22
# where the size of a NAL unit's length lies in H.264's and HEVC's configuration records
H264_LENGTH_SIZE_AT, HEVC_LENGTH_SIZE_AT = 4, 21
# Frame rates above this are a time base taken for a rate (FFmpeg gives raw DV, as camcorder
# captures are stored, an average rate of 60,000), not a video's.
MAX_FPS = 1000.0
NOT_OPENED = "This file could not be opened as a video."
INDEX_MISSING = (
    "This file holds the frames of an MP4 or MOV video but not their index, which comes last in"
    " such a file: a recording stopped before it was saved, or a download cut short, leaves it so,"
    " and without the index the frames cannot be found."
)
SOUND_ONLY = "This file holds sound but no video."
UNKNOWN_CODEC = "This file's video names no codec this detector knows: its header may be damaged, or its codec is a rare one."
# HDR video as phones record it (HLG: iPhones; PQ: HDR10) by FFmpeg's AVColorTransferCharacteristic
HDR_TRANSFERS = {16: "pq", 18: "hlg"}


# x264 writes its build into its first picture's data (an SEI message), by which FFmpeg's decoder
# works around the bugs of builds before 151: in 4:4:4 video (as FaceForensics++'s clips are), its
# pictures decode wrong without it. A decoder that starts at a later key frame (a seek) never
# sees it, and is told it (`assume_x264_build`).
X264_VERSION = re.compile(rb"x264 - core (\d+)")
X264_FIXED_BUILD = 151


def x264_build_stated(packet: av.Packet) -> int | None:
    """The x264 build that a stream's first packet states, else None."""
    found = X264_VERSION.search(bytes(packet))
    return int(found[1]) if found else None


def assume_x264_build(context: av.CodecContext, build: int | None) -> None:
    """Has a decoder not yet opened take `build` for its stream's x264 build (FFmpeg's
    `x264_build` option), as it does once it decodes the first picture, which states it."""
    if build is not None and not context.is_open:
        context.options = {**context.options, "x264_build": str(build)}


def video_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams FFmpeg can decode: a header damaged where it names the codec leaves a
    stream of none, which no decoder reads."""
    return [s for s in container.streams.video if s.codec_context is not None]


# what FFmpeg's MPEG transport stream demuxer looks through for the start of a packet, each time it is called
RESYNC_BYTES = 65536


def demux(container: av.container.InputContainer, *streams: av.stream.Stream) -> Iterator[av.Packet]:
    """`container.demux(*streams)`, to its end: where a stream first appears mid-file (an FLV's
    tag of a kind its header did not announce), PyAV, which lists the streams found on opening,
    fails on looking it up (IndexError) once the packets of those it lists are given. Past bytes
    that hold no packet (zeros where a download never got a part), an MPEG transport stream's
    demuxer looks for the next 64 KiB at a time, and asks to be called again (EAGAIN: PyAV's
    BlockingIOError) after each, as FFmpeg's own tools and OpenCV do."""
    tries = os.path.getsize(container.name) // RESYNC_BYTES + 2  # enough to look through the whole file
    while True:
        try:
            yield from container.demux(*streams)
            return
        except IndexError:
            log.info("a stream appeared mid-file: PyAV left its packets out")
            return
        except BlockingIOError:
            tries -= 1
            if tries <= 0:
                return


def _moving_streams(streams: Sequence[av.VideoStream]) -> list[av.VideoStream]:
    """Those of the video streams that are not a cover picture attached to the file (an MP3's album art)."""
    return [s for s in streams if not s.disposition & av.stream.Disposition.attached_pic]


def refuse_without_video(container: av.container.InputContainer) -> None:
    """A file with no video to judge, said so by name. A recording of sound, with no video or a
    cover picture alone, is a mistake worth naming (a voice memo, a song), not a video to judge
    by its cover, nor a codec to try elsewhere; a video whose every stream names no codec FFmpeg
    knows is damaged where its header names it, or of a codec no decoder here reads."""
    if container.streams.audio and not _moving_streams(container.streams.video):  # decodable or not: a video
        raise VideoError(SOUND_ONLY)
    if container.streams.video and not video_streams(container):
        raise Undecodable(UNKNOWN_CODEC)


# How far from its place in the stream a frame may be shown: H.264 and HEVC reorder at most 16
# frames; twice that, so that no stream of one recording is taken for several.
MAX_REORDERED_FRAMES = 32
# Reading a file's packets says it is alive this often (some 20–40 ms): a file of tiny frames
# may hold millions, and an analysis stopped or out of time then stops while they are read.
PACKETS_A_HEARTBEAT = 4096


class MainStream(NamedTuple):
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
    # where a demuxer passed over zeros (`PassedOver`): (the index into `times` of the frame
    # after them, how many frames they held, as the times on either side tell)
    lost: tuple[tuple[int, int], ...] = ()
    x264_build: int | None = None  # the x264 build its first packet states (`x264_build_stated`)
    # the file ends within a frame's data, as a download or copy cut short leaves it (`ends_within_frames`)
    ends_within_frames: bool = False
    # zeros follow the last packet, of any stream, in a Matroska, WebM or transport stream file:
    # the part of a download written in parts that never arrived (`PassedOver.at_end`)
    ends_in_zeros: bool = False
    # that frame, where it is this stream's (an index into `times`; `_unfinished_frame_time`), else None
    unfinished: int | None = None


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
    after such a packet, or after zeros the demuxer passed over (`PassedOver`), until the next
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
        """`passed_over`: whether the demuxer passed over zeros before this packet (`PassedOver`)."""
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


def nal_unit_starts(access_unit: bytes, length_size: int = 0) -> list[int]:
    """Where each NAL unit of an H.264 or HEVC access unit begins (its header): after each
    00 00 01 start code, in Annex B form (`length_size` 0), as raw and transport streams store
    them; else after each unit's length, in `length_size` bytes, as MP4 and Matroska store them
    (`nal_length_size`): none where those lengths do not add up to the access unit's."""
    if not length_size:
        return [match.end() for match in re.finditer(b"\x00\x00\x01", access_unit) if match.end() < len(access_unit)]
    starts, at = [], 0
    while at + length_size < len(access_unit):
        starts.append(at + length_size)
        at += length_size + int.from_bytes(access_unit[at : at + length_size], "big")
    return starts if at == len(access_unit) else []  # lengths that do not add up to the packet's: none told


def nal_length_size(context: av.CodecContext) -> int:
    """How many bytes state each NAL unit's length in an H.264 or HEVC stream's packets, as its
    configuration record says (MP4, Matroska: the extradata's first byte is its version, 1);
    0 where start codes part them (Annex B). Not guessed from a packet's first bytes: a length of
    256 to 511 bytes begins 00 00 01, as a start code does."""
    record = context.extradata or b""
    if not record or record[0] != 1:
        return 0
    at = H264_LENGTH_SIZE_AT if context.name == "h264" else HEVC_LENGTH_SIZE_AT
    return (record[at] & 0x3) + 1 if len(record) > at else 4


class NalLayout(NamedTuple):
    """What telling an H.264 or HEVC stream's pictures apart from its packets takes: its codec,
    how its packets part their NAL units (`nal_length_size`), and for HEVC the highest temporal
    sub-layer its pictures may be in (None where the stream does not say)."""

    codec: str
    length_size: int
    top_sub_layer: int | None


def nal_layout(context: av.CodecContext) -> NalLayout:
    top_sub_layer = _hevc_top_sub_layer(context.extradata or b"") if context.name == "hevc" else None
    return NalLayout(context.name, nal_length_size(context), top_sub_layer)


def _hevc_top_sub_layer(extradata: bytes) -> int | None:
    """The highest temporal sub-layer of an HEVC stream, as its sequence parameter set says
    (sps_max_sub_layers_minus1, in the byte after its header), in the extradata: a configuration
    record (MP4, Matroska), or NAL units after start codes (an MPEG transport stream's). None where
    there is none, or several that disagree."""
    if extradata[:1] == b"\x01":
        units, at = [], HEVC_PARAMETER_SETS_AT + 1
        for _ in range(extradata[HEVC_PARAMETER_SETS_AT] if len(extradata) > HEVC_PARAMETER_SETS_AT else 0):
            count, at = int.from_bytes(extradata[at + 1 : at + 3], "big"), at + 3
            for _ in range(count if at < len(extradata) else 0):  # counts past the record's end: none
                length, at = int.from_bytes(extradata[at : at + 2], "big"), at + 2
                units.append(extradata[at : at + length])
                at += length
    else:
        units = [extradata[start:] for start in nal_unit_starts(extradata)]
    layers = {unit[2] >> 1 & 0x7 for unit in units if len(unit) > 2 and unit[0] >> 1 & 0x3F == HEVC_SPS}
    return layers.pop() if len(layers) == 1 else None


def referred_to_by_none(packet: av.Packet, layout: NalLayout) -> bool:
    """Whether no other picture refers to the one in `packet`, as its slices say: in H.264,
    nal_ref_idc 0 (a B-frame that x264 and most encoders leave out of the pictures others are
    predicted from); in HEVC, a sub-layer non-reference picture in the stream's highest temporal
    sub-layer (most of x265's B-frames; every sub-layer is the highest where the stream has one),
    and in its base layer. False for any other codec, whose pictures are taken to be referred to.
    `layout`: the stream's `nal_layout`."""
    data = bytes(packet)
    starts = nal_unit_starts(data, layout.length_size)
    # a header's first bit is always 0 (forbidden_zero_bit): one set is no NAL unit's
    if layout.codec == "h264":
        slices = [data[at] for at in starts if data[at] & 0x1F in H264_SLICES]
        return bool(slices) and not any(header & (H264_REFERENCE_IDC | 0x80) for header in slices)
    if layout.codec != "hevc" or layout.top_sub_layer is None:
        return False
    # each slice's header: its type, its layer (0: the base layer) and its temporal sub-layer plus one
    slices = [data[at : at + 2] for at in starts if at + 1 < len(data) and data[at] >> 1 & 0x3F < HEVC_SLICES_BELOW]
    return bool(slices) and all(
        header[0] >> 1 in HEVC_SUB_LAYER_NON_REFERENCE and header[0] & 0x1 == 0 and header[1] == layout.top_sub_layer + 1
        for header in slices
    )


def _nal_unit_types(access_unit: bytes, codec: str) -> set[int]:
    """The types of the NAL units of an H.264 or HEVC access unit in Annex B form, as raw streams
    store them: each unit follows a 00 00 01 start code."""
    starts = nal_unit_starts(access_unit)
    if codec == "h264":
        return {access_unit[start] & 0x1F for start in starts}
    return {(access_unit[start] >> 1) & 0x3F for start in starts}


def _restarts(times: list[int]) -> bool:
    """Whether presentation times, in the order the packets come, start again (recordings joined
    end to end, each timed from zero): a frame's place in time is further from its place in the
    stream than reordering explains."""
    order = np.argsort(np.array(times, dtype=np.int64), kind="stable")
    return bool((np.abs(order - np.arange(len(order))) > MAX_REORDERED_FRAMES).any())


def read_main_stream(container: av.container.InputContainer, heartbeat: Callable[[], None] | None = None) -> MainStream:
    """The video stream a player shows, and its presentation times in display order, in its time
    base, from its packets alone (nothing is decoded; None where they are missing or unreadable,
    or start again). Where a file holds several (a preview or a cover picture beside the
    recording, a second camera), that is the one with the most frames, and never an attached
    cover picture. `heartbeat` is called every `PACKETS_A_HEARTBEAT` packets read (what it
    raises stops the reading)."""
    decodable = video_streams(container)
    streams = _moving_streams(decodable) or decodable
    times: dict[int, list[int | None]] = {stream.index: [] for stream in streams}
    keys: dict[int, list[tuple[int, int]]] = {stream.index: [] for stream in streams}
    entry_points = {stream.index: _EntryPoints(stream.codec_context.codec.canonical_name) for stream in streams}
    spoiled = {stream.index: _Spoiled(stream) for stream in streams}
    packets = dict.fromkeys(times, 0)
    # in Matroska, WebM and transport streams, every stream's packets, to see the bytes between them
    passed_over = PassedOver(container.name) if container.format.name in ("matroska,webm", "mpegts") else None
    after_zeros: set[int] = set()  # the streams whose next packet follows zeros passed over
    last: av.Packet | None = None  # the last packet with data, of any stream
    final: dict[int, av.Packet] = {}  # each stream's last packet with data
    x264_builds: dict[int, int | None] = {}  # as each stream's first packet with data states it
    try:
        for count, packet in enumerate(demux(container)):  # every stream's: the file may end within any one's
            if heartbeat and count % PACKETS_A_HEARTBEAT == 0:
                heartbeat()
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
                final[index] = packet
                if index not in x264_builds:
                    x264_builds[index] = x264_build_stated(packet)
                if packet.is_keyframe and packet.pts is not None:
                    keys[index].append((packet.pts, packet.pts if packet.dts is None else packet.dts))
    except av.FFmpegError:
        return MainStream(streams[0], None)
    ends_in_zeros = passed_over is not None and passed_over.at_end()
    stream = max(streams, key=lambda candidate: len(times[candidate.index]))  # the first of equals
    shown = times[stream.index]
    build = x264_builds.get(stream.index)

    @cache  # asked by both
    def last_picture_fails() -> bool:
        own_keys, own_final = keys[stream.index], final.get(stream.index)
        if not (own_keys and own_final):
            return False
        return _last_picture_fails(container.name, stream.index, own_keys[-1][0], own_final.pts, build)

    ends_within = ends_within_frames(container, last, stream, last_picture_fails)
    told = {"ends_within_frames": ends_within, "ends_in_zeros": ends_in_zeros, "x264_build": build}
    if shown and all(time is None for time in shown):  # a raw stream
        return MainStream(stream, None, untimed_frames=len(shown), entry_points=entry_points[stream.index].found(), **told)
    if not shown or None in shown:
        return MainStream(stream, None, **told)
    if _restarts(shown):
        return MainStream(stream, None, joined_frames=len(shown), **told)
    key_times = np.array(sorted(keys[stream.index]), dtype=np.int64).reshape(-1, 2)
    sorted_times = np.sort(np.array(shown, dtype=np.int64))
    damage = spoiled[stream.index]
    unfinished_time = _unfinished_frame_time(container, final[stream.index], last_picture_fails) if ends_within else None
    unfinished = None if unfinished_time is None else int(np.searchsorted(sorted_times, unfinished_time))
    return MainStream(
        stream,
        sorted_times,
        keys=key_times,
        packets=packets[stream.index],
        # a frame cut within its first bytes reads as zeros: cut short, not damaged
        spoiled=damage.spoiled(sorted_times) - {unfinished},
        lost=damage.lost(sorted_times),
        unfinished=unfinished,
        **told,
    )


def ends_within_frames(
    container: av.container.InputContainer,
    last: av.Packet | None,
    video: av.VideoStream,
    last_picture_fails: Callable[[], bool],
) -> bool:
    """Whether the file ends within the data of its frames, as a download or copy cut short
    leaves it: told where the container states no length to compare (`_length_cut_short`), as a
    fragmented MP4 (a screen recorder's, a stream saved), a browser's WebM recording or an MPEG
    transport or program stream does not. `last`: the last packet read, of any stream. FFmpeg's
    demuxers flag a packet they read short (FLV, AVI), but Matroska's leaves it out, a transport
    stream's keeps it unflagged, a program stream's parser puts out an unflagged frame after it,
    and an MP4's may stop at a sound packet past the end before the video's packets before it.
    A transport stream cut between two of its packets is told by the `video` stream's last
    frame, where its last packet is not that frame's last (`transport_stream_pes_unfinished`)
    and `last_picture_fails`: one frame's data in some 184 fills its last packet exactly; where
    it ends in zeros, by its packets before them, and the one they begin within. A
    program stream cut between two packs, where nothing tells a frame's end, is told where
    `last_picture_fails`. Where the zeros a Matroska file ends in begin within its last frame's
    data, that frame is unfinished too (`zeros_begin_within`)."""
    if last is None:
        return False
    formats = container.format.name.split(",")
    if "matroska" in formats:
        if last.pos is None or last.pos <= 0:
            return False
        return matroska_ends_within_block(container.name, last.pos, last.size) or zeros_begin_within(container.name, last)
    if "mpegts" in formats:
        if transport_stream_ends_within_packet(container.name):
            return True
        return bool(transport_stream_pes_unfinished(container.name, video.id)) and last_picture_fails()
    if "mp4" in formats:
        return mp4_ends_within_media(container.name)
    if "mpeg" in formats:
        return program_stream_ends_within_packet(container.name) or last_picture_fails()
    if "gif" in formats:
        return gif_ends_within_block(container.name)
    return last.is_corrupt


def _unfinished_frame_time(
    container: av.container.InputContainer, final: av.Packet, last_picture_fails: Callable[[], bool]
) -> int | None:
    """The presentation time of the frame whose data a file cut short ends within (where
    `ends_within_frames`), where it is that of the stream whose last packet is `final`, else None.
    FFmpeg's demuxers give such a frame's data as far as it goes (Matroska's leave it out, but give
    whole the one that the zeros a download left begin within: `zeros_begin_within`), and its
    decoders a picture patched over from an earlier one below where the data stops, or the
    earlier picture again. Those of MP4, AVI and FLV flag it; those of MPEG transport and program
    streams and of GIF do not, and a stream's last packet is then taken for it, but where the file
    ends within another stream's data after it whole: in a transport stream, where its last
    packet is filled out (`transport_stream_pes_unfinished`), and in a program stream, where
    it decodes (`last_picture_fails`). A GIF's picture cut short decodes without a failure, but
    FFmpeg reads each with the extension before it: a GIF cut within that leaves it out alone."""
    formats = container.format.name.split(",")
    if "matroska" in formats:
        return final.pts if zeros_begin_within(container.name, final) else None
    if "mpegts" in formats and transport_stream_pes_unfinished(container.name, final.stream.id) is False:
        return None
    if "mpeg" in formats and not last_picture_fails():
        return None
    if final.is_corrupt or not {"mpegts", "mpeg", "gif"}.isdisjoint(formats):
        return final.pts
    return None


# A video's last picture is decoded from its key frame to tell a cut (`_last_picture_fails`)
# where the pictures from there hold no more than this
LAST_GROUP_MAX_BYTES = 32 * 2**20


def _last_picture_fails(path: str, stream_index: int, key_time: int, last_time: int, x264_build: int | None) -> bool:
    """Whether the last picture of a video stream (`last_time`: its presentation time) fails to
    decode, as one cut short does, decoded from the key frame before it (`key_time`; the x264
    build its first picture states, `assume_x264_build`), or comes out flagged as patched over:
    an H.264 picture cut where one of its slices ends, or where the decoder, reading on into
    zeros, can end one, decodes without a failure, the part cut off patched from another picture.
    False where more than `LAST_GROUP_MAX_BYTES` lie between them, or the file does not open. The file is sought to a
    second before that key frame, not demuxed again from its start, but where the seek lands past it.
    Of the zeros the file may end in (a download that never got its end), the first bytes alone
    are read: a demuxer searches them for its next packet, for seconds in hundreds of megabytes,
    before it gives the last."""
    length = min(os.path.getsize(path), data_end(path) + MIN_LOST_BYTES)
    for sought in (True, False):
        failed = _last_group_fails(path, length, stream_index, key_time, last_time, x264_build, sought)
        if failed is not None:
            return failed
    return False


def _last_group_fails(
    path: str, length: int, stream_index: int, key_time: int, last_time: int, x264_build: int | None, sought: bool
) -> bool | None:
    """`_last_picture_fails`, its packets read from a seek to the key frame or from the start, in
    the file's first `length` bytes; None where they never reach that key frame."""
    try:
        with open_container(path, length) as container:
            stream = container.streams[stream_index]
            if sought and stream.time_base:  # a second early: a program or transport stream's seek may land a frame past
                container.seek(key_time - int(1 / stream.time_base), stream=stream, backward=True)
            context = stream.codec_context
            context.thread_count = 1
            context.options = {"err_detect": "explode", "skip_loop_filter": "all"}
            assume_x264_build(context, x264_build)
            decoding, decoded_bytes, failed, pictures = False, 0, False, []
            for packet in demux(container, stream):
                decoding = decoding or (packet.is_keyframe and packet.pts == key_time)
                if not (decoding and packet.size):
                    continue
                decoded_bytes += packet.size
                if decoded_bytes > LAST_GROUP_MAX_BYTES:
                    return False
                # pictures that no other refers to are left out, but the last
                context.skip_frame = "DEFAULT" if packet.pts == last_time else "NONREF"
                try:
                    pictures = context.decode(packet)
                    failed = False
                except av.error.InvalidDataError:
                    failed = True
            if not decoding:
                return None
            if not failed:  # the last picture may come out of the decoder only once it is drained
                with contextlib.suppress(av.FFmpegError):
                    pictures += context.decode(None)
                failed = any(picture.pts == last_time and picture.is_corrupt for picture in pictures)
            return failed
    except (av.FFmpegError, OSError):
        return False


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


# Titles and tags are not read, and one not in UTF-8 (a damaged header, an old tagger) must not stop the reading
METADATA_ERRORS = "replace"


def not_opened(path: str | Path) -> Undecodable:
    """The error for a file that FFmpeg cannot open: `IndexMissing` where it is an MP4 or
    QuickTime recording's frames without their index, which says so."""
    return IndexMissing(INDEX_MISSING) if mp4_index_missing(path) else Undecodable(NOT_OPENED)


def open_container(path: str | Path, length: int | None = None) -> av.container.InputContainer:
    """PyAV's container of the file, or of its first `length` bytes. An MP4 cut within a
    fragment's header, whose header FFmpeg cannot read, is opened as far as its whole fragments
    go (the cut is told from the file itself, `mp4_ends_within_media`)."""
    if length is not None and length < os.path.getsize(path):
        return av.open(_FilePrefix(path, length), metadata_errors=METADATA_ERRORS)
    try:
        return av.open(str(path), metadata_errors=METADATA_ERRORS)
    except av.FFmpegError:  # the end of the file, or invalid data, where the fragment's header stops
        if not (whole := mp4_whole_fragments(path)):
            raise
    log.info("%s ends within a fragment's header: read up to it", path)
    return av.open(_FilePrefix(path, whole), metadata_errors=METADATA_ERRORS)


class ContainerFacts(NamedTuple):
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
    # the file ends within a frame's data, in zeros (`MainStream.ends_in_zeros`), or before the
    # length the header states (`stated_s`)
    cut_short: bool = False
    ends_in_zeros: bool = False
    # the frames (indices into `shown_s`) whose data is zeros, or refers to such a frame (`_Spoiled`)
    spoiled: frozenset[int] = frozenset()
    # frames lost where a Matroska, WebM or transport stream demuxer passed over zeros: (the index
    # into `shown_s` of the frame after them, how many)
    lost: tuple[tuple[int, int], ...] = ()
    # the frame (an index into `shown_s`) whose data the file ends within (`_unfinished_frame_time`)
    unfinished: int | None = None
    # the key frames (indices into `shown_s`), from which a decoder starts
    key_frames: np.ndarray = np.empty(0, dtype=np.int64)
    x264_build: int | None = None  # the x264 build the main stream states (`X264_VERSION`)
    # the main stream's packets as read here, for PyAV's seeks (the stream itself is closed)
    timing: MainStream | None = None


def container_facts(path: str | Path, heartbeat: Callable[[], None] | None = None) -> ContainerFacts:
    """What the container tells without decoding the video; `heartbeat` as `read_main_stream`'s."""
    try:
        with open_container(path) as container:
            refuse_without_video(container)
            if not video_streams(container):
                return ContainerFacts(None)
            main_stream = read_main_stream(container, heartbeat)
            stream, times, joined_frames = main_stream.stream, main_stream.times, main_stream.joined_frames
            entries = main_stream.entry_points
            sought_by_bytes = len(entries) > 1 and entries[0, 0] == 0
            interlaced = stream.codec_context.field_order in INTERLACED_FIELD_ORDERS
            hdr = HDR_TRANSFERS.get(stream.codec_context.color_trc)
            time_base = stream.time_base  # these read while the container is open
            several = len(video_streams(container)) > 1
            odd_rate = has_odd_rate(stream)
            aspect, stored = pixel_aspect(stream), (stream.codec_context.width, stream.codec_context.height)
            codec = stream.codec_context.codec.canonical_name  # av1, not the decoder's name (libdav1d)
            main = stream.index
            unindexed = container.format.name in UNINDEXED_FORMATS
            count_estimated = not stream.frames
            stated_s = _length_cut_short(stream, main_stream)
    except (av.FFmpegError, OSError):
        return ContainerFacts(None)
    shown_s = None if times is None or time_base is None else (times - times[0]) * float(time_base)
    key_frames = np.empty(0, dtype=np.int64) if times is None else np.searchsorted(times, main_stream.keys[:, 0])
    return ContainerFacts(
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
        cut_short=stated_s is not None or main_stream.ends_within_frames or main_stream.ends_in_zeros,
        ends_in_zeros=main_stream.ends_in_zeros,
        spoiled=main_stream.spoiled,
        lost=main_stream.lost,
        unfinished=main_stream.unfinished,
        key_frames=key_frames,
        x264_build=main_stream.x264_build,
        timing=main_stream,
    )


# How far a Matroska track's stated length may run past its last frame held before the file is
# taken for cut short
CUT_SHORT_MIN_S = 1.0


def _length_cut_short(stream: av.VideoStream, main: MainStream) -> float | None:
    """The length the container states for the stream, where the file holds less of it (cut off
    in a download or a copy), else None. An MP4's index counts frames whose data is not there
    (web videos store the index first, so a cut file still opens; an edit list's hidden frames
    are there all the same). A Matroska or WebM track states its length in a tag (DURATION, as
    FFmpeg and mkvmerge write it; a browser's recording has none), past the last frame held: by
    over `CUT_SHORT_MIN_S`, or by more than a frame where the file ends in zeros (that part lost)."""
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
    margin = 1 / rate if main.ends_in_zeros else max(CUT_SHORT_MIN_S, 0.05 * stated)
    return stated if stated - held > margin else None


def pixel_aspect(stream: av.VideoStream) -> float:
    """How much wider than tall a stored pixel is shown (DVDs, DV and HDV store 4:3 and 16:9
    pictures in fewer or more columns than they show, and players stretch them); 1 where unstated."""
    ratio = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(ratio) if ratio and 0.25 <= ratio <= 4 else 1.0


def has_odd_rate(stream: av.VideoStream) -> bool:
    return float(stream.average_rate or 0) > MAX_FPS


def frame_rate(stream: av.VideoStream) -> Fraction | None:
    """The stream's frame rate: its average, else FFmpeg's guess, else the codec's (None if none
    is a video's)."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate):
        if rate and 0 < rate <= MAX_FPS:
            return rate
    return None


# Browsers show an animated picture's frames that claim no time, or next to none, for 100 ms, as
# FFmpeg's GIF reader does.
MIN_PICTURE_FRAME_MS, PICTURE_FRAME_MS = 11, 100


class AnimatedWebP(NamedTuple):
    """What an animated WebP's chunks tell, nothing decoded."""

    durations_ms: list[int]  # how long each frame held whole is shown
    whole_bytes: int  # where the last chunk held whole ends
    # the file ends before the length its RIFF header states, or within a chunk, as an unfinished
    # download leaves it: libwebp then reads none of it
    cut_short: bool


def animated_webp(path: str | Path) -> AnimatedWebP | None:
    """An animated WebP's frame chunks, up to the first the file ends within; None for any other
    file, a still WebP among them."""
    try:
        with open(path, "rb") as file:
            head = file.read(21)
            # RIFF, WEBP, and a VP8X chunk whose flags say "animation"
            if len(head) < 21 or head[:4] != b"RIFF" or head[8:16] != b"WEBPVP8X" or not head[20] & 0x02:
                return None
            file_size = file.seek(0, os.SEEK_END)
            stated_end = 8 + int.from_bytes(head[4:8], "little")
            end = min(file_size, stated_end)  # what follows the stated length is not the picture's
            durations, position, ends_within = [], 12, False
            while position + 8 <= end and len(chunk := read_at(file, position, 24)) >= 8:
                size = int.from_bytes(chunk[4:8], "little")
                if position + 8 + size > end:
                    ends_within = position + 8 + size > file_size
                    break
                if chunk[:4] == b"ANMF" and len(chunk) >= 23:
                    shown = int.from_bytes(chunk[20:23], "little")  # after the frame's offset and size
                    durations.append(shown if shown >= MIN_PICTURE_FRAME_MS else PICTURE_FRAME_MS)
                position = min(position + 8 + size + size % 2, end)
    except OSError:
        return None
    return AnimatedWebP(durations, position, file_size < stated_end or ends_within)
