"""How soon an analysis stops once its job is deleted ("Stop and delete the video", DELETE
/api/v1/jobs/<id>), and how long it would have run.

    python bench/stop_latency.py [--runs 3] [--out bench/results/stop-latency-DATE.json]

On two generated clips: the benchmark's ten minutes of 1080p (read by seeking to key frames), and
a minute of 1080p with a single key frame, as a screen recording may be (read in one pass, the
frames examined 90 frames apart). Each job is deleted a tenth, four tenths and seven tenths of
the whole analysis's time after it starts running; the latency is from the DELETE to the worker
being free, the upload deleted. The app runs in this
process with the shipped weights.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pipeline import machine, make_clips  # noqa: E402  (beside this script)

from app import create_app  # noqa: E402
from media import iter_face_frames, write_video  # noqa: E402
from model.detector import DEFAULT_WEIGHTS  # noqa: E402

log = logging.getLogger("bench")
SHARES = (0.1, 0.4, 0.7)  # of the whole analysis's time: when, after the job starts running, it is deleted


def one_key_frame_clip(folder: Path) -> Path:
    path = folder / "1080p_60s_one_key_frame.mp4"
    if not path.exists():
        frames = iter_face_frames(1800, (1920, 1080), period=300)
        options = {"preset": "ultrafast", "x264-params": "keyint=infinite:scenecut=0"}
        write_video(path, frames, "libx264", fps=30, options=options)
    return path


def submit(client, path: Path) -> dict:
    data = {"video": (io.BytesIO(path.read_bytes()), path.name)}
    return client.post("/api/v1/jobs", data=data, content_type="multipart/form-data").get_json()


def until_running(client, status_url: str) -> dict:
    while (status := client.get(status_url).get_json())["status"] == "queued":
        time.sleep(0.01)
    return status


def measure(app, path: Path, runs: int) -> dict:
    client, worker = app.test_client(), app.extensions["job_worker"]
    begun = time.perf_counter()
    done = submit(client, path)
    worker.join()
    whole_s = time.perf_counter() - begun
    assert client.get(done["status_url"]).get_json()["status"] == "done"
    stops = []
    for share in SHARES:
        delay = share * whole_s
        latencies, stages = [], []
        for _ in range(runs):
            job = submit(client, path)
            until_running(client, job["status_url"])
            time.sleep(delay)
            status = client.get(job["status_url"]).get_json()
            asked = time.perf_counter()
            assert client.delete(job["status_url"]).status_code == 204
            worker.join()
            latencies.append(time.perf_counter() - asked)
            stages.append(f"{status['stage']} {status['progress']}%")
        stops.append({"after_s": round(delay, 2), "stop_s": round(statistics.median(latencies), 3), "runs_s": [round(s, 3) for s in latencies], "at": stages})
    assert not any(Path(app.config["UPLOAD_FOLDER"]).iterdir()), "an upload was left"
    return {"whole_analysis_s": round(whole_s, 2), "deleted": stops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"stop-latency-{datetime.date.today().isoformat()}.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = ROOT / "bench" / ".clips"
    clips = {"1080p_10min": make_clips(folder, {"1080p_10min"})["1080p_10min"], "1080p_60s_one_key_frame": one_key_frame_clip(folder)}
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(
            {
                "UPLOAD_FOLDER": f"{scratch}/uploads",
                "JOBS_DB": f"{scratch}/jobs.sqlite3",
                "WEIGHTS": str(DEFAULT_WEIGHTS),
                "MAX_CONTENT_LENGTH": 200 * 2**20,
            }
        )
        rows = []
        for name, path in clips.items():
            rows.append({"clip": name, **measure(app, path, args.runs)})
            log.info("%s", json.dumps(rows[-1]))
    report = {"date": datetime.date.today().isoformat(), "machine": machine(), "runs": args.runs, "clips": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
