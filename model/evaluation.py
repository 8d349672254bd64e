"""Video-level metrics with bootstrap intervals, calibration fitting, and the ROC plot."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np


def roc_auc(y_fake: np.ndarray, p_fake: np.ndarray) -> float:
    """Area under the ROC curve (FAKE positive), by the rank statistic with ties counted half."""
    y, p = np.asarray(y_fake, bool), np.asarray(p_fake, float)
    pos, neg = p[y], p[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def roc_curve(y_fake: np.ndarray, p_fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every threshold, from (0, 0) to (1, 1)."""
    y, p = np.asarray(y_fake, bool), np.asarray(p_fake, float)
    thresholds = np.r_[np.inf, np.sort(np.unique(p))[::-1]]
    tpr = np.array([(p[y] >= t).mean() if y.any() else 0.0 for t in thresholds])
    fpr = np.array([(p[~y] >= t).mean() if (~y).any() else 0.0 for t in thresholds])
    return fpr, tpr


def within_group_auc(y_fake: np.ndarray, p_fake: np.ndarray, groups: np.ndarray) -> float:
    """AUC over only the (fake, real) pairs of the same group, e.g. the same people: how well fakes
    are told from real clips of the same faces and scenes, whatever the group's overall level."""
    y, p, groups = np.asarray(y_fake, bool), np.asarray(p_fake, float), np.asarray(groups)
    aucs, pairs = [], []
    for group in np.unique(groups):
        inside = groups == group
        if y[inside].any() and not y[inside].all():
            aucs.append(roc_auc(y[inside], p[inside]))
            pairs.append(y[inside].sum() * (~y[inside]).sum())
    return float(np.average(aucs, weights=pairs)) if pairs else float("nan")


