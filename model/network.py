"""The network: CNN encoder → global average pool → LSTM over frames → Linear(·, 2).

Class 0 is FAKE and class 1 is REAL, as in the original ResNeXt50+LSTM project, whose
raw checkpoints load through `convert_original_state_dict`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import models

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASS_NAMES = ("FAKE", "REAL")
ENCODER_CHANNELS = {"resnext50_32x4d": 2048, "mobilenet_v2": 1280}


def pick_device(preferred: str | None = None) -> torch.device:
    """The device asked for (`cpu`, `cuda`, `cuda:1`…), else CUDA where present. CUDA asked for
    where there is none falls back to the CPU with a warning, so that one setting serves
    machines with and without a GPU."""
    if not preferred:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preferred)
    except RuntimeError as error:
        raise ValueError(f"Unknown device {preferred!r}: use cpu or cuda.") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("%s was asked for, but this machine has no CUDA device: using the CPU", preferred)
        return torch.device("cpu")
    return device


@dataclass
class NetworkConfig:
    """Everything needed to rebuild and feed the network; stored inside each checkpoint."""

    encoder: str = "mobilenet_v2"
    hidden_size: int = 256
    image_size: int = 112
    sequence_length: int = 20
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] = CLASS_NAMES
    # "original": the original project's LSTM(bias=False) fed batch-first data into a
    # sequence-first LSTM, so each frame is its own 1-step sequence and the last frame decides.
    temporal: str = "lstm"
    lstm_bias: bool = True
    # > 1: an ensemble of this many networks, alike but for their training seed (EnsembleNet).
    members: int = 1
    # Calibration, fitted on validation: p_fake = softmax(logits / temperature)[FAKE].
    temperature: float = 1.0
    threshold: float = 0.5
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std", "class_names"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def as_dict(self) -> dict:
        return asdict(self)

    def calibrate(self, temperature: float, logit_bias: float) -> None:
        """Store a calibration fitted on validation, keeping the other settings in `extra`."""
        self.temperature, self.extra = temperature, {**self.extra, "logit_bias": logit_bias}


def build_encoder(name: str, imagenet_weights: str | Path | None = None) -> nn.Sequential:
    """The convolutional trunk (no pooling, no classifier), optionally with ImageNet weights."""
    if name == "resnext50_32x4d":
        net = models.resnext50_32x4d(weights=None)
        trunk_of = lambda m: nn.Sequential(*list(m.children())[:-2])  # noqa: E731
    elif name == "mobilenet_v2":
        net = models.mobilenet_v2(weights=None)
        trunk_of = lambda m: m.features  # noqa: E731
    else:
        raise ValueError(f"unknown encoder {name!r}; choose one of {sorted(ENCODER_CHANNELS)}")
    if imagenet_weights:
        net.load_state_dict(torch.load(imagenet_weights, map_location="cpu", weights_only=True))
    return trunk_of(net)


class ClipModel(nn.Module):
    """What the detector and Grad-CAM use: per-frame encoder features, then the temporal model."""

    config: NetworkConfig

    def frame_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def temporal(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 3, H, W) normalised crops → video logits (B, 2), per-frame logits (B, T, 2)."""
        batch, steps = clips.shape[:2]
        features, _ = self.frame_features(clips.flatten(0, 1))
        return self.temporal(features.view(batch, steps, -1))


class DeepfakeNet(ClipModel):
    def __init__(self, config: NetworkConfig, imagenet_weights: str | Path | None = None):
        super().__init__()
        self.config = config
        channels = ENCODER_CHANNELS[config.encoder]
        self.encoder = build_encoder(config.encoder, imagenet_weights)
        self.pool = nn.AdaptiveAvgPool2d(1)
        original = config.temporal == "original"
        self.lstm = nn.LSTM(channels, config.hidden_size, 1, bias=config.lstm_bias, batch_first=not original)
        self.dropout = nn.Dropout(0.4)
        self.head = nn.Linear(config.hidden_size, len(config.class_names))

    def frame_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) → pooled features (N, C) and the last feature map (N, C, h, w)."""
        fmap = self.encoder(frames)
        return self.pool(fmap).flatten(1), fmap

    def temporal(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) features → video logits (B, 2) and per-frame logits (B, T, 2)."""
        # The recurrence runs in fp32 under a GPU's bf16 autocast: it is cheap, and rounding
        # compounds over the steps.
        with torch.autocast(features.device.type, enabled=False):
            out, _ = self.lstm(features.float())
        if self.config.temporal == "original":  # it read (B, T) as (time, batch), so the last frame decides
            return self.head(self.dropout(out[:, -1, :])), self.head(out)
        steps = self.head(self.dropout(out))
        # The video score averages the per-step scores: every frame counts, none alone decides.
        return steps.mean(dim=1), steps


