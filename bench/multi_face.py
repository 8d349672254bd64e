"""How a video's verdict should weigh several faces, measured on cross-validated face scores.

    python bench/multi_face.py [--report weights/crossval/crossval.json] [--out bench/results/multi-face-DATE.json]

The training data has one face a clip, so videos with several faces are simulated from the
cross-validation's out-of-fold probabilities (each clip scored by a model that never saw its
people): a real video of k faces is k different real clips, a fake one is one fake clip and
k − 1 real ones. Each rule turns the k faces' probabilities into the video's; the metrics are
those of the cross-validation. Intervals: the clips are resampled (bootstrap) before each round
of simulated videos, so they say how much the answer depends on which 106 clips there were.
Faces of one video share their scene and compression, which this treats as independent.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.detector import video_p_fake  # noqa: E402
from model.evaluation import balanced_accuracy, expected_calibration_error, log_loss, recalls, roc_auc  # noqa: E402

log = logging.getLogger("bench")
RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "most_suspicious_face": lambda p: p.max(axis=1),  # the rule before 2026-11-27
    "mean_of_odds": lambda p: np.array([video_p_fake(row) for row in p]),  # the detector's rule
}
METRICS = ("auc", "balanced_accuracy", "recall_fake", "recall_real", "log_loss", "ece")


def simulate(real: np.ndarray, fake: np.ndarray, faces: int, videos: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`videos` real and `videos` fake videos of `faces` faces: their faces' p_fake (2·videos × faces) and labels."""
    # k different real clips a video: the first k of a random order of all of them
    real_faces = real[np.argsort(rng.random((2 * videos, len(real))), axis=1)[:, :faces]]
    real_faces[videos:, 0] = fake[rng.integers(len(fake), size=videos)]  # the fake videos' one fake face
    return real_faces, np.arange(2 * videos) >= videos


def metrics(y_fake: np.ndarray, p_fake: np.ndarray) -> dict[str, float]:
    recall_fake, recall_real = recalls(y_fake, p_fake)
    return {
        "auc": roc_auc(y_fake, p_fake), "balanced_accuracy": balanced_accuracy(y_fake, p_fake),
        "recall_fake": recall_fake, "recall_real": recall_real,
        "log_loss": log_loss(y_fake, p_fake), "ece": expected_calibration_error(y_fake, p_fake),
    }


def compare(real: np.ndarray, fake: np.ndarray, faces: int, videos: int, rounds: int, seed: int) -> dict:
    """Each rule's metrics on all clips, with bootstrap 95% intervals, and the intervals of the
    mean-of-odds rule's difference from the most-suspicious-face rule."""
    rng = np.random.default_rng(seed)
    p, y = simulate(real, fake, faces, videos, rng)
    result: dict = {rule: {k: round(v, 4) for k, v in metrics(y, combine(p)).items()} for rule, combine in RULES.items()}
    rounds_by_rule: dict[str, list[dict]] = {rule: [] for rule in RULES}
    for _ in range(rounds):
        p, y = simulate(rng.choice(real, len(real)), rng.choice(fake, len(fake)), faces, videos, rng)
        for rule, combine in RULES.items():
            rounds_by_rule[rule].append(metrics(y, combine(p)))
    for rule, values in rounds_by_rule.items():
        result[rule]["ci95"] = {k: _interval([v[k] for v in values]) for k in METRICS}
    base, new = rounds_by_rule["most_suspicious_face"], rounds_by_rule["mean_of_odds"]
    result["difference_ci95"] = {k: _interval([b[k] - a[k] for a, b in zip(base, new)]) for k in METRICS}
    return result


def _interval(values: list[float]) -> list[float]:
    return [round(float(np.percentile(values, q)), 4) for q in (2.5, 97.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default=str(ROOT / "weights" / "crossval" / "crossval.json"))
    parser.add_argument("--faces", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--videos", type=int, default=2000, help="simulated videos of each class, per round")
    parser.add_argument("--rounds", type=int, default=200, help="bootstrap rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"multi-face-{datetime.date.today()}.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    report = json.loads(Path(args.report).read_text())
    results: dict = {"report": Path(args.report).name, "videos": args.videos, "rounds": args.rounds, "seed": args.seed, "qualities": {}}
    for quality, part in report["qualities"].items():
        rows = [r for r in part["clips"] if r["p_fake"] is not None]
        real = np.array([r["p_fake"] for r in rows if r["label"] == "REAL"])
        fake = np.array([r["p_fake"] for r in rows if r["label"] == "FAKE"])
        results["qualities"][quality] = by_faces = {}
        for faces in args.faces:
            by_faces[faces] = compare(real, fake, faces, args.videos, args.rounds, args.seed)
            for rule in RULES:
                log.info("%s, %d faces, %-20s %s", quality, faces, rule, "  ".join(f"{k} {by_faces[faces][rule][k]:.3f}" for k in METRICS))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    log.info("written %s", args.out)


if __name__ == "__main__":
    main()
