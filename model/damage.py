"""Damage in a video's pictures, found by decoding them: bit errors and lost data that a player,
and OpenCV, patch over unseen (`check_damage`, `damaged_pictures`)."""
from __future__ import annotations

import threading
from functools import cache, partial
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import av

from .container import (
    animated_webp,
    assume_x264_build,
    demux,
    ends_within_frames,
    nal_layout,
    open_container,
    referred_to_by_none,
    video_streams,
    x264_build_stated,
)


# codecs whose undamaged pictures FFmpeg's strict checks reject: its TIFF decoder, every picture
# its own TIFF encoder writes (an unknown tag, 296, the resolution's unit)
STRICT_CHECKS_MISFIRE = frozenset({"tiff"})

# a group of pictures' bytes held to decode it as far as a frame examined, or again from the group
# before it (several seconds of 4K from a phone; minutes of 1080p where a video has one key frame)
GROUP_BYTES_HELD = 32 * 2**20


class Damage(NamedTuple):
    """What `check_damage` found: how many coded pictures do not decode cleanly, and which of the
    frames examined (positions in its `examined_s`) are one of them or are decoded after one in
    their group of pictures, so may show it, patched over as a player patches it."""

    pictures: int
    examined_spoiled: frozenset[int] = frozenset()


def damaged_pictures(*args, **kwargs) -> int:
    """How many coded pictures do not decode cleanly: `check_damage`'s count."""
    return check_damage(*args, **kwargs).pictures


def check_damage(
    path: str | Path,
    span_s: tuple[float, float],
    stop: threading.Event | None = None,
    stream_index: int | None = None,
    examined_s: Sequence[float] = (),
    abandon: threading.Event | None = None,
    damage_seen: threading.Event | None = None,
) -> Damage:
    """How many coded pictures do not decode cleanly (bit errors, lost data: what a player, and
    OpenCV, patch over unseen) in the span `span_s` (seconds from the first frame), decoded from
    the key frame before it. FFmpeg is asked to fail on such pictures (`err_detect=explode`)
    rather than conceal them. The frames examined (`examined_s`, seconds from the first frame)
    are looked at first, each with the pictures it rests on from the key frame before it
    (`_damaged_where_examined`), to the end unless `abandon` is set: damage there is what may move
    a verdict, and the whole span may take longer to check than a reading at its key frames. Then
    the whole span, until `stop` (or `abandon`) is set, where pictures that no other refers to
    are left out. Where the span starts past the first frame, the group of pictures sought into
    is not counted: an open group's pictures may refer to the one before. One thread: it is meant
    to run beside the analysis, on what that leaves idle. `stream_index`: the video stream to
    check (`SampledFrames.stream`), else the first. 0 for what FFmpeg does not decode (animated
    WebP) or cannot open, and for codecs its strict checks misfire on (`STRICT_CHECKS_MISFIRE`).
    Which frames examined the damage may show in (`Damage`), where the first look got to them;
    `damage_seen` is set once that look finds a picture that fails (a caller waits longer for it
    then: which frames it finds spoiled depends on how far it gets)."""
    if animated_webp(path):
        return Damage(0)
    stop, abandon = stop or threading.Event(), abandon or threading.Event()
    failed: set[tuple] = set()  # each picture once, though both looks decode it
    spoiled: set[int] = set()
    try:
        examined_look = partial(_damaged_where_examined, examined_s=examined_s, spoiled=spoiled, seen=damage_seen)
        looks = [(examined_look, abandon.is_set)] if examined_s else []
        looks.append((_damaged_in_span, lambda: stop.is_set() or abandon.is_set()))
        first_packet_x264_build = cache(partial(_first_packet_x264_build, path))  # read once for both looks
        for look, stopped in looks:
            with open_container(path) as container:
                if not (streams := video_streams(container)):
                    return Damage(0)
                stream = streams[0] if stream_index is None else container.streams[stream_index]
                if stream.codec_context.name in STRICT_CHECKS_MISFIRE:
                    return Damage(0)
                stream.codec_context.thread_count = 1
                # no deblocking: the pictures themselves are not looked at
                stream.codec_context.options = {"err_detect": "explode", "skip_loop_filter": "all"}
                # the looks start at key frames past the first picture, which states it
                assume_x264_build(stream.codec_context, first_packet_x264_build(stream.index))
                failed |= look(container, stream, span_s, stopped)
    except (av.FFmpegError, OSError):
        pass
    return Damage(len(failed), frozenset(spoiled))


