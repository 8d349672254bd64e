"""Cross-validation over identity groups: every clip judged by a model that never saw its people.

A single validation split of this data holds only a few identity groups, and scores cluster by
group, so one split says little. Here each fold of groups is held out in turn; the fold models
keep their last step (choosing a step on the held-out fold would flatter it), and the pooled
out-of-fold scores are summarised like a validation.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import numpy as np
import torch

from .dataset import Clip, identity_components, identity_folds, read_manifest, shown_path
from .evaluation import fit_calibration_on_qualities, reliability_by_confidence, roc_auc, summarise
from .processes import SPAWN, available_cores, cores_each, spawn_pool, start_worker, use_threads
from .network import EnsembleNet, read_checkpoint, save_checkpoint
from .training import (
    TrainConfig, average_margins, cache_crops, fit, fit_members, learnt_from, member_config, member_history, portable_settings,
    save_trained, training_clips,
)

log = logging.getLogger(__name__)


def cross_validate(
    config: TrainConfig, folds: int = 5, jobs: int = 1, train_groups: int | None = None, models_dir: str | Path | None = None
) -> dict:
    """Train one model per held-out fold and report the out-of-fold metrics at both qualities.

    With `jobs` > 1 that many folds train at once, each in its own process with its share of
    the cores (and of the GPU, if there is one); the report is the same but for rounding (the
    cores are re-shared as folds start and end, and a sum over more threads rounds differently).
    With `train_groups`, each fold model learns from only that many of its training identity
    groups, drawn at random: run at several sizes, that measures how the detector gains from
    more people. With `config.members` > 1 each fold's model is an ensemble: its members train
    as separate tasks (run side by side like folds) and its margins are their mean; each
    member's own margin is reported beside it. With `models_dir`, each fold's model is kept
    there as `fold-<k>.pt` (k from 1), calibrated as its held-out clips were: a detector that
    never saw those clips' people, to study them through the app's whole pipeline.

    Probabilities are cross-fitted: each fold's margins are calibrated with the temperature and
    offset fitted on the other folds' out-of-fold margins, so no clip calibrates its own verdict.

    The report's `qualities` are orig and the hard quality, on which calibration is fitted;
    `other_qualities` holds the further ones of `config.judge_qualities`, judged by the same fold
    models and calibrated alike, at qualities the calibration never saw."""
    clips = read_manifest(config.manifest, config.root)
    fold_of = np.array(identity_folds(clips, folds, config.seed))
    groups = np.array(identity_components(clips))
    qualities = ["orig", config.hard_quality]
    all_qualities = list(dict.fromkeys([*qualities, *config.judge_qualities]))
    held_outs = [np.flatnonzero(fold_of == k) for k in range(folds)]
    fold_train_groups = [training_groups(groups, fold_of, k, train_groups, config.seed) for k in range(folds)]
    cache_crops(config, clips)

    train_sets = [[c for c, g in zip(clips, groups) if g in chosen] for chosen in fold_train_groups]
    val_sets = [[clips[i] for i in held_out] for held_out in held_outs]
    for k in range(folds):
        log.info(
            "fold %d/%d: %d clips held out, %d of %d identity groups (%d clips) for training",
            k + 1, folds, len(held_outs[k]), len(fold_train_groups[k]), len(set(groups[fold_of != k])), len(train_sets[k]),
        )
    # One task per fold and ensemble member; the folds stay those of config.seed.
    tasks = [(k, member) for k in range(folds) for member in range(config.members)]
    member_files = [Path(models_dir) / f"fold-{k + 1}-member-{member}.pt" if models_dir else None for k, member in tasks]
    if models_dir:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
    task_args = (
        [member_config(config, member) for _, member in tasks], [train_sets[k] for k, _ in tasks], [val_sets[k] for k, _ in tasks],
        member_files,
    )
    if jobs > 1:
        workers = min(jobs, len(tasks))
        setup = (cores_each(workers), logging.getLogger().level, SPAWN.Value("i", 0))
        with spawn_pool(workers, _start_fold_process, setup) as pool:
            results = list(pool.map(_held_out_margins_sharing_cores, *task_args))
    else:
        results = [held_out_margins(*args) for args in zip(*task_args)]

    margins: dict[int, dict[str, np.ndarray]] = {}  # step → quality → margin per clip (nan: not judged)
    member_final = [{q: np.full(len(clips), np.nan) for q in all_qualities} for _ in range(config.members)]
    histories = []
    for k, held_out in enumerate(held_outs):
        fold_results = [result for (fold, _), result in zip(tasks, results) if fold == k]
        kept = held_out[fold_results[0][2]]  # the same clips have faces for every member
        histories.append([r for member, (history, _, _) in enumerate(fold_results) for r in member_history(history, member, config.members)])
        if not len(kept):  # no held-out clip of this fold had a face at every quality: nothing was scored
            continue
        for member, (_, member_margins, _) in enumerate(fold_results):
            for q in all_qualities:
                member_final[member][q][kept] = member_margins[config.steps][q]
        for step, by_quality in average_margins([m for _, m, _ in fold_results]).items():
            for quality, values in by_quality.items():
                margins.setdefault(step, {q: np.full(len(clips), np.nan) for q in all_qualities})[quality][kept] = values

    y = np.array([c.label == "FAKE" for c in clips])
    final = margins[config.steps]
    judged = np.isfinite(final["orig"]) & np.isfinite(final[config.hard_quality])
    report: dict = {
        "folds": folds,
        "train_config": portable_settings(config),
        "train_groups": train_groups,
        "fold_train_groups": fold_train_groups,
        "fold_histories": histories,
        "auc_by_step": {
            step: {q: roc_auc(y[judged], m[q][judged]) for q in qualities} for step, m in sorted(margins.items())
        },
        "qualities": {},
        "other_qualities": {},
    }
    p_fake = {q: np.full(len(clips), np.nan) for q in all_qualities}
    for k in range(folds):
        others = judged & (fold_of != k)
        temperature, bias = fit_calibration_on_qualities([final[q][others] for q in qualities], y[others])
        for q in all_qualities:
            p_fake[q][fold_of == k] = 1 / (1 + np.exp(-(final[q][fold_of == k] / temperature + bias)))
        if models_dir:
            fold_files = [f for (fold, _), f in zip(tasks, member_files) if fold == k]
            keep_fold_model(fold_files, Path(models_dir) / f"fold-{k + 1}.pt", (temperature, bias), training_clips(train_sets[k], config))
    methods = [c.method for c in clips]
    for q in all_qualities:
        scored = judged & np.isfinite(final[q])
        summary = summarise(y[scored], p_fake[q][scored], [m for m, j in zip(methods, scored) if j], 0.5, groups[scored])
        summary["no_face_clips"] = int((~scored).sum())
        rows = [
            {"path": shown_path(c, config.manifest, config.root), "label": c.label, "method": c.method, "group": int(g), "fold": int(f), "margin": _number(m), "p_fake": _number(p)}
            for c, g, f, m, p in zip(clips, groups, fold_of, final[q], p_fake[q])
        ]
        if config.members > 1:  # each member's own margin, to compare the ensemble with its members
            for i, row in enumerate(rows):
                row["member_margins"] = [_number(m[q][i]) for m in member_final]
        report["qualities" if q in qualities else "other_qualities"][q] = {"metrics": summary, "clips": rows}
    return report


def train_on_all_clips(config: TrainConfig, report_path: str | Path) -> dict:
    """The recipe's final model (every member, for an ensemble): trained on every clip of the
    manifest, its last step kept, and calibrated on the out-of-fold margins of the recipe's
    cross-validation (`report_path`).

    The cross-validation says how the recipe does on people it never saw; this model then learns
    from all of them, since the detector gains from every identity group added. No clip is left
    to validate it: the cross-validation is its validation."""
    report = json.loads(Path(report_path).read_text())
    clips = read_manifest(config.manifest, config.root)
    check_same_recipe(report, config, clips)
    cache_crops(config, clips)
    log.info("%d clips, all for training; calibration from %s", len(clips), report_path)
    result = fit_members(config, clips, [])
    return save_trained(
        config, result, calibration_from_report(report), validation=validation_summary(report),
        validation_clips=[], calibrated_on=Path(report_path).name,
    )


def validation_summary(report: dict) -> dict:
    """A cross-validation's headline figures, stored with the final model so that the app can
    say how far its verdicts can be trusted on people it never saw (and, with the figures of the
    further qualities judged, how far on small faces)."""
    parts = report["qualities"]
    first = next(iter(parts.values()))["metrics"]
    keys = ("auc", "balanced_accuracy", "ece", "recall_fake", "recall_real")
    headline = lambda by_quality: {q: {k: round(part["metrics"][k], 3) for k in keys} for q, part in by_quality.items()}
    summary = {
        "method": "cross-validation",
        "folds": report["folds"],
        "clips": first["clips"],
        "identity_groups": first["identity_groups"],
        "qualities": headline(parts),
    }
    if report.get("other_qualities"):  # judged only, e.g. the small faces of 240p videos
        summary["other_qualities"] = headline(report["other_qualities"])
    summary["reliability"] = reliability(parts)
    return summary


def reliability(parts: dict[str, dict]) -> dict:
    """How often the out-of-fold verdicts were right, by band of confidence, over the clips judged
    at every one of these qualities (each clip once a quality)."""
    by_path = [{r["path"]: r for r in part["clips"] if r["p_fake"] is not None} for part in parts.values()]
    paths = sorted(set.intersection(*(set(rows) for rows in by_path)))
    y = np.array([by_path[0][path]["label"] == "FAKE" for path in paths])
    p = np.array([[rows[path]["p_fake"] for rows in by_path] for path in paths])
    bands = reliability_by_confidence(y, p)
    for band in bands:
        if "share_right" in band:
            band["share_right"] = round(band["share_right"], 3)
            band["share_right_ci95"] = [round(v, 3) for v in band["share_right_ci95"]]
    return {"qualities": list(parts), "clips": len(paths), "bands": bands}


# Settings that change nothing a model learns, or (the seed) only which folds and draws it gets.
_NOT_RECIPE = {"manifest", "eval_every", "val_fraction", "seed", "judge_qualities"}


def check_same_recipe(report: dict, config: TrainConfig, clips: list[Clip]) -> None:
    """Refuse to calibrate a model with a cross-validation of another recipe or other clips."""
    # a setting the report does not name did not exist yet when it was made: it had its default
    settings = {**portable_settings(TrainConfig(manifest="")), **report["train_config"]}
    theirs = {k: v for k, v in settings.items() if k not in _NOT_RECIPE}
    ours = {k: v for k, v in portable_settings(config).items() if k not in _NOT_RECIPE}
    differing = [f"{k} {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in sorted(theirs.keys() | ours.keys()) if theirs.get(k) != ours.get(k)]
    if differing:
        raise ValueError(f"the cross-validation report is of another recipe: {'; '.join(differing)}")
    if report.get("train_groups") is not None:
        raise ValueError("the cross-validation report trained its folds on a subset of the groups (a learning curve)")
    judged = sorted(r["path"] for r in next(iter(report["qualities"].values()))["clips"])
    if judged != sorted(shown_path(c, config.manifest, config.root) for c in clips):
        raise ValueError("the cross-validation report judged other clips than the manifest lists")


def calibration_from_report(report: dict) -> tuple[float, float]:
    """Temperature and offset fitted on all of a cross-validation's out-of-fold margins, at every
    quality, as each fold's were fitted on the other folds'."""
    by_quality = [part["clips"] for part in report["qualities"].values()]
    judged = [i for i in range(len(by_quality[0])) if all(rows[i]["margin"] is not None for rows in by_quality)]
    margins = [np.array([rows[i]["margin"] for i in judged]) for rows in by_quality]
    return fit_calibration_on_qualities(margins, np.array([by_quality[0][i]["label"] == "FAKE" for i in judged]))


def training_groups(groups: np.ndarray, fold_of: np.ndarray, fold: int, count: int | None, seed: int) -> list[int]:
    """The identity groups fold `fold`'s model trains on: all outside the fold, or `count` of them at random."""
    available = sorted({int(g) for g in groups[fold_of != fold]})
    if count is None:
        return available
    if not 1 <= count <= len(available):
        raise ValueError(f"{count} training groups asked for, but fold {fold + 1} has {len(available)}")
    return sorted(int(g) for g in np.random.default_rng([seed, fold]).choice(available, count, replace=False))


