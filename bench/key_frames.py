"""Whether reading a video's frames at the key frames nearest them changes its verdicts: what
`model.video._near_key_frames` rests on.

    python bench/key_frames.py --manifest weights/ffpp_c23_train_clips.csv --root DATA \\
        [--out bench/results/key-frames-DATE.json]

A seek decodes from the key frame before the frame sought, so frames are read at the key frame
nearest each where that decodes fewer frames than a pass; but a key frame is coded more finely
than the frames that refer to it, and compression is what the detector reads. Each clip (its first 16 s) is re-encoded with a key
frame every 12 frames (H.264, CRF 23), so that every one of 20 frames spread evenly over it has
one near; it is judged on those 20 frames, on the key frame nearest each, on the frame after
that key frame, and, as a yardstick for any other choice of frames, on the 20 frames half a
group of pictures after the evenly spread ones. Reported: how far each moves the clips'
p_fake from the evenly spread frames' (paired), the verdicts it turns, and each one's AUC.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fold_inference import manifest_arguments  # noqa: E402  (beside this script)
from model.dataset import read_manifest, shown_path  # noqa: E402
from model.detector import Detector  # noqa: E402
from model.evaluation import roc_auc  # noqa: E402
from model.faces import extract_face_crops  # noqa: E402
from model.layout import picture_region  # noqa: E402
from model.container import read_main_stream  # noqa: E402
from model.timing import Timeline  # noqa: E402

log = logging.getLogger("bench")

KEY_EVERY, SECONDS, FRAMES = 12, 16, 20
CHOICES = ("evenly_spread", "key_frames", "after_key_frames", "half_a_group_later")


def reencode(source: Path, target: Path) -> None:
    """The first `SECONDS` of a clip as H.264 with a key frame every `KEY_EVERY` frames."""
    with av.open(str(source)) as given, av.open(str(target), "w") as out:
        stream = given.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        encoder = out.add_stream("libx264", rate=rate)
        encoder.width, encoder.height = stream.codec_context.width // 2 * 2, stream.codec_context.height // 2 * 2
        encoder.pix_fmt = "yuv420p"
        encoder.options = {"crf": "23", "preset": "veryfast", "x264-params": f"keyint={KEY_EVERY}:min-keyint={KEY_EVERY}:scenecut=0"}
        for number, frame in enumerate(given.decode(stream)):
            if number >= SECONDS * rate:
                break
            picture = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
            picture.pts, picture.time_base = number, 1 / rate
            for packet in encoder.encode(picture):
                out.mux(packet)
        for packet in encoder.encode():
            out.mux(packet)


def choices(path: Path) -> dict[str, list[int]]:
    """The frames (display order) of each choice."""
    with av.open(str(path)) as container:
        timing = read_main_stream(container)
    count = len(timing.times)
    keys = np.searchsorted(timing.times, timing.keys[:, 0])
    spread = Timeline.of(25.0, count, None).spread((0, count), FRAMES)
    nearest: list[int] = []
    for index in spread:  # as `model.video._near_key_frames`, but however far (a short clip has fewer than 20)
        free = [int(k) for k in keys[np.argsort(np.abs(keys - index), kind="stable")] if k not in nearest]
        nearest.append(free[0] if free else index)
    return {
        "evenly_spread": spread,
        "key_frames": nearest,
        "after_key_frames": [min(k + 1, count - 1) for k in nearest],
        "half_a_group_later": [min(i + KEY_EVERY // 2, count - 1) for i in spread],
    }


def judge(detector: Detector, frames: list[np.ndarray]) -> float | None:
    faces = extract_face_crops(frames, detector.config.image_size, 1, None, picture_region(frames), detector.upright_from)
    return detector.score_crops(faces[0].crops)[0] if faces else None


def compare(rows: list[dict]) -> dict:
    rows = [r for r in rows if all(r[c] is not None for c in CHOICES)]
    fake = np.array([r["label"] == "FAKE" for r in rows], dtype=float)
    spread = np.array([r["evenly_spread"] for r in rows])
    result = {"clips": len(rows), "auc_evenly_spread": round(roc_auc(fake, spread), 4) if 0 < fake.sum() < len(fake) else None}
    for choice in CHOICES[1:]:
        p = np.array([r[choice] for r in rows])
        moved = p - spread
        result[choice] = {
            "mean_abs_change": round(float(np.abs(moved).mean()), 4),
            "mean_change": round(float(moved.mean()), 4),
            "max_abs_change": round(float(np.abs(moved).max()), 4),
            "verdicts_turned": int(np.sum((p > 0.5) != (spread > 0.5))),
            "auc": round(roc_auc(fake, p), 4) if 0 < fake.sum() < len(fake) else None,
        }
    return result


def main() -> None:
    args = manifest_arguments(__doc__.splitlines()[0], "key-frames").parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    detector = Detector()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip_path = Path(folder) / "clip.mp4"
        for clip in read_manifest(args.manifest, args.root):
            reencode(Path(clip.path), clip_path)
            chosen = choices(clip_path)
            wanted = set().union(*chosen.values())
            with av.open(str(clip_path)) as container:
                frames = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in wanted}
            row = {"clip": shown_path(clip, args.manifest, args.root), "label": clip.label}
            row |= {choice: judge(detector, [frames[i] for i in indices]) for choice, indices in chosen.items()}
            log.info("%s", json.dumps(row))
            rows.append(row)
    report = {"date": datetime.date.today().isoformat(), "manifest": Path(args.manifest).name, **compare(rows), "per_clip": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    log.info("%s; wrote %s", json.dumps({k: v for k, v in report.items() if k != "per_clip"}), args.out)


if __name__ == "__main__":
    main()
