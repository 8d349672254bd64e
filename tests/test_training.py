from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from media import (
    face_frames, late_stream_flv_copy, turn_quarter_clockwise_on_display, turned_about_centre, write_h264, write_video,
)
from skimage import data

from model.cli import _format_summary, _train_config, build_parser
from model.cli import main as cli_main
from model.crossval import calibration_from_report, cross_validate, train_on_all_clips, validation_summary
from model.dataset import (
    CROPS_VERSION, Clip, cache_path, identity_folds, load_cached, prepare_cache, read_manifest, shown_path, split_by_identity,
)
from model.evaluation import (
    balanced_accuracy,
    bootstrap_interval,
    expected_calibration_error,
    fit_calibration,
    fit_calibration_on_qualities,
    log_loss,
    reliability_by_confidence,
    roc_auc,
    summarise,
)
from model.faces import LANDMARKS
from model.network import (
    DeepfakeNet, EnsembleNet, NetworkConfig, checkpoint_metadata, load_checkpoint, read_checkpoint, save_checkpoint,
)
from model.training import (
    SequenceSampler,
    TrainConfig,
    WeightAverage,
    clip_margins,
    fit,
    sharpness_aware_gradients,
    train,
    training_clips,
)


def test_roc_auc_hand_computed():
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([0.9, 0.4, 0.4, 0.1, 0.8])
    # fake/real pairs: (0.9 vs 0.4, 0.1) 2 wins, (0.4 vs 0.4 tie, 0.1 win) 1.5, (0.8) 2 → 5.5 / 6
    assert roc_auc(y, p) == pytest.approx(5.5 / 6)
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_balanced_accuracy_and_log_loss_hand_computed():
    y = np.array([1, 1, 1, 0])
    p = np.array([0.9, 0.6, 0.2, 0.3])
    assert balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1) / 2)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.2) + math.log(0.7)) / 4
    assert log_loss(y, p) == pytest.approx(expected)


def test_expected_calibration_error_hand_computed():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.2, 0.2])  # confidence 0.9 twice (1 right), 0.8 twice (1 right)
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)


def test_reliability_by_confidence_hand_computed():
    y = np.array([1, 1, 0, 0, 1], bool)
    p = np.array([0.95, 0.55, 0.35, 0.62, 0.3])  # confidence 0.95 right, 0.55 right, 0.65 right, 0.62 wrong, 0.7 wrong
    bands = reliability_by_confidence(y, p, rounds=200)
    assert [(b["confidence"], b["judged"], b["right"]) for b in bands] == [
        ([0.5, 0.6], 1, 1), ([0.6, 0.7], 2, 1), ([0.7, 0.8], 1, 0), ([0.8, 0.9], 0, 0), ([0.9, 1.0], 1, 1),
    ]
    assert bands[1]["share_right"] == 0.5 and "share_right" not in bands[3]
    assert bands[0]["share_right_ci95"] == [1.0, 1.0] and bands[2]["share_right_ci95"] == [0.0, 0.0]
    low, high = bands[1]["share_right_ci95"]
    assert low == 0.0 and high == 1.0  # resampled, the two clips of that band give 0, ½ or 1
    # each clip judged twice alike: twice the verdicts, but resampled by clip, so the same interval
    twice = reliability_by_confidence(y, np.stack([p, p], axis=1), rounds=200)
    assert [b["judged"] for b in twice] == [2 * b["judged"] for b in bands]
    assert [b.get("share_right_ci95") for b in twice] == [b.get("share_right_ci95") for b in bands]


def test_fit_calibration_recovers_temperature():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    y = rng.random(4000) < 1 / (1 + np.exp(-true_logit))
    temperature, bias = fit_calibration(true_logit * 3.0, y)  # over-confident by 3×
    assert temperature == pytest.approx(3.0, rel=0.15)
    assert abs(bias) < 0.2


def test_summarise_reports_per_method_and_intervals():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.85])
    methods = ["A", "A", "B", "original", "original", "original"]
    report = summarise(y, p, methods)
    assert report["auc"] == pytest.approx(roc_auc(y, p))
    assert report["auc_by_method"]["A"]["auc"] == pytest.approx(5 / 6)  # 0.9 beats 3 reals, 0.8 beats 2
    assert report["auc_by_method"]["B"]["auc"] == pytest.approx(2 / 3)
    low, high = report["auc_ci95"]
    assert 0 <= low <= report["auc"] <= high <= 1
    assert report["ece"] == pytest.approx(expected_calibration_error(y, p))
    low, high = report["ece_ci95"]
    assert 0 <= low < high <= 1
    assert 0 < report["ece_if_calibrated"]["mean"] < report["ece_if_calibrated"]["p95"] < 1
    # confidence 0.9 twice (right), 0.8 twice and 0.85 (a real one called FAKE), 0.7 (a fake called REAL)
    assert report["reliability"] == reliability_by_confidence(y, p)
    assert [(b["judged"], b["right"]) for b in report["reliability"]] == [(0, 0), (0, 0), (1, 0), (3, 2), (2, 2)]
    assert "  verdicts right, by confidence: 70%–80% 0/1, 80%–90% 2/3, 90%–100% 2/2" in _format_summary("c23", report).splitlines()


def test_ece_interval_is_the_bootstrap_mirrored_about_the_estimate():
    rng = np.random.default_rng(4)
    p = rng.uniform(0, 1, 100)
    y = rng.random(100) < p  # calibrated: the true ECE is 0
    estimate = expected_calibration_error(y, p)
    low, high = bootstrap_interval(expected_calibration_error, y, p, rounds=300)
    assert (low + high) / 2 > estimate + 0.02  # thinned bins inflate the bootstrap copies: the percentile interval sits high
    basic = bootstrap_interval(expected_calibration_error, y, p, rounds=300, basic=True)
    assert basic == pytest.approx((max(0.0, 2 * estimate - high), 2 * estimate - low))
    assert basic[0] < estimate < basic[1]


def test_ece_if_calibrated_matches_the_binomial():
    from model.evaluation import ece_if_calibrated

    # 50 clips all at p_fake 0.9: one bin, whose ECE is |share of fakes − 0.9|, share ~ Binomial(50, 0.9) / 50
    exact = sum(math.comb(50, k) * 0.9**k * 0.1 ** (50 - k) * abs(k / 50 - 0.9) for k in range(51))
    mean, p95 = ece_if_calibrated(np.full(50, 0.9), rounds=2000)
    assert mean == pytest.approx(exact, abs=0.003)
    assert exact < p95 < 0.1
    assert ece_if_calibrated(np.r_[np.zeros(5), np.ones(5)]) == (0.0, 0.0)  # certain and right every time


def test_within_group_auc_hand_computed():
    from model.evaluation import within_group_auc

    y = np.array([1, 0, 1, 1, 0])
    p = np.array([0.9, 0.95, 0.3, 0.2, 0.1])
    groups = np.array(["a", "a", "b", "b", "b"])
    # group a: 0.9 < 0.95, 0 of 1; group b: 0.3 and 0.2 beat 0.1, 2 of 2; pairs across groups ignored
    assert within_group_auc(y, p, groups) == pytest.approx(2 / 3)
    assert roc_auc(y, p) == pytest.approx(3 / 6)  # pooled: each fake beats 0.1 only
    report = summarise(y, p, ["X", "original", "X", "X", "original"], groups=groups)
    assert report["identity_groups"] == 2 and report["within_group_auc"] == pytest.approx(2 / 3)
    assert "within_group_auc" not in summarise(y, p, ["X"] * 5)


def test_split_by_identity_never_shares_an_identity():
    clips = [Clip(f"{a}.mp4", "REAL", "original", a) for a in ("001", "002", "003", "004", "005")]
    clips += [Clip(f"{a}_{b}.mp4", "FAKE", "X", f"{a}_{b}") for a, b in (("001", "002"), ("003", "004"), ("005", "003"))]
    train, val = split_by_identity(clips, 0.3, seed=1)
    assert train and val and len(train) + len(val) == len(clips)
    ids = lambda cs: {i for c in cs for i in c.identities}  # noqa: E731
    assert not ids(train) & ids(val)


def test_identity_folds_keep_groups_whole_and_balanced():
    clips = [Clip(f"{a}.mp4", "REAL", "original", a) for a in ("001", "002", "003", "004", "005", "006")]
    clips += [Clip(f"{a}_{b}.mp4", "FAKE", "X", f"{a}_{b}") for a, b in (("001", "002"), ("003", "004"), ("002", "001"))]
    folds = identity_folds(clips, 3, seed=2)
    by_fold = [{i for c, f in zip(clips, folds) if f == k for i in c.identities} for k in range(3)]
    assert all(by_fold)
    assert not (by_fold[0] & by_fold[1] or by_fold[0] & by_fold[2] or by_fold[1] & by_fold[2])
    # groups of 4 ({001, 002}), 3 ({003, 004}), 1, 1: the two singles share the third fold
    assert sorted(np.bincount(folds)) == [2, 3, 4]
    with pytest.raises(ValueError, match="identity groups"):
        identity_folds(clips, 5)