def _first_packet_x264_build(path: str | Path, stream_index: int) -> int | None:
    """The x264 build that a stream's first packet states (`x264_build_stated`), else None."""
    with open_container(path) as container:
        packet = next((p for p in demux(container, container.streams[stream_index]) if p.size), None)
        return None if packet is None else x264_build_stated(packet)


def _damaged_where_examined(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    span_s: tuple[float, float],
    stopped: Callable[[], bool],
    examined_s: Sequence[float],
    spoiled: set[int],
    seen: threading.Event | None = None,
) -> set[tuple]:
    """The pictures that fail among those the examined frames rest on: the packets from the key
    frame before each up to it, in one pass over the packets that decodes only those
    (`_ExaminedGroups`). The positions in `examined_s` of the frames that may show them are
    added to `spoiled`; `seen` is set once one fails."""
    first, tick = stream.start_time, float(stream.time_base or 0)
    if first is None or not tick:  # a raw stream's packets carry no times
        return set()
    sought = span_s[0] > 0
    if sought:
        container.seek(first + int(span_s[0] / tick), stream=stream, backward=True)
    positions = {first + round(seconds / tick): position for position, seconds in enumerate(examined_s)}
    targets = iter(sorted(positions))
    target = next(targets, None)
    groups = _ExaminedGroups(stream.codec_context, sought, frozenset(positions))
    last: av.Packet | None = None
    try:
        for packet in demux(container, stream):
            if not packet.size:
                continue
            decoded_at = packet.pts if packet.dts is None else packet.dts
            # every packet a target rests on has come once one is decoded after it
            while target is not None and decoded_at is not None and decoded_at > target:
                groups.decode_so_far()
                target = next(targets, None)
                if groups.failed and seen:
                    seen.set()
            if target is None or stopped():
                break
            groups.add(packet)
            last = packet
        else:
            groups.decode_so_far()  # the last frames
            failed_last = last is not None and (last.pts, last.pos) in groups.failed
            if failed_last and ends_within_frames(container, last, stream, lambda: True):
                groups.failed.discard((last.pts, last.pos))  # unfinished where the file was cut short
    except av.FFmpegError:  # the container itself broken further on: the whole span's look counts it
        pass
    spoiled.update(positions[time] for time in groups.spoiled)
    return groups.failed


