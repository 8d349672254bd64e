"""Two people in one video, on real footage: the fold models judge side-by-side composites of clips
of people they never saw.

    python bench/two_people.py --report R/crossval.json --models R/folds \\
        --manifest weights/ffpp_c23_train_clips.csv --root DATA [--work /tmp/two-people] \\
        [--out bench/results/two-people-DATE.json]

`R` is a cross-validation run with `--keep-models R/folds`. Within each fold's held-out clips,
every real clip is put beside a real clip of other people (a real video of two people) and every
fake clip beside a real one of other people (a fake video: one of its two faces manipulated),
the fake on the left and on the right in turn. Both are scaled to 360 px tall, side by side,
and encoded with H.264 at CRF 23; the fold's model (calibrated as its held-out clips were) then
judges the composite as the app judges an upload, through `Detector.detect`. The report gives
the served verdicts' metrics, and, on the same pairs, the verdicts that bench/multi_face.py's
simulation would give: the mean of the odds of the two clips' cross-validation scores, each
clip judged alone at full size. The composites are made from the data set's clips and stay in
`--work`; only figures are written.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fold_inference import auc_difference, fold_arguments, metrics  # noqa: E402  (beside this script)
from fold_pipeline import logit  # noqa: E402
from model.dataset import read_manifest, shown_path  # noqa: E402
from model.detector import Detector, video_p_fake  # noqa: E402
from model.evaluation import bootstrap_interval, roc_auc  # noqa: E402

log = logging.getLogger("bench")
HEIGHT = 360
MAX_FRAMES = 250  # 10 s at 25 frames a second


def pairs_of_fold(rows: list[dict], rng: np.random.Generator) -> list[tuple[dict, dict]]:
    """(left, right) clips: each real clip beside a real one of other people, each fake beside a
    real one of other people; the fake alternately left and right."""
    reals = [r for r in rows if r["label"] == "REAL"]
    pairs = []
    for index, clip in enumerate(sorted(rows, key=lambda r: (r["label"], r["path"]))):
        others = [r for r in reals if r["group"] != clip["group"]]
        if not others:
            continue
        partner = others[rng.integers(len(others))]
        pairs.append((clip, partner) if index % 2 == 0 else (partner, clip))
    return pairs


def scaled_width(width: int, height: int) -> int:
    """A clip's width once scaled to HEIGHT (even, as H.264 wants it)."""
    return round(width * HEIGHT / height) // 2 * 2