def tiny_config(manifest, tmp_path, **extra) -> TrainConfig:
    settings = dict(hidden_size=8, steps=3, eval_every=2, clips_per_batch=2, frames_per_clip=3, cached_frames=6, workers=1)
    return TrainConfig(manifest=str(manifest), cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "tiny.pt"), **{**settings, **extra})


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Two identities, each with a real clip and a crudely manipulated one (face region tinted)."""
    folder = tmp_path_factory.mktemp("dataset")
    rows = ["path,label,method,source_ids"]
    for identity, shift in (("001", 0), ("002", 25)):
        frames = [np.roll(f, shift, axis=1) for f in face_frames(24)]
        write_h264(folder / f"{identity}.mp4", frames)
        fakes = [f.copy() for f in frames]
        for f in fakes:
            f[90:230, 260 + shift : 400 + shift, 0] = 255
        write_h264(folder / f"{identity}_fake.mp4", fakes)
        rows += [f"{identity}.mp4,REAL,original,{identity}", f"{identity}_fake.mp4,FAKE,Tint,{identity}"]
    manifest = folder / "clips.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.mark.parametrize("image_size", [112, 64])
def test_train_runs_saves_and_round_trips(tiny_dataset, tmp_path, image_size):
    out = tmp_path / "tiny.pt"
    record = train(tiny_config(tiny_dataset, tmp_path, image_size=image_size, val_fraction=0.5))
    assert [h["step"] for h in record["history"]] == [2, 3]
    assert all(math.isfinite(h["loss"]) for h in record["history"])
    assert record["calibration"]["temperature"] > 0
    assert set(record["train_clips"]).isdisjoint(record["validation_clips"])
    # named as in the manifest, without this machine's folders, so the record can be committed
    assert sorted(record["train_clips"] + record["validation_clips"]) == ["001.mp4", "001_fake.mp4", "002.mp4", "002_fake.mp4"]
    assert not {"cache_dir", "root", "out"} & set(record["train_config"])
    model = load_checkpoint(out)
    assert model.config.hidden_size == 8
    assert model.config.image_size == image_size  # the app crops faces at the size the model learnt
    assert model.config.temperature == pytest.approx(record["calibration"]["temperature"])
    cached = sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.npz"))
    assert cached and set(cached) == {f"orig-{image_size}px", f"crf40_480p-{image_size}px"}
    with np.load(next((tmp_path / "cache").rglob("*.npz"))) as data:
        assert data["crops"].shape[1:] == (image_size, image_size, 3)
    with torch.inference_mode():
        video, _ = model(torch.randn(1, 3, 3, image_size, image_size))
    assert torch.isfinite(video).all()


def test_cross_validation_judges_every_clip_by_a_model_that_never_saw_it(tiny_dataset, tmp_path, monkeypatch):
    fits = []  # each fold's calibration: the margins and labels it was fitted on, and its result

    def recording_fit(margins, y_fake):
        fits.append(([np.array(m) for m in margins], np.array(y_fake), fit_calibration_on_qualities(margins, y_fake)))
        return fits[-1][2]

    monkeypatch.setattr("model.crossval.fit_calibration_on_qualities", recording_fit)
    config = tiny_config(tiny_dataset, tmp_path)
    report = cross_validate(config, folds=2)
    assert [h["step"] for h in report["fold_histories"][0]] == [2, 3]
    assert "cache_dir" not in report["train_config"] and report["train_config"]["steps"] == 3
    assert list(report["auc_by_step"]) == [2, 3]
    rows = report["qualities"]["orig"]["clips"]
    assert len(rows) == 4 and {r["fold"] for r in rows} == {0, 1}
    assert [r["path"] for r in rows] == ["001.mp4", "001_fake.mp4", "002.mp4", "002_fake.mp4"]
    for row in rows:  # the fold is the clip's own identity group, which its model did not train on
        assert row["fold"] == next(r["fold"] for r in rows if r["group"] == row["group"])
    assert all(math.isfinite(r["margin"]) for r in rows)
    # cross-fitted: fold 0 is calibrated on fold 1's margins at both qualities, and the reverse
    assert len(fits) == 2
    for fold, (margins, y_fake, (temperature, bias)) in enumerate(fits):
        assert list(y_fake) == [r["label"] == "FAKE" for r in rows if r["fold"] != fold]
        for quality, fitted in zip(("orig", "crf40_480p"), margins, strict=True):
            clips = report["qualities"][quality]["clips"]
            others = [r for r in clips if r["fold"] != fold]
            assert fitted == pytest.approx([r["margin"] for r in others], abs=1e-4)  # the report rounds to 4 places
            for row in (r for r in clips if r["fold"] == fold):
                assert row["p_fake"] == pytest.approx(1 / (1 + math.exp(-(row["margin"] / temperature + bias))), abs=1e-3)
    metrics = report["qualities"]["orig"]["metrics"]
    y, p = np.array([r["label"] == "FAKE" for r in rows]), np.array([r["p_fake"] for r in rows])
    # the report rounds p_fake to 4 places, so clips a hair apart may tie in it: any order of the tied ones
    pairs = [(f, r) for f, fake in zip(p, y) if fake for r, real in zip(p, ~y) if real]
    lowest, highest = np.mean([f > r for f, r in pairs]), np.mean([f >= r for f, r in pairs])
    assert lowest - 1e-9 <= metrics["auc"] <= highest + 1e-9 and metrics["identity_groups"] == 2


def test_cross_validation_of_an_ensemble_averages_its_members_on_the_same_folds(tiny_dataset, tmp_path):
    single = cross_validate(tiny_config(tiny_dataset, tmp_path), folds=2)
    ensemble = cross_validate(tiny_config(tiny_dataset, tmp_path, members=2), folds=2)
    assert ensemble["train_config"]["members"] == 2
    # each fold's history holds both members' evaluations
    assert [(h["member"], h["step"]) for h in ensemble["fold_histories"][0]] == [(0, 2), (0, 3), (1, 2), (1, 3)]
    for quality in ("orig", "crf40_480p"):
        rows = ensemble["qualities"][quality]["clips"]
        first = {r["path"]: r for r in single["qualities"][quality]["clips"]}
        # the folds are seed 0's for every member; member 0 is the single model, member 1 differs
        assert [r["fold"] for r in rows] == [first[r["path"]]["fold"] for r in rows]
        np.testing.assert_allclose([r["member_margins"][0] for r in rows], [first[r["path"]]["margin"] for r in rows], atol=1e-3)
        assert [r["member_margins"][1] for r in rows] != [r["member_margins"][0] for r in rows]
        np.testing.assert_allclose([r["margin"] for r in rows], [np.mean(r["member_margins"]) for r in rows], atol=2e-4)
    assert "member_margins" not in single["qualities"]["orig"]["clips"][0]


@pytest.mark.parametrize("members", [1, 2])
def test_cross_validation_keeps_each_fold_model_calibrated_as_its_held_out_clips(tiny_dataset, tmp_path, members):
    config = tiny_config(tiny_dataset, tmp_path, members=members)
    report = cross_validate(config, folds=2, models_dir=tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["fold-1.pt", "fold-2.pt"]  # the members' own files go
    clips = {shown_path(c, config.manifest, config.root): c for c in read_manifest(config.manifest)}
    for fold in (0, 1):
        model, metadata = read_checkpoint(tmp_path / "models" / f"fold-{fold + 1}.pt")
        assert model.config.members == members
        held_out = [clips[r["path"]] for r in report["qualities"]["orig"]["clips"] if r["fold"] == fold]
        learnt_from = {i for c in clips.values() if c not in held_out for i in c.identities}
        assert set(metadata["trained_on_identities"]) == learnt_from and learnt_from.isdisjoint(held_out[0].identities)
        for quality in ("orig", "crf40_480p"):
            rows = [r for r in report["qualities"][quality]["clips"] if r["fold"] == fold]
            crops = [load_cached(config.cache_dir, clips[r["path"]], quality)[0] for r in rows]
            margins = clip_margins(model, crops, torch.device("cpu"))
            np.testing.assert_allclose(margins, [r["margin"] for r in rows], atol=1e-3)
            p_fake = 1 / (1 + np.exp(-(margins / model.config.temperature + model.config.extra["logit_bias"])))
            np.testing.assert_allclose(p_fake, [r["p_fake"] for r in rows], atol=1e-3)


@contextlib.contextmanager
def on_one_core() -> Iterator[None]:
    """This process, and those it starts, on one core, with one thread: a sum over more threads
    rounds otherwise, and how many each fold's steps get depends on when the other fold ends."""
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_cross_validation_in_parallel_processes_gives_the_same_report(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path)
    with on_one_core():
        one_by_one = cross_validate(config, folds=2)
        at_once = cross_validate(config, folds=2, jobs=2)
    assert [[h["step"] for h in fold] for fold in at_once["fold_histories"]] == [[2, 3], [2, 3]]
    for quality in ("orig", "crf40_480p"):
        rows, parallel_rows = one_by_one["qualities"][quality]["clips"], at_once["qualities"][quality]["clips"]
        assert [(r["path"], r["fold"]) for r in parallel_rows] == [(r["path"], r["fold"]) for r in rows]
        # the same sums, so the same margins (equal here; the tolerance is the report's last decimal)
        np.testing.assert_allclose([r["margin"] for r in parallel_rows], [r["margin"] for r in rows], atol=1e-4)


