"""Training data: manifests, identity-disjoint splits, and a cache of face crops.

Crops are made by the same frame sampling and face cropping the detector uses, so the
network sees at training time exactly what it sees when serving.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .augment import reencode
from .faces import (
    LANDMARKS,
    UPRIGHT_FROM_DEGREES,
    crop_face,
    detect_faces_in_frames,
    expand_box,
    face_landmarks_points,
    track_faces,
    upright_rotation,
)
from .processes import cores_each, spawn_pool, start_worker
from .video import VideoError, read_frames, videos_in_folder

log = logging.getLogger(__name__)

class Reencode(NamedTuple):
    """How a quality re-encodes a clip (`augment.reencode`'s arguments)."""

    crf: int
    max_lines: int  # on the shorter side
    codec: str = "libx264"
    tone: str | None = None  # augment.TONES: in black and white, sepia, dim, or dim with the gain up


# name → how the clip is re-encoded; None keeps the file as it is.
QUALITIES: dict[str, Reencode | None] = {
    "orig": None,
    "crf40_480p": Reencode(40, 480),  # the hard validation: like FF++ c40, and a phone-sized upload
    "crf32_360p": Reencode(32, 360),
    # lightly compressed but small: faces of about 50–100 px, to see how face size alone tells
    "crf23_360p": Reencode(23, 360),
    "crf23_240p": Reencode(23, 240),
    # AV1, as video sites serve it and newer phones record it (SVT-AV1): blur and ringing rather
    # than H.264's blocks, which training never showed
    "av1_crf45_480p": Reencode(45, 480, "libsvtav1"),
    "vp9_crf45_480p": Reencode(45, 480, "libvpx-vp9"),  # YouTube's other codec, and what browsers record
    # an animated GIF, as clips are shared in chats and on forums: 256 colours, dithered, 10 frames a second
    "gif_480p": Reencode(0, 480, "gif"),
    # an animated WebP, as GIF sites serve one in place of the GIF and stickers are made: lossy, 10 frames a second
    "webp_480p": Reencode(0, 480, "webp"),
    # black and white, as old footage, night-vision cameras and filters show faces; else as uploads are compressed
    "bw_crf23_480p": Reencode(23, 480, tone="grey"),
    # sepia, as photo and video apps' old-film filters tone it; else as bw_crf23_480p
    "sepia_crf23_480p": Reencode(23, 480, tone="sepia"),
    # a face filmed in a dim room: two stops under, with the sensor noise brought up; else as bw_crf23_480p
    "dim_crf23_480p": Reencode(23, 480, tone="dim"),
    # the same dim room filmed by a camera that brought the exposure back up: bright, but grainy
    "gained_crf23_480p": Reencode(23, 480, tone="gained"),
}
# Bumped whenever face cropping or the re-encode changes what a cached crop holds, so that crops
# cut by earlier code are never mixed with new ones. 1: x264's C code on one thread (2026-11-27).
# 2: re-encodes upright, 480p on the shorter side (2026-11-28; the same files for landscape
# clips stored upright, as all of FF++'s are).
CROPS_VERSION = 2


@dataclass
class Clip:
    path: str
    label: str  # REAL or FAKE
    method: str = ""
    group: str = ""  # identity ids, "_"-separated

    @property
    def key(self) -> str:
        return hashlib.sha1(self.path.encode()).hexdigest()[:16]

    @property
    def identities(self) -> list[str]:
        return [part for part in self.group.split("_") if part] or [self.path]


def manifest_base(source: str | Path, root: str | Path | None = None) -> Path:
    """The folder a manifest's clip paths are relative to: `root`, else the CSV's folder (or the folder itself)."""
    source = Path(source)
    return Path(root) if root else (source.parent if source.is_file() else source)


def shown_path(clip: Clip, source: str | Path, root: str | Path | None = None) -> str:
    """The clip's path as the manifest gives it, for reports: no machine's folders, and unique
    (fakes of one pair of people made by different methods share a file name)."""
    return os.path.relpath(clip.path, manifest_base(source, root))


def read_manifest(source: str | Path, root: str | Path | None = None) -> list[Clip]:
    """Clips from a CSV (`path,label[,method,group|source_ids]`) or a folder with real/ and fake/."""
    source = Path(source)
    base = manifest_base(source, root)
    clips = []
    if source.is_dir():
        for label in ("real", "fake"):
            for path in videos_in_folder(source / label):
                clips.append(Clip(str(path), label.upper(), "original" if label == "real" else "unknown", path.stem))
        if not clips:
            raise ValueError(f"no videos in {source}/real or {source}/fake")
        return clips
    with open(source, newline="") as handle:
        for row in csv.DictReader(handle):
            label = row["label"].strip().upper()
            if label not in ("REAL", "FAKE"):
                raise ValueError(f"bad label {row['label']!r} in {source}")
            path = Path(row["path"])
            clips.append(
                Clip(
                    str(path if path.is_absolute() else base / path),
                    label,
                    row.get("method") or ("original" if label == "REAL" else "unknown"),
                    row.get("group") or row.get("source_ids") or path.stem,
                )
            )
    if not clips:
        raise ValueError(f"{source} lists no clips")
    return clips


def identity_components(clips: list[Clip]) -> list[int]:
    """Component number per clip: clips sharing any identity, directly or through others, share one."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for clip in clips:
        first, *rest = clip.identities
        for other in rest:
            parent[find(other)] = find(first)
    roots = sorted({find(c.identities[0]) for c in clips})
    number = {r: i for i, r in enumerate(roots)}
    return [number[find(c.identities[0])] for c in clips]


def split_by_identity(clips: list[Clip], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Clip], list[Clip]]:
    """Train and validation clips with no identity in both, every method represented in validation if possible."""
    components = identity_components(clips)
    order = np.random.default_rng(seed).permutation(max(components) + 1)
    target = val_fraction * len(clips)
    val_components: set[int] = set()
    methods = {c.method for c in clips}
    for comp in order:
        in_val = [c for c, k in zip(clips, components) if k in val_components]
        if len(in_val) >= target and methods <= {c.method for c in in_val}:
            break
        if len(in_val) >= 1.5 * target:
            break
        val_components.add(int(comp))
    train = [c for c, k in zip(clips, components) if k not in val_components]
    val = [c for c, k in zip(clips, components) if k in val_components]
    return train, val


def identity_folds(clips: list[Clip], folds: int, seed: int = 0) -> list[int]:
    """Fold number per clip for cross-validation: whole identity groups per fold, folds of near equal size."""
    components = identity_components(clips)
    sizes = np.bincount(components)
    if not 2 <= folds <= len(sizes):
        raise ValueError(f"{folds} folds asked for, but the clips form {len(sizes)} identity groups")
    shuffled = np.random.default_rng(seed).permutation(len(sizes))
    load = np.zeros(folds)
    fold_of: dict[int, int] = {}
    for comp in sorted(shuffled, key=lambda c: -sizes[c]):  # largest groups first, ties in random order
        fold_of[int(comp)] = int(np.argmin(load))
        load[fold_of[int(comp)]] += sizes[comp]
    return [fold_of[c] for c in components]


def crops_for_video(
    path: str | Path, frames: int, size: int, upright_from: float = UPRIGHT_FROM_DEGREES
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's face crops for one video (a face leaning `upright_from` degrees or more
    turned upright), with its landmarks in crop pixels."""
    sampled = read_frames(path, frames)
    # As when serving, less serving's search for smaller faces beside the ones found
    # (several_faces): training follows one face, the most often seen.
    tracks = track_faces(detect_faces_in_frames(sampled.frames))
    if not tracks:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, LANDMARKS, 2), np.float32)
    crops, marks = [], []
    for position, box in zip(tracks[0].frame_positions, tracks[0].boxes):
        frame = sampled.frames[position]
        top, right, bottom, left = expand_box(box, frame.shape)
        rotation = upright_rotation(frame, box, upright_from)
        # a leaning face's landmarks are found with it upright: dlib's 68-point model misplaces them
        # on a face leaning 35° (its eye line read as 18°)
        upright = frame
        if rotation is not None:
            upright = cv2.warpAffine(frame, rotation, frame.shape[1::-1], borderMode=cv2.BORDER_REFLECT101)
        points = face_landmarks_points(upright, box)
        points = (points - [left, top]) * (size / (right - left)) if len(points) == LANDMARKS else np.zeros((LANDMARKS, 2))
        crops.append(crop_face(frame, box, size, rotation=rotation))
        marks.append(points.astype(np.float32))
    return np.stack(crops), np.stack(marks)


