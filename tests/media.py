"""Test media made on the fly: a face clip animated from skimage's astronaut, and clips with no face."""
from __future__ import annotations

import contextlib
import io
import itertools
import re
import struct
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data


def face_frames(count: int = 40, size: tuple[int, int] = (640, 360)) -> list[np.ndarray]:
    """RGB frames panning and zooming over the astronaut photograph (one frontal face)."""
    return list(iter_face_frames(count, size))


def iter_face_frames(count: int, size: tuple[int, int], period: int | None = None) -> Iterator[np.ndarray]:
    """Face frames one at a time (long clips do not fit in memory); the motion repeats every `period` frames."""
    width, height = size
    photo = data.astronaut()  # 512×512, the face near (260, 130)
    period = period or count
    for i in range(count):
        t = (i % period) / max(1, period - 1)
        zoom = 1.0 + 0.3 * np.sin(np.pi * t)
        crop = int(420 / zoom)
        cx, cy = 230 + int(40 * t), 210
        x0, y0 = max(0, cx - crop // 2), max(0, cy - crop // 2)
        patch = photo[y0 : y0 + crop, x0 : x0 + crop]
        canvas = np.full((height, width, 3), 40, np.uint8)
        side = height
        left = (width - side) // 2 + int(60 * np.sin(2 * np.pi * t))
        canvas[:, left : left + side] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
        yield canvas


def two_face_frames(count: int = 20, size: tuple[int, int] = (960, 360)) -> list[np.ndarray]:
    """Two people side by side: the astronaut and a mirrored copy of her, a little smaller."""
    width, height = size
    frames = []
    for left, right in zip(iter_face_frames(count, (width // 2, height)), iter_face_frames(count, (width // 2, height))):
        mirrored = cv2.resize(right[:, ::-1], None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
        canvas = np.full((height, width, 3), 40, np.uint8)
        canvas[:, : width // 2] = left
        top = (height - mirrored.shape[0]) // 2
        canvas[top : top + mirrored.shape[0], width // 2 : width // 2 + mirrored.shape[1]] = mirrored
        frames.append(canvas)
    return frames


def grid_frames(count: int = 20, rows: int = 2, columns: int = 3, tile: tuple[int, int] = (426, 240)) -> list[np.ndarray]:
    """A video call's grid of people: `rows` × `columns` tiles of the astronaut clip, each
    `tile` (width, height) and a few frames on from the one before."""
    clip = face_frames(count, tile)
    return [
        np.vstack([np.hstack([clip[(i + 3 * (r * columns + c)) % count] for c in range(columns)]) for r in range(rows)])
        for i in range(count)
    ]


def close_up_frames(shifts: Iterable[int] = (0, 10)) -> list[np.ndarray]:
    """The astronaut filmed close in a 450 × 800 portrait frame, from her hair to the badge on her
    suit, moved up by each of `shifts` (pixels of the picture)."""
    image = data.astronaut()
    return [cv2.resize(np.ascontiguousarray(image[k : 450 + k, 114:367]), (450, 800), interpolation=cv2.INTER_CUBIC) for k in shifts]


def parent_and_child_frame() -> np.ndarray:
    """A face and, below it on the body's side, a smaller one: a parent holding a child."""
    head = np.ascontiguousarray(data.astronaut()[0:260, 120:380])
    canvas = np.full((640, 480, 3), 90, np.uint8)
    canvas[0:300, 90:390] = cv2.resize(head, (300, 300), interpolation=cv2.INTER_AREA)
    canvas[330:510, 200:380] = cv2.resize(head, (180, 180), interpolation=cv2.INTER_AREA)
    return canvas


def near_and_far_frames(count: int = 6, far_scale: float = 1.2, size: tuple[int, int] = (1280, 720)) -> list[np.ndarray]:
    """Two people at different distances: the astronaut close up on the left (a face about 220 px
    tall at 720p) and, mirrored, farther away on the right (about 90 px at `far_scale` 1.0, 105 px
    at 1.2), with her suit and its badge in view."""
    width, height = size
    photo = data.astronaut()
    near = cv2.resize(photo, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_AREA)[:height, 625 - width // 4 : 625 + width // 4]
    far = cv2.resize(photo, None, fx=far_scale, fy=far_scale, interpolation=cv2.INTER_AREA)[:, ::-1]
    frames = []
    for i in range(count):
        canvas = np.full((height, width, 3), 40, np.uint8)
        canvas[: near.shape[0], : near.shape[1]] = near
        rows, cols = min(far.shape[0], height - 2 * i), min(far.shape[1], width // 2 - 2 * i)
        canvas[2 * i : 2 * i + rows, width // 2 + 2 * i : width // 2 + 2 * i + cols] = far[:rows, :cols]  # drifting slowly
        frames.append(canvas)
    return frames


def over_blurred_copy(
    frames: list[np.ndarray], size: tuple[int, int], sigma: float
) -> tuple[list[np.ndarray], tuple[int, int, int, int]]:
    """Each frame fitted into a frame of `size` (width, height), over a copy of itself enlarged to
    fill that frame and blurred, as short-video apps repost a landscape video in a portrait frame;
    and where the picture lies, (top, right, bottom, left)."""
    width, height = size
    framed = []
    for frame in frames:
        h, w = frame.shape[:2]
        fit, fill = min(width / w, height / h), max(width / w, height / h)
        picture = cv2.resize(frame, (round(w * fit), round(h * fit)), interpolation=cv2.INTER_AREA)
        copy = cv2.resize(frame, (round(w * fill), round(h * fill)), interpolation=cv2.INTER_LINEAR)
        y, x = (copy.shape[0] - height) // 2, (copy.shape[1] - width) // 2
        canvas = cv2.GaussianBlur(copy[y : y + height, x : x + width], (0, 0), sigma)
        top, left = (height - picture.shape[0]) // 2, (width - picture.shape[1]) // 2
        canvas[top : top + picture.shape[0], left : left + picture.shape[1]] = picture
        framed.append(canvas)
    return framed, (top, left + picture.shape[1], top + picture.shape[0], left)


def turned_about_centre(frame: np.ndarray, degrees: float) -> np.ndarray:
    """The frame turned about its centre, counter-clockwise as shown, as a phone held at a slant
    films; the corners filled by reflection."""
    height, width = frame.shape[:2]
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(frame, rotation, (width, height), borderMode=cv2.BORDER_REFLECT101)


def blank_frames(count: int = 30, size: tuple[int, int] = (320, 240)) -> list[np.ndarray]:
    """Moving coloured shapes, no face."""
    width, height = size
    frames = []
    for i in range(count):
        frame = np.full((height, width, 3), (30, 90, 160), np.uint8)
        cv2.circle(frame, (20 + 8 * i % width, height // 2), 25, (240, 200, 40), -1)
        frames.append(frame)
    return frames


# x264's names for the instruction sets it may use, with Linux's for them (/proc/cpuinfo)
X264_INSTRUCTION_SETS = {
    "MMX2": "sse", "SSE": "sse", "SSE2": "sse2", "SSE3": "pni", "SSSE3": "ssse3", "SSE4.1": "sse4_1",
    "SSE4.2": "sse4_2", "LZCNT": "abm", "AVX": "avx", "FMA3": "fma", "BMI1": "bmi1", "BMI2": "bmi2", "AVX2": "avx2",
}  # fmt: skip


def _x264_without_avx512() -> str | None:
    """x264's `asm` option for the instruction sets this CPU has but AVX-512; None where it has
    none of AVX-512 or does not say (not Linux)."""
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)[1].split())
    except (OSError, TypeError):
        return None
    if not any(flag.startswith("avx512") for flag in flags):
        return None
    return ",".join(name for name, flag in X264_INSTRUCTION_SETS.items() if flag in flags)


def reproducible(stream: av.VideoStream) -> None:
    """An encoder's output follows its threads, and x264's (where not told how many) follow the
    machine's cores, even where told more than one: one thread makes the same file of the same
    frames on any machine like this one, so that the tests meet here what they meet elsewhere.
    x264's AVX-512 code still made its output vary from one encode to the next in one process
    (runs of 25 to 40 encodes of the tests' 40 stamped frames made 2 to 4 different files;
    without AVX-512, 25 of 25 were alike, and one of those), so it is left out. Call it once the
    stream's options are set."""
    stream.codec_context.thread_count = 1
    if stream.codec_context.name == "libx264" and (instruction_sets := _x264_without_avx512()):
        params = [stream.options.get("x264-params", ""), f"asm={instruction_sets}"]
        stream.options = {**stream.options, "x264-params": ":".join(filter(None, params))}
    if stream.codec_context.name == "libx265":  # its thread pool and frame threads follow the cores, its output the pool
        params = [stream.options.get("x265-params", ""), "pools=1:frame-threads=1"]
        stream.options = {**stream.options, "x265-params": ":".join(filter(None, params))}


def write_h264(path: Path, frames: Iterable[np.ndarray], fps: int = 10, preset: str = "medium") -> Path:
    return write_video(path, frames, "libx264", fps, options={"preset": preset})


def write_flat_h264(path: Path, size: tuple[int, int], count: int = 2) -> Path:
    """`count` grey frames of any `size` (width, height) in H.264, made in YUV without an RGB copy:
    frames too large to read cost little to make."""
    width, height = size
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 100
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast", "crf": "45"})
        reproducible(stream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(count):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def damaged_copy(path: Path, to: Path, count: int = 5, seed: int = 0) -> Path:
    """A copy of an MP4 with `count` bytes of its media data (the `mdat` box) overwritten at
    random, as a bad disk or a broken transfer leaves it: its index intact, some pictures broken."""
    data = bytearray(path.read_bytes())
    position = 0
    while position + 8 <= len(data):  # the top-level boxes (no 64-bit sizes in these small files)
        size, kind = struct.unpack(">I4s", bytes(data[position : position + 8]))
        if kind == b"mdat":
            break
        position += size
    else:
        raise ValueError(f"{path} has no media data box")
    rng = np.random.default_rng(seed)
    for offset in rng.integers(position + 8, position + size, count):
        data[offset] ^= int(rng.integers(1, 256))  # never the byte it was
    to.write_bytes(bytes(data))
    return to


def late_stream_flv_copy(path: Path, to: Path) -> Path:
    """A copy of an FLV with its last tag but one made a tag of sound: a stream its header did
    not announce, which FFmpeg meets only when it reads that far (past what it reads on opening)."""
    data = bytearray(path.read_bytes())
    tags, at = [], 13  # after the file's header and the size of the tag before the first
    while at + 11 <= len(data):
        tags.append(at)
        at += 11 + int.from_bytes(data[at + 1 : at + 4], "big") + 4
    data[tags[-2]] = 8  # sound
    data[tags[-2] + 11] = 0x2E  # MP3, 44 kHz, 16 bits, mono
    to.write_bytes(bytes(data))
    return to

def cut_short_copy(path: Path, to: Path, share: float = 0.5) -> Path:
    """The first `share` of a file's bytes, as an unfinished download leaves it."""
    data = path.read_bytes()
    to.write_bytes(data[: round(len(data) * share)])
    return to


def with_last_packet(path: Path, to: Path, data: bytes) -> Path:
    """A copy of a file's video stream (in a container of the same kind) whose last packet, in
    decoding order, holds `data`."""
    with av.open(str(path)) as source, av.open(str(to), "w", format=source.format.name.split(",")[0]) as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        packets = [packet for packet in source.demux(video) if packet.size]
        replaced = av.Packet(data)
        replaced.pts, replaced.dts, replaced.time_base = packets[-1].pts, packets[-1].dts, packets[-1].time_base
        for packet in packets[:-1] + [replaced]:
            packet.stream = stream
            out.mux(packet)
    return to


def undecodable_frame_copy(path: Path, to: Path, packet: int) -> Path:
    """A copy of an MP4 in which the `packet`-th frame (in decoding order) cannot be decoded at
    all: its first NAL unit's length overwritten, as damage in a transfer leaves it. The decoder
    refuses that frame alone; the frames after it decode."""
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    position = packets[packet].pos
    data[position : position + 4] = b"\xff" * 4
    to.write_bytes(bytes(data))
    return to


def damaged_unreferenced_picture_copy(path: Path, to: Path) -> tuple[Path, float]:
    """A copy of an H.264 MP4 with bytes overwritten in the middle of one picture that no other
    refers to (a B-frame's slice whose NAL header says so: nal_ref_idc 0), mid-way through the
    video, such that FFmpeg's decoder, asked to, fails on that picture; and when that picture is
    shown, in seconds from the first frame. Not every such damage is one a decoder can tell (what
    the encoder made, which varies with its threads, decides it): each picture is tried in turn."""
    intact = path.read_bytes()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        tick, first = float(stream.time_base), stream.start_time or 0
    for packet in packets[len(packets) // 2 :]:
        payload, at = bytes(packet), 0
        while at + 4 < len(payload):  # length-prefixed NAL units
            size, header = int.from_bytes(payload[at : at + 4], "big"), payload[at + 4]
            if header & 0x1F == 1 and not header & 0x60:  # a slice of a picture no other refers to
                data, middle = bytearray(intact), packet.pos + at + 4 + size // 2
                data[middle : middle + 8] = bytes(value ^ 0x5A for value in data[middle : middle + 8])
                to.write_bytes(bytes(data))
                if packet.pts in _pictures_failing(to):
                    return to, (packet.pts - first) * tick
            at += 4 + size
    raise ValueError(f"{path} has no picture that no other refers to whose damage a decoder tells")


def _pictures_failing(path: Path) -> set[int]:
    """The times (pts) of the packets that FFmpeg's decoder fails on where asked to fail on damage."""
    failing = set()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # each failure told with its own packet
        stream.codec_context.options = {"err_detect": "explode"}
        for packet in container.demux(stream):
            try:
                packet.decode()
            except av.InvalidDataError:
                failing.add(packet.pts)
    return failing


def write_key_every_10(path: Path, frames: Iterable[np.ndarray]) -> Path:
    """H.264 with a key frame every 10 frames, so that the damage in a stretch ends soon after it."""
    return write_video(path, frames, "libx264", options={"x264-params": "keyint=10:min-keyint=10:scenecut=0"})


def write_said_old_x264(path: Path, frames: Iterable[np.ndarray], key_every: int = 20) -> Path:
    """4:4:4 H.264 whose first picture says an x264 build before 151 made it, as FaceForensics++'s
    clips say (core 148), for which FFmpeg's decoder works around that build's bugs: where it is
    told the build, it decodes these pictures (which today's x264 made) otherwise than where it is not."""
    write_video(path, frames, "libx264", pix_fmt="yuv444p", options={"g": str(key_every)})
    data = path.read_bytes()
    stated = re.search(rb"x264 - core \d+", data)
    path.write_bytes(data.replace(stated[0], b"x264 - core 148", 1))  # as long: the SEI's size stays
    return path


def zeroed_stretch_copy(path: Path, to: Path, first: int, last: int) -> Path:
    """A copy of an MP4 whose frames `first` to `last` (in decoding order) are zeros, as an
    unfinished download leaves the parts it never received in a file written in parts."""
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    start, end = packets[first].pos, packets[last].pos + packets[last].size
    data[start:end] = bytes(end - start)
    to.write_bytes(bytes(data))
    return to


class _Unseekable(io.RawIOBase):
    """A file written straight on, as to a network or a pipe: a muxer cannot go back in it."""

    def __init__(self, file: io.BufferedWriter):
        self._file = file
        self.name = file.name  # the container's format follows its suffix

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._file.write(data)


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    codec: str,
    fps: int = 10,
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    times_s: Iterable[float] | None = None,
    container_options: dict | None = None,
    pixel_aspect: Fraction | None = None,
    streamed: bool = False,
) -> Path:
    """Encode RGB frames with one of FFmpeg's encoders; the container follows the file's suffix.
    `times_s`: when each frame is shown, for a frame rate that varies (else one frame each 1/`fps` s).
    `pixel_aspect`: the stored pixels' width over their height as a player shows them.
    `streamed`: written straight on, as a browser's recorder writes a WebM: no length, no index."""
    frames = iter(frames)
    first = next(frames)
    with contextlib.ExitStack() as stack:
        target = _Unseekable(stack.enter_context(path.open("wb"))) if streamed else str(path)
        out = stack.enter_context(av.open(target, "w", options=container_options or {}))
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = pix_fmt
        if pixel_aspect is not None:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        stream.options = options or {}
        reproducible(stream)
        if times_s is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 90000)
            times_s = iter(times_s)
        for frame in itertools.chain([first], frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if times_s is not None:
                picture.pts, picture.time_base = round(next(times_s) * 90000), stream.time_base
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_animated_webp(path: Path, frames: Iterable[np.ndarray], durations_ms: list[int], lossless: bool = True) -> Path:
    """An animated WebP of RGB or RGBA frames, each shown its duration, written by libwebp through
    Pillow, which keeps only the part of a frame that changes (as sticker and GIF site makers do)."""
    from PIL import Image

    pictures = [Image.fromarray(frame) for frame in frames]
    pictures[0].save(path, format="WEBP", save_all=True, append_images=pictures[1:], duration=durations_ms, loop=0, lossless=lossless)
    return path


def write_trimmed(path: Path, frames: list[np.ndarray], first_shown: int, key_every: int = 20, fps: int = 10) -> Path:
    """H.264 MP4 cut without re-encoding, as phones trim a clip and `ffmpeg -ss … -c copy` cuts
    one: it keeps the frames from the key frame before `first_shown`, and an edit list hides
    those before it (the header's frame count still counts them)."""
    source = write_video(path.with_name("uncut.mp4"), frames, "libx264", fps, options={"g": str(key_every), "sc_threshold": "0", "bf": "0"})
    first_kept = first_shown - first_shown % key_every
    with av.open(str(source)) as uncut, av.open(str(path), "w") as out:
        stream = uncut.streams.video[0]
        trimmed = out.add_stream_from_template(stream)
        ticks = round(1 / (fps * stream.time_base))  # of the time base, a frame
        for packet in uncut.demux(stream):
            if packet.pts is None or packet.pts < first_kept * ticks:
                continue
            packet.pts -= first_shown * ticks
            packet.dts -= first_shown * ticks
            packet.stream = trimmed
            out.mux(packet)
    return path


def write_behind_a_still_track(path: Path, frames: list[np.ndarray], still_frames: int = 1, fps: int = 10) -> Path:
    """H.264 video stored as a file's second video stream, behind a short track of a still grey
    picture (MJPEG; a preview or cover that some editors and downloaders put first)."""
    with av.open(str(path), "w") as out:
        still = out.add_stream("mjpeg", rate=1)
        still.width, still.height, still.pix_fmt = 320, 320, "yuvj420p"
        stream = out.add_stream("libx264", rate=fps)
        reproducible(stream)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        grey = av.VideoFrame.from_ndarray(np.full((320, 320, 3), 200, np.uint8), format="rgb24")
        for _ in range(still_frames):
            for packet in still.encode(grey):
                out.mux(packet)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for encoder in (still, stream):
            for packet in encoder.encode():
                out.mux(packet)
    return path


def write_sound(path: Path, seconds: float = 1.0, rate: int = 44100, cover: np.ndarray | None = None) -> Path:
    """A recording of a 440 Hz tone and nothing else (AAC; the container follows the suffix), or,
    with a `cover` picture (RGB), an MP3 that carries it as its album art, as songs do."""
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac" if cover is None else "libmp3lame", rate=rate)
        if cover is not None:
            art = out.add_stream("mjpeg", rate=1)
            art.height, art.width = cover.shape[:2]
            art.pix_fmt, art.disposition = "yuvj420p", av.stream.Disposition.attached_pic
            for packet in [*art.encode(av.VideoFrame.from_ndarray(cover, format="rgb24")), *art.encode()]:
                out.mux(packet)
        for start in range(0, len(tone), 1024):
            samples = av.AudioFrame.from_ndarray(tone[None, start : start + 1024].copy(), format="fltp", layout="mono")
            samples.sample_rate = rate
            for packet in stream.encode(samples):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_with_silence(path: Path, frames: list[np.ndarray], codec: str, fps: int = 10, sound_codec: str = "pcm_s16le") -> Path:
    """Video beside a silent sound track, by default PCM in Matroska (as a camera's footage
    remuxed keeps it): between one frame and the next lie that frame's 4,800 samples of zeros (19 KB)."""
    rate, per_frame = 48000, 48000 // fps
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=fps)
        reproducible(video)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = out.add_stream(sound_codec, rate=rate, layout="stereo")
        for index, frame in enumerate(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 2 * per_frame), np.int16), format="s16", layout="stereo")
            samples.sample_rate, samples.pts = rate, index * per_frame
            for packet in sound.encode(samples):
                out.mux(packet)
        for encoder in (video, sound):
            for packet in encoder.encode():
                out.mux(packet)
    return path


BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])


def hdr_code_values(frame: np.ndarray, transfer: str) -> np.ndarray:
    """The 16-bit BT.2020 code values an HDR camera (HLG or PQ) stores for a scene that SDR video
    shows as `frame` (RGB): SDR white at 75% HLG signal, or 203 nits PQ (BT.2408)."""
    linear = (frame / 255) ** 2.4 @ BT709_TO_BT2020.T  # SDR white = 1
    if transfer == "hlg":
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = linear * 0.2647
        signal = np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-12)) + c)
    else:
        m1, m2, c1, c2, c3 = 2610 / 16384, 2523 / 4096 * 128, 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        y = (linear * 203 / 10000) ** m1
        signal = ((c1 + c2 * y) / (1 + c3 * y)) ** m2
    return np.round(np.clip(signal, 0, 1) * 65535).astype(np.uint16)


def write_hdr_video(path: Path, frames: Iterable[np.ndarray], transfer: str, fps: int = 10) -> Path:
    """10-bit HEVC tagged as an HDR phone tags it (BT.2020; HLG as iPhones record, or PQ)."""
    from av.video.reformatter import Colorspace

    frames = list(frames)
    curve = {"hlg": "arib-std-b67", "pq": "smpte2084"}[transfer]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p10le"
        stream.options = {"x265-params": f"colorprim=bt2020:transfer={curve}:colormatrix=bt2020nc:log-level=error"}
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(hdr_code_values(frame, transfer), format="rgb48le")
            for packet in stream.encode(picture.reformat(format="yuv420p10le", dst_colorspace=Colorspace.BT2020)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# A phone's clip whose frame rate halves half-way: 5 s at 30 frames a second, then 5 s at 15.
VARIABLE_RATE_TIMES_S = [i / 30 for i in range(150)] + [5 + i / 15 for i in range(75)]
STAMP_BITS, STAMP_SIDE = 8, 24


def stamp_number(frame: np.ndarray, number: int) -> np.ndarray:
    """A copy of the frame with `number` (0–255) written in its top row as black and white squares,
    which survive compression, so that a decoded frame tells which one it is."""
    stamped = frame.copy()
    for bit in range(STAMP_BITS):
        stamped[:STAMP_SIDE, bit * STAMP_SIDE : (bit + 1) * STAMP_SIDE] = 255 * ((number >> bit) & 1)
    return stamped


def read_stamp(frame: np.ndarray) -> int:
    squares = (frame[4 : STAMP_SIDE - 4, bit * STAMP_SIDE + 4 : (bit + 1) * STAMP_SIDE - 4].mean() for bit in range(STAMP_BITS))
    return sum(1 << bit for bit, value in enumerate(squares) if value > 127)


def turn_quarter_clockwise_on_display(path: Path) -> Path:
    """Write into the MP4 track header the matrix that turns the picture 90° clockwise on display,
    as a phone does for a portrait video it stores sideways."""
    data = bytearray(path.read_bytes())
    header = data.index(b"tkhd") + 4
    assert data[header] == 0, "a version-0 track header"
    matrix = header + 4 + 20 + 8 + 8  # version and flags; times, id and duration; reserved; layer to volume
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -1 << 16, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(data)
    return path


def write_mp4v(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def with_caption(frame: np.ndarray, text: str, centre_x: int, baseline_y: int, width: int) -> np.ndarray:
    """The frame with `text` burnt in as apps burn captions in: white letters outlined in black,
    `width` px wide, centred on `centre_x`, standing on `baseline_y`."""
    frame = frame.copy()
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = width / cv2.getTextSize(text, font, 1.0, 2)[0][0]
    origin = (centre_x - width // 2, baseline_y)
    cv2.putText(frame, text, origin, font, scale, (0, 0, 0), max(4, round(scale * 8)), cv2.LINE_AA)
    cv2.putText(frame, text, origin, font, scale, (255, 255, 255), max(2, round(scale * 3)), cv2.LINE_AA)
    return frame