def test_fold_processes_share_the_cores_among_the_folds_training(monkeypatch):
    import model.crossval as crossval

    before = torch.get_num_threads()
    monkeypatch.setattr(crossval, "available_cores", lambda: 4)
    training = multiprocessing.Value("i", 2)
    monkeypatch.setattr(crossval, "_folds_training", training)
    seen = []
    try:
        for folds in (2, 1, 8, 3):
            training.value = folds
            crossval._share_cores(1)
            seen.append(torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
    assert seen == [2, 4, 1, 1]  # the last fold left gets every core


def synthetic_cache(cache_dir, clips, frames=6, size=112):
    """Cached crops without face detection: the astronaut's face, shifted per clip, with its
    landmarks on an oval; fakes tinted. Enough to train on where dlib or PyAV are missing."""
    angles = np.linspace(0, 2 * np.pi, LANDMARKS)
    oval = np.stack([56 + 30 * np.cos(angles), 60 + 38 * np.sin(angles)], 1)
    face = cv2.resize(data.astronaut()[30:250, 150:370], (size, size))
    for n, clip in enumerate(clips):
        crops = np.stack([np.roll(face, n + i, axis=1) for i in range(frames)])
        if clip.label == "FAKE":
            crops[:, 40:80, 30:80, 0] = 255
        for quality in ("orig", "crf40_480p"):
            target = cache_path(cache_dir, clip, quality, size)
            target.parent.mkdir(parents=True, exist_ok=True)
            np.savez(target, crops=crops, landmarks=np.repeat(oval[None], frames, 0).astype(np.float32))


def synthetic_setup(tmp_path, groups: int) -> TrainConfig:
    """A manifest of `groups` people, each with a real clip and a tinted one, their crops cached
    synthetically, and a tiny 2-step recipe for them."""
    manifest = tmp_path / "clips.csv"
    rows = [f"{i}.mp4,REAL,original,{i}\n{i}_fake.mp4,FAKE,Tint,{i}" for i in range(groups)]
    manifest.write_text("path,label,method,source_ids\n" + "\n".join(rows) + "\n")
    config = tiny_config(manifest, tmp_path, steps=2)
    synthetic_cache(config.cache_dir, read_manifest(manifest))
    return config


def test_cross_validation_on_fewer_training_groups(tmp_path, monkeypatch):
    config = synthetic_setup(tmp_path, groups=6)
    trained_on = []
    monkeypatch.setattr("model.crossval.fit", lambda c, train, *rest, **kw: trained_on.append(train) or fit(c, train, *rest, **kw))
    report = cross_validate(config, folds=3, train_groups=2)
    rows = report["qualities"]["orig"]["clips"]
    assert report["train_groups"] == 2 and len(trained_on) == 3
    for fold, (chosen, clips) in enumerate(zip(report["fold_train_groups"], trained_on)):
        held_out = {r["group"] for r in rows if r["fold"] == fold}
        assert len(chosen) == 2 and held_out.isdisjoint(chosen)
        by_name = {r["path"]: r["group"] for r in rows}
        assert {by_name[shown_path(c, config.manifest)] for c in clips} == set(chosen)
    assert all(math.isfinite(r["margin"]) for r in rows)  # every clip still judged
    everyone = cross_validate(config, folds=3)
    assert [len(g) for g in everyone["fold_train_groups"]] == [4, 4, 4]
    with pytest.raises(ValueError, match="5 training groups"):
        cross_validate(config, folds=3, train_groups=5)


def test_cross_validation_judges_further_qualities_without_calibrating_on_them(tmp_path, monkeypatch):
    config = dataclasses.replace(synthetic_setup(tmp_path, groups=4), judge_qualities=["crf23_240p"])
    no_face = 5
    for n, clip in enumerate(read_manifest(config.manifest)):  # at 240p the crops at orig, but one clip's face is lost
        crops, marks = load_cached(config.cache_dir, clip, "orig")
        target = cache_path(config.cache_dir, clip, "crf23_240p")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, crops=crops[: 0 if n == no_face else None], landmarks=marks)
    calibrated_at = []

    def recording_fit(margins, y_fake):
        calibrated_at.append(len(margins))
        return fit_calibration_on_qualities(margins, y_fake)

    monkeypatch.setattr("model.crossval.fit_calibration_on_qualities", recording_fit)
    report = cross_validate(config, folds=2)
    assert list(report["qualities"]) == ["orig", "crf40_480p"] and list(report["other_qualities"]) == ["crf23_240p"]
    assert calibrated_at == [2, 2]  # each fold's calibration fitted at orig and the hard quality alone
    orig, small = report["qualities"]["orig"], report["other_qualities"]["crf23_240p"]
    assert orig["metrics"]["no_face_clips"] == 0 and orig["metrics"]["clips"] == 8
    assert small["metrics"]["no_face_clips"] == 1 and small["metrics"]["clips"] == 7
    for n, (at_orig, at_240p) in enumerate(zip(orig["clips"], small["clips"], strict=True)):
        assert at_240p["path"] == at_orig["path"] and at_240p["fold"] == at_orig["fold"]
        if n == no_face:
            assert at_240p["margin"] is None and at_240p["p_fake"] is None
        else:  # the same crops through the same fold model and its calibration
            assert (at_240p["margin"], at_240p["p_fake"]) == (at_orig["margin"], at_orig["p_fake"])
    # a report that judged further qualities still calibrates the final model as one that did not,
    # and states their figures beside the others'
    assert calibration_from_report(report) == calibration_from_report({**report, "other_qualities": {}})
    summary = validation_summary(report)
    assert summary["other_qualities"]["crf23_240p"]["recall_fake"] == round(small["metrics"]["recall_fake"], 3)
    assert summary["qualities"] == validation_summary({**report, "other_qualities": {}})["qualities"]
    assert "other_qualities" not in validation_summary({**report, "other_qualities": {}})
    # how often the verdicts were right, by confidence: every clip at both calibrated qualities
    reliability = summary["reliability"]
    assert reliability["qualities"] == ["orig", "crf40_480p"] and reliability["clips"] == 8
    judged = [r for part in report["qualities"].values() for r in part["clips"]]
    right = [(r["p_fake"] >= 0.5) == (r["label"] == "FAKE") for r in judged]
    assert sum(b["judged"] for b in reliability["bands"]) == 16 and sum(b["right"] for b in reliability["bands"]) == sum(right)
    assert _train_config(build_parser().parse_args(["crossval", "--manifest", "m.csv", "--judge-quality", "crf23_240p"])).judge_qualities == ["crf23_240p"]


def test_final_model_learns_every_clip_and_takes_the_cross_validation_calibration(tmp_path, capsys):
    config = synthetic_setup(tmp_path, groups=4)
    report_path = tmp_path / "crossval.json"
    report = cross_validate(config, folds=2)
    report_path.write_text(json.dumps(report))
    record = train_on_all_clips(config, report_path)
    assert len(record["train_clips"]) == 8 and record["validation_clips"] == [] and record["best_step"] == 2
    assert [set(h) for h in record["history"]] == [{"step", "loss", "seconds"}]  # nothing held out to score
    # calibrated on every clip's out-of-fold margin at both qualities, one fit for all folds
    both = [r for part in report["qualities"].values() for r in part["clips"]]
    expected = fit_calibration(np.array([r["margin"] for r in both]), np.array([r["label"] == "FAKE" for r in both]))
    assert calibration_from_report(report) == pytest.approx(expected)
    model = load_checkpoint(config.out)
    assert model.config.temperature == pytest.approx(expected[0]) and model.config.extra["logit_bias"] == pytest.approx(expected[1])
    metadata = checkpoint_metadata(config.out)
    assert metadata["trained_on_identities"] == ["0", "1", "2", "3"]
    # the cross-validation's headline figures travel with the model, for the app to state
    assert metadata["validation"] == record["validation"] == validation_summary(report)
    assert record["validation"]["clips"] == 8 and record["validation"]["identity_groups"] == 4
    orig = report["qualities"]["orig"]["metrics"]
    assert record["validation"]["qualities"]["orig"]["recall_fake"] == round(orig["recall_fake"], 3)

    # refused: another recipe, a learning-curve report, other clips
    other = tmp_path / "other.pt"
    args = ["train", "--manifest", config.manifest, "--cache-dir", config.cache_dir, "--out", str(other)]
    assert cli_main([*args, "--crossval-report", str(report_path)]) == 2
    differing = "cached_frames 6 there, 32 here; clips_per_batch 2 there, 16 here; "
    differing += "hidden_size 8 there, 256 here; steps 2 there, 1500 here"
    assert capsys.readouterr().err == f"error: the cross-validation report is of another recipe: {differing}\n"
    with pytest.raises(ValueError, match="steps 2 there, 3 here"):
        train_on_all_clips(dataclasses.replace(config, steps=3, out=str(other)), report_path)
    report_path.write_text(json.dumps({**report, "train_groups": 1}))
    with pytest.raises(ValueError, match="a learning curve"):
        train_on_all_clips(config, report_path)
    report_path.write_text(json.dumps(report))
    lines = Path(config.manifest).read_text().splitlines()
    Path(config.manifest).write_text("\n".join(lines[:-1]) + "\n")  # one clip fewer
    with pytest.raises(ValueError, match="other clips"):
        train_on_all_clips(config, report_path)
    assert not other.exists()


def test_final_ensemble_is_its_members_trained_alike_but_for_the_seed(tmp_path):
    config = synthetic_setup(tmp_path, groups=4)
    single = dataclasses.replace(config, out=str(tmp_path / "single.pt"))
    train_on_all_clips(single, _report(tmp_path / "single.json", cross_validate(single, folds=2)))
    ensemble = dataclasses.replace(config, members=2, out=str(tmp_path / "ensemble.pt"))
    report = cross_validate(ensemble, folds=2)
    legacy = {**report, "train_config": {k: v for k, v in report["train_config"].items() if k != "members"}}
    with pytest.raises(ValueError, match="members 1 there, 2 here"):  # a report from before ensembles: one network
        train_on_all_clips(ensemble, _report(tmp_path / "legacy.json", legacy))
    record = train_on_all_clips(ensemble, _report(tmp_path / "ensemble.json", report))
    assert [(h["member"], h["step"]) for h in record["history"]] == [(0, 2), (1, 2)]
    model, alone = load_checkpoint(ensemble.out), load_checkpoint(single.out)
    assert isinstance(model, EnsembleNet) and model.config.members == 2
    assert model.config.temperature == pytest.approx(calibration_from_report(report)[0])
    first, second = (m.state_dict() for m in model.members)
    assert all(torch.equal(first[k], v) for k, v in alone.state_dict().items())  # member 0 is the single network
    assert not torch.equal(first["head.weight"], second["head.weight"])
    with pytest.raises(ValueError, match="cross-validation report"):
        train(ensemble)


