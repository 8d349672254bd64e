"""Training-time degradations and self-blended fakes, applied alike to every frame of a sequence."""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from .container import VideoError, demux, frame_rate, open_container, pixel_aspect, video_streams
from .decoders import resized, shown_size, upright
from .faces import LANDMARKS
from .images import decode_jpeg, encode_jpeg

# Pixel amounts below (blur, shifts, mask edges) are drawn for 112-px crops and scaled to the crop's size.
REFERENCE_SIZE = 112


def pixel_scale(image: np.ndarray) -> float:
    """How many of this crop's pixels one pixel of a 112-px crop spans."""
    return image.shape[1] / REFERENCE_SIZE


# Encoder options that give the same file on every run (the re-encodes are scored, so every run
# must score the same pixels). x264 runs its C code on one thread: with its assembly code, or
# with several threads, re-encodes of one clip differed from run to run (with both, five runs
# gave five files for a 1280×720 clip brought down to 852×480), and so did the scores on them;
# a clip takes 1.3–1.8× as long. SVT-AV1 gave the same file on every run as it is, libvpx's VP9
# on one thread (in MP4: WebM files carry a random id). VP9 needs no bit rate for `crf` to rule.
ENCODER_OPTIONS = {
    "libx264": {"preset": "veryfast", "threads": "1", "x264-params": "asm=0"},
    "libsvtav1": {"preset": "8"},
    "libvpx-vp9": {"b": "0", "deadline": "realtime", "cpu-used": "8", "threads": "1"},
}


def grey(image: np.ndarray) -> np.ndarray:
    """An RGB picture in black and white."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


# The sepia filter of photo and video apps (CSS's sepia(), from Microsoft's): old film's brown.
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def sepia(image: np.ndarray) -> np.ndarray:
    """An RGB picture toned sepia: black and white in shades of brown."""
    return np.clip(image.astype(np.float32) @ SEPIA.T, 0, 255).astype(np.uint8)


# A face in a dim room: a quarter of the light (two stops under) reaching the sensor, and the
# sensor's noise that the camera's gain brings up with the picture (standard deviation in levels).
DIM_LIGHT = 0.25
DIM_NOISE = 6.0


def _relit(levels: np.ndarray, light: float) -> np.ndarray:
    """sRGB levels (0–255, as floats) with `light` times as much light behind them (in linear light)."""
    value = levels / 255
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4) * light
    return 255 * np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


DIM_LEVELS = _relit(np.arange(256), DIM_LIGHT)


def dim(image: np.ndarray) -> np.ndarray:
    """An RGB picture as filmed in a dim room (DIM_LIGHT, DIM_NOISE). The noise is drawn from the
    picture's own bytes, so a re-encode gives the same file on every run."""
    return _dim_with_noise(image).astype(np.uint8)


def gained(image: np.ndarray) -> np.ndarray:
    """An RGB picture as filmed in a dim room by a camera that brought the exposure back up with
    its gain: as bright as in good light, with the dim room's sensor noise (`dim`) brought up
    with it, 1.8× in the mid-tones and up to 4× in the shadows."""
    return np.clip(_relit(_dim_with_noise(image), 1 / DIM_LIGHT), 0, 255).astype(np.uint8)


def _dim_with_noise(image: np.ndarray) -> np.ndarray:
    """`image` dimmed (DIM_LIGHT) with the sensor's noise (DIM_NOISE), as floats clipped at black
    and white; the noise is drawn from the picture's own bytes."""
    noise = np.random.default_rng(zlib.crc32(image.tobytes())).normal(0.0, DIM_NOISE, image.shape)
    return np.clip(DIM_LEVELS[image] + noise, 0, 255)


TONES = {"grey": grey, "sepia": sepia, "dim": dim, "gained": gained}