class _ExaminedGroups:
    """The groups of pictures that examined frames lie in, each decoded from its key frame as far
    as those frames, and afresh where packets before it were passed over. Pictures shown before
    a key frame (leading pictures, which refer to the group before) are not counted. A group
    decoded afresh may fail undamaged: after an open group's key frame (an H.264 recovery point),
    pictures may still refer to ones before it. Its failures count only where they recur when it
    is decoded on from the whole group before it; in the group a look sought into, not at all.
    A group of more than `GROUP_BYTES_HELD` is decoded as it comes, and its packets let go: a
    video with one key frame in minutes is not held whole. Its pictures past those bytes are taken
    to refer to none before its key frame, and the group after it is decoded on from it."""

    def __init__(self, context: av.CodecContext, sought: bool, examined: frozenset[int]):
        self._context = context
        self._layout = nal_layout(context)
        self._examined = examined  # the frames examined, by presentation time
        self._key_time: int | None = None  # the current group's key frame's presentation time
        self._before: list[av.Packet] = []  # the whole group before the current one, where held
        self._group: list[av.Packet] = []  # the current group's packets held
        self._held = 0  # their bytes
        self._decoded = 0  # how many of them are decoded
        self._let_go = False  # whether packets of the current group were let go
        self._afresh = sought  # whether the current group was decoded from its key frame alone
        self._failing = False  # whether a picture of the current group failed
        self.failed: set[tuple] = set()  # (presentation time, byte position) of each picture that failed
        self.spoiled: set[int] = set()  # the frames examined that are, or come after, one in their group

    def add(self, packet: av.Packet) -> None:
        if packet.is_keyframe and packet.pts is not None:
            if self._let_go:
                self.decode_so_far()  # to its end, so that the next group needs none of its packets
            if self._key_time is not None:  # decoded on from the group before only where that was decoded to its end
                self._afresh = self._decoded < len(self._group)
            self._before = [] if self._let_go else self._group
            self._group, self._held, self._decoded, self._let_go = [packet], packet.size, 0, False
            self._key_time, self._failing = packet.pts, False
        elif self._key_time is not None:
            self._group.append(packet)
            self._held += packet.size
            if self._held > GROUP_BYTES_HELD:
                self.decode_so_far()
                self._before, self._group, self._held, self._decoded = [], [], 0, 0
                self._let_go, self._afresh = True, False

    def decode_so_far(self) -> None:
        if self._decoded == len(self._group):
            return
        if self._decoded == 0 and self._afresh:
            self._context.flush_buffers()
        failures, spoiled, failing = self._decode(self._group[self._decoded :], self._failing)
        if failures and self._afresh and not self._before:  # the group sought into
            failures, spoiled, failing = set(), set(), False
        elif failures and self._afresh:
            self._context.flush_buffers()
            self._decode(self._before, False)
            (failures, spoiled, failing), self._afresh = self._decode(self._group, False), False
        self.failed |= failures
        self.spoiled |= spoiled
        self._failing = failing
        self._decoded = len(self._group)

    def _decode(self, packets: list[av.Packet], failing: bool) -> tuple[set[tuple], set[int], bool]:
        """The pictures among `packets` that fail; the frames examined among them that fail or
        are decoded after a picture that others may refer to failed (or after one before them,
        where `failing`); and whether such a picture failed, then."""
        failures, spoiled = set(), set()
        for packet in packets:
            examined = packet.pts in self._examined
            # a picture that no other refers to spoils itself alone: decoded where it is a frame examined
            self._context.skip_frame = "DEFAULT" if examined else "NONREF"
            try:
                self._context.decode(packet)
            except av.error.InvalidDataError:
                if packet.pts is None or packet.pts >= self._key_time:
                    failures.add((packet.pts, packet.pos))
                    if examined:
                        spoiled.add(packet.pts)
                    # decoded where pictures that no other refers to are not, unless examined
                    failing = failing or not examined or not referred_to_by_none(packet, self._layout)
            if examined and failing:
                spoiled.add(packet.pts)
        return failures, spoiled, failing


def _damaged_in_span(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    span_s: tuple[float, float],
    stopped: Callable[[], bool],
) -> set[tuple]:
    """The pictures that fail in the whole span, but those that no other refers to, whose damage
    spoils themselves alone: half the work or less."""
    stream.codec_context.skip_frame = "NONREF"
    first = stream.start_time or 0
    tick = float(stream.time_base or 0)
    start_s, end_s = span_s
    keys_to_pass = 0  # key frames to pass before a picture's failure counts
    if start_s > 0 and tick and stream.start_time is not None:  # a raw stream's packets carry no times to seek by
        container.seek(first + int(start_s / tick), stream=stream, backward=True)
        keys_to_pass = 2
    damaged: set[tuple] = set()
    failed: av.Packet | None = None  # the latest picture that failed, counted once another follows it
    try:
        for packet in demux(container, stream):
            if failed is not None and packet.size:
                damaged.add((failed.pts, failed.pos))
                failed = None
            if stopped() or (packet.pts is not None and tick and (packet.pts - first) * tick > end_s):
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
                    damaged.add(("flushed",))
    except av.FFmpegError:  # the container itself broken further on
        damaged.add(("container",))
    # the last picture, unfinished where the file was cut short, is told so (`ends_within_frames`)
    if failed is not None and not ends_within_frames(container, failed, stream, lambda: True):
        damaged.add((failed.pts, failed.pos))
    return damaged