def _report(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda(tmp_path):
    clips = [Clip(f"{i}.mp4", "REAL", "original", str(i)) for i in range(2)]
    clips += [Clip(f"{i}_fake.mp4", "FAKE", "Tint", str(i)) for i in range(2)]
    settings = dict(hidden_size=8, steps=4, eval_every=2, clips_per_batch=4, frames_per_clip=3, device="cuda")
    config = TrainConfig(manifest="", cache_dir=str(tmp_path), **settings)
    synthetic_cache(tmp_path, clips)
    result = fit(config, [clips[0], clips[2]], [clips[1], clips[3]], select_best=False)  # bf16 autocast, channels_last
    assert next(result.model.parameters()).is_cuda
    assert all(math.isfinite(h["loss"]) for h in result.history)
    crops = [load_cached(tmp_path, clip, "orig")[0] for clip in (clips[1], clips[3])]
    on_cpu = clip_margins(result.model.cpu().float(), crops, torch.device("cpu"))
    np.testing.assert_allclose(on_cpu, result.margins[4]["orig"], atol=1e-3)


def test_fit_keeps_the_last_step_unless_asked_to_select(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path, steps=4)
    clips = read_manifest(tiny_dataset)
    prepare_cache(clips, config.cache_dir, ["orig", "crf40_480p"], config.cached_frames, workers=1)
    result = fit(config, clips[:2], clips[2:], select_best=False)
    assert result.kept_step == 4 and sorted(result.margins) == [2, 4]
    crops = [load_cached(config.cache_dir, clips[2 + i], "orig")[0] for i in result.kept]
    now = clip_margins(result.model, crops, torch.device("cpu"))
    np.testing.assert_allclose(now, result.margins[4]["orig"], atol=1e-5)


def test_crossval_cli_writes_report(tiny_dataset, tmp_path, capsys):
    args = ["crossval", "--manifest", str(tiny_dataset), "--cache-dir", str(tmp_path / "cache"), "--steps", "2", "--eval-every", "2"]
    judge = ["--judge-quality", "crf23_240p"]
    keep = ["--keep-models", str(tmp_path / "folds")]
    assert cli_main([*args, *judge, *keep, "--folds", "2", "--clips-per-batch", "2", "--out", str(tmp_path / "cv")]) == 0
    report = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert sorted(p.name for p in (tmp_path / "folds").iterdir()) == ["fold-1.pt", "fold-2.pt"]
    assert report["folds"] == 2 and report["qualities"]["crf40_480p"]["metrics"]["clips"] == 4
    assert report["other_qualities"]["crf23_240p"]["metrics"]["clips"] == 4  # the faces are found at 240p too
    assert (tmp_path / "cv" / "roc.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "orig, out of fold" in out and "crf23_240p, out of fold, calibration not fitted at it" in out
    assert cli_main([*args, "--folds", "3"]) == 2  # only two identity groups


def test_evaluate_cli_writes_report(tiny_dataset, tiny_weights, tmp_path, capsys):
    code = cli_main(
        ["evaluate", "--manifest", str(tiny_dataset), "--weights", str(tiny_weights), "--sequence-length", "10", "--out", str(tmp_path)]
    )
    assert code == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = report["qualities"]["crf40_480p"]["metrics"]
    assert metrics["clips"] == 4 and metrics["fake_clips"] == 2
    assert metrics["identity_groups"] == 2 and 0 <= metrics["within_group_auc"] <= 1
    rows = report["qualities"]["orig"]["clips"]
    assert [r["path"] for r in rows] == ["001.mp4", "001_fake.mp4", "002.mp4", "002_fake.mp4"]  # as in the manifest
    assert [r["faces_judged"] for r in rows] == [1, 1, 1, 1]  # one person a generated clip
    assert all(60 < r["face_height_px"] < 360 for r in rows)  # the face's box in the 640×360 video
    y = np.array([r["label"] == "FAKE" for r in rows])
    p = np.array([r["p_fake"] for r in rows])
    assert report["qualities"]["orig"]["metrics"]["auc"] == pytest.approx(roc_auc(y, p))
    assert (tmp_path / "roc.png").stat().st_size > 1000
    assert "AUC" in capsys.readouterr().out
    assert report["clips_of_people_seen_in_training"] == 0  # the checkpoint lists no training people


def test_evaluate_lists_each_verdicts_caveats(tiny_weights, tmp_path, monkeypatch):
    """How often the app hedges on one's own footage is part of how it does there."""
    from model.augment import gained
    from model.detector import Detector

    frames = face_frames(12)
    write_h264(tmp_path / "clean.mp4", frames)
    write_h264(tmp_path / "grainy.mp4", [gained(frame) for frame in frames])
    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\nclean.mp4,REAL\ngrainy.mp4,REAL\n")
    monkeypatch.setattr(Detector, "score_features", lambda self, features: (0.2, np.full(len(features), 0.2)))
    args = ["evaluate", "--manifest", str(manifest), "--weights", str(tiny_weights), "--sequence-length", "10", "--quality", "orig"]
    assert cli_main([*args, "--out", str(tmp_path / "report")]) == 0
    rows = json.loads((tmp_path / "report" / "evaluation.json").read_text())["qualities"]["orig"]["clips"]
    assert [(r["prediction"], r["caveats"]) for r in rows] == [("REAL", []), ("REAL", ["grainy"])]


def test_evaluate_on_real_clips_alone_or_on_clips_without_faces_writes_json_any_reader_takes(tiny_dataset, tiny_weights, tmp_path, capsys):
    """Checking for false alarms on one's own real footage is an evaluation too: the metrics that
    need fake clips are null in the report (json writes NaN, which is not JSON) and n/a on screen."""
    base = tiny_dataset.parent
    only_real = tmp_path / "real.csv"
    only_real.write_text(f"path,label\n{base / '001.mp4'},REAL\n{base / '002.mp4'},REAL\n")
    args = ["evaluate", "--weights", str(tiny_weights), "--sequence-length", "10", "--quality", "orig"]
    assert cli_main([*args, "--manifest", str(only_real), "--out", str(tmp_path / "real")]) == 0
    text = (tmp_path / "real" / "evaluation.json").read_text()
    metrics = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the report"))["qualities"]["orig"]["metrics"]
    assert metrics["real_clips"] == 2 and metrics["auc"] is None and metrics["auc_ci95"] == [None, None]
    assert metrics["recall_fake"] is None and metrics["recall_real"] in (0.0, 0.5, 1.0)
    out = capsys.readouterr().out
    assert "AUC n/a  balanced accuracy n/a" in out and "only real clips: AUC and balanced accuracy need both" in out
    assert (tmp_path / "real" / "roc.png").stat().st_size > 1000

    write_h264(tmp_path / "blank.mp4", [np.full((180, 320, 3), 90, np.uint8)] * 12)
    no_faces = tmp_path / "blank.csv"
    no_faces.write_text("path,label\nblank.mp4,REAL\n")
    assert cli_main([*args, "--manifest", str(no_faces), "--out", str(tmp_path / "blank")]) == 0
    report = json.loads((tmp_path / "blank" / "evaluation.json").read_text())
    assert report["qualities"]["orig"]["metrics"] == {"clips": 0, "no_face_clips": 1}
    assert "orig: no face found in any of the 1 clips: nothing to measure" in capsys.readouterr().out


def test_evaluate_in_parallel_processes_gives_the_same_report(tiny_dataset, tiny_weights, tmp_path, capsys):
    # clips that differ in what is found in them, so that a verdict given to the wrong clip shows
    write_h264(tmp_path / "small.mp4", face_frames(12, (320, 180)))
    write_h264(tmp_path / "blank.mp4", [np.full((180, 320, 3), 90, np.uint8)] * 12)
    manifest = tmp_path / "clips.csv"
    manifest.write_text(
        f"path,label,method,source_ids\n{tiny_dataset.parent / '001.mp4'},REAL,original,001\nblank.mp4,REAL,original,blank\n"
        f"small.mp4,FAKE,Tint,small\n{tiny_dataset.parent / '002_fake.mp4'},FAKE,Tint,002\n"
    )
    args = ["evaluate", "--manifest", str(manifest), "--weights", str(tiny_weights), "--sequence-length", "10"]
    reports = []
    for jobs in ("1", "2"):
        assert cli_main([*args, "--jobs", jobs, "--out", str(tmp_path / jobs)]) == 0
        reports.append(json.loads((tmp_path / jobs / "evaluation.json").read_text()))
    one_by_one, at_once = reports
    for quality in ("orig", "crf40_480p"):
        rows, parallel_rows = one_by_one["qualities"][quality]["clips"], at_once["qualities"][quality]["clips"]
        heights = [r["face_height_px"] for r in rows]
        assert heights[1] is None and heights[0] > 1.5 * heights[2]  # no face in the blank clip; a small one in small.mp4
        assert [r["face_height_px"] for r in parallel_rows] == heights
        assert [r["path"] for r in parallel_rows] == [r["path"] for r in rows]
        # each process uses its share of the cores, so sums may round differently
        p_fake = [np.nan if r["p_fake"] is None else r["p_fake"] for r in rows]
        np.testing.assert_allclose([np.nan if r["p_fake"] is None else r["p_fake"] for r in parallel_rows], p_fake, atol=1e-4)
        assert at_once["qualities"][quality]["metrics"]["no_face_clips"] == 1


def test_evaluate_marks_clips_of_people_the_model_was_trained_on(tiny_dataset, tmp_path, capsys):
    weights = tmp_path / "trained.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, trained_on_identities=["001"])
    args = ["evaluate", "--manifest", str(tiny_dataset), "--weights", str(weights), "--quality", "orig", "--out", str(tmp_path)]
    assert cli_main([*args, "--sequence-length", "10"]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    rows = report["qualities"]["orig"]["clips"]
    assert [(r["path"], r["people_seen_in_training"]) for r in rows] == [
        ("001.mp4", True), ("001_fake.mp4", True), ("002.mp4", False), ("002_fake.mp4", False)
    ]
    assert report["clips_of_people_seen_in_training"] == 2
    assert "2 of these 4 clips show people the model was trained on" in capsys.readouterr().out

    # only the people it never saw
    assert cli_main([*args, "--sequence-length", "10", "--unseen-only"]) == 0
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["path"] for r in report["qualities"]["orig"]["clips"]] == ["002.mp4", "002_fake.mp4"]
    assert report["unseen_only"] and report["clips_of_people_seen_in_training"] == 0
    assert "2 clips of people the model was trained on left out, 2 judged" in capsys.readouterr().out
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, trained_on_identities=["001", "002"])
    assert cli_main([*args, "--unseen-only"]) == 2
    assert "every clip of the manifest shows people the model was trained on" in capsys.readouterr().err
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights)  # lists no people: none can be told unseen
    assert cli_main([*args, "--unseen-only"]) == 2
    assert "trained.pt does not list the people it was trained on" in capsys.readouterr().err