def reencode(
    src: str | Path, dst: str | Path, crf: int = 40, max_lines: int | None = 480, codec: str = "libx264", tone: str | None = None
) -> None:
    """Re-encode a video at `crf` with `codec` (libx264, libsvtav1 or libvpx-vp9), upright, and
    downscaled to `max_lines` on its shorter side (480p: 854×480 landscape, 480×854 portrait)
    when larger: the compression of uploads, the same file on every run (in MP4). With codec
    "gif" or "webp", an animated GIF or WebP as GIF makers and sites write one (`write_gif`,
    `write_webp`; `crf` unused). With a `tone`
    (TONES), in black and white ("grey"), sepia, or as filmed in a dim room ("dim")."""
    with open_container(src) as inp:
        stream_in = video_streams(inp)[0]
        rate = frame_rate(stream_in) or Fraction(25)
        decoded = (frame for packet in demux(inp, stream_in) for frame in packet.decode())
        frames = _upright_frames(decoded, max_lines, pixel_aspect(stream_in))
        if tone:
            frames = map(TONES[tone], frames)
        if codec in ANIMATED_PICTURE_WRITERS:
            ANIMATED_PICTURE_WRITERS[codec](frames, dst, rate)
            return
        with av.open(str(dst), "w") as out:
            stream = None
            for image in frames:
                if stream is None:
                    stream = out.add_stream(codec, rate=rate)
                    stream.height, stream.width = image.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), **ENCODER_OPTIONS[codec]}
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
            if stream is None:
                raise VideoError(f"{src}: no frame to re-encode")
            for packet in stream.encode():
                out.mux(packet)


def _upright_frames(decoded: Iterator[av.VideoFrame], max_lines: int | None, aspect: float = 1.0) -> Iterator[np.ndarray]:
    """RGB pictures as they are displayed, with square pixels (`aspect`: the stored ones'), all
    of the first's size, no more than `max_lines` on its shorter side."""
    size = None
    for frame in decoded:
        # The rotation and the pixels' shape are applied, not copied: the file written states neither.
        image = upright(frame.to_ndarray(format="rgb24"), frame.rotation)
        size = size or reencoded_size(*shown_size(image.shape[1], image.shape[0], aspect, frame.rotation % 180 != 0), max_lines)
        yield resized(image, size)


GIF_FPS = 10  # GIF makers' usual rate, and so that of the animated WebP that GIF sites serve
GIF_PALETTE_FRAMES = 8  # the palette is fitted to the colours of the GIF's first frames
WEBP_QUALITY = 75  # lossy, libwebp's default quality, as cwebp and FFmpeg write one


def _at_animation_rate(frames: Iterator[np.ndarray], rate: Fraction) -> tuple[Iterator[np.ndarray], int]:
    """The frames an animated picture of a video shown at `rate` keeps (about GIF_FPS a second),
    and how long each is shown, in milliseconds."""
    step = max(1, round(rate / GIF_FPS))
    return itertools.islice(frames, 0, None, step), round(1000 * step / rate)


def write_gif(frames: Iterator[np.ndarray], dst: str | Path, rate: Fraction) -> None:
    """An animated GIF of RGB `frames` shown at `rate` a second, as GIF makers write one: about
    GIF_FPS frames a second, one palette of 256 colours, Floyd–Steinberg dithering. The same file
    on every run."""
    kept, duration = _at_animation_rate(frames, rate)
    first = list(itertools.islice(kept, GIF_PALETTE_FRAMES))
    if not first:
        raise VideoError(f"{dst}: no frame to write")
    palette = Image.fromarray(np.concatenate(first)).quantize(256, method=Image.Quantize.MEDIANCUT)
    pictures = (
        Image.fromarray(image).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        for image in itertools.chain(first, kept)
    )
    head = next(pictures)
    head.save(dst, format="GIF", save_all=True, append_images=pictures, duration=duration, loop=0)