def recalls(y_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """Recall of FAKE and of REAL at `threshold`."""
    y, pred = np.asarray(y_fake, bool), np.asarray(p_fake) >= threshold
    fake = float(pred[y].mean()) if y.any() else float("nan")
    real = float((~pred[~y]).mean()) if (~y).any() else float("nan")
    return fake, real


def balanced_accuracy(y_fake: np.ndarray, p_fake: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean(recalls(y_fake, p_fake, threshold)))


def log_loss(y_fake: np.ndarray, p_fake: np.ndarray, eps: float = 1e-6, weights: np.ndarray | None = None) -> float:
    y, p = np.asarray(y_fake, float), np.clip(np.asarray(p_fake, float), eps, 1 - eps)
    return float(np.average(-(y * np.log(p) + (1 - y) * np.log(1 - p)), weights=weights))


def _confidence_and_right(y_fake: np.ndarray, p_fake: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each verdict's confidence (the probability of the label given) and whether it was right."""
    said_fake = p_fake >= threshold
    return np.where(said_fake, p_fake, 1 - p_fake), said_fake == y_fake


def _band_of(confidence: np.ndarray, edges: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """The index of the band between consecutive `edges` that each confidence falls in."""
    return np.clip(np.digitize(confidence, edges[1:-1]), 0, len(edges) - 2)


def expected_calibration_error(y_fake: np.ndarray, p_fake: np.ndarray, bins: int = 10, threshold: float = 0.5) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    confidence, correct = _confidence_and_right(np.asarray(y_fake, bool), np.asarray(p_fake, float), threshold)
    which = _band_of(confidence, np.linspace(0.5, 1.0, bins + 1))
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    p: np.ndarray,
    rounds: int = 1000,
    seed: int = 0,
    basic: bool = False,
) -> tuple[float, float]:
    """95% interval of `metric` over clips resampled with replacement: the percentile interval, or
    with `basic` the basic (reverse percentile) one, 2·estimate − the percentiles. The basic interval
    corrects a metric whose bootstrap copies are biased: ECE grows when repeated clips thin its bins,
    so its percentile interval can lie wholly above the estimate."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y), np.asarray(p)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        value = metric(y[pick], p[pick])
        if not np.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    if basic:
        estimate = metric(y, p)
        low, high = max(0.0, 2 * estimate - high), 2 * estimate - low
    return float(low), float(high)


def ece_if_calibrated(p_fake: np.ndarray, threshold: float = 0.5, rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Mean and 95th percentile of the ECE a perfectly calibrated detector would show on these very
    probabilities (labels drawn as Bernoulli(p_fake); consistency resampling, Bröcker & Smith 2007).
    On a few dozen clips binned ECE is far from 0 even then: an ECE below the 95th percentile is
    no evidence of miscalibration."""
    rng = np.random.default_rng(seed)
    p = np.asarray(p_fake, float)
    values = [expected_calibration_error(rng.random(len(p)) < p, p, threshold=threshold) for _ in range(rounds)]
    return float(np.mean(values)), float(np.percentile(values, 95))


# Bands of confidence (the probability of the label given) for the share of verdicts that were right
CONFIDENCE_BANDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def reliability_by_confidence(
    y_fake: np.ndarray, p_fake: np.ndarray, edges: tuple[float, ...] = CONFIDENCE_BANDS, threshold: float = 0.5, rounds: int = 1000, seed: int = 0
) -> list[dict]:
    """For each band of confidence: how many verdicts fell in it, how many were right, and a 95%
    interval of the share right over clips resampled with replacement.

    `p_fake` may hold several judgements of each clip, one column each (e.g. at two qualities); a
    resampled clip brings all of them, as they are not independent."""
    y = np.asarray(y_fake, bool)
    confidence, right = _confidence_and_right(y[:, None], np.asarray(p_fake, float).reshape(len(y), -1), threshold)
    band = _band_of(confidence, edges)
    rng = np.random.default_rng(seed)
    resampled = [(right[pick], band[pick]) for pick in (rng.integers(0, len(y), len(y)) for _ in range(rounds))]
    bands = []
    for b, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = band == b
        entry = {"confidence": [low, high], "judged": int(inside.sum()), "right": int(right[inside].sum())}
        if inside.any():
            shares = [r[at == b].mean() for r, at in resampled if (at == b).any()]
            entry["share_right"] = float(right[inside].mean())
            entry["share_right_ci95"] = [float(v) for v in np.percentile(shares, [2.5, 97.5])]
        bands.append(entry)
    return bands


def summarise(
    y_fake: np.ndarray, p_fake: np.ndarray, methods: list[str], threshold: float = 0.5, groups: np.ndarray | None = None
) -> dict:
    """Every reported metric, with bootstrap 95% intervals, plus how often the verdicts of each
    confidence were right, AUC per manipulation method and, given identity `groups`, the AUC
    within groups."""
    y, p = np.asarray(y_fake, bool), np.asarray(p_fake, float)
    bal = lambda a, b: balanced_accuracy(a, b, threshold)  # noqa: E731
    ece = lambda a, b: expected_calibration_error(a, b, threshold=threshold)  # noqa: E731
    fake_recall, real_recall = recalls(y, p, threshold)
    report = {
        "clips": int(len(y)),
        "fake_clips": int(y.sum()),
        "real_clips": int((~y).sum()),
        "auc": roc_auc(y, p),
        "auc_ci95": bootstrap_interval(roc_auc, y, p),
        "balanced_accuracy": bal(y, p),
        "balanced_accuracy_ci95": bootstrap_interval(bal, y, p),
        "log_loss": log_loss(y, p),
        "log_loss_ci95": bootstrap_interval(log_loss, y, p),
        "ece": ece(y, p),
        "ece_ci95": bootstrap_interval(ece, y, p, basic=True),
        "ece_if_calibrated": dict(zip(("mean", "p95"), ece_if_calibrated(p, threshold))),
        "recall_fake": fake_recall,
        "recall_real": real_recall,
        "threshold": threshold,
        "reliability": reliability_by_confidence(y, p, threshold=threshold),
        "auc_by_method": {},
    }
    if groups is not None:
        report["identity_groups"] = int(len(np.unique(groups)))
        report["within_group_auc"] = within_group_auc(y, p, groups)
    method_array = np.asarray(methods)
    for method in sorted(set(method_array[y])):
        keep = ~y | (method_array == method)
        report["auc_by_method"][method] = {
            "fake_clips": int((method_array[y] == method).sum()),
            "auc": roc_auc(y[keep], p[keep]),
            "auc_ci95": bootstrap_interval(roc_auc, y[keep], p[keep]),
        }
    return report


def fit_calibration(margins: np.ndarray, y_fake: np.ndarray) -> tuple[float, float]:
    """Temperature and logit offset minimising log loss of sigmoid(margin / T + b) (grid search: robust on few clips).

    Both classes weigh the same, so the validation set's share of fakes does not become a prior
    that tilts every verdict towards the majority class."""
    margins, y = np.asarray(margins, float), np.asarray(y_fake, float)
    weights = np.where(y > 0, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    best = (float("inf"), 1.0, 0.0)
    for temperature in np.geomspace(0.1, 20, 80):
        for bias in np.linspace(-3, 3, 61):
            p = 1 / (1 + np.exp(-(margins / temperature + bias)))
            loss = log_loss(y, p, weights=weights)
            if loss < best[0]:
                best = (loss, float(temperature), float(bias))
    return best[1], best[2]


def fit_calibration_on_qualities(margins: list[np.ndarray], y_fake: np.ndarray) -> tuple[float, float]:
    """One temperature and offset for the same clips at several qualities: their margins pooled,
    each with its clip's label, so a verdict means the same however compressed the upload."""
    return fit_calibration(np.concatenate(margins), np.tile(np.asarray(y_fake), len(margins)))


def json_safe(value: Any) -> Any:
    """`value` with every NaN (a metric the clips cannot give, such as an AUC without fake clips)
    made None, so that reports are JSON that every parser reads (json writes NaN, which is not JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> None:
    """One ROC line per named evaluation, AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    for name, (fpr, tpr, auc) in curves.items():
        ax.step(fpr, tpr, where="post", label=f"{name} (AUC {'n/a' if math.isnan(auc) else f'{auc:.3f}'})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate (REAL called FAKE)", ylabel="true positive rate (FAKE caught)", xlim=(0, 1), ylim=(0, 1.01))
    if curves:  # none where no clip had a face
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