def test_manifest_from_folder(tmp_path):
    for name in ("real/a.mp4", "fake/b.mp4", "fake/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    clips = read_manifest(tmp_path)
    assert sorted((c.label, c.path.endswith(".mp4")) for c in clips) == [("FAKE", True), ("REAL", True)]
    assert sorted(shown_path(c, tmp_path) for c in clips) == ["fake/b.mp4", "real/a.mp4"]


def test_a_manifest_without_clips_is_refused_with_a_reason(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "notes.txt").write_text("no video here")
    (tmp_path / "clips.csv").write_text("path,label\n")
    with pytest.raises(ValueError, match="no videos in .*real or .*fake"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="clips.csv lists no clips"):
        read_manifest(tmp_path / "clips.csv")
    # evaluate said "no face found in any of the 0 clips" and wrote an empty report
    assert cli_main(["evaluate", "--manifest", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no videos in" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_reports_name_clips_as_the_manifest_does(tmp_path):
    # Two methods' fakes of the same pair of people share a file name; the report must tell them apart.
    (tmp_path / "clips.csv").write_text("path,label,method\nA/c23/1_2.mp4,FAKE,A\nB/c23/1_2.mp4,FAKE,B\n")
    for root in (None, tmp_path):
        clips = read_manifest(tmp_path / "clips.csv", root)
        assert [shown_path(c, tmp_path / "clips.csv", root) for c in clips] == ["A/c23/1_2.mp4", "B/c23/1_2.mp4"]


def test_fit_calibration_ignores_class_imbalance():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(300), np.zeros(100)].astype(bool)
    margins = np.where(y, 1.0, -1.0) + rng.normal(0, 1.5, 400)  # symmetric evidence, 3:1 fakes
    _, bias = fit_calibration(margins, y)
    assert abs(bias) < 0.3  # an unweighted fit would learn a prior of log(3) ≈ 1.1 towards FAKE


@pytest.mark.parametrize("dataset_fakes", [True, False])
def test_sampler_mix_of_real_self_blended_and_dataset_fakes(dataset_fakes, monkeypatch):
    clips = [Clip("001.mp4", "REAL", "original", "001"), Clip("001_002.mp4", "FAKE", "X", "001_002")]
    # Real crops are dark, dataset fakes bright: a drawn sequence tells where it came from.
    data = {
        clip.key: [(np.full((6, 112, 112, 3), 40 if clip.label == "REAL" else 220, np.uint8), np.zeros((6, 0, 2), np.float32))]
        for clip in clips
    }
    monkeypatch.setattr("model.training.SelfBlend.apply", lambda self, image, points: image)
    monkeypatch.setattr("model.training.Degradation.apply", lambda self, image, rng: image)
    sampler = SequenceSampler(data, clips, TrainConfig(manifest="", dataset_fakes=dataset_fakes, frames_per_clip=4))
    drawn = [sampler.sequence() for _ in range(300)]
    bright_fakes = sum(frames.mean() > 128 for frames, label in drawn if label == 0)
    fakes = sum(label == 0 for _, label in drawn)
    assert all(label == 0 for frames, label in drawn if frames.mean() > 128)  # dataset fakes are labelled FAKE
    if dataset_fakes:
        assert 0.55 < fakes / 300 < 0.78 and 0.35 < bright_fakes / fakes < 0.65
    else:
        assert 0.38 < fakes / 300 < 0.62 and bright_fakes == 0


def test_paired_batches_pair_each_real_with_a_fake_of_the_same_people(monkeypatch):
    clips = [Clip("001.mp4", "REAL", "original", "001"), Clip("001_002.mp4", "FAKE", "X", "001_002")]
    clips.append(Clip("003.mp4", "REAL", "original", "003"))  # a group with no data set fake
    shade = {"001.mp4": 40, "001_002.mp4": 220, "003.mp4": 90}  # every crop tells which clip it is
    data = {c.key: [(np.full((6, 112, 112, 3), shade[c.path], np.uint8), np.zeros((6, 0, 2), np.float32))] for c in clips}
    monkeypatch.setattr("model.training.SelfBlend.apply", lambda self, image, points: image + 1)  # a blend of this very crop
    monkeypatch.setattr("model.training.Degradation.apply", lambda self, image, rng: image)
    sampler = SequenceSampler(data, clips, TrainConfig(manifest="", paired=True, clips_per_batch=8, frames_per_clip=4))
    pairs = []
    for _ in range(40):
        frames, labels = sampler.batch()
        assert frames.shape[:2] == (8, 4) and list(labels) == [1, 0] * 4
        pairs += [(round(frames[i].mean()), round(frames[i + 1].mean())) for i in range(0, 8, 2)]
    assert set(pairs) == {(40, 41), (40, 220), (90, 91)}
    from_dataset = sum(fake == 220 for _, fake in pairs) / sum(real == 40 for real, _ in pairs)
    assert 0.3 < from_dataset < 0.7


@pytest.mark.parametrize("balance_methods", [False, True])
def test_balanced_methods_give_each_method_an_equal_share_of_dataset_fakes(balance_methods):
    # Method A made fakes of three groups of people, method B of one: drawn by group, B is a
    # quarter of the data set fakes; drawn method first, half.
    clips = [Clip(f"{i}.mp4", "REAL", "original", f"{i}") for i in range(1, 5)]
    clips += [Clip(f"{i}_{i + 10}.mp4", "FAKE", "A", f"{i}_{i + 10}") for i in range(1, 4)]
    clips.append(Clip("4_14.mp4", "FAKE", "B", "4_14"))
    data = {
        c.key: [(np.full((6, 112, 112, 3), 200 if c.method == "B" else 50, np.uint8), np.zeros((6, 0, 2), np.float32))]
        for c in clips
    }
    sampler = SequenceSampler(data, clips, TrainConfig(manifest="", balance_methods=balance_methods, frames_per_clip=4))
    share_b = np.mean([sampler._pick("FAKE")[0].mean() > 128 for _ in range(2000)])
    assert share_b == pytest.approx(0.5 if balance_methods else 0.25, abs=0.04)
    assert all(sampler._pick("REAL")[0].mean() == 50 for _ in range(50))  # real clips are drawn as before


def test_excluded_methods_stay_out_of_training():
    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("1_2.mp4", "FAKE", "A", "1_2"), Clip("2_1.mp4", "FAKE", "B", "2_1")]
    kept = training_clips(clips, TrainConfig(manifest="", exclude_methods=["A"]))
    assert [c.path for c in kept] == ["1.mp4", "2_1.mp4"]
    assert training_clips(clips, TrainConfig(manifest="")) == clips
    args = ["train", "--manifest", "m.csv", "--exclude-method", "A", "--exclude-method", "B"]
    assert _train_config(build_parser().parse_args(args)).exclude_methods == ["A", "B"]


def test_training_qualities_come_from_the_command_line_and_are_drawn_alike():
    for command in ("train", "crossval"):
        args = [command, "--manifest", "m.csv"]
        assert _train_config(build_parser().parse_args(args)).train_qualities == ["orig", "crf40_480p"]
        args += ["--train-quality", "orig", "--train-quality", "crf23_240p"]
        assert _train_config(build_parser().parse_args(args)).train_qualities == ["orig", "crf23_240p"]
    clip = Clip("1.mp4", "REAL", "original", "1")
    versions = [(np.full((6, 112, 112, 3), level, np.uint8), np.zeros((6, 0, 2), np.float32)) for level in (10, 100, 200)]
    versions.append((np.zeros((0, 112, 112, 3), np.uint8), np.zeros((0, 0, 2), np.float32)))  # no face at that quality
    sampler = SequenceSampler({clip.key: versions}, [clip], TrainConfig(manifest="", frames_per_clip=4))
    drawn = np.array([sampler._pick("REAL")[0].mean() for _ in range(1500)])
    assert [np.mean(drawn == level) for level in (10, 100, 200)] == pytest.approx([1 / 3] * 3, abs=0.05)


def test_without_dataset_fakes_to_draw_the_fakes_are_self_blends():
    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("2.mp4", "REAL", "original", "2")]
    data = {c.key: [(np.full((6, 112, 112, 3), 50, np.uint8), np.zeros((6, 0, 2), np.float32))] for c in clips}
    sampler = SequenceSampler(data, clips, TrainConfig(manifest="", frames_per_clip=4))
    labels = [sampler.sequence()[1] for _ in range(300)]  # a data set fake asked for would raise
    assert 0.4 < np.mean(labels) < 0.6  # half real, half self-blended


@pytest.mark.parametrize("quality", [25, 60, 90])
def test_jpeg_degradation_is_a_jpeg_file_of_the_rgb_crop(quality):
    import io

    from PIL import Image

    from model.augment import Degradation

    crop = cv2.resize(data.astronaut()[0:220, 140:360], (112, 112), interpolation=cv2.INTER_AREA)
    neutral = Degradation(flip=False, gain=np.ones(3), bias=0.0, contrast=1.0, blur_sigma=0.0, noise_sigma=0.0, downscale=1.0, jpeg_quality=quality)
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, "JPEG", quality=quality)  # Pillow reads the array as RGB
    as_saved = np.asarray(Image.open(buffer)).astype(float)
    out = neutral.apply(crop, np.random.default_rng(0)).astype(float)
    # the same artefacts as a JPEG file of the crop (red taken for blue would differ by 1.8–3.3 levels)
    assert np.abs(out - as_saved).mean() < 0.5
    assert np.abs(out - crop).mean() > 1.0  # and the crop was degraded at all


def test_erasing_is_drawn_only_when_asked_and_hides_a_square_of_the_mean_colour():
    from model.augment import Degradation

    plain, asked = np.random.default_rng(7), np.random.default_rng(7)
    assert Degradation.draw(plain).erase is None
    Degradation.draw(asked, 0.0)
    assert plain.random() == asked.random()  # no draw spent: a sampler without the option is unchanged
    drawn = [Degradation.draw(asked, 0.5).erase for _ in range(400)]
    assert 0.4 < np.mean([e is not None for e in drawn]) < 0.6
    top, left, side = next(e for e in drawn if e is not None)
    neutral = Degradation(flip=False, gain=np.ones(3), bias=0.0, contrast=1.0, blur_sigma=0.0, noise_sigma=0.0, downscale=1.0, jpeg_quality=None)
    neutral.erase = (top, left, side)
    for size in (112, 224):
        crop = cv2.resize(data.astronaut()[0:220, 140:360], (size, size), interpolation=cv2.INTER_AREA)
        out = neutral.apply(crop, np.random.default_rng(0))
        changed = (out != crop).any(axis=2)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        assert rows[0] == pytest.approx(top * size, abs=1) and cols[0] == pytest.approx(left * size, abs=1)
        assert len(rows) == pytest.approx(side * size, abs=1) and len(cols) == pytest.approx(side * size, abs=1)
        hidden = out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(-1, 3)
        assert (hidden == hidden[0]).all() and np.abs(hidden[0] - crop.reshape(-1, 3).mean(axis=0)).max() < 1
        assert (out[~changed] == crop[~changed]).all()  # the rest as it was


@pytest.mark.parametrize("paired", [False, True])
def test_sampler_erases_with_the_configured_share(paired, monkeypatch):
    from model.augment import Degradation

    drawn = []
    draw = Degradation.draw.__func__
    monkeypatch.setattr("model.training.Degradation.draw", classmethod(lambda cls, rng, *a: drawn.append(draw(cls, rng, *a)) or drawn[-1]))
    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("2.mp4", "FAKE", "Deepfakes", "1")]
    data_ = {c.key: [(np.full((6, 112, 112, 3), 90, np.uint8), np.zeros((6, 0, 2), np.float32))] for c in clips}
    for share in (0.0, 1.0):
        drawn.clear()
        SequenceSampler(data_, clips, TrainConfig(manifest="", frames_per_clip=2, paired=paired, erase_prob=share)).batch()
        assert drawn and all((d.erase is not None) == bool(share) for d in drawn)


def test_grey_is_drawn_only_when_asked_and_takes_the_colour_away():
    from model.augment import Degradation

    plain, asked = np.random.default_rng(3), np.random.default_rng(3)
    assert not Degradation.draw(plain).grey
    Degradation.draw(asked, 0.0, 0.0)
    assert plain.random() == asked.random()  # no draw spent: a sampler without the option is unchanged
    assert 0.2 < np.mean([Degradation.draw(asked, 0.0, 0.3).grey for _ in range(400)]) < 0.4
    crop = cv2.resize(data.astronaut()[0:220, 140:360], (112, 112), interpolation=cv2.INTER_AREA)
    noisy = Degradation(flip=False, gain=np.array([1.1, 0.9, 1.0]), bias=0.0, contrast=1.0, blur_sigma=0.0, noise_sigma=5.0, downscale=1.0, jpeg_quality=None)
    coloured = noisy.apply(crop, np.random.default_rng(0)).astype(int)
    noisy.grey = True
    out = noisy.apply(crop, np.random.default_rng(0)).astype(int)
    assert np.abs(coloured[..., 0] - coloured[..., 2]).mean() > 10
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    luma = cv2.cvtColor(coloured.astype(np.uint8), cv2.COLOR_RGB2GRAY)
    assert np.abs(out[..., 0] - luma).max() <= 1  # the same light, noise and all


