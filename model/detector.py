"""The detector: video file in, REAL / FAKE / NO_FACE verdict out."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .faces import extract_face_crops
from .network import DeepfakeNet, load_checkpoint, to_input
from .video import VideoInfo, read_frames

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "detector.pt"
MIN_SEQUENCE, MAX_SEQUENCE = 10, 100


@dataclass
class DetectionResult:
    label: str  # REAL, FAKE or NO_FACE
    confidence: float | None  # percent, for the label given
    p_fake: float | None
    frames: int  # frames sampled
    faces: int  # frames whose face was judged
    video: VideoInfo
    seconds: dict[str, float]
    frame_scores: list[dict] = field(default_factory=list)  # per judged frame: index, time_s, p_fake
    crops: np.ndarray | None = None  # the judged face crops, RGB

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "p_fake": self.p_fake,
            "frames": self.frames,
            "faces": self.faces,
            "video": self.video.as_dict(),
            "seconds": self.seconds,
            "frame_scores": self.frame_scores,
        }


def pick_device(preferred: str | None = None) -> torch.device:
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def validate_sequence_length(value: int) -> int:
    if not MIN_SEQUENCE <= value <= MAX_SEQUENCE:
        raise ValueError(f"sequence_length must be between {MIN_SEQUENCE} and {MAX_SEQUENCE}")
    return value


class Detector:
    """Loads the network once; `detect` is safe to call from several threads."""

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, device: str | None = None):
        self.weights = Path(weights)
        self.device = pick_device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.model: DeepfakeNet = load_checkpoint(self.weights).to(self.device)
        self.config = self.model.config
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.weights.name

    def calibrated_p_fake(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled probability of FAKE (class 0), from logits (..., 2)."""
        margin = (logits[..., 0] - logits[..., 1]).float() / self.config.temperature
        return torch.sigmoid(margin + float(self.config.extra.get("logit_bias", 0.0)))

    @torch.inference_mode()
    def score_crops(self, crops: np.ndarray) -> tuple[float, np.ndarray]:
        """Calibrated p_fake for a sequence of face crops, and per frame."""
        clip = to_input(crops[None], self.config, self.device)
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                video_logits, frame_logits = self.model(clip)
        else:
            video_logits, frame_logits = self.model(clip)
        return float(self.calibrated_p_fake(video_logits)[0]), self.calibrated_p_fake(frame_logits)[0].cpu().numpy()

    def detect(self, path: str | Path, sequence_length: int | None = None) -> DetectionResult:
        """Judge one video. Analyses run one at a time (2 cores are not shared well); the wait is
        reported as `seconds["queue"]`."""
        count = validate_sequence_length(sequence_length or self.config.sequence_length)
        arrived = time.perf_counter()
        with self._lock:
            seconds = {"queue": time.perf_counter() - arrived}
            return self._analyse(path, count, seconds)

    def _analyse(self, path: str | Path, count: int, seconds: dict[str, float]) -> DetectionResult:
        start = time.perf_counter()
        sampled = read_frames(path, count)
        seconds["decode"] = time.perf_counter() - start

        mark = time.perf_counter()
        tracks = extract_face_crops(sampled.frames, self.config.image_size)
        seconds["faces"] = time.perf_counter() - mark
        frames = len(sampled.frames)
        if not tracks:
            seconds["total"] = time.perf_counter() - start
            return DetectionResult("NO_FACE", None, None, frames, 0, sampled.info, _rounded(seconds))

        face = tracks[0]
        mark = time.perf_counter()
        p_fake, per_frame = self.score_crops(face.crops)
        seconds["model"] = time.perf_counter() - mark
        seconds["total"] = time.perf_counter() - start

        is_fake = p_fake >= self.config.threshold
        confidence = 100.0 * (p_fake if is_fake else 1.0 - p_fake)
        fps = sampled.info.fps
        frame_scores = [
            {"index": sampled.indices[pos], "time_s": round(sampled.indices[pos] / fps, 3), "p_fake": round(float(p), 4)}
            for pos, p in zip(face.track.frame_positions, per_frame)
        ]
        return DetectionResult(
            "FAKE" if is_fake else "REAL",
            round(confidence, 1),
            round(p_fake, 4),
            frames,
            len(face.crops),
            sampled.info,
            _rounded(seconds),
            frame_scores,
            face.crops,
        )


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in seconds.items()}
