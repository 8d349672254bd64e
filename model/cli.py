"""Command line: `python -m model detect|evaluate|train`."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np

log = logging.getLogger("model")


class ProgressBar:
    """Progress over several files on stderr: redrawn in place on a terminal, a line per file otherwise."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 24):
        self.total, self.stream, self.width = total, stream, width
        self.live = stream.isatty()

    def _bar(self, fraction: float) -> str:
        filled = round(self.width * fraction)
        return "[" + "#" * filled + "." * (self.width - filled) + "]"

    def update(self, done: int, name: str, stage: str, percent: int) -> None:
        """`done` files finished; the current one, `name`, is at `stage`, `percent` through."""
        if self.live:
            line = f"{self._bar((done + percent / 100) / self.total)} {done}/{self.total} {name}: {stage.replace('_', ' ')} {percent}%"
            self.stream.write("\r" + line[:100].ljust(100))
            self.stream.flush()

    def file_done(self, done: int, name: str) -> None:
        if self.live:
            self.update(done, name, "done", 0)
        else:
            print(f"{self._bar(done / self.total)} {done}/{self.total} files ({name})", file=self.stream, flush=True)

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


def videos_in(paths: list[str]) -> list[str]:
    """The paths given, each folder replaced by the videos in it and its subfolders."""
    from .video import VIDEO_SUFFIXES, videos_in_folder

    found = []
    for path in paths:
        if not Path(path).is_dir():
            found.append(path)
        elif inside := videos_in_folder(path):
            found.extend(map(str, inside))
        else:
            raise ValueError(f"{path} holds no video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return found


def _detect(args: argparse.Namespace) -> int:
    from .detector import Detector, validate_sequence_length
    from .timing import OutsideVideo, TimeRange
    from .video import VideoError

    if args.sequence_length is not None:
        validate_sequence_length(args.sequence_length)
    part = TimeRange(args.start if args.start is not None else 0.0, args.end)
    videos = videos_in(args.videos)
    detector = Detector(args.weights, args.device)
    bar = ProgressBar(len(videos)) if len(videos) > 1 else None
    failures = 0
    for number, path in enumerate(videos):
        start = time.perf_counter()
        name = Path(path).name
        progress = partial(bar.update, number, name) if bar else None
        try:
            result = detector.detect(path, args.sequence_length, progress=progress, part=part)
        except (VideoError, OutsideVideo, OSError) as error:
            failures += 1
            line = json.dumps({"path": path, "error": str(error)}) if args.json else f"{path}: ERROR {error}"
        else:
            line = _result_line(path, result, round(time.perf_counter() - start, 3), args.json, part.whole)
        if bar:
            bar.file_done(number + 1, name)
        print(line, flush=True)
    if bar:
        bar.close()
    return 1 if failures else 0


def _result_line(path: str, result, seconds: float, as_json: bool, whole: bool) -> str:
    from .detector import describe_turn
    from .timing import format_time

    if as_json:
        return json.dumps({"path": path, **result.as_dict(), "seconds": seconds, "stages": result.seconds})
    verdict = result.label if result.confidence is None else f"{result.label} {result.confidence:.1f}%"
    if any(caveat["code"] == "uncertain" for caveat in result.caveats):  # as the result page says it
        verdict = f"undecided, leans {verdict}"
    span = "" if whole and not result.closer_look else " from {} to {}".format(*map(format_time, result.span_s))
    judged, found = len(result.tracks), len(result.tracks) + result.faces_not_judged
    faces = f", {judged} of {found} faces judged" if found > judged else f", {judged} faces" if judged > 1 else ""
    picture = ", the picture alone searched, not the blurred copy around it" if result.picture else ""
    if result.picture_turned_deg:
        picture += f", faces found upright with the picture given {describe_turn(result.picture_turned_deg)}"
    notes = "".join(f" Note: {c['message']}" for c in result.caveats)
    return f"{path}: {verdict} (frames {result.frames}{span}{faces}{picture}, {seconds:.2f} s){notes}"


def _evaluate(args: argparse.Namespace) -> int:
    from .dataset import identity_components, shown_path
    from .detector import Detector
    from .evaluation import roc_curve, summarise

    detector = Detector(args.weights, args.device)
    clips, seen = _clips_to_judge(args, detector.metadata)
    group_of = dict(zip((c.path for c in clips), identity_components(clips)))
    report: dict = {
        "weights": Path(args.weights).name, "manifest": Path(args.manifest).name, "split": args.split,
        "unseen_only": args.unseen_only, "clips_of_people_seen_in_training": len(seen), "qualities": {},
    }
    curves = {}
    tasks = [(clip.path, quality, args.sequence_length) for quality in args.quality for clip in clips]
    verdicts = iter(_verdicts(detector, tasks, args.jobs, args.weights, args.device))
    for quality in args.quality:
        y, p, methods, groups, rows = [], [], [], [], []
        for clip in clips:
            verdict = next(verdicts)
            rows.append({
                "path": shown_path(clip, args.manifest, args.root), "label": clip.label, "method": clip.method,
                "people_seen_in_training": clip.path in seen, **verdict,
            })
            if verdict["p_fake"] is None:
                log.warning("%s: no face found, left out of the metrics", clip.path)
                continue
            y.append(clip.label == "FAKE")
            p.append(verdict["p_fake"])
            methods.append(clip.method)
            groups.append(group_of[clip.path])
        no_face = sum(r["p_fake"] is None for r in rows)
        if not y:
            report["qualities"][quality] = {"metrics": {"clips": 0, "no_face_clips": no_face}, "clips": rows}
            print(f"{quality}: no face found in any of the {len(rows)} clips: nothing to measure", flush=True)
            continue
        summary = summarise(np.array(y), np.array(p), methods, detector.config.threshold, np.array(groups))
        summary["no_face_clips"] = no_face
        report["qualities"][quality] = {"metrics": summary, "clips": rows}
        curves[quality] = (*roc_curve(np.array(y), np.array(p)), summary["auc"])
        print(_format_summary(quality, summary), flush=True)
    _write_report(report, curves, Path(args.out) / "evaluation.json")
    return 0


def _clips_to_judge(args: argparse.Namespace, metadata: dict) -> tuple[list, set[str]]:
    """The manifest's clips that `evaluate` judges, and the paths of those whose people the
    checkpoint (its `metadata`) was trained on; with --unseen-only those are left out."""
    from .dataset import read_manifest, split_by_identity

    clips = read_manifest(args.manifest, args.root)
    if args.split == "validation":
        clips = split_by_identity(clips, args.val_fraction, args.seed)[1]
    people_seen = set(metadata.get("trained_on_identities", []))
    seen = {c.path for c in clips if c.group and people_seen.intersection(c.identities)}
    if args.unseen_only:
        if "trained_on_identities" not in metadata:
            raise ValueError(f"{Path(args.weights).name} does not list the people it was trained on: --unseen-only cannot tell them")
        clips = [c for c in clips if c.path not in seen]
        print(f"{len(seen)} clips of people the model was trained on left out, {len(clips)} judged", flush=True)
        if not clips:
            raise ValueError("every clip of the manifest shows people the model was trained on")
        seen = set()
    if seen:
        print(
            f"note: {len(seen)} of these {len(clips)} clips show people the model was trained on; for them the figures "
            "say how well it fits its training data, not how it does on people it never saw", flush=True,
        )
    return clips, seen


def _verdicts(detector, tasks: list[tuple[str, str, int | None]], jobs: int, weights: str, device: str | None) -> list[dict]:
    """The app's verdict on each (video, quality, sequence length): with `jobs` > 1 in that many
    processes, each with its own detector and its share of the cores (the re-encode and the face
    detection use one core each, so on one process the other cores mostly wait)."""
    if jobs <= 1:
        return [_verdict(detector, *task) for task in tasks]
    from .processes import cores_each, spawn_pool

    with spawn_pool(jobs, _start_judging_process, (weights, device, cores_each(jobs), log.getEffectiveLevel())) as pool:
        return list(pool.map(_verdict_in_process, tasks))


# In an evaluation worker process: its own detector.
_process_detector = None


def _start_judging_process(weights: str, device: str | None, threads: int, log_level: int) -> None:
    global _process_detector
    from .detector import Detector
    from .processes import start_worker

    _process_detector = Detector(weights, device)
    start_worker(threads, log_level)  # after the detector, which on a CPU takes every core


def _verdict_in_process(task: tuple[str, str, int | None]) -> dict:
    return _verdict(_process_detector, *task)


def _verdict(detector, path: str, quality: str, sequence_length: int | None) -> dict:
    """The detector's verdict on a video re-encoded at `quality` (dataset.QUALITIES), as the report lists it."""
    from .augment import reencode
    from .dataset import QUALITIES

    with tempfile.TemporaryDirectory() as tmp:
        if QUALITIES[quality] is not None:
            encoded = str(Path(tmp) / "clip.mp4")
            reencode(path, encoded, *QUALITIES[quality])
            path = encoded
        result = detector.detect(path, sequence_length)
    return {
        "prediction": result.label, "p_fake": result.p_fake, "faces_judged": len(result.tracks),
        "face_height_px": result.decisive.height if result.decisive else None,
        "caveats": [caveat["code"] for caveat in result.caveats],
    }


def _write_report(report: dict, curves: dict, path: Path) -> None:
    """The JSON report, and the ROC curves as roc.png beside it."""
    from .evaluation import json_safe, plot_roc

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
    plot_roc(curves, path.parent / "roc.png")
    print(f"wrote {path} and {path.parent / 'roc.png'}")


def _figure(value: float, interval: list[float] | None = None) -> str:
    """A metric with its interval; n/a where the clips cannot give it (an AUC needs both labels)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _format_summary(name: str, s: dict) -> str:
    fig = lambda k: _figure(s[k], s.get(k + "_ci95"))  # noqa: E731
    lines = [
        f"{name}: {s['clips']} clips ({s['fake_clips']} fake, {s['real_clips']} real)",
        f"  AUC {fig('auc')}  balanced accuracy {fig('balanced_accuracy')}",
        f"  log loss {fig('log_loss')}  ECE {fig('ece')}  recall FAKE {fig('recall_fake')} REAL {fig('recall_real')}",
    ]
    if not s["fake_clips"] or not s["real_clips"]:
        lines.append(f"  only {'real' if s['real_clips'] else 'fake'} clips: AUC and balanced accuracy need both")
    if "ece_if_calibrated" in s:
        floor = s["ece_if_calibrated"]
        lines.append(f"  ECE a calibrated detector would show on these clips: {floor['mean']:.3f} on average, 95% below {floor['p95']:.3f}")
    if "reliability" in s:
        right = [f"{b['confidence'][0]:.0%}–{b['confidence'][1]:.0%} {b['right']}/{b['judged']}" for b in s["reliability"] if b["judged"]]
        lines.append(f"  verdicts right, by confidence: {', '.join(right)}")
    if "within_group_auc" in s:
        lines.append(f"  AUC within identity groups {_figure(s['within_group_auc'])} ({s['identity_groups']} groups: fakes against real clips of the same people)")
    for method, m in s["auc_by_method"].items():
        lines.append(f"  {method}: AUC {_figure(m['auc'], m['auc_ci95'])} ({m['fake_clips']} fake)")
    return "\n".join(lines)


def _train_config(args: argparse.Namespace, **overrides):
    from .training import TrainConfig

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    return TrainConfig(**{**given, **overrides})


def _train(args: argparse.Namespace) -> int:
    from .crossval import train_on_all_clips
    from .training import train

    config = _train_config(args)
    record = train_on_all_clips(config, args.crossval_report) if args.crossval_report else train(config)
    record_path = Path(args.out).with_suffix(".train.json")
    record_path.write_text(json.dumps(record, indent=2))
    print(f"saved {args.out}; training record in {record_path}")
    return 0


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    from .dataset import QUALITIES
    from .faces import UPRIGHT_FROM_DEGREES
    from .training import TrainConfig

    defaults = TrainConfig(manifest="")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--root", default=None)
    parser.add_argument("--cache-dir", default=defaults.cache_dir)
    parser.add_argument("--encoder", choices=["mobilenet_v2", "resnext50_32x4d"], default=defaults.encoder)
    parser.add_argument("--imagenet-weights", default=None, help="torchvision ImageNet state_dict for the encoder")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="face crop side in pixels")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW's decoupled weight decay")
    parser.add_argument("--clips-per-batch", type=int, default=defaults.clips_per_batch)
    parser.add_argument("--frames-per-clip", type=int, default=defaults.frames_per_clip, help="length of a training sequence")
    parser.add_argument("--frozen-blocks", type=int, default=defaults.frozen_blocks, help="leading encoder blocks left untrained")
    parser.add_argument(
        "--train-quality", dest="train_qualities", action="append", default=None, choices=list(QUALITIES),
        help=f"train on the crops at this quality (repeatable; each sequence is drawn at one of them; default: {' and '.join(defaults.train_qualities)})",
    )
    parser.add_argument("--freeze-batchnorm", action="store_true", help="keep the encoder's ImageNet batch-norm statistics")
    parser.add_argument(
        "--no-dataset-fakes", dest="dataset_fakes", action="store_false", help="train on real and self-blended faces only"
    )
    parser.add_argument("--paired", action="store_true", help="batches of real/fake pairs of the same people, augmented alike")
    parser.add_argument("--blend-regions", action="store_true", help="self-blend varied face regions, not only the whole face")
    parser.add_argument(
        "--balance-methods", action="store_true", help="each manipulation method an equal share of the data set fakes"
    )
    parser.add_argument(
        "--exclude-method", dest="exclude_methods", action="append", default=[], metavar="METHOD",
        help="leave this method's fakes out of training (repeatable); validation keeps them",
    )
    parser.add_argument(
        "--members", type=int, default=defaults.members,
        help="networks trained alike but for their seeds, their logits averaged (an ensemble)",
    )
    parser.add_argument(
        "--sam-rho", type=float, default=defaults.sam_rho,
        help="sharpness-aware minimisation: gradients taken this far uphill (0: plain steps; else twice the cost)",
    )
    parser.add_argument(
        "--average-from", type=int, default=defaults.average_from, metavar="STEP",
        help="judge and keep the mean of the weights of every step from STEP on (0: the step's own weights)",
    )
    parser.add_argument(
        "--erase-prob", type=float, default=defaults.erase_prob, metavar="P",
        help="hide a square of every frame of this share of the training sequences (cutout; 0: none)",
    )
    parser.add_argument(
        "--glasses-prob", type=float, default=defaults.glasses_prob, metavar="P",
        help="draw spectacles on every frame of this share of the training sequences, real and fake alike (0: none)",
    )
    parser.add_argument(
        "--grey-prob", type=float, default=defaults.grey_prob, metavar="P",
        help="turn every frame of this share of the training sequences grey, real and fake alike (0: none)",
    )
    parser.add_argument(
        "--tilt-prob", type=float, default=defaults.tilt_prob, metavar="P",
        help=f"turn every frame of this share of the training sequences by one angle within ±{UPRIGHT_FROM_DEGREES:g}°, real and fake alike (0: none)",
    )
    parser.add_argument(
        "--upright-from", dest="upright_from_degrees", type=float, default=defaults.upright_from_degrees, metavar="DEGREES",
        help="turn a face upright before cropping it where it leans this far or further, in training and in the model made (0: every face)",
    )
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=None)


def _crossval(args: argparse.Namespace) -> int:
    from .crossval import cross_validate
    from .evaluation import roc_curve

    report = cross_validate(_train_config(args, out=""), args.folds, args.jobs, args.train_groups, args.keep_models)
    curves = {}
    calibrated_on = [(quality, part, "out of fold") for quality, part in report["qualities"].items()]
    others = [(quality, part, "out of fold, calibration not fitted at it") for quality, part in report["other_qualities"].items()]
    for quality, part, how in calibrated_on + others:
        print(_format_summary(f"{quality}, {how}", part["metrics"]), flush=True)
        judged = [r for r in part["clips"] if r["p_fake"] is not None]
        y, p = np.array([r["label"] == "FAKE" for r in judged]), np.array([r["p_fake"] for r in judged])
        curves[quality] = (*roc_curve(y, p), part["metrics"]["auc"])
    _write_report(report, curves, Path(args.out) / "crossval.json")
    return 0


def _time(text: str) -> float:
    from .timing import parse_time

    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    from .dataset import QUALITIES
    from .detector import DEFAULT_WEIGHTS
    from .training import TrainConfig

    parser = argparse.ArgumentParser(prog="python -m model", description="Deepfake video detector")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser("detect", help="judge one or more videos")
    detect.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, or folders of them (searched with their subfolders)")
    detect.add_argument("--json", action="store_true", help="one JSON object per line")
    detect.add_argument("--sequence-length", type=int, default=None)
    detect.add_argument("--start", type=_time, default=None, metavar="TIME", help="examine from this time (seconds, or 1:30)")
    detect.add_argument("--end", type=_time, default=None, metavar="TIME", help="examine up to this time (default: the end)")
    detect.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    detect.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    detect.set_defaults(run=_detect)

    evaluate = commands.add_parser("evaluate", help="video-level metrics on a labelled manifest")
    evaluate.add_argument("--manifest", required=True, help="CSV path,label[,method,source_ids] or a folder with real/ fake/")
    evaluate.add_argument("--root", default=None, help="folder the CSV paths are relative to")
    evaluate.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    evaluate.add_argument(
        "--split", choices=["all", "validation"], default="all",
        help="validation: the identity groups that train (without --crossval-report) holds out",
    )
    evaluate.add_argument(
        "--quality", nargs="+", default=["orig", "crf40_480p"], choices=list(QUALITIES),
        help="orig (as it is), crf40_480p (H.264 CRF 40, 480p), crf32_360p, crf23_360p, crf23_240p, av1_crf45_480p (SVT-AV1 CRF 45, 480p), vp9_crf45_480p (VP9 CRF 45, 480p), gif_480p (an animated GIF, 480p), webp_480p (an animated WebP, 480p), bw_crf23_480p (black and white, H.264 CRF 23, 480p), sepia_crf23_480p (sepia, H.264 CRF 23, 480p), dim_crf23_480p (as filmed in a dim room, H.264 CRF 23, 480p), gained_crf23_480p (the dim room with the camera's gain up: bright but grainy, H.264 CRF 23, 480p)",
    )
    evaluate.add_argument(
        "--unseen-only", action="store_true",
        help="judge only the clips of people the checkpoint was not trained on (as it lists them; clips naming no people stay)",
    )
    evaluate.add_argument("--sequence-length", type=int, default=None)
    evaluate.add_argument("--val-fraction", type=float, default=0.2)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--out", default="evaluation", help="folder for evaluation.json and roc.png")
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument(
        "--jobs", type=int, default=1, help="videos judged at once, each process with its own detector and share of the cores"
    )
    evaluate.set_defaults(run=_evaluate)

    training = commands.add_parser("train", help="train a detector from a manifest")
    _add_training_options(training)
    training.add_argument("--out", default=TrainConfig.out, help="checkpoint to write")
    training.add_argument(
        "--crossval-report", default=None, metavar="JSON",
        help="train on every clip, keep the last step, and calibrate on this cross-validation of the same recipe",
    )
    training.set_defaults(run=_train)

    crossval = commands.add_parser("crossval", help="cross-validate the training recipe over identity groups")
    _add_training_options(crossval)
    crossval.add_argument("--folds", type=int, default=5, help="folds of identity groups, each held out once")
    crossval.add_argument("--jobs", type=int, default=1, help="folds trained at once, each in its own process")
    crossval.add_argument(
        "--train-groups", type=int, default=None, help="train each fold on this many of its identity groups, drawn at random (a learning curve)"
    )
    crossval.add_argument(
        "--judge-quality", dest="judge_qualities", action="append", default=[], choices=[q for q in QUALITIES if q != "orig"],
        help="also judge the held-out clips at this quality (repeatable; e.g. crf23_240p for small faces); reported, not calibrated on",
    )
    crossval.add_argument("--out", default="evaluation/crossval", help="folder for crossval.json and roc.png")
    crossval.add_argument(
        "--keep-models", default=None, metavar="DIR",
        help="keep each fold's model there (fold-<k>.pt), calibrated as its held-out clips were",
    )
    crossval.set_defaults(run=_crossval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