def write_webp(frames: Iterator[np.ndarray], dst: str | Path, rate: Fraction) -> None:
    """An animated WebP of RGB `frames` shown at `rate` a second, as GIF sites serve one: about
    GIF_FPS frames a second, lossy at WEBP_QUALITY, each frame keeping only what changed. The
    same file on every run."""
    kept, duration = _at_animation_rate(frames, rate)
    pictures = [Image.fromarray(image) for image in kept]
    if not pictures:
        raise VideoError(f"{dst}: no frame to write")
    pictures[0].save(
        dst, format="WEBP", save_all=True, append_images=pictures[1:], duration=duration, loop=0, quality=WEBP_QUALITY, method=4
    )


ANIMATED_PICTURE_WRITERS = {"gif": write_gif, "webp": write_webp}


def reencoded_size(width: int, height: int, max_lines: int | None) -> tuple[int, int]:
    """Width and height with the shorter side at most `max_lines`, both even (as yuv420p needs)."""
    shorter = min(width, height)
    if max_lines and shorter > max_lines:
        width, height = round(width * max_lines / shorter), round(height * max_lines / shorter)
    return width - width % 2, height - height % 2


@dataclass
class Degradation:
    """One random draw of the photometric and compression changes for a whole sequence."""

    flip: bool
    gain: np.ndarray  # per-channel multiplier
    bias: float
    contrast: float
    blur_sigma: float
    noise_sigma: float
    downscale: float
    jpeg_quality: int | None
    # A square hidden behind the crop's mean colour (cutout): (top, left, side) as fractions of the crop.
    erase: tuple[float, float, float] | None = None
    # Colour taken away (black and white footage), after the noise, which would tint it again.
    grey: bool = False

    @classmethod
    def draw(cls, rng: np.random.Generator, erase_prob: float = 0.0, grey_prob: float = 0.0) -> "Degradation":
        """One draw; erasing and grey are drawn only when asked for, so the default draws stay as they were."""
        degradation = cls(
            flip=bool(rng.random() < 0.5),
            gain=rng.uniform(0.9, 1.1, 3),
            bias=float(rng.uniform(-20, 20)),
            contrast=float(rng.uniform(0.8, 1.2)),
            blur_sigma=float(rng.uniform(0.3, 1.2)) if rng.random() < 0.25 else 0.0,
            noise_sigma=float(rng.uniform(1, 6)) if rng.random() < 0.2 else 0.0,
            downscale=float(rng.uniform(0.4, 0.9)) if rng.random() < 0.4 else 1.0,
            jpeg_quality=int(rng.integers(25, 90)) if rng.random() < 0.6 else None,
        )
        if erase_prob and rng.random() < erase_prob:
            side = float(rng.uniform(0.2, 0.4))
            degradation.erase = (float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side)), side)
        if grey_prob and rng.random() < grey_prob:
            degradation.grey = True
        return degradation

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = image.astype(np.float32)
        mean = out.mean()
        out = (out - mean) * self.contrast + mean + self.bias
        out = np.clip(out * self.gain, 0, 255)
        if self.blur_sigma:
            out = cv2.GaussianBlur(out, (0, 0), self.blur_sigma * pixel_scale(out))
        if self.noise_sigma:
            out = np.clip(out + rng.normal(0, self.noise_sigma, out.shape), 0, 255)
        if self.erase:
            height, width = out.shape[:2]
            top, left, side = self.erase
            rows, cols = slice(round(top * height), round((top + side) * height)), slice(round(left * width), round((left + side) * width))
            out[rows, cols] = out.mean(axis=(0, 1))
        out = out.astype(np.uint8)
        if self.grey:
            out = grey(out)
        size = out.shape[1], out.shape[0]
        if self.downscale < 1.0:
            small = (max(8, int(size[0] * self.downscale)), max(8, int(size[1] * self.downscale)))
            out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_AREA), size, interpolation=cv2.INTER_LINEAR)
        if self.jpeg_quality is not None:
            out = decode_jpeg(encode_jpeg(out, self.jpeg_quality))
        return out[:, ::-1] if self.flip else out


