from __future__ import annotations

import numpy as np
import pytest
import torch

from model.explain import grad_cam, overlay_heatmap
from model.network import DeepfakeNet, EnsembleNet, NetworkConfig


def test_grad_cam_maps_every_frame_on_one_scale():
    torch.manual_seed(0)
    model = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    clip = torch.randn(1, 5, 3, 112, 112)
    heat = grad_cam(model, clip)
    assert heat.shape == (5, 112, 112)
    assert heat.min() >= 0 and heat.max() == np.float32(1.0)
    assert len({round(float(h.max()), 4) for h in heat}) > 1  # shared scale: not every frame peaks at 1
    assert all(p.grad is None for p in model.parameters())  # explaining does not touch the weights


def test_grad_cam_follows_the_evidence():
    """A frame that cannot change the verdict gets no heat."""
    torch.manual_seed(0)
    model = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    clip = torch.randn(1, 3, 3, 112, 112)
    with torch.no_grad():
        model.lstm.weight_ih_l0[:, :] = 0  # frames' features no longer reach the score
    heat = grad_cam(model, clip)
    assert float(heat.max()) == 0.0


def test_overlay_leaves_cold_regions_untouched():
    crop = np.full((112, 112, 3), 120, np.uint8)
    heat = np.zeros((112, 112), np.float32)
    heat[:56] = 1.0
    out = overlay_heatmap(crop, heat)
    assert np.array_equal(out[56:], crop[56:])
    assert np.abs(out[:56].astype(int) - 120).max() > 40


def test_grad_cam_of_chosen_frames_matches_the_full_computation():
    torch.manual_seed(0)
    model = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    clip = torch.randn(1, 6, 3, 112, 112)
    full = grad_cam(model, clip)
    chosen = grad_cam(model, clip, [4, 1])
    expected = full[[4, 1]] / full[[4, 1]].max()  # the same maps, on the chosen frames' own scale
    assert np.allclose(chosen, expected, atol=1e-4)
    with torch.no_grad():
        features, _ = model.frame_features(clip[0])
    assert np.allclose(grad_cam(model, clip, [4, 1], features), chosen, atol=1e-5)


def test_grad_cam_of_an_ensemble_sums_its_members_evidence():
    """Two copies of one network are that network: the same heatmaps."""
    torch.manual_seed(0)
    model = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    twin = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    twin.load_state_dict(model.state_dict())
    clip = torch.randn(1, 4, 3, 112, 112)
    np.testing.assert_allclose(grad_cam(EnsembleNet.of([model, twin]).eval(), clip, [1, 3]), grad_cam(model, clip, [1, 3]), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grad_cam_on_cuda_matches_cpu():
    """The model is in eval mode when it explains, where cuDNN's LSTM has no backward pass."""
    torch.manual_seed(0)
    model = DeepfakeNet(NetworkConfig(hidden_size=8)).eval()
    clip = torch.randn(1, 4, 3, 112, 112)
    on_cpu = grad_cam(model, clip, [0, 2])
    on_cuda = grad_cam(model.cuda(), clip.cuda(), [0, 2])
    np.testing.assert_allclose(on_cuda, on_cpu, atol=0.02)  # TF32 convolutions on the GPU