@pytest.mark.parametrize("paired", [False, True])
def test_sampler_turns_grey_the_configured_share(paired):
    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("2.mp4", "FAKE", "Deepfakes", "1")]
    colourful = np.zeros((6, 112, 112, 3), np.uint8)
    colourful[..., 0] = 200
    data_ = {c.key: [(colourful, np.zeros((6, 0, 2), np.float32))] for c in clips}
    for share, expected in ((0.0, 0.0), (1.0, 1.0), (0.5, 0.5)):
        config = TrainConfig(manifest="", frames_per_clip=2, clips_per_batch=200, paired=paired, grey_prob=share, seed=1)
        sequences, _ = SequenceSampler(data_, clips, config).batch()
        grey = (np.abs(sequences[..., 0].astype(int) - sequences[..., 2]).mean(axis=(1, 2, 3)) < 2).mean()
        assert grey == pytest.approx(expected, abs=0.1)


def _bar_angles(sequences: np.ndarray) -> np.ndarray:
    """How far from the horizontal, in degrees, the bright bar of each frame lies (B, T)."""
    angles = np.zeros(sequences.shape[:2])
    for index in np.ndindex(*sequences.shape[:2]):
        grey = sequences[index].mean(axis=2)
        moments = cv2.moments((grey > (grey.min() + grey.max()) / 2).astype(np.uint8), binaryImage=True)
        angles[index] = np.degrees(0.5 * np.arctan2(2 * moments["mu11"], moments["mu20"] - moments["mu02"]))
    return np.abs(angles)  # a flip turns the other way


@pytest.mark.parametrize("paired", [False, True])
def test_sampler_turns_the_configured_share_of_sequences_each_by_one_angle(paired):
    from model.faces import UPRIGHT_FROM_DEGREES

    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("2.mp4", "FAKE", "Deepfakes", "1")]
    bar = np.zeros((6, 112, 112, 3), np.uint8)
    bar[:, 52:60, 16:96] = 230  # a level bar, long enough to show its slope after the crop's jitter
    data_ = {c.key: [(bar, np.zeros((6, 0, 2), np.float32))] for c in clips}
    for share in (0.0, 1.0, 0.5):
        config = TrainConfig(manifest="", frames_per_clip=3, clips_per_batch=200, paired=paired, tilt_prob=share, seed=1)
        angles = _bar_angles(SequenceSampler(data_, clips, config).batch()[0])
        assert (angles.max(axis=1) - angles.min(axis=1) < 2).all()  # every frame of a sequence alike
        turned = angles[:, 0] > 1.5
        assert turned.mean() == pytest.approx(share, abs=0.1)
        if share:
            assert angles[turned, 0].max() <= UPRIGHT_FROM_DEGREES + 1.5 and angles[turned, 0].mean() == pytest.approx(12.5, abs=2.5)


def test_tilt_prob_comes_from_the_command_line():
    for command in ("train", "crossval"):
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--tilt-prob", "0.5"])).tilt_prob == 0.5
    assert _train_config(build_parser().parse_args(["train", "--manifest", "m.csv"])).tilt_prob == 0.0


def _eye_landmarks(size: int) -> np.ndarray:
    """Landmarks with only what glasses are placed by: eyes at a third of the height, ears beside them."""
    points = np.zeros((LANDMARKS, 2), np.float32)
    unit = size / 112
    for first, centre_x in ((36, 40), (42, 72)):
        corners = [(-7, 0), (-3, -2), (3, -2), (7, 0), (3, 2), (-3, 2)]  # dlib's order: outer corner first, clockwise
        points[first : first + 6] = [((centre_x + dx) * unit, (40 + dy) * unit) for dx, dy in corners]
    points[0], points[16] = (8 * unit, 44 * unit), (104 * unit, 44 * unit)
    return points


@pytest.mark.parametrize("size", [112, 224])
def test_glasses_are_drawn_over_the_eyes_and_nowhere_else(size):
    from model.augment import Glasses

    crop = np.full((size, size, 3), 200, np.uint8)
    glasses = Glasses(width=1.7, height=1.1, thickness=1.5, colour=(20, 20, 20), tint=0.2, round_lenses=True)
    out = glasses.apply(crop, _eye_landmarks(size))
    changed = (out != crop).any(axis=2)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    # lenses 1.7 eye widths (14 px) wide and 1.1 high round eyes at x 40 and 72, y 40; arms out to the ears
    assert 28 * size / 112 <= rows[0] and rows[-1] <= 50 * size / 112
    assert cols[0] <= 10 * size / 112 and cols[-1] >= 102 * size / 112
    for centre_x in (40, 72):  # inside each lens, darkened by the tint
        inside = out[round(40 * size / 112), round(centre_x * size / 112)]
        assert inside.tolist() == [160, 160, 160]
    assert out[round(37 * size / 112) : round(41 * size / 112), round(56 * size / 112)].min() < 100  # the bridge between them
    assert (out[round(60 * size / 112) :] == 200).all()  # nothing below the eyes
    assert Glasses(1.7, 1.1, 1.5, (20, 20, 20), 0.0, False).apply(crop, _eye_landmarks(size))[round(40 * size / 112), round(40 * size / 112)].tolist() == [200] * 3


def test_glasses_need_landmarks_to_be_placed_by():
    from model.augment import Glasses

    crop = data.astronaut()[:112, :112]
    glasses = Glasses.draw(np.random.default_rng(0))
    assert glasses.apply(crop, np.zeros((0, 2), np.float32)) is crop
    assert glasses.apply(crop, np.zeros((LANDMARKS, 2), np.float32)) is crop  # landmarks not found: all zero


