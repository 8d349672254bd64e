"""How the way a video is judged changes the verdicts on people the model never saw.

    python bench/fold_inference.py --report R/crossval.json --models R/folds \\
        --manifest weights/ffpp_c23_train_clips.csv --root DATA [--out bench/results/fold-inference-DATE.json]

`R` is a cross-validation run with `--keep-models R/folds`: each fold's model judges its own
held-out clips again from the crop cache, in several ways (the variants below), so every
variant is measured with the same models on the same clips and their differences are not
training noise. Each variant is calibrated as the cross-validation calibrates (each fold on the
other folds' margins, c23 and the hard quality pooled). Intervals resample clips (bootstrap),
the variants of a clip together.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.dataset import load_cached, read_manifest, shown_path  # noqa: E402
from model.evaluation import (  # noqa: E402
    balanced_accuracy, bootstrap_interval, expected_calibration_error, fit_calibration_on_qualities, log_loss, recalls, roc_auc,
)
from model.faces import UPRIGHT_FROM_DEGREES  # noqa: E402
from model.images import decode_jpeg, encode_jpeg  # noqa: E402
from model.network import ClipModel, read_checkpoint, to_input  # noqa: E402
from model.training import TrainConfig, evenly  # noqa: E402

log = logging.getLogger("bench")
CALIBRATED_ON = ("orig", "crf40_480p")


def sequence_margin(model: ClipModel, crops: np.ndarray, frames: int, mirrored: bool = False) -> float:
    """The raw margin (FAKE − REAL) of `frames` crops spread over the clip, or of their mirror images."""
    chosen = evenly(crops, frames)
    with torch.inference_mode():
        logits = model(to_input((chosen[:, :, ::-1] if mirrored else chosen)[None], model.config, torch.device("cpu")))[0][0]
    return float(logits[0] - logits[1])


def jpeg_again(crops: np.ndarray, quality: int) -> np.ndarray:
    return np.stack([decode_jpeg(encode_jpeg(np.ascontiguousarray(crop), quality)) for crop in crops])


def half_resolution(crops: np.ndarray) -> np.ndarray:
    side = crops.shape[1]
    return np.stack([cv2.resize(cv2.resize(c, (side // 2, side // 2), interpolation=cv2.INTER_AREA), (side, side)) for c in crops])


def middle(crops: np.ndarray, count: int) -> np.ndarray:
    """`count` crops one after another from the middle of the clip: a face seen only briefly."""
    first = (len(crops) - count) // 2
    return crops[first : first + count]


def variant_margins(model: ClipModel, crops: np.ndarray) -> dict[str, float]:
    """Each variant's margin; every sequence goes through the network once."""
    plain = {n: sequence_margin(model, crops, n) for n in (10, 20, 32)}  # 20 as the app judges, 32 every cached crop
    mirrored = {n: sequence_margin(model, crops, n, mirrored=True) for n in (20, 32)}
    return {
        "frames_20": plain[20], "frames_10": plain[10], "frames_32": plain[32],
        # the mean of the crops' margin and their mirror images'
        "frames_20_flip": float(np.mean([plain[20], mirrored[20]])), "frames_32_flip": float(np.mean([plain[32], mirrored[32]])),
        # every input brought to one (low) quality first, whatever its own: less for the network to
        # tell apart between a clean and a heavily compressed upload, and less detail too
        "frames_20_jpeg_40": sequence_margin(model, jpeg_again(crops, 40), 20),
        "frames_20_half_resolution": sequence_margin(model, half_resolution(crops), 20),
        # the face found in only a few frames (the app judges the main face however few)
        **{f"frames_{n}_together": sequence_margin(model, middle(crops, n), n) for n in FEW},
    }


FEW = (1, 3, 5)
VARIANTS = (
    "frames_20", "frames_10", "frames_32", "frames_20_flip", "frames_32_flip", "frames_20_jpeg_40", "frames_20_half_resolution",
    *(f"frames_{n}_together" for n in FEW),
)  # fmt: skip
BASELINE = "frames_20"