# Points of a face in `faces.face_landmarks_points` order.
_JAW_BELOW_EYES = slice(2, 15)
_BROWS = slice(17, 27)
_BELOW_BROWS = slice(27, None)  # nose, eyes, lips
_NOSE_TIP = slice(30, 36)
_LIPS = slice(48, None)
# Blend regions (SBI's reference code varies its mask alike): the whole face, the face with its
# forehead, the inner face without the jaw line (where expression re-rendering changes it), and
# the face below the eyes (mouth and jaw).
BLEND_REGIONS = ("face", "forehead", "inner", "lower")


def _region_points(landmarks: np.ndarray, region: str) -> np.ndarray:
    if len(landmarks) < LANDMARKS or region == "face":
        return landmarks
    if region == "forehead":
        nose_length = landmarks[30] - landmarks[27]
        return np.concatenate([landmarks, landmarks[_BROWS] - 0.8 * nose_length])
    if region == "inner":
        return np.concatenate([landmarks[_BROWS], landmarks[_BELOW_BROWS]])
    if region == "lower":
        return np.concatenate([landmarks[_JAW_BELOW_EYES], landmarks[_NOSE_TIP], landmarks[_LIPS]])
    raise ValueError(f"unknown blend region {region!r}")


def face_mask(shape: tuple[int, int], landmarks: np.ndarray, region: str = "face") -> np.ndarray:
    """Float mask of a face region: the convex hull of its landmarks, or a central ellipse without them."""
    mask = np.zeros(shape, np.float32)
    points = _region_points(landmarks, region)
    if len(points) >= 3:
        cv2.fillConvexPoly(mask, cv2.convexHull(points.astype(np.int32)), 1.0)
    if mask.sum() < 0.05 * mask.size:
        mask[:] = 0
        h, w = shape
        cv2.ellipse(mask, (w // 2, int(h * 0.55)), (int(w * 0.3), int(h * 0.36)), 0, 0, 360, 1.0, -1)
    return mask


@dataclass
class SelfBlend:
    """Self-blended image parameters (Shiohara & Yamasaki 2022), drawn once per sequence."""

    source_gain: np.ndarray
    source_bias: float
    sharpen: float  # >0 sharpens the source, <0 blurs it
    scale: float
    shift: tuple[float, float]
    erode: int  # >0 shrinks, <0 grows the mask
    soften: int  # blur kernel for the mask edge
    opacity: float
    region: str = "face"

    @classmethod
    def draw(cls, rng: np.random.Generator, regions: tuple[str, ...] = ("face",)) -> "SelfBlend":
        """One draw; the region is drawn only when there is a choice, so the default draws stay as they were."""
        return cls(
            source_gain=rng.uniform(0.85, 1.15, 3),
            source_bias=float(rng.uniform(-15, 15)),
            sharpen=float(rng.uniform(-1.0, 1.0)),
            scale=float(rng.uniform(0.94, 1.06)),
            shift=(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))),
            erode=int(rng.integers(-6, 7)),
            soften=int(rng.choice([3, 5, 9, 15, 21])),
            opacity=float(rng.choice([0.5, 0.75, 1.0, 1.0, 1.0])),
            region=str(rng.choice(regions)) if len(regions) > 1 else regions[0],
        )

    def apply(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        unit = pixel_scale(image)
        source = np.clip(image.astype(np.float32) * self.source_gain + self.source_bias, 0, 255)
        if self.sharpen > 0:
            source = np.clip(source + self.sharpen * (source - cv2.GaussianBlur(source, (0, 0), 1.5 * unit)), 0, 255)
        elif self.sharpen < 0:
            source = cv2.GaussianBlur(source, (0, 0), (-self.sharpen + 0.3) * unit)
        warp = cv2.getRotationMatrix2D((w / 2, h / 2), 0, self.scale)
        warp[:, 2] += np.multiply(self.shift, unit)
        source = cv2.warpAffine(source, warp, (w, h), borderMode=cv2.BORDER_REFLECT)
        mask = face_mask((h, w), landmarks, self.region)
        erode = round(abs(self.erode) * unit)
        if erode:
            kernel = np.ones((erode, erode), np.uint8)
            mask = cv2.erode(mask, kernel) if self.erode > 0 else cv2.dilate(mask, kernel)
        soften = 2 * round(self.soften * unit / 2 - 0.5) + 1  # odd, as GaussianBlur needs
        mask = cv2.GaussianBlur(mask, (soften, soften), 0)[..., None] * self.opacity
        return (source * mask + image.astype(np.float32) * (1 - mask)).astype(np.uint8)


# Points of a face in `faces.face_landmarks_points` order, for glasses.
_RIGHT_EAR, _LEFT_EAR = 0, 16
_EYES = (slice(36, 42), slice(42, 48))


@dataclass
class Glasses:
    """A pair of spectacles drawn over the eyes, one draw per sequence.

    Real people wearing glasses were called FAKE far more often than others; drawn on real clips,
    these turned most of them FAKE: a frame's edges around the eyes look like a blend's seam.
    Drawn alike on real and fake sequences, they are meant to say nothing either way."""

    width: float  # lens width, in eye widths
    height: float  # lens height, in eye widths
    thickness: float  # rim, in pixels of a 112-px crop
    colour: tuple[int, int, int]
    tint: float  # how much the lenses darken, 0–1
    round_lenses: bool

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Glasses":
        grey = rng.uniform(10, 90)
        colour = np.clip(grey + rng.uniform(-15, 15, 3), 0, 255)
        if rng.random() < 0.25:  # a metal rim
            colour = rng.uniform(120, 200) * np.array([1.0, 1.0, 0.85])
        return cls(
            width=float(rng.uniform(1.5, 1.9)),
            height=float(rng.uniform(0.9, 1.3)),
            thickness=float(rng.uniform(0.8, 2.5)),
            colour=tuple(int(c) for c in colour),
            tint=float(rng.uniform(0.0, 0.25)) if rng.random() < 0.5 else 0.0,
            round_lenses=bool(rng.random() < 0.5),
        )

    def _lens(self, eye: np.ndarray) -> np.ndarray:
        """Outline of the lens over one eye's six landmarks."""
        across = eye[3] - eye[0]
        eye_width = float(np.hypot(*across))
        angle = float(np.degrees(np.arctan2(across[1], across[0])))
        centre = eye.mean(0) - (0, 0.1 * eye_width)
        half = (max(2, round(eye_width * self.width / 2)), max(2, round(eye_width * self.height / 2)))
        if self.round_lenses:
            return cv2.ellipse2Poly(tuple(int(v) for v in centre.round()), half, round(angle), 0, 360, 10)
        return cv2.boxPoints((tuple(centre), (2 * half[0], 2 * half[1]), angle)).round().astype(np.int32)

    def apply(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        if len(landmarks) < LANDMARKS or not landmarks.any():  # no landmarks found: nothing to place them by
            return image
        lenses = [self._lens(landmarks[eye]) for eye in _EYES]
        out = image.copy()
        if self.tint:
            inside = np.zeros(image.shape[:2], np.uint8)
            cv2.fillPoly(inside, lenses, 1)
            inside = inside.astype(bool)
            out[inside] = (out[inside] * (1 - self.tint)).astype(np.uint8)
        thickness = max(1, round(self.thickness * pixel_scale(image)))
        cv2.polylines(out, lenses, True, self.colour, thickness, cv2.LINE_AA)
        (right, left), ears = lenses, landmarks[[_RIGHT_EAR, _LEFT_EAR]].round().astype(int)
        for start, end in (
            (right[right[:, 0].argmax()], left[left[:, 0].argmin()]),  # the bridge
            (right[right[:, 0].argmin()], ears[0]),  # the arms, to the ears
            (left[left[:, 0].argmax()], ears[1]),
        ):
            cv2.line(out, tuple(int(v) for v in start), tuple(int(v) for v in end), self.colour, thickness, cv2.LINE_AA)
        return out