@pytest.mark.parametrize("paired", [False, True])
def test_sampler_puts_glasses_on_real_and_fake_sequences_alike(paired, monkeypatch):
    from model.augment import Glasses

    def mark(self: Glasses, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return np.full_like(image, 255)

    monkeypatch.setattr(Glasses, "apply", mark)
    clips = [Clip("1.mp4", "REAL", "original", "1"), Clip("2.mp4", "FAKE", "Deepfakes", "1")]
    data_ = {c.key: [(np.full((6, 112, 112, 3), 90, np.uint8), np.zeros((6, 0, 2), np.float32))] for c in clips}
    for share in (0.0, 0.5, 1.0):
        config = TrainConfig(manifest="", frames_per_clip=2, clips_per_batch=64, paired=paired, glasses_prob=share)
        sequences, labels = SequenceSampler(data_, clips, config).batch()
        marked = sequences.mean(axis=(2, 3, 4)) > 170  # per frame: 255 before the degradation's colour changes, else 90
        worn = marked.all(axis=1)
        assert (marked.any(axis=1) == worn).all()  # every frame of a sequence, or none
        for label in (0, 1):
            assert worn[labels == label].mean() == pytest.approx(share, abs=0.25)
        if paired:  # a pair is augmented alike: both wear them, or neither
            assert (worn[0::2] == worn[1::2]).all()
    # without the option, no random draw is spent on it: the batches are those of a sampler without glasses
    config = TrainConfig(manifest="", paired=paired, glasses_prob=0.0)
    sampler = SequenceSampler(data_, clips, config)
    asked = [sampler.batch() for _ in range(3)]
    monkeypatch.setattr(SequenceSampler, "_draw_glasses", lambda self: None)
    sampler = SequenceSampler(data_, clips, config)
    plain = [sampler.batch() for _ in range(3)]
    assert all(np.array_equal(a, b) for pair in zip(asked, plain) for a, b in zip(*pair))


def test_self_blend_scales_with_the_crop():
    from model.augment import SelfBlend

    blend = SelfBlend.draw(np.random.default_rng(3))
    blend.source_gain, blend.source_bias, blend.sharpen, blend.opacity = np.full(3, 1.0), 60.0, 0.0, 1.0
    blend.scale, blend.shift, blend.erode, blend.soften = 1.0, (0.0, 0.0), -6, 21
    share = {}
    for size in (112, 224):
        out = blend.apply(np.full((size, size, 3), 100, np.uint8), np.zeros((0, 2), np.float32))  # the fallback ellipse
        assert out[size // 2, size // 2, 0] >= 159  # the centre takes the brightened copy
        share[size] = (out[..., 0] > 100).mean()
    # grown and softened alike relative to the face: the same share of a crop twice as large
    assert share[224] == pytest.approx(share[112], rel=0.03)


@pytest.mark.parametrize("steps", [2, 3, 20, 1500])
def test_one_cycle_schedule_runs_and_anneals_for_any_step_count(steps):
    from model.training import one_cycle

    optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = one_cycle(optimiser, 0.1, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimiser.param_groups[0]["lr"])
        optimiser.step()
        schedule.step()
    assert 0.05 < max(rates) <= 0.1 + 1e-9 and rates[-1] < 0.01
    if steps >= 20:  # long enough for a warm-up
        assert rates[0] < 0.01 and rates.index(max(rates)) in range(1, steps // 10 + 1)


def test_blend_regions_cover_their_part_of_the_face():
    from model.augment import BLEND_REGIONS, face_mask
    from model.faces import LANDMARKS, crop_face, detect_faces, expand_box, face_landmarks_points

    frame = face_frames(1, (640, 360))[0]
    box = detect_faces(frame)[0]
    points = face_landmarks_points(frame, box)
    assert len(points) == LANDMARKS
    top, _, bottom, left = expand_box(box, frame.shape)
    crop = crop_face(frame, box)
    points = (points - (left, top)) * crop.shape[0] / (bottom - top)  # into crop pixels, as cached
    masks = {region: face_mask(crop.shape[:2], points, region) > 0 for region in BLEND_REGIONS}
    rows = {region: np.flatnonzero(mask.any(axis=1)) for region, mask in masks.items()}
    eyes_row = points[36:48, 1].max()
    brows_row = points[17:27, 1].min()
    # nested where they should be, and each a real part of the face, not the fallback ellipse
    assert (masks["face"] <= masks["forehead"]).all() and masks["forehead"].sum() > 1.1 * masks["face"].sum()
    assert (masks["inner"] <= masks["face"]).all() and (masks["lower"] <= masks["face"]).all()
    assert 0.2 < masks["inner"].sum() / masks["face"].sum() < 0.8 and 0.2 < masks["lower"].sum() / masks["face"].sum() < 0.8
    assert rows["forehead"][0] < brows_row - 3 and rows["face"][0] >= brows_row - 1
    assert rows["lower"][0] > eyes_row - 1 and rows["lower"][-1] == rows["face"][-1]
    assert rows["inner"][-1] < rows["face"][-1] - 3  # the jaw line is left out


def test_a_leaning_face_is_cropped_upright_for_training_with_its_landmarks_turned_alike(tmp_path):
    from model.dataset import crops_for_video
    from model.faces import face_landmarks_points

    turned = [turned_about_centre(f, 35) for f in face_frames(6)]
    crops, marks = crops_for_video(write_h264(tmp_path / "leaning.mp4", turned), 6, 112)
    assert len(crops) == 6
    for crop, points in zip(crops, marks):
        found = face_landmarks_points(crop, (19, 93, 93, 19))  # the face's box in a 112 px crop
        assert np.median(np.linalg.norm(found - points, axis=1)) < 4  # the cached points lie on the crop's face
        eyes = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
        assert abs(np.degrees(np.arctan2(eyes[1][1] - eyes[0][1], eyes[1][0] - eyes[0][0]))) < 8


def test_a_recipe_that_turns_every_face_upright_crops_so_and_makes_models_that_serve_so(tmp_path, tiny_weights, capsys):
    """`--upright-from 0`: the training crops of a face leaning 12° (less than the default turns)
    are cut upright, in a cache of their own, and the models made name the setting, so that
    serving crops their faces as their training did."""
    from model.detector import Detector
    from model.faces import UPRIGHT_FROM_DEGREES, detect_faces, face_roll

    leaning = [turned_about_centre(f, 12) for f in face_frames(12)]
    rows = ["path,label,method,source_ids"]
    for identity in ("001", "002"):
        write_h264(tmp_path / f"{identity}.mp4", leaning)
        tinted = [f.copy() for f in leaning]
        for f in tinted:
            f[90:230, 260:400, 0] = 255
        write_h264(tmp_path / f"{identity}_fake.mp4", tinted)
        rows += [f"{identity}.mp4,REAL,original,{identity}", f"{identity}_fake.mp4,FAKE,Tint,{identity}"]
    manifest = tmp_path / "clips.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    recipe = ["--manifest", str(manifest), "--cache-dir", str(cache), "--steps", "2", "--eval-every", "2", "--clips-per-batch", "2"]
    report_path = tmp_path / "cv" / "crossval.json"
    folds = ["--folds", "2", "--keep-models", str(tmp_path / "folds"), "--out", str(report_path.parent)]
    assert cli_main(["crossval", *recipe, "--upright-from", "0", *folds]) == 0
    report = json.loads(report_path.read_text())
    assert report["train_config"]["upright_from_degrees"] == 0
    assert sorted({p.parent.name for p in cache.rglob("*.npz")}) == ["crf40_480p-112px-upright-from-0", "orig-112px-upright-from-0"]
    crops = np.concatenate([np.load(p)["crops"] for p in cache.rglob("orig-*/*.npz")])
    rolls = [face_roll(crop, (19, 93, 93, 19)) for crop in crops]  # the face's box in a 112 px crop
    assert len(crops) == 4 * 12 and max(abs(r) for r in rolls) < 4, rolls
    lean = face_roll(leaning[0], detect_faces(leaning[0])[0])  # as the face stands in the video
    assert abs(lean) > 5

    video = write_h264(tmp_path / "leaning.mp4", leaning)
    fold_model = Detector(tmp_path / "folds" / "fold-1.pt")
    assert fold_model.upright_from == 0 and "logit_bias" in fold_model.config.extra  # calibration kept the setting
    out = tmp_path / "final.pt"
    assert cli_main(["train", *recipe, "--crossval-report", str(report_path), "--out", str(out)]) == 2  # not the recipe
    assert "upright_from_degrees 0.0 there, 25.0 here" in capsys.readouterr().err
    assert cli_main(["train", *recipe, "--upright-from", "0", "--crossval-report", str(report_path), "--out", str(out)]) == 0
    for detector in (fold_model, Detector(out)):
        [track] = detector.detect(video, 10).tracks
        assert all(abs(s["turned_deg"] - lean) < 3 for s in track.frame_scores), track.frame_scores
    assert Detector(tiny_weights).upright_from == UPRIGHT_FROM_DEGREES
    [track] = Detector(tiny_weights).detect(video, 10).tracks
    assert {s["turned_deg"] for s in track.frame_scores} == {0.0}  # the default leaves a 12° lean as it is


def test_blend_regions_are_drawn_only_when_asked():
    from model.augment import BLEND_REGIONS, SelfBlend

    plain, chosen = np.random.default_rng(5), np.random.default_rng(5)
    assert SelfBlend.draw(plain).region == "face"
    # no region drawn by default: later draws are those of a sampler without the option
    SelfBlend.draw(chosen, ("face",))
    assert plain.random() == chosen.random()
    drawn = {SelfBlend.draw(chosen, BLEND_REGIONS).region for _ in range(100)}
    assert drawn == set(BLEND_REGIONS)


def test_hard_reencode_is_smaller_keeps_every_frame_and_is_the_same_every_time(tmp_path):
    from model.augment import reencode
    from model.video import probe_video

    source = write_h264(tmp_path / "source.mp4", face_frames(30, (1280, 720)))
    outputs = [tmp_path / f"hard{i}.mp4" for i in range(3)]
    for path in outputs:
        reencode(source, path, crf=40, max_lines=480)
    info = probe_video(outputs[0])
    assert (info.width, info.height, info.frame_count) == (852, 480, 30)  # 853 made even
    assert outputs[0].stat().st_size < source.stat().st_size
    # the hard validation is scored on such files: every run must score the same pixels
    assert len({path.read_bytes() for path in outputs}) == 1
    # a clip already under 480 lines, re-encoded as it is: on several threads x264 gave another
    # file about one run in six
    small = write_h264(tmp_path / "small.mp4", face_frames(24))
    outputs = [tmp_path / f"small{i}.mp4" for i in range(10)]
    for path in outputs:
        reencode(small, path, crf=40, max_lines=480)
    assert len({path.read_bytes() for path in outputs}) == 1


def test_a_clip_whose_tags_are_not_utf8_is_reencoded(tmp_path):
    """As the app reads it: the tags are not read (`evaluate` re-encodes people's own clips)."""
    from model.augment import reencode
    from model.video import probe_video

    source = write_h264(tmp_path / "source.mp4", face_frames(12))
    source.write_bytes(source.read_bytes().replace(b"Lavf", b"\xaeavf"))
    reencode(source, tmp_path / "hard.mp4", crf=40, max_lines=480)
    assert probe_video(tmp_path / "hard.mp4").frame_count == 12


def test_a_clip_where_a_stream_appears_mid_file_is_reencoded(tmp_path):
    from model.augment import reencode
    from model.video import probe_video

    source = late_stream_flv_copy(write_video(tmp_path / "clip.flv", face_frames(100), "flv1"), tmp_path / "late.flv")
    reencode(source, tmp_path / "hard.mp4", crf=40, max_lines=480)
    assert probe_video(tmp_path / "hard.mp4").frame_count == 99  # every frame but the one made sound

def test_a_portrait_video_is_reencoded_upright_at_480_lines_across(tmp_path):
    """480p bounds the shorter side: a phone's portrait clip keeps its faces' size as a landscape
    clip does (bounding the height shrank a 1080×1920 clip to 270×480, where faces were lost)."""
    from model.augment import reencode
    from model.video import probe_video, read_frames

    # portrait, 720×1280: the astronaut above and below a grey band
    upright = [np.pad(f, ((437, 438), (0, 0), (0, 0)), constant_values=40) for f in face_frames(6, (720, 405))]
    stored = write_h264(tmp_path / "portrait.mp4", upright)
    sideways = turn_quarter_clockwise_on_display(
        write_h264(tmp_path / "sideways.mp4", [np.ascontiguousarray(np.rot90(f)) for f in upright])
    )
    for source in (stored, sideways):
        target = tmp_path / f"{source.stem}-hard.mp4"
        reencode(source, target, crf=23, max_lines=480)
        info = probe_video(target)
        assert (info.width, info.height, info.frame_count) == (480, 852, 6)  # 853 made even
        # stored upright: read without applying any rotation, the picture is the right way up
        with av.open(str(target)) as container:
            frame = next(container.decode(video=0))
            assert frame.rotation == 0 and (frame.width, frame.height) == (480, 852)
        sampled = read_frames(target, 1)
        expected = cv2.resize(upright[sampled.indices[0]], (480, 852), interpolation=cv2.INTER_AREA)
        assert np.abs(sampled.frames[0].astype(int) - expected).mean() < 6


def test_a_reencode_has_square_pixels_and_the_source_s_rate(tmp_path):
    """As a video site's transcoder writes it: a 16:9 picture stored in fewer columns (HDV, DVD)
    comes out 16:9 in square pixels; raw DV, whose average rate FFmpeg gives as 60,000 a second,
    at its own 29.97."""
    from model.augment import reencode
    from model.video import read_frames

    frames = face_frames(6)
    narrow = [cv2.resize(f, (480, 360), interpolation=cv2.INTER_AREA) for f in frames]
    squeezed = write_video(tmp_path / "hdv.mp4", narrow, "libx264", pixel_aspect=Fraction(4, 3))
    dv_frames = [cv2.resize(f, (720, 480)) for f in frames]
    capture = write_video(tmp_path / "capture.dv", dv_frames, "dvvideo", fps=Fraction(30000, 1001), pix_fmt="yuv411p")
    for source, size in ((squeezed, (640, 360)), (capture, (640, 480))):  # NTSC DV's pixels are 8/9 as wide as tall
        target = tmp_path / f"{source.stem}-hard.mp4"
        reencode(source, target, crf=23, max_lines=480)
        with av.open(str(target)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == size and stream.sample_aspect_ratio in (None, 1)
            assert stream.average_rate == (10 if source is squeezed else Fraction(30000, 1001)) and stream.frames == 6
        sampled = read_frames(target, 1)
        expected = cv2.resize(frames[sampled.indices[0]], size, interpolation=cv2.INTER_AREA)
        assert np.abs(sampled.frames[0].astype(int) - expected).mean() < 6


@pytest.mark.parametrize(
    "quality, fourcc", [("av1_crf45_480p", b"av01"), ("vp9_crf45_480p", b"vp09"), ("gif_480p", b"GIF89a"), ("webp_480p", b"ANMF")]
)
def test_the_other_codecs_qualities_are_the_same_file_every_time_and_read_as_videos(tmp_path, quality, fourcc):
    from model.augment import reencode
    from model.dataset import QUALITIES
    from model.video import read_frames

    source = write_h264(tmp_path / "source.mp4", face_frames(24, (1280, 720)))
    outputs = [tmp_path / f"{quality}-{i}.mp4" for i in range(2)]
    for path in outputs:
        reencode(source, path, *QUALITIES[quality])
    assert outputs[0].read_bytes() == outputs[1].read_bytes() and fourcc in outputs[0].read_bytes()
    sampled = read_frames(outputs[0], 6)  # AV1 through PyAV: OpenCV's FFmpeg has no AV1 software decoder
    assert len(sampled.frames) == 6 and sampled.frames[0].shape == (480, 852, 3)


@pytest.mark.parametrize("codec", ["gif", "webp"])
def test_an_animated_picture_is_written_as_gif_makers_and_sites_write_one(tmp_path, codec):
    from model.augment import reencode
    from model.video import probe_video, read_frames

    frames = face_frames(30)
    source = write_video(tmp_path / "source.mp4", frames, "libx264", fps=30, options={"crf": "12"})
    target = tmp_path / f"clip.{codec}"
    reencode(source, target, 0, 480, codec)
    info = probe_video(target)
    assert (info.width, info.height, info.fps, info.frame_count) == (640, 360, 10, 10)  # every third frame
    sampled = read_frames(target, 10)
    assert all(np.abs(frame.astype(int) - frames[3 * i]).mean() < 8 for i, frame in zip(sampled.indices, sampled.frames))
    if codec == "gif":  # one palette of 256 colours
        assert all(len(np.unique(frame.reshape(-1, 3), axis=0)) <= 256 for frame in sampled.frames)
    else:  # lossy frames, none lossless
        assert b"VP8 " in target.read_bytes() and b"VP8L" not in target.read_bytes()


@pytest.mark.parametrize("quality", ["bw_crf23_480p", "sepia_crf23_480p"])
def test_a_toned_quality_is_written_in_the_tone_and_light_of_the_picture(tmp_path, quality):
    from model.augment import TONES, reencode
    from model.dataset import QUALITIES
    from model.video import read_frames

    frames = face_frames(12)
    path = tmp_path / f"{quality}.mp4"
    reencode(write_h264(tmp_path / "source.mp4", frames), path, *QUALITIES[quality])
    tone = TONES[QUALITIES[quality].tone]
    sampled = read_frames(path, 4)
    for index, frame in zip(sampled.indices, sampled.frames):
        assert np.abs(frame.astype(int) - tone(frames[index])).mean() < 6
        red, green, blue = frame.reshape(-1, 3).astype(int).T
        if quality == "bw_crf23_480p":
            assert (frame.max(axis=2).astype(int) - frame.min(axis=2)).max() <= 2  # no colour
        else:
            assert (red - green).mean() > 4 and (green - blue).mean() > 6  # brown, not grey


def _lit_and_at(tmp_path: Path, *qualities: str) -> tuple[list[np.ndarray], list]:
    """The face clip's frames, and the clip read back as is and at each quality (4 frames each);
    each quality's re-encode is checked to give the same file twice."""
    from model.augment import reencode
    from model.dataset import QUALITIES
    from model.video import read_frames

    frames = face_frames(12)
    source = write_h264(tmp_path / "source.mp4", frames)
    read = [read_frames(source, 4)]
    for quality in qualities:
        outputs = [tmp_path / f"{quality}-{i}.mp4" for i in range(2)]
        for path in outputs:
            reencode(source, path, *QUALITIES[quality])
        assert outputs[0].read_bytes() == outputs[1].read_bytes()
        read.append(read_frames(outputs[0], 4))
    return frames, read


def _grain(image: np.ndarray) -> float:
    return float(np.abs(image.astype(float) - cv2.GaussianBlur(image, (5, 5), 0)).mean())


def test_the_dim_quality_is_darker_and_noisier_and_the_same_file_every_time(tmp_path):
    from model.augment import DIM_LEVELS

    frames, (lit, dimmed) = _lit_and_at(tmp_path, "dim_crf23_480p")
    for index, frame, source_frame in zip(dimmed.indices, dimmed.frames, lit.frames):
        smooth = cv2.GaussianBlur(frame, (9, 9), 0).astype(int)
        assert np.abs(smooth - cv2.GaussianBlur(DIM_LEVELS[frames[index]], (9, 9), 0)).mean() < 3
        assert frame.mean() < 0.6 * source_frame.mean()
        assert _grain(frame) > 1.5 * _grain(DIM_LEVELS[source_frame].astype(np.uint8))  # the sensor's noise


def test_the_gained_quality_is_as_bright_but_noisier_than_the_dim_one_and_the_same_file_every_time(tmp_path):
    frames, (lit, gained, dimmed) = _lit_and_at(tmp_path, "gained_crf23_480p", "dim_crf23_480p")
    for index, frame, source_frame, dim_frame in zip(gained.indices, gained.frames, lit.frames, dimmed.frames):
        smooth = cv2.GaussianBlur(frame, (9, 9), 0).astype(int)
        assert np.abs(smooth - cv2.GaussianBlur(frames[index], (9, 9), 0)).mean() < 4  # brought back up
        assert _grain(frame) > 1.5 * _grain(source_frame) and _grain(frame) > 1.3 * _grain(dim_frame)


def test_crops_cut_by_earlier_code_are_not_reused(tiny_dataset, tmp_path):
    clip = read_manifest(tiny_dataset)[0]
    unversioned = tmp_path / "orig-112px" / f"{clip.key}.npz"  # where crops lay before the cache had versions
    unversioned.parent.mkdir()
    np.savez(unversioned, crops=np.zeros((1, 112, 112, 3), np.uint8), landmarks=np.zeros((1, LANDMARKS, 2), np.float32))
    prepare_cache([clip], tmp_path, ["orig"], frames=8, workers=1)
    assert cache_path(tmp_path, clip, "orig").is_relative_to(tmp_path / f"v{CROPS_VERSION}")
    crops, _ = load_cached(tmp_path, clip, "orig")
    assert len(crops) == 8 and crops.any()  # cut afresh, not the stale file


def test_a_crop_cache_cut_afresh_gives_the_same_crops_and_the_same_weights(tiny_dataset, tmp_path):
    # what `make crossval` and `make train` need to give the same files on another machine; the
    # second cache is cut by worker processes, the first in this one
    states = []
    for run, workers in (("first", 1), ("second", 2)):
        (tmp_path / run).mkdir()
        config = tiny_config(tiny_dataset, tmp_path / run, val_fraction=0.5, workers=workers)
        train(config)
        states.append(load_checkpoint(config.out).state_dict())
    first = sorted((tmp_path / "first" / "cache").rglob("*.npz"))
    assert {p.parent.name for p in first} == {"orig-112px", "crf40_480p-112px"}
    for path in first:
        twin = tmp_path / "second" / "cache" / path.relative_to(tmp_path / "first" / "cache")
        with np.load(path) as a, np.load(twin) as b:
            assert a.files == b.files
            assert all(np.array_equal(a[name], b[name]) for name in a.files), path.name
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])


def test_sharpness_aware_gradients_are_taken_uphill_and_leave_the_weights_in_place():
    a, b = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -2.0])
    w = torch.tensor([2.0, -1.0], requires_grad=True)

    def loss_at() -> torch.Tensor:
        return (a * w**2).sum() + (b * w).sum()

    loss_at().backward()
    g = 2 * a * w.detach() + b
    uphill = w.detach() + 0.1 * g / g.norm()
    sharpness_aware_gradients([w], 0.1, loss_at)
    np.testing.assert_allclose(w.detach(), [2.0, -1.0])
    np.testing.assert_allclose(w.grad, 2 * a * uphill + b, rtol=1e-6)