class EnsembleNet(ClipModel):
    """`config.members` networks alike but for their training seed; the logits are the mean of
    theirs. Their features and feature maps are concatenated, so the detector and Grad-CAM use
    an ensemble as they use one network (the heatmap sums the members' evidence)."""

    def __init__(self, config: NetworkConfig, members: list[DeepfakeNet] | None = None):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(members or [DeepfakeNet(replace(config, members=1)) for _ in range(config.members)])

    @classmethod
    def of(cls, members: list[DeepfakeNet]) -> "EnsembleNet":
        return cls(replace(members[0].config, members=len(members)), members)

    def frame_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) → the members' pooled features side by side (N, K·C), and their feature maps (N, K·C, h, w)."""
        # pooled from the joined map, so that Grad-CAM's gradient reaches it
        fmap = torch.cat([member.encoder(frames) for member in self.members], dim=1)
        return self.members[0].pool(fmap).flatten(1), fmap

    def temporal(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, K·C) features → the members' mean video logits (B, 2) and per-frame logits (B, T, 2)."""
        outputs = [member.temporal(part) for member, part in zip(self.members, features.chunk(len(self.members), dim=-1))]
        return torch.stack([video for video, _ in outputs]).mean(0), torch.stack([frames for _, frames in outputs]).mean(0)


def build_network(config: NetworkConfig) -> ClipModel:
    return EnsembleNet(config) if config.members > 1 else DeepfakeNet(config)


def to_input(frames: np.ndarray, config: NetworkConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB crops (..., H, W, 3) → normalised float tensor (..., 3, H, W) on `device`."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device).float().div_(255)
    mean = torch.tensor(config.mean, device=tensor.device)
    std = torch.tensor(config.std, device=tensor.device)
    return ((tensor - mean) / std).movedim(-1, -3)


def convert_original_state_dict(state: dict[str, torch.Tensor]) -> tuple[NetworkConfig, dict[str, torch.Tensor]]:
    """Map a raw checkpoint of the original project (`model.*`, `lstm.*`, `linear1.*`) onto ours."""
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("model."):
            key = "encoder." + key[len("model."):]
        elif key.startswith("linear1."):
            key = "head." + key[len("linear1."):]
        renamed[key] = value
    hidden = renamed["lstm.weight_hh_l0"].shape[1]
    config = NetworkConfig(
        encoder="resnext50_32x4d",
        hidden_size=hidden,
        temporal="original",
        lstm_bias="lstm.bias_ih_l0" in renamed,
        extra={"source": "original ResNeXt50+LSTM checkpoint"},
    )
    return config, renamed


def is_original_state_dict(state: dict) -> bool:
    return any(k.removeprefix("module.").startswith("linear1.") for k in state)


def save_checkpoint(model: ClipModel, path: str | Path, half: bool = True, **meta) -> None:
    """Weights (fp16 by default, to keep the file small) with the config stored beside them."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"format": "deepfake-detector/1", "config": model.config.as_dict(), "state_dict": state, **meta}, path)


def _is_ours(data: object) -> bool:
    return isinstance(data, dict) and "config" in data and "state_dict" in data


def _metadata(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("format", "config", "state_dict")} if _is_ours(data) else {}


def checkpoint_metadata(path: str | Path) -> dict:
    """What one of our checkpoints records beside the weights (the clips and people it learnt
    from, the step kept, its validation); empty for the original project's checkpoints."""
    return _metadata(torch.load(path, map_location="cpu", weights_only=True))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ClipModel, dict]:
    """The network and its metadata (see `checkpoint_metadata`) from one reading of the file."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if _is_ours(data):
        config, state = NetworkConfig.from_dict(data["config"]), data["state_dict"]
    elif isinstance(data, dict) and is_original_state_dict(data):
        config, state = convert_original_state_dict(data)
    else:
        raise ValueError(f"{path} is neither a detector checkpoint nor an original-project state_dict")
    model = build_network(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval(), _metadata(data)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> ClipModel:
    """Our checkpoints, or a raw state_dict from the original project."""
    return read_checkpoint(path, map_location)[0]
