from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from model.network import DeepfakeNet, EnsembleNet, NetworkConfig, load_checkpoint, save_checkpoint


class OriginalModel(nn.Module):
    """The original project's network, line for line (ImageNet download replaced by random init)."""

    def __init__(self, num_classes=2, latent_dim=2048, lstm_layers=1, hidden_dim=2048, bidirectional=False):
        super().__init__()
        model = models.resnext50_32x4d(weights=None)
        self.model = nn.Sequential(*list(model.children())[:-2])
        self.lstm = nn.LSTM(latent_dim, hidden_dim, lstm_layers, bidirectional)
        self.relu = nn.LeakyReLU()
        self.dp = nn.Dropout(0.4)
        self.linear1 = nn.Linear(2048, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, 2048)
        x_lstm, _ = self.lstm(x, None)
        return fmap, self.dp(self.linear1(x_lstm[:, -1, :]))


def test_original_state_dict_loads_and_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    original = OriginalModel().eval()
    assert "lstm.bias_ih_l0" not in original.state_dict()  # the positional False really is `bias`
    path = tmp_path / "original.pt"
    torch.save(original.state_dict(), path)

    ours = load_checkpoint(path)
    assert ours.config.encoder == "resnext50_32x4d"
    assert ours.config.temporal == "original" and ours.config.lstm_bias is False
    clip = torch.randn(1, 6, 3, 112, 112)
    with torch.inference_mode():
        _, expected = original(clip)
        got, per_frame = ours(clip)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # The original's quirk: the verdict is the last frame's per-frame output.
    torch.testing.assert_close(per_frame[0, -1], expected[0], rtol=0, atol=1e-5)


def test_original_verdict_depends_on_last_frame_only(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "original.pt"
    torch.save(OriginalModel().state_dict(), path)
    ours = load_checkpoint(path)
    clip = torch.randn(1, 4, 3, 112, 112)
    changed = clip.clone()
    changed[0, 0] = torch.randn(3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(ours(clip)[0], ours(changed)[0])


def test_our_lstm_uses_every_frame():
    torch.manual_seed(2)
    net = DeepfakeNet(NetworkConfig(hidden_size=16)).eval()
    features = torch.randn(1, 4, 1280)
    changed = features.clone()
    changed[0, 0] = torch.randn(1280)
    with torch.inference_mode():
        video, frames = net.temporal(features)
        assert video.shape == (1, 2) and frames.shape == (1, 4, 2)
        assert (video - net.temporal(changed)[0]).abs().max() > 1e-4
        assert net(torch.randn(1, 4, 3, 112, 112))[1].shape == (1, 4, 2)


def test_checkpoint_round_trip_keeps_config(tmp_path):
    torch.manual_seed(3)
    config = NetworkConfig(encoder="mobilenet_v2", hidden_size=32, temperature=1.7, threshold=0.4, extra={"logit_bias": 0.2})
    net = DeepfakeNet(config).eval()
    path = tmp_path / "net.pt"
    save_checkpoint(net, path, half=False)
    loaded = load_checkpoint(path)
    assert loaded.config == config
    clip = torch.randn(2, 3, 3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(clip)[0], net(clip)[0])


def test_ensemble_averages_its_members_and_round_trips(tmp_path):
    torch.manual_seed(5)
    members = [DeepfakeNet(NetworkConfig(hidden_size=16)).eval() for _ in range(3)]
    ensemble = EnsembleNet.of(members).eval()
    ensemble.config.temperature, ensemble.config.extra = 2.5, {"logit_bias": -0.1}
    assert ensemble.config.members == 3 and all(m.config.members == 1 for m in members)
    clip = torch.randn(2, 4, 3, 112, 112)
    with torch.inference_mode():
        video, frames = ensemble(clip)
        outputs = [m(clip) for m in members]
        torch.testing.assert_close(video, sum(v for v, _ in outputs) / 3)
        torch.testing.assert_close(frames, sum(f for _, f in outputs) / 3)
        features, fmap = ensemble.frame_features(clip[0])
        assert features.shape == (4, 3 * 1280) and fmap.shape[1] == 3 * 1280
    path = tmp_path / "ensemble.pt"
    save_checkpoint(ensemble, path, half=False)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, EnsembleNet) and loaded.config == ensemble.config and len(loaded.members) == 3
    with torch.inference_mode():
        torch.testing.assert_close(loaded(clip)[0], video)


def test_fp16_checkpoint_is_close(tmp_path):
    torch.manual_seed(4)
    net = DeepfakeNet(NetworkConfig(hidden_size=32)).eval()
    save_checkpoint(net, tmp_path / "half.pt")
    loaded = load_checkpoint(tmp_path / "half.pt")
    clip = torch.randn(1, 3, 3, 112, 112)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(clip)[0], net(clip)[0], rtol=0.05, atol=0.05)


def test_resnext_encoder_builds():
    net = DeepfakeNet(NetworkConfig(encoder="resnext50_32x4d", hidden_size=8)).eval()
    with torch.inference_mode():
        video, frames = net(torch.randn(1, 2, 3, 112, 112))
    assert video.shape == (1, 2) and frames.shape == (1, 2, 2)


def test_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    try:
        load_checkpoint(path)
    except ValueError as error:
        assert "neither" in str(error)
    else:
        raise AssertionError("loading an unrelated file should fail")