def held_out_margins(report: dict, models: Path, clips: dict, cache_dir: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """variant → quality → margin per clip (the report's clip order), with each clip's fold and label."""
    qualities = {**report["qualities"], **report.get("other_qualities", {})}
    rows = next(iter(qualities.values()))["clips"]
    # the crops as the recipe cut them (a report from before the setting had the default)
    upright_from = report["train_config"].get("upright_from_degrees", UPRIGHT_FROM_DEGREES)
    fold_of = np.array([r["fold"] for r in rows])
    margins = {v: {q: np.full(len(rows), np.nan) for q in qualities} for v in VARIANTS}
    for fold in sorted(set(fold_of)):
        model, _ = read_checkpoint(models / f"fold-{fold + 1}.pt")
        size = model.config.image_size
        for i in np.flatnonzero(fold_of == fold):
            for quality in qualities:
                crops = load_cached(cache_dir, clips[rows[i]["path"]], quality, size, upright_from)[0]
                if len(crops):
                    for name, margin in variant_margins(model, crops).items():
                        margins[name][quality][i] = margin
        log.info("fold %d judged", fold + 1)
    return margins, fold_of, np.array([r["label"] == "FAKE" for r in rows])


def cross_fitted(margins: dict[str, np.ndarray], fold_of: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """p_fake per quality, each fold calibrated on the other folds' margins (as the cross-validation does)."""
    judged = np.all([np.isfinite(margins[q]) for q in CALIBRATED_ON], axis=0)
    p_fake = {q: np.full(len(y), np.nan) for q in margins}
    for fold in set(fold_of):
        others = judged & (fold_of != fold)
        temperature, bias = fit_calibration_on_qualities([margins[q][others] for q in CALIBRATED_ON], y[others])
        for q, m in margins.items():
            p_fake[q][fold_of == fold] = 1 / (1 + np.exp(-(m[fold_of == fold] / temperature + bias)))
    return p_fake


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    recall_fake, recall_real = recalls(y, p)
    return {
        "auc": roc_auc(y, p), "balanced_accuracy": balanced_accuracy(y, p), "recall_fake": recall_fake,
        "recall_real": recall_real, "log_loss": log_loss(y, p), "ece": expected_calibration_error(y, p),
    }


def auc_difference(y: np.ndarray, base: np.ndarray, other: np.ndarray, rounds: int) -> dict:
    """The AUC of `other` less that of `base` on the same clips, with a 95% interval that
    resamples clips (a clip's two scores together)."""
    pair = np.stack([base, other], axis=1)
    difference = lambda yy, pp: roc_auc(yy, pp[:, 1]) - roc_auc(yy, pp[:, 0])  # noqa: E731
    return {
        "auc_difference": round(difference(y, pair), 4),
        "auc_difference_ci95": [round(v, 4) for v in bootstrap_interval(difference, y, pair, rounds)],
    }


def compare(margins: dict, fold_of: np.ndarray, y: np.ndarray, report: dict, rounds: int) -> dict:
    """Each variant's metrics per quality, and its AUC's difference from the baseline's with a 95% interval."""
    p_fake = {name: cross_fitted(by_quality, fold_of, y) for name, by_quality in margins.items()}
    baseline = margins[BASELINE]
    out: dict = {"check": {}, "qualities": {}}
    for quality, part in {**report["qualities"], **report.get("other_qualities", {})}.items():
        stated = np.array([np.nan if r["margin"] is None else r["margin"] for r in part["clips"]], dtype=float)
        out["check"][quality] = float(np.nanmax(np.abs(baseline[quality] - stated)))  # the fold models as the report's
        scored = np.all([np.isfinite(p_fake[n][quality]) for n in VARIANTS], axis=0)
        ys, base = y[scored], p_fake[BASELINE][quality][scored]
        rows = {}
        for name in VARIANTS:
            p = p_fake[name][quality][scored]
            row = {k: round(v, 4) for k, v in metrics(ys, p).items()}
            if name != BASELINE:
                row.update(auc_difference(ys, base, p, rounds))
                row["margin_correlation"] = round(float(np.corrcoef(margins[BASELINE][quality][scored], margins[name][quality][scored])[0, 1]), 4)
            rows[name] = row
        out["qualities"][quality] = {"clips": int(scored.sum()), "variants": rows}
    return out


def manifest_arguments(description: str, name: str) -> argparse.ArgumentParser:
    """The options of a study of a manifest's clips; its report goes to
    bench/results/<name>-<date>.json by default."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"{name}-{datetime.date.today()}.json"))
    return parser


def fold_arguments(description: str, name: str) -> argparse.ArgumentParser:
    """The options of a study of a cross-validation's kept fold models (`manifest_arguments`)."""
    parser = manifest_arguments(description, name)
    parser.add_argument("--report", required=True, help="crossval.json of a run with --keep-models")
    parser.add_argument("--models", required=True, help="the folder of its fold-<k>.pt")
    parser.add_argument("--rounds", type=int, default=2000, help="bootstrap rounds")
    return parser


def main() -> None:
    parser = fold_arguments(__doc__.splitlines()[0], "fold-inference")
    parser.add_argument("--cache-dir", default=TrainConfig(manifest="").cache_dir)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = json.loads(Path(args.report).read_text())
    clips = {shown_path(c, args.manifest, args.root): c for c in read_manifest(args.manifest, args.root)}
    margins, fold_of, y = held_out_margins(report, Path(args.models), clips, args.cache_dir)
    result = {"report": args.report, "baseline": BASELINE, "torch_threads": torch.get_num_threads(), **compare(margins, fold_of, y, report, args.rounds)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for quality, part in result["qualities"].items():
        for name, row in part["variants"].items():
            extra = f"  AUC {row['auc_difference']:+.3f} {row['auc_difference_ci95']}" if "auc_difference" in row else ""
            log.info("%s %s: AUC %.3f, balanced %.3f, ECE %.3f%s", quality, name, row["auc"], row["balanced_accuracy"], row["ece"], extra)
    log.info("largest difference from the report's margins: %s; wrote %s", result["check"], args.out)


if __name__ == "__main__":
    main()
