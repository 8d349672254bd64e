"""The cross-validation's fold models run through the app's whole pipeline, on people they never saw.

    python bench/fold_pipeline.py --report R/crossval.json --models R/folds \\
        --manifest weights/ffpp_c23_train_clips.csv --root DATA [--sequence-length 20] [--jobs 2] \\
        [--work /tmp/fold-pipeline] [--out bench/results/fold-pipeline-DATE.json]

`R` is a cross-validation run with `--keep-models R/folds`. The cross-validation judges its
held-out clips from the crop cache; here each fold's model (calibrated as its held-out clips
were) judges them as an upload is judged: `python -m model evaluate --unseen-only`, which
decodes the video (re-encoded at each quality), samples the frames, finds and follows the faces
and scores them. Pooled over the folds, that is a validation of the serving path on unseen
people, and the clip-by-clip comparison with the report shows whether serving and the
cross-validation see the same thing.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fold_inference import auc_difference, fold_arguments  # noqa: E402  (beside this script)
from model.cli import main as model_cli  # noqa: E402
from model.dataset import identity_components, read_manifest, shown_path  # noqa: E402
from model.evaluation import roc_auc, summarise  # noqa: E402

log = logging.getLogger("bench")
HEADLINE = ("auc", "balanced_accuracy", "log_loss", "ece", "recall_fake", "recall_real", "within_group_auc")


def judge_folds(args: argparse.Namespace, folds: int) -> list[dict]:
    """Each fold model's evaluation report on the clips of people it never saw."""
    reports = []
    for fold in range(1, folds + 1):
        out = Path(args.work) / f"fold-{fold}"
        command = [
            "evaluate", "--manifest", args.manifest, "--weights", str(Path(args.models) / f"fold-{fold}.pt"), "--unseen-only",
            "--quality", *args.quality, "--jobs", str(args.jobs), "--out", str(out),
        ]
        command += ["--root", args.root] if args.root else []
        command += ["--sequence-length", str(args.sequence_length)] if args.sequence_length else []
        if model_cli(command) != 0:
            raise SystemExit(f"fold {fold}: the evaluation failed")
        reports.append(json.loads((out / "evaluation.json").read_text()))
    return reports


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def compare(reports: list[dict], crossval: dict, group_of: dict[str, int], rounds: int) -> dict:
    """Per quality: the pooled metrics of the served verdicts, and how they differ clip by clip
    from the cross-validation's (which judged the same clips with the same models from the cache)
    and from the served verdicts at the first quality judged."""
    stated = {**crossval["qualities"], **crossval.get("other_qualities", {})}
    fold_of = {r["path"]: r["fold"] for r in next(iter(stated.values()))["clips"]}
    out, served_at = {}, {}
    for quality in reports[0]["qualities"]:
        rows = [row for fold, report in enumerate(reports) for row in report["qualities"][quality]["clips"] if fold_of[row["path"]] == fold]
        if len(rows) != sum(len(r["qualities"][quality]["clips"]) for r in reports):
            raise ValueError("a fold model judged clips outside its held-out fold")
        served = [r for r in rows if r["p_fake"] is not None]
        y = np.array([r["label"] == "FAKE" for r in served])
        p = np.array([r["p_fake"] for r in served])
        summary = summarise(y, p, [r["method"] for r in served], 0.5, np.array([group_of[r["path"]] for r in served]))
        part = {"clips": len(rows), "no_face_clips": len(rows) - len(served), **{k: round(summary[k], 4) for k in HEADLINE}}
        part["auc_ci95"] = [round(v, 4) for v in summary["auc_ci95"]]
        part["auc_by_method"] = {m: round(v["auc"], 4) for m, v in summary["auc_by_method"].items()}
        if quality in stated:
            by_path = {r["path"]: r["p_fake"] for r in stated[quality]["clips"]}
            both = [i for i, r in enumerate(served) if by_path.get(r["path"]) is not None]
            crossval_p, served_p = np.array([by_path[served[i]["path"]] for i in both]), p[both]
            part["against_crossval"] = {
                "clips": len(both),
                "crossval_auc": round(roc_auc(y[both], crossval_p), 4),
                **auc_difference(y[both], crossval_p, served_p, rounds),
                "logit_correlation": round(float(np.corrcoef(logit(crossval_p), logit(served_p))[0, 1]), 4),
                "mean_abs_p_fake_difference": round(float(np.mean(np.abs(served_p - crossval_p))), 4),
                "same_label": round(float(np.mean((crossval_p >= 0.5) == (served_p >= 0.5))), 4),
            }
        served_at[quality] = {r["path"]: (r["label"] == "FAKE", r["p_fake"]) for r in served}
        first = next(iter(served_at))
        if quality != first:  # the same clips served at the first quality judged
            both = sorted(served_at[first].keys() & served_at[quality].keys())
            y_both = np.array([served_at[first][path][0] for path in both])
            part[f"against_{first}"] = {
                "clips": len(both),
                **auc_difference(y_both, *(np.array([served_at[q][path][1] for path in both]) for q in (first, quality)), rounds),
            }
        out[quality] = part
    return out


def main() -> None:
    parser = fold_arguments(__doc__.splitlines()[0], "fold-pipeline")
    parser.add_argument("--quality", nargs="+", default=["orig", "crf40_480p"])
    parser.add_argument("--sequence-length", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", default="/tmp/fold-pipeline", help="folder for each fold's evaluation report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    crossval = json.loads(Path(args.report).read_text())
    clips = read_manifest(args.manifest, args.root)
    group_of = {shown_path(c, args.manifest, args.root): g for c, g in zip(clips, identity_components(clips))}
    reports = judge_folds(args, crossval["folds"])
    result = {
        "report": args.report, "sequence_length": args.sequence_length, "jobs": args.jobs,  # None: the checkpoint's
        "qualities": compare(reports, crossval, group_of, args.rounds),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s; wrote %s", json.dumps(result["qualities"]), args.out)


if __name__ == "__main__":
    main()