def cache_path(
    cache_dir: str | Path, clip: Clip, quality: str, size: int = 112, upright_from: float = UPRIGHT_FROM_DEGREES
) -> Path:
    # crops turned upright from another lean are other crops; the default's keep their folder
    turned = "" if upright_from == UPRIGHT_FROM_DEGREES else f"-upright-from-{upright_from:g}"
    return Path(cache_dir) / f"v{CROPS_VERSION}" / f"{quality}-{size}px{turned}" / f"{clip.key}.npz"


def _prepare_one(args: tuple[Clip, str, str, int, int, float]) -> str:
    clip, quality, cache_dir, frames, size, upright_from = args
    target = cache_path(cache_dir, clip, quality, size, upright_from)
    if target.exists():
        return "cached"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if QUALITIES[quality] is None:
            crops, marks = crops_for_video(clip.path, frames, size, upright_from)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                encoded = Path(tmp) / "clip.mp4"
                reencode(clip.path, encoded, *QUALITIES[quality])
                crops, marks = crops_for_video(encoded, frames, size, upright_from)
    except (VideoError, OSError, ValueError) as error:  # av raises OSError subclasses
        log.warning("skipping %s (%s): %s", clip.path, quality, error)
        crops, marks = np.zeros((0, size, size, 3), np.uint8), np.zeros((0, LANDMARKS, 2), np.float32)
    np.savez(target, crops=crops, landmarks=marks)
    return f"{len(crops)} crops"


