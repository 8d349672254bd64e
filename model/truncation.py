"""Telling from a video file's bytes where it was cut short, format by format: within a
Matroska or WebM block, an MPEG transport stream's packet or a frame's data across several, a
program stream's packet, an MP4's box of media data, a GIF's block; and the zeros a download
written in parts leaves where a part, or its end, never arrived. Nothing here decodes."""
from __future__ import annotations

import mmap
import os
import re
from pathlib import Path
from typing import BinaryIO, Iterator

import av


# A Matroska or WebM file's blocks follow one another but for a few bytes of headers, and a
# transport stream's 188-byte packets each begin with a sync byte (0x47); this many zeros between
# two are data lost
MIN_LOST_BYTES = 4096


class PassedOver:
    """Where a Matroska, WebM or MPEG transport stream demuxer passed over zeros: a download
    written in parts leaves them where a part never arrived, and the demuxer, unlike an MP4's,
    finds no packet there, only the next cluster or packet after them. Seen between two packets
    of any stream, in the order they lie, and after the last (`at_end`): the demuxer then finds
    the end of the file."""

    def __init__(self, path: str):
        self._path = path
        self._end: int | None = None  # where the last packet ends

    def before(self, packet: av.Packet) -> bool:
        if packet.pos is None or packet.pos < 0:
            return False
        start, self._end = self._end, max(self._end or 0, packet.pos + packet.size)
        return start is not None and self._zeros_between(start, packet.pos)

    def at_end(self) -> bool:
        """Whether zeros follow the last packet: a download written in parts never got its end."""
        return self._end is not None and self._zeros_between(self._end, os.path.getsize(self._path))

    def _zeros_between(self, start: int, end: int) -> bool:
        if end - start < MIN_LOST_BYTES:
            return False
        # the zeros begin near the start of the gap: a missing part's edge falls in the packet before it
        with open(self._path, "rb") as file:
            return bytes(MIN_LOST_BYTES) in read_at(file, start, min(end - start, 1 << 20))


# A frame's data ending in this many zeros, zeros after it to the end of the file, is the one
# where the part of a download that never arrived began (an H.264 or HEVC frame ends in a stop bit)
UNFINISHED_ZEROS = 64


def zeros_begin_within(path: str, packet: av.Packet) -> bool:
    """Whether the zeros that a Matroska or WebM file ends in (`PassedOver.at_end`) begin within
    `packet`'s data, which its demuxer gives whole, zeros and all: its data ends in zeros, and the
    file's bytes after it begin and end so."""
    if packet.pos is None or packet.pos < 0 or bytes(packet)[-UNFINISHED_ZEROS:] != bytes(UNFINISHED_ZEROS):
        return False
    end, zeros = packet.pos + packet.size, bytes(MIN_LOST_BYTES)
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        if size - end < MIN_LOST_BYTES:
            return False
        return read_at(file, end, MIN_LOST_BYTES) == zeros and read_at(file, size - MIN_LOST_BYTES, MIN_LOST_BYTES) == zeros


# bytes read at a time looking back over the zeros a file ends in
ZEROS_CHUNK_BYTES = 1 << 20


def _trailing_zeros_from(file: BinaryIO, end: int) -> int:
    """Where the zeros that a file's bytes before `end` end in begin, where there are at least
    `MIN_LOST_BYTES` of them (as a download that never got its end leaves), else `end`."""
    if end < MIN_LOST_BYTES or read_at(file, end - MIN_LOST_BYTES, MIN_LOST_BYTES).count(0) < MIN_LOST_BYTES:
        return end  # most files: no megabyte read to tell
    at, zeros = end, bytes(ZEROS_CHUNK_BYTES)
    while at > 0:
        chunk = read_at(file, max(0, at - ZEROS_CHUNK_BYTES), min(ZEROS_CHUNK_BYTES, at))
        if chunk == zeros[: len(chunk)]:
            at -= len(chunk)
            continue
        at -= len(chunk) - len(chunk.rstrip(b"\0"))
        break
    return at if end - at >= MIN_LOST_BYTES else end


def data_end(path: str | Path) -> int:
    """Where a file's data ends: where the zeros it ends in begin (`_trailing_zeros_from`), else its size."""
    with open(path, "rb") as file:
        return _trailing_zeros_from(file, file.seek(0, os.SEEK_END))


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


