"""What the check for damage costs (`model.damage.damaged_pictures`, the `damaged` caveat),
against the reading of the frames it runs beside.

    python bench/damage_check.py [--count 20] [--runs 3] [--out bench/results/damage-check-DATE.json]

For each of the benchmark's generated face clips: the reading of `count` frames (`read_frames`),
the check's first look alone (the frames examined, each from the key frame before it), and the
whole check (that look, then the whole video), each the median of `runs`, one process, run one
after another (the app runs the check beside the analysis, on what that leaves of the cores).
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline import machine, make_clips, median_seconds  # noqa: E402  (beside this script)

from model.damage import damaged_pictures  # noqa: E402
from model.video import read_frames  # noqa: E402

log = logging.getLogger("bench")

CLIPS = ("720p_10s", "1080p_10s", "1080p_60s_phone", "1080p_10min")


def measure(path: Path, count: int, runs: int) -> dict:
    sampled = read_frames(path, count)
    examined_s = [sampled.timeline.time_s(index) for index in sampled.indices]
    never = threading.Event()
    start_s = sampled.span_s[0]
    reading_s, _ = median_seconds(lambda: read_frames(path, count), runs)
    # the first look alone: the whole span's look given a span that ends where it starts
    look_s, _ = median_seconds(lambda: damaged_pictures(path, (start_s, start_s), never, sampled.stream, examined_s), runs)
    whole_s, damaged = median_seconds(lambda: damaged_pictures(path, sampled.span_s, never, sampled.stream, examined_s), runs)
    return {
        "method": sampled.method,
        "reading_s": round(reading_s, 3),
        "examined_look_s": round(look_s, 3),
        "whole_check_s": round(whole_s, 3),
        "damaged": damaged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="frames examined (default 20)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"damage-check-{datetime.date.today().isoformat()}.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = make_clips(ROOT / "bench" / ".clips", set(CLIPS))
    rows = []
    for name in CLIPS:
        rows.append({"clip": name, **measure(clips[name], args.count, args.runs)})
        log.info("%s", json.dumps(rows[-1]))
    report = {"date": datetime.date.today().isoformat(), "machine": machine(), "count": args.count, "runs": args.runs, "clips": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