def test_fit_with_sharpness_aware_steps_trains_other_weights(tiny_dataset, tmp_path):
    clips = read_manifest(tiny_dataset)
    fits = {}
    for rho in (0.0, 0.05):
        config = tiny_config(tiny_dataset, tmp_path, steps=2, sam_rho=rho)
        prepare_cache(clips, config.cache_dir, ["orig", "crf40_480p"], config.cached_frames, workers=1)
        fits[rho] = fit(config, clips[:2], clips[2:], select_best=False)
    assert all(math.isfinite(h["loss"]) for f in fits.values() for h in f.history)
    # same seed, same batches: only the sharpness-aware gradients tell the two apart
    plain, sharp = (dict(f.model.named_parameters()) for f in fits.values())
    changed = [n for n, p in plain.items() if p.requires_grad and not torch.equal(p, sharp[n])]
    assert changed and all(torch.equal(p, sharp[n]) for n, p in plain.items() if not p.requires_grad)
    for command in ("train", "crossval"):
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--sam-rho", "0.05"])).sam_rho == 0.05
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--weight-decay", "0.05"])).weight_decay == 0.05


def test_weight_average_is_the_mean_of_the_weights_and_statistics_it_was_given():
    models = []
    for value in (1.0, 2.0, 6.0):
        model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
        for tensor in model.state_dict().values():
            tensor.fill_(value)
        models.append(model)
    average = WeightAverage(models[0])
    for model in models:
        average.update(model)
    state = average.model.state_dict()
    np.testing.assert_allclose(state["0.weight"], [[3.0, 3.0]])
    np.testing.assert_allclose(state["1.running_var"], [3.0])
    assert state["1.num_batches_tracked"] == 6  # a counter: the last model's
    assert average.count == 3 and torch.equal(models[0][0].weight, torch.full((1, 2), 1.0))


def test_fit_with_averaged_weights_keeps_their_mean(tiny_dataset, tmp_path):
    clips = read_manifest(tiny_dataset)
    fits = {}
    for start in (0, 1, 4):
        config = tiny_config(tiny_dataset, tmp_path, steps=4, average_from=start)
        prepare_cache(clips, config.cache_dir, ["orig", "crf40_480p"], config.cached_frames, workers=1)
        fits[start] = fit(config, clips[:2], clips[2:], select_best=False)
    plain, averaged, last = (dict(fits[s].model.named_parameters()) for s in (0, 1, 4))
    # the same steps are taken either way: an average of the last step alone is that step
    assert all(torch.equal(p, last[n]) for n, p in plain.items())
    changed = [n for n, p in plain.items() if p.requires_grad and not torch.equal(p, averaged[n])]
    assert changed and all(torch.equal(p, averaged[n]) for n, p in plain.items() if not p.requires_grad)
    crops = [load_cached(config.cache_dir, clips[2 + i], "orig")[0] for i in fits[1].kept]
    np.testing.assert_allclose(clip_margins(fits[1].model, crops, torch.device("cpu")), fits[1].margins[4]["orig"], atol=1e-5)
    assert not np.allclose(fits[1].margins[4]["orig"], fits[0].margins[4]["orig"])
    args = build_parser().parse_args(["crossval", "--manifest", "m.csv", "--average-from", "750"])
    assert _train_config(args).average_from == 750


def test_erase_prob_comes_from_the_command_line():
    for command in ("train", "crossval"):
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--erase-prob", "0.3"])).erase_prob == 0.3
    assert _train_config(build_parser().parse_args(["train", "--manifest", "m.csv"])).erase_prob == 0.0


def test_glasses_prob_comes_from_the_command_line():
    for command in ("train", "crossval"):
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--glasses-prob", "0.25"])).glasses_prob == 0.25
    assert _train_config(build_parser().parse_args(["train", "--manifest", "m.csv"])).glasses_prob == 0.0


def test_grey_prob_comes_from_the_command_line():
    for command in ("train", "crossval"):
        assert _train_config(build_parser().parse_args([command, "--manifest", "m.csv", "--grey-prob", "0.2"])).grey_prob == 0.2
    assert _train_config(build_parser().parse_args(["train", "--manifest", "m.csv"])).grey_prob == 0.0