def matroska_ends_within_block(path: str, position: int, size: int) -> bool:
    """Whether a Matroska or WebM file ends within a block, or a cluster, after the one holding
    its last packet (`position`, `size`: the packet's, as FFmpeg's demuxer gives it, where the
    block's data begins). Its demuxer leaves out a block the file ends within. A browser's
    recording states no length to compare (`container._length_cut_short`): cut short, it ends so."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        # the block's ID and size just before its data: where it ends
        before = read_at(file, max(position - 9, 0), min(position, 9))
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
            header = read_at(file, at, 12)
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


# An MPEG transport stream is made of packets of one of these sizes (188 bytes; 192 in a
# camcorder's M2TS, 4 bytes before each; 204 with error correction, 16 after), each with its
# sync byte where it lies within them: a file that stops within one was cut
TS_PACKET_SIZES = (188, 192, 204)
TS_SYNC_AT = {188: 0, 192: 4, 204: 0}


# sync bytes in a row that tell a transport stream's packet size
TS_SYNCS_IN_A_ROW = 5


def _transport_stream_layout(path: str) -> tuple[int, int] | None:
    """An MPEG transport stream's packet size, and where its first whole packet begins, found
    from the sync bytes (0x47) of several packets in a row; None where no size gives them."""
    with open(path, "rb") as file:
        head = file.read(max(TS_PACKET_SIZES) * (TS_SYNCS_IN_A_ROW + 1))
    for size in TS_PACKET_SIZES:
        for start in range(size):
            syncs = (start + TS_SYNC_AT[size] + size * k for k in range(TS_SYNCS_IN_A_ROW))
            if all(head[at : at + 1] == b"\x47" for at in syncs):
                return size, start
    return None


def transport_stream_ends_within_packet(path: str) -> bool:
    """Whether an MPEG transport stream ends within one of its packets (`_transport_stream_layout`);
    where its packets do not line up, within a packet of any size."""
    file_size = os.path.getsize(path)
    if (layout := _transport_stream_layout(path)) is None:
        return all(file_size % size for size in TS_PACKET_SIZES)
    size, start = layout
    return (file_size - start) % size != 0


# A transport packet's header, and its adaptation field's flags for what it holds beyond them:
# a clock reference, the original's, a countdown to a splice (bytes each)
TS_HEADER_BYTES = 4
TS_PAYLOAD_START = 0x40
TS_ADAPTATION_FIELD, TS_PAYLOAD = 2, 1
TS_ADAPTATION_FIXED = {0x10: 6, 0x08: 6, 0x04: 1}
TS_ADAPTATION_PRIVATE, TS_ADAPTATION_EXTENSION = 0x02, 0x01
# bytes of a transport stream's end looked through for a stream's last packets
TS_TAIL_BYTES = 1 << 18


def _transport_packet_payload(packet: bytes) -> tuple[bytes, bool]:
    """A 188-byte transport packet's payload, and whether its adaptation field holds stuffing,
    with which a muxer fills out the packet that ends a PES packet (a frame's data, or several
    frames') where that data does not fill it."""
    control = (packet[3] >> 4) & 3
    at, stuffed = TS_HEADER_BYTES, False
    if control & TS_ADAPTATION_FIELD:
        length = packet[at]
        end = at + 1 + length
        flags = packet[at + 1] if length else 0
        used = at + 2  # the length and the flags
        used += sum(size for flag, size in TS_ADAPTATION_FIXED.items() if flags & flag)
        for flag in (TS_ADAPTATION_PRIVATE, TS_ADAPTATION_EXTENSION):
            if flags & flag and used < end:
                used += 1 + packet[used]
        stuffed, at = length == 0 or used < end, end  # no length: one byte of stuffing
    return (packet[at:] if control & TS_PAYLOAD else b""), stuffed


def transport_stream_pes_unfinished(path: str, pid: int) -> bool | None:
    """Whether, in an MPEG transport stream's whole packets, the last PES packet of the stream
    that `pid` carries is unfinished: shorter than the length its header states, or, where it
    states none (as video's mostly do), its last transport packet full, as each is but the one
    that ends a PES packet, which stuffing fills out (`_transport_packet_payload`) unless the data
    fills it exactly. Where the file ends in zeros (a download that never got its end), its
    packets are those before them, and one they begin within holds data up to them alone, and
    counts as full. None where the packets do not line up or none of the stream's lies in the
    last `TS_TAIL_BYTES` before those zeros."""
    if (layout := _transport_stream_layout(path)) is None:
        return None
    size, start = layout
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        whole_end = file_size - (file_size - start) % size
        zeros_from = _trailing_zeros_from(file, whole_end)
        whole_end -= (whole_end - zeros_from) // size * size  # to the end of the packet they begin within
        first = max(start, whole_end - TS_TAIL_BYTES // size * size)
        tail = read_at(file, first, whole_end - first)
    zeros_at = zeros_from - first  # within `tail`
    payload_bytes, last_stuffed = 0, None
    for at in range(len(tail) - size + TS_SYNC_AT[size], -1, -size):  # from the end
        packet = tail[at : at + 188]  # without a camcorder's 4 bytes before it, or error correction after
        if packet[0] != 0x47 or ((packet[1] & 0x1F) << 8 | packet[2]) != pid:
            continue
        payload, stuffed = _transport_packet_payload(packet)
        if not payload:  # an adaptation field alone (a clock reference)
            continue
        if at + 188 > zeros_at:  # the packet the zeros begin within
            payload, stuffed = payload[: max(0, len(payload) - (at + 188 - zeros_at))], False
        last_stuffed = stuffed if last_stuffed is None else last_stuffed
        payload_bytes += len(payload)
        if packet[1] & TS_PAYLOAD_START:
            stated = int.from_bytes(payload[4:6], "big") if payload.startswith(b"\x00\x00\x01") else 0
            if stated:
                return payload_bytes < 6 + stated  # its header's 6 bytes, then the length stated
            break
    return None if last_stuffed is None else not last_stuffed


# A GIF's blocks: an extension (timing, looping, comments), a picture, the end
GIF_EXTENSION, GIF_IMAGE, GIF_TRAILER = 0x21, 0x2C, 0x3B


def _gif_colour_table_bytes(flags: int) -> int:
    """The bytes of the colour table that a GIF's screen or picture descriptor's flags announce."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_ends_within_block(path: str) -> bool:
    """Whether an animated GIF ends within a block (a picture's descriptor, colours or data, an
    extension), as a download cut short leaves it: its blocks are walked from its header to its
    trailer. FFmpeg's reader gives a cut file's frames unflagged. One that ends between two
    blocks, without its trailer, is not told: browsers show such a file whole."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        if size < 13:  # within the header and screen descriptor
            return True
        at = 13 + _gif_colour_table_bytes(data[10])
        while at < size:
            if data[at] == GIF_TRAILER:
                return False
            if data[at] == GIF_EXTENSION:
                at += 2  # its label
            elif data[at] == GIF_IMAGE:
                if at + 10 > size:
                    return True
                at += 10 + _gif_colour_table_bytes(data[at + 9]) + 1  # the descriptor, colours, code size
            else:
                return False  # not a block: damage, not a cut
            while at < size and data[at]:  # sub-blocks, each led by its length, up to a zero
                at += 1 + data[at]
            if at >= size:
                return True
            at += 1
        return at > size


# An MPEG program stream's start codes (00 00 01, then one of these): a pack's header, the
# stream's end; the packets of streams of frames (private, as DVDs' sound; MPEG audio; video)
MPEG_PACK, MPEG_END = 0xBA, 0xB9
MPEG_FRAME_STREAMS = frozenset({0xBD, *range(0xC0, 0xF0)})
# bytes read from a program stream's end: its packs are 2 KiB on a DVD, a packet at most 64 KiB
MPEG_TAIL_BYTES = 1 << 18


def program_stream_ends_within_packet(path: str) -> bool:
    """Whether an MPEG program stream (.mpg, .vob, a camcorder's .mod) ends within a packet of
    frames, as its length states it, or within a pack's header: its packs are walked from the
    first pack header in its last bytes from which they follow one another unbroken to the end."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        start = max(file_size - MPEG_TAIL_BYTES, 0)
        tail = read_at(file, start, file_size - start)
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
    its kind), up to the last whose header is whole. One whose size is 0 runs to the end of the
    file (a camera writes its media data so until it stops recording), and one whose size is not
    a size ends the walk."""
    at = 0
    for _ in range(MAX_TOP_BOXES):
        header = read_at(file, at, 16)
        if len(header) < 8:
            return
        size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if size == 1 and len(header) == 16:  # a 64-bit size follows
            size = int.from_bytes(header[8:16], "big")
        if size == 0:
            yield at, file.seek(0, os.SEEK_END) - at, kind
            return
        if size < 8:
            return
        yield at, size, kind
        at += size


# The boxes an MP4 or QuickTime file may begin with, and those that describe its content: the
# index of a recording's frames, the items of a picture (HEIF, AVIF)
MP4_FIRST_BOXES = frozenset({b"ftyp", b"mdat", b"wide", b"free", b"skip"})
MP4_DESCRIPTIONS = frozenset({b"moov", b"meta"})


def mp4_index_missing(path: str | Path) -> bool:
    """Whether a file is an MP4 or QuickTime recording's media data without its index (moov),
    which FFmpeg needs to find its frames: where the index comes last, a recording stopped
    before it was saved, or a download cut short, leaves the file so."""
    with open(path, "rb") as file:
        kinds = [kind for _, _, kind in _mp4_boxes(file)]
    return bool(kinds) and kinds[0] in MP4_FIRST_BOXES and b"mdat" in kinds and not MP4_DESCRIPTIONS & set(kinds)


def mp4_ends_within_media(path: str) -> bool:
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


def mp4_whole_fragments(path: str | Path) -> int:
    """Where an MP4 cut within a fragment's header ends its whole fragments (bytes), else 0."""
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        return next((at for at, size, kind in _mp4_boxes(file) if kind == b"moof" and at + size > file_size), 0)


def read_at(file: BinaryIO, position: int, size: int) -> bytes:
    file.seek(position)
    return file.read(size)
