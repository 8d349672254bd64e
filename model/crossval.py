"""Cross-validation over identity groups: every clip judged by a model that never saw its people.

A single validation split of this data holds only a few identity groups, and scores cluster by
group, so one split says little. Here each fold of groups is held out in turn; the fold models
keep their last step (choosing a step on the held-out fold would flatter it), and the pooled
out-of-fold scores are summarised like a validation.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .dataset import identity_components, identity_folds, prepare_cache, read_manifest, shown_path
from .evaluation import fit_calibration, roc_auc, summarise
from .training import TrainConfig, fit

log = logging.getLogger(__name__)


def cross_validate(config: TrainConfig, folds: int = 5) -> dict:
    """Train one model per held-out fold and report the out-of-fold metrics at both qualities.

    Probabilities are cross-fitted: each fold's margins are calibrated with the temperature and
    offset fitted on the other folds' out-of-fold margins, so no clip calibrates its own verdict."""
    clips = read_manifest(config.manifest, config.root)
    fold_of = np.array(identity_folds(clips, folds, config.seed))
    groups = np.array(identity_components(clips))
    qualities = ["orig", config.hard_quality]
    prepare_cache(clips, config.cache_dir, sorted(set(config.train_qualities) | set(qualities)), config.cached_frames, config.image_size, config.workers)

    margins: dict[int, dict[str, np.ndarray]] = {}  # step → quality → margin per clip (nan: not judged)
    histories = []
    for k in range(folds):
        held_out = np.flatnonzero(fold_of == k)
        train_clips = [c for c, f in zip(clips, fold_of) if f != k]
        log.info("fold %d/%d: %d clips held out, %d for training", k + 1, folds, len(held_out), len(train_clips))
        result = fit(config, train_clips, [clips[i] for i in held_out], select_best=False)
        histories.append(result.history)
        for step, by_quality in result.margins.items():
            for quality, values in by_quality.items():
                margins.setdefault(step, {q: np.full(len(clips), np.nan) for q in qualities})[quality][held_out[result.kept]] = values

    y = np.array([c.label == "FAKE" for c in clips])
    final = margins[config.steps]
    judged = np.isfinite(final["orig"]) & np.isfinite(final[config.hard_quality])
    report: dict = {
        "folds": folds,
        "train_config": portable_settings(config),
        "fold_histories": histories,
        "auc_by_step": {
            step: {q: roc_auc(y[judged], m[q][judged]) for q in qualities} for step, m in sorted(margins.items())
        },
        "qualities": {},
    }
    p_fake = {q: np.full(len(clips), np.nan) for q in qualities}
    for k in range(folds):
        others = judged & (fold_of != k)
        temperature, bias = fit_calibration(np.r_[final["orig"][others], final[config.hard_quality][others]], np.r_[y[others], y[others]])
        for q in qualities:
            p_fake[q][fold_of == k] = 1 / (1 + np.exp(-(final[q][fold_of == k] / temperature + bias)))
    methods = [c.method for c in clips]
    for q in qualities:
        summary = summarise(y[judged], p_fake[q][judged], [m for m, j in zip(methods, judged) if j], 0.5, groups[judged])
        summary["no_face_clips"] = int((~judged).sum())
        rows = [
            {"path": shown_path(c, config.manifest, config.root), "label": c.label, "method": c.method, "group": int(g), "fold": int(f), "margin": _number(m), "p_fake": _number(p)}
            for c, g, f, m, p in zip(clips, groups, fold_of, final[q], p_fake[q])
        ]
        report["qualities"][q] = {"metrics": summary, "clips": rows}
    return report


def portable_settings(config: TrainConfig) -> dict:
    """The recipe's settings without this machine's folders, so a report can be shared."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("root", "cache_dir", "out", "device", "workers")}
    if config.imagenet_weights:
        settings["imagenet_weights"] = Path(config.imagenet_weights).name
    return settings


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)
