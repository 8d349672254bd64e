from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from model.detector import Detector, pick_device


def test_cpu_fallback_without_cuda(monkeypatch, tiny_weights):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device().type == "cpu"
    assert Detector(tiny_weights).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu(tiny_weights):
    crops = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    p_cpu, _ = Detector(tiny_weights, "cpu").score_crops(crops)
    p_gpu, _ = Detector(tiny_weights, "cuda").score_crops(crops)
    assert abs(p_cpu - p_gpu) < 0.02  # bf16 autocast on the GPU


def test_calibration_is_applied(tiny_weights):
    detector = Detector(tiny_weights)
    logits = torch.tensor([[2.0, 0.0]])
    assert float(detector.calibrated_p_fake(logits)) == pytest.approx(1 / (1 + np.exp(-2.0)))
    detector.config.temperature = 4.0
    detector.config.extra = {"logit_bias": -0.5}
    assert float(detector.calibrated_p_fake(logits)) == pytest.approx(1 / (1 + np.exp(-(2.0 / 4.0 - 0.5))))


def test_concurrent_requests_run_one_at_a_time(tiny_weights, media):
    detector = Detector(tiny_weights)
    results = []
    threads = [threading.Thread(target=lambda: results.append(detector.detect(media["face_h264"], 10))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = sorted(r.seconds["queue"] for r in results)
    assert len(results) == 2 and all(r.label in ("REAL", "FAKE") for r in results)
    # The second waited for (most of) the first's analysis.
    assert queued[1] >= 0.5 * min(r.seconds["total"] for r in results)