def prepare_cache(
    clips: list[Clip],
    cache_dir: str | Path,
    qualities: list[str],
    frames: int = 32,
    size: int = 112,
    workers: int = 2,
    upright_from: float = UPRIGHT_FROM_DEGREES,
) -> None:
    """Crop every clip at every quality into `cache_dir` (skipping what is already there)."""
    jobs = [(clip, q, str(cache_dir), frames, size, upright_from) for clip in clips for q in qualities]
    if workers > 1:
        # spawned, not forked: a process forked while another thread holds a lock (torch's, or a
        # logging handler's) can wait on that lock for ever
        with spawn_pool(workers, start_worker, (cores_each(workers), logging.getLogger().level)) as pool:
            _log_outcomes(jobs, pool.map(_prepare_one, jobs))
    else:
        _log_outcomes(jobs, map(_prepare_one, jobs))


def _log_outcomes(jobs: list[tuple], outcomes: Iterable[str]) -> None:
    for i, (job, outcome) in enumerate(zip(jobs, outcomes), 1):
        log.info("[%d/%d] %s %s: %s", i, len(jobs), job[1], Path(job[0].path).name, outcome)


def load_cached(
    cache_dir: str | Path, clip: Clip, quality: str, size: int = 112, upright_from: float = UPRIGHT_FROM_DEGREES
) -> tuple[np.ndarray, np.ndarray]:
    with np.load(cache_path(cache_dir, clip, quality, size, upright_from)) as data:
        return data["crops"], data["landmarks"]