def compose(left: Path, right: Path, out: Path) -> None:
    """The two clips side by side, each scaled to HEIGHT, as long as the shorter (at most MAX_FRAMES)."""
    readers = [cv2.VideoCapture(str(p)) for p in (left, right)]
    fps = readers[0].get(cv2.CAP_PROP_FPS) or 25.0

    def side_by_side() -> np.ndarray | None:
        frames = [reader.read() for reader in readers]
        if not all(ok for ok, _ in frames):
            return None
        sides = [cv2.resize(f, (scaled_width(f.shape[1], f.shape[0]), HEIGHT), interpolation=cv2.INTER_AREA) for _, f in frames]
        return cv2.cvtColor(np.hstack(sides), cv2.COLOR_BGR2RGB)

    image = side_by_side()
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(round(fps * 1000), 1000))
        stream.height, stream.width = image.shape[:2]  # else PyAV's 640×480 default, to which it squeezes every frame
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for _ in range(MAX_FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            if (image := side_by_side()) is None:
                break
        for packet in stream.encode():
            container.mux(packet)
    for reader in readers:
        reader.release()


def judge(pairs: list[tuple[int, dict, dict]], paths: dict[str, Path], models: Path, work: Path) -> list[dict]:
    """Each composite judged by its fold's model: the video's p_fake, and each face's with its side."""
    judged = []
    detectors: dict[int, Detector] = {}
    for number, (fold, left, right) in enumerate(pairs):
        video = work / f"pair-{number:03d}.mp4"
        if not video.exists():
            compose(paths[left["path"]], paths[right["path"]], video)
        detector = detectors.setdefault(fold, Detector(models / f"fold-{fold + 1}.pt", "cpu"))
        capture = cv2.VideoCapture(str(paths[left["path"]]))  # where the left clip ends
        border = scaled_width(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        capture.release()
        start = time.perf_counter()
        result = detector.detect(video)
        faces = [
            {"side": "left" if (t.box[1] + t.box[3]) / 2 < border else "right", "p_fake": round(t.p_fake, 4), "height": t.height}
            for t in result.tracks
        ]
        judged.append({
            "fold": fold, "left": left["path"], "right": right["path"],
            "label": "FAKE" if "FAKE" in (left["label"], right["label"]) else "REAL",
            "p_fake": None if result.p_fake is None else round(result.p_fake, 4),
            # the simulation's verdict on the same pair: the two clips' cross-validation scores, alone and full size
            "simulated_p_fake": round(video_p_fake([left["p_fake"], right["p_fake"]]), 4),
            "alone_p_fake": {"left": left["p_fake"], "right": right["p_fake"]},
            "faces": faces, "seconds": round(time.perf_counter() - start, 2),
        })  # fmt: skip
        log.info("pair %d (fold %d, %s): p_fake %s, faces %s", number, fold + 1, judged[-1]["label"], judged[-1]["p_fake"], faces)
    return judged


def summary(judged: list[dict], rounds: int) -> dict:
    """Metrics of the served verdicts, the simulated ones on the same pairs, and how the faces were found."""
    both = [j for j in judged if j["p_fake"] is not None]
    y = np.array([j["label"] == "FAKE" for j in both])
    served, simulated = np.array([j["p_fake"] for j in both]), np.array([j["simulated_p_fake"] for j in both])
    two_sides = [j for j in judged if sorted(f["side"] for f in j["faces"]) == ["left", "right"]]
    alone, composite = [], []
    for j in two_sides:
        for face in j["faces"]:
            alone.append(j["alone_p_fake"][face["side"]])
            composite.append(face["p_fake"])
    return {
        "videos": len(judged), "real_videos": int(sum(j["label"] == "REAL" for j in judged)),
        "fake_videos": int(sum(j["label"] == "FAKE" for j in judged)),
        "no_face_videos": len(judged) - len(both),
        "both_faces_found": len(two_sides),
        "face_heights_px": [int(np.percentile([f["height"] for j in judged for f in j["faces"]], q)) for q in (10, 50, 90)],
        "served": {**{k: round(v, 4) for k, v in metrics(y, served).items()},
                   "auc_ci95": [round(v, 4) for v in bootstrap_interval(roc_auc, y, served, rounds)]},
        "simulated_on_the_same_pairs": {**{k: round(v, 4) for k, v in metrics(y, simulated).items()},
                                        "auc_ci95": [round(v, 4) for v in bootstrap_interval(roc_auc, y, simulated, rounds)]},
        "served_against_simulated": auc_difference(y, simulated, served, rounds),
        "face_logit_correlation_with_alone": round(float(np.corrcoef(logit(np.array(alone)), logit(np.array(composite)))[0, 1]), 4),
        "seconds_per_video": round(float(np.median([j["seconds"] for j in judged])), 2),
    }  # fmt: skip


def main() -> None:
    parser = fold_arguments(__doc__.splitlines()[0], "two-people")
    parser.add_argument("--work", default="/tmp/two-people", help="folder for the composites (data set footage: keep it out of the repository)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = json.loads(Path(args.report).read_text())
    rows = report["qualities"]["orig"]["clips"]
    paths = {shown_path(c, args.manifest, args.root): c.path for c in read_manifest(args.manifest, args.root)}
    rng = np.random.default_rng(args.seed)
    pairs = [(fold, *pair) for fold in sorted({r["fold"] for r in rows}) for pair in pairs_of_fold([r for r in rows if r["fold"] == fold], rng)]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    judged = judge(pairs, paths, Path(args.models), work)
    result = {"report": args.report, "seed": args.seed, "height": HEIGHT, "max_frames": MAX_FRAMES, **summary(judged, args.rounds), "pairs": judged}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s; wrote %s", json.dumps({k: v for k, v in result.items() if k != "pairs"}), args.out)


if __name__ == "__main__":
    main()
