"""Where in the face: Grad-CAM heatmaps over the encoder's last feature map."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .network import ClipModel


def grad_cam(
    model: ClipModel, clip: torch.Tensor, positions: Sequence[int] | None = None, features: torch.Tensor | None = None
) -> np.ndarray:
    """Heatmaps (len(positions), H, W) in [0, 1] for frames of one normalised clip (1, T, 3, H, W);
    all frames when `positions` is None.

    Grad-CAM (Selvaraju et al., 2017) of the video's FAKE-minus-REAL logit: each frame's map shows
    the regions whose features pushed the whole-video score towards FAKE. The maps share one
    scale, so a frame that barely mattered stays dark instead of being stretched to full heat.
    Only the chosen frames go through the encoder with gradients; the others' features come from
    `features` (T, C) when the caller has them already.
    """
    frames = clip[0]
    steps, height, width = frames.shape[0], frames.shape[-2], frames.shape[-1]
    chosen = list(range(steps)) if positions is None else list(positions)
    index = torch.tensor(chosen, device=frames.device)
    if features is None:
        with torch.no_grad():
            features, _ = model.frame_features(frames)
    with torch.enable_grad():
        explained, fmap = model.frame_features(frames[index])
        features = features.index_copy(0, index, explained)
        # cuDNN's LSTM cannot run backward in eval mode; PyTorch's own kernel can, with the same result.
        with torch.backends.cudnn.flags(enabled=False):
            video_logits, _ = model.temporal(features.view(1, steps, -1))
        margin = video_logits[0, 0] - video_logits[0, 1]
        (grads,) = torch.autograd.grad(margin, fmap)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * fmap.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).cpu().numpy()


def overlay_heatmap(crop: np.ndarray, heat: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """The RGB crop with a heat colouring laid over it, stronger where `heat` (0–1) is high."""
    coloured = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    alpha = (strength * heat)[..., None]
    return np.uint8(np.clip(crop * (1 - alpha) + coloured * alpha, 0, 255))
