"""What a seek costs against one pass: what `model.video.SEEK_COST_FRAMES` and
`SOUGHT_FRAME_COST` rest on.

    python bench/seek_costs.py --manifest weights/evaluation/elsewhere/clips.csv --root DATA \\
        [--out bench/results/seek-costs-DATE.json]

For each clip of the manifest, and the benchmark's generated face clips: the time OpenCV takes
to decode a frame in one pass (as `read_frames` reads a clip in one pass), the time PyAV takes
to seek to a key frame and decode it (as `read_frames` reads frames at key frames), and the time
it takes for each frame it decodes from there (from seeks 15 frames past key frames), the last
two in frames of the first. Reported: each clip's, and their medians.
"""
from __future__ import annotations

import datetime
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fold_inference import manifest_arguments  # noqa: E402  (beside this script)
from pipeline import machine, make_clips  # noqa: E402

from model.container import container_facts  # noqa: E402
from model.dataset import read_manifest, shown_path  # noqa: E402
from model.decoders import PyAVCapture  # noqa: E402

log = logging.getLogger("bench")

PASS_FRAMES, SEEKS, PAST_KEY = 300, 10, 15
GENERATED = ("720p_10s", "1080p_10s", "1080p_60s_phone")


def one_pass_s(path: Path) -> float:
    """OpenCV's time a frame in one pass over the first `PASS_FRAMES` frames."""
    capture = cv2.VideoCapture(str(path))
    begun, frames = time.perf_counter(), 0
    while frames < PASS_FRAMES and capture.grab():
        frames += 1
    seconds = time.perf_counter() - begun
    capture.release()
    return seconds / max(frames, 1)


def seeks_s(path: Path, targets: list[int]) -> float:
    """PyAV's time a seek to each of `targets` and the frame's decoding, the packets' times read first."""
    capture = PyAVCapture(path)
    try:
        capture._stream_timing()  # read once a reading, not once a seek
        begun = time.perf_counter()
        for index in targets:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            capture.grab()
        return (time.perf_counter() - begun) / len(targets)
    finally:
        capture.release()


def measure(path: Path) -> dict | None:
    keys = container_facts(path).key_frames
    # key frames with a whole group after them (the last may end early), spread over the video
    spaced = [int(k) for k, following in zip(keys[:-1], keys[1:]) if following - k > PAST_KEY]
    if not spaced:
        return None
    spaced = spaced[:: max(1, len(spaced) // SEEKS)][:SEEKS]
    frame_s = one_pass_s(path)
    key_s = seeks_s(path, spaced)
    past_s = seeks_s(path, [k + PAST_KEY for k in spaced])
    return {
        "key_frames": len(keys),
        "one_pass_frame_ms": round(frame_s * 1e3, 3),
        "seek_to_key_frame": round(key_s / frame_s, 2),
        "sought_frame": round((past_s - key_s) / PAST_KEY / frame_s, 2),
    }


def main() -> None:
    args = manifest_arguments(__doc__.splitlines()[0], "seek-costs").parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips: dict[str, Path] = dict(make_clips(ROOT / "bench" / ".clips", set(GENERATED)))
    clips |= {shown_path(c, args.manifest, args.root): Path(c.path) for c in read_manifest(args.manifest, args.root)}
    rows = []
    for name, path in clips.items():
        if row := measure(path):
            rows.append({"clip": name, **row})
            log.info("%s", json.dumps(rows[-1]))
        else:
            log.info("%s: no key frame but the first, or none a group from the next", name)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "clips": len(rows),
        **{f"median_{key}": statistics.median(r[key] for r in rows) for key in ("seek_to_key_frame", "sought_frame")},
        "per_clip": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    log.info("%s; wrote %s", json.dumps({k: v for k, v in report.items() if k != "per_clip"}), args.out)


if __name__ == "__main__":
    main()