def keep_fold_model(member_files: list[Path], path: Path, calibration: tuple[float, float], trained_on: list[Clip]) -> None:
    """Save a fold's model (its members as one ensemble) with its cross-fitted calibration, and
    the people it learnt from, so that an evaluation can tell its unseen clips; the members' own
    files go. The weights stay in float32: the held-out margins come back to the rounding."""
    members = [read_checkpoint(f)[0] for f in member_files]
    model = members[0] if len(members) == 1 else EnsembleNet.of(members)
    model.config.calibrate(*calibration)
    save_checkpoint(model, path, half=False, **learnt_from(trained_on))
    for f in member_files:
        f.unlink()


def held_out_margins(
    config: TrainConfig,
    train_clips: list[Clip],
    val_clips: list[Clip],
    keep_model: Path | None = None,
    before_step: Callable[[int], None] | None = None,
) -> tuple[list[dict], dict, list[int]]:
    """One fold: the training history, the held-out margins at every evaluated step, and which
    held-out clips had crops at every quality; the trained network goes to `keep_model`, if given."""
    result = fit(config, train_clips, val_clips, select_best=False, before_step=before_step)
    if keep_model:
        save_checkpoint(result.model.cpu(), keep_model, half=False)
    return result.history, result.margins, result.kept


# In a fold process: how many folds are training now, shared by all the fold processes.
_folds_training: Synchronized | None = None


def _start_fold_process(threads: int, log_level: int, folds_training: Synchronized) -> None:
    global _folds_training
    _folds_training = folds_training
    start_worker(threads, log_level)


def _held_out_margins_sharing_cores(
    config: TrainConfig, train_clips: list[Clip], val_clips: list[Clip], keep_model: Path | None
) -> tuple[list[dict], dict, list[int]]:
    with _folds_training.get_lock():
        _folds_training.value += 1
    try:
        return held_out_margins(config, train_clips, val_clips, keep_model, before_step=_share_cores)
    finally:
        with _folds_training.get_lock():
            _folds_training.value -= 1


def _share_cores(step: int) -> None:
    """Give this fold its share of the cores among the folds training now, so that when fewer
    folds are left than processes (the last of 5 folds on 2 processes) no core sits idle."""
    threads = max(1, available_cores() // max(1, _folds_training.value))
    if threads != torch.get_num_threads():
        log.info("step %d: %d threads (%d folds training)", step, threads, _folds_training.value)
        use_threads(threads)


def _number(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)
