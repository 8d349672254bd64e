"""End-to-end speed and memory of the detector, side by side with the original project's inference path.

    python bench/pipeline.py [--runs 5] [--baseline-runs 3] [--out bench/results/DATE.json]

Each measurement runs in a fresh process so that its peak resident memory is its own.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

log = logging.getLogger("bench")
T = TypeVar("T")
CLIPS = {  # name: (width, height, seconds, fps, codec, container)
    "720p_10s": (1280, 720, 10, 25, "libx264", "mp4"),
    "720p_10s_av1": (1280, 720, 10, 25, "libsvtav1", "mp4"),  # as video sites serve it: decoded by PyAV, not OpenCV
    "480p_10s_webp": (854, 480, 10, 10, "webp", "webp"),  # an animated WebP, as GIF sites serve one: decoded by Pillow
    "1080p_10s": (1920, 1080, 10, 30, "libx264", "mp4"),
    # HEVC, as phones record and as encoders shrink videos to: x265's defaults, B-frames
    # (decoded by PyAV, which passes over those no other picture refers to, as in H.264)
    "1080p_10s_hevc": (1920, 1080, 10, 30, "libx265", "mp4"),
    "2160p_10s": (3840, 2160, 10, 30, "libx264", "mp4"),  # a phone's 4K
    "1080p_10min": (1920, 1080, 600, 30, "libx264", "mp4"),
    # with a key frame every second, as a phone's camera may write them (x264's default is 250
    # frames): read at its key frames, where that decodes fewer frames than a pass
    "1080p_60s_phone": (1920, 1080, 60, 30, "libx264", "mp4"),
    # the same packets in an MPEG transport stream (as broadcasts and camcorders' .mts are): no
    # index, so its frames are seeked by PyAV
    "1080p_10min_ts": (1920, 1080, 600, 30, "libx264", "ts"),
    # and in a raw H.264 stream (as CCTV recorders and dashcams export one): no times, so its
    # frames are counted from its packets and sought by their bytes; read at 25 frames a second
    "1080p_10min_h264": (1920, 1080, 600, 30, "libx264", "h264"),
}
SEQUENCE_LENGTHS = (20, 60, 100)
KEY_EVERY = {"1080p_60s_phone": 30}  # frames; else x264's default
BASELINE_CLIP = "720p_10s"


def make_clips(folder: Path, names: set[str]) -> dict[str, Path]:
    """The generated face clips of those `names`; the longer ones repeat their 10 s clip's
    packets (no re-encode)."""
    import av
    from media import iter_face_frames, write_video

    from model.augment import write_webp

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (width, height, seconds, fps, codec, container) in CLIPS.items():
        if name not in names:
            continue
        path = paths[name] = folder / f"{name}.{container}"
        if path.exists():
            continue
        if codec == "webp":
            write_webp(iter_face_frames(seconds * fps, (width, height)), path, Fraction(fps))
            continue
        if codec != "libx264":
            write_video(path, iter_face_frames(seconds * fps, (width, height)), codec, fps)
            continue
        options = {"preset": "veryfast"}
        if key_every := KEY_EVERY.get(name):
            options["x264-params"] = f"keyint={key_every}:min-keyint={key_every}:scenecut=0"
        if seconds <= 10:
            write_video(path, iter_face_frames(seconds * fps, (width, height)), codec, fps, options=options)
            continue
        short = folder / f"{width}x{height}_{fps}_10s{f'_key_every_{key_every}' if key_every else ''}.mp4"
        if not short.exists():
            write_video(short, iter_face_frames(10 * fps, (width, height)), codec, fps, options=options)
        with av.open(str(short)) as src:
            packets = [p for p in src.demux(src.streams.video[0]) if p.size]
            template = src.streams.video[0]
            span = max(p.pts for p in packets) + packets[1].duration if packets[1].duration else None
            times = [(packet.pts, packet.dts) for packet in packets]  # a muxer may rescale a packet's in place
            with av.open(str(path), "w") as out:
                stream = out.add_stream_from_template(template)
                step = span or (10 * template.time_base.denominator // template.time_base.numerator)
                for repeat in range(seconds // 10):
                    offset = repeat * step
                    for packet, (pts, dts) in zip(packets, times):
                        packet.stream, packet.time_base = stream, template.time_base
                        packet.pts, packet.dts = pts + offset, dts + offset
                        out.mux(packet)
    return paths


def measure_ours(clip: str, sequence_length: int, runs: int, weights: str, explain: bool = False) -> dict:
    """Our path; `explain` adds the heatmaps, as the web page's analysis does."""
    from model.detector import Detector

    detector = Detector(weights)
    detector.detect(clip, sequence_length, explain=explain)  # warm-up
    results = [detector.detect(clip, sequence_length, explain=explain) for _ in range(runs)]
    stages = {k: statistics.median(r.seconds.get(k, 0.0) for r in results) for k in ("decode", "faces", "model", "total")}
    return {"faces": results[-1].faces, "label": results[-1].label, "seconds": stages}


def measure_baseline(clip: str, sequence_length: int, runs: int) -> dict:
    """The original project's path: every frame decoded into a list, the first N used,
    full-resolution HOG (upsample 1) on each, fp32 ResNeXt50 + LSTM(2048) on the crops."""
    import cv2
    import face_recognition
    import numpy as np
    import torch

    from model.network import DeepfakeNet, NetworkConfig

    torch.manual_seed(0)  # speed does not depend on the weights
    model = DeepfakeNet(NetworkConfig(encoder="resnext50_32x4d", hidden_size=2048, temporal="original", lstm_bias=False)).eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def once() -> dict:
        start = time.perf_counter()
        capture, frames = cv2.VideoCapture(clip), []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        decoded = time.perf_counter()
        crops = []
        for frame in frames[:sequence_length]:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces = face_recognition.face_locations(rgb)
            if faces:
                top, right, bottom, left = faces[0]
                rgb = rgb[top:bottom, left:right]
            crops.append((cv2.resize(rgb, (112, 112)) / 255.0 - mean) / std)
        found = time.perf_counter()
        with torch.inference_mode():
            model(torch.from_numpy(np.stack(crops)).float().permute(0, 3, 1, 2)[None])
        end = time.perf_counter()
        return {"decode": decoded - start, "faces": found - decoded, "model": end - found, "total": end - start}

    once()
    timings = [once() for _ in range(runs)]
    return {"seconds": {k: statistics.median(t[k] for t in timings) for k in timings[0]}}


def measure_crossover(clip: Path, counts: tuple[int, ...] = (2, 4, 8, 16, 30)) -> list[dict]:
    """Decode time of one sequential pass against seeking to each frame, by gap between chosen frames."""
    from model.video import probe_video, read_frames

    total = probe_video(clip).frame_count
    rows = []
    for count in counts:
        times = {}
        for method, gap in (("sequential", 10**9), ("seek", 1)):
            read_frames(clip, count, seek_min_gap=gap)
            start = time.perf_counter()
            for _ in range(3):
                read_frames(clip, count, seek_min_gap=gap)
            times[method] = (time.perf_counter() - start) / 3
        rows.append({"frames": count, "gap_frames": total / count, **times})
    return rows


def measure_parts(clip: Path, count: int = 20) -> list[dict]:
    """Decode time of `count` frames from a part of a long video: near its start and near its
    end, read as the detector reads them (a seek to the part, then one pass, or a seek to each
    frame's key frame, whichever decodes fewer frames) or decoded from the video's start."""
    from model.video import TimeRange, read_frames

    duration = read_frames(clip, 1).timeline.duration_s  # a raw stream's header states none
    rows = []
    for start in (30.0, duration - 60):
        part = TimeRange(start, start + 30)
        times = {}
        for how, gap in (("seek_to_part", None), ("decode_from_start", 10**9)):
            begun = time.perf_counter()
            read_frames(clip, count, seek_min_gap=gap, part=part)
            times[how] = time.perf_counter() - begun
        rows.append({"frames": count, "start_s": part.start_s, "end_s": part.end_s, **times})
    return rows


def make_recordings(folder: Path, seconds: int = 600, size: tuple[int, int] = (640, 360)) -> dict[str, Path]:
    """A 10-minute VP8 WebM face clip twice: as a file encoder writes it (duration and index in the
    header) and as a browser's MediaRecorder writes it (neither: FFmpeg's live mode)."""
    from media import iter_face_frames, write_video

    paths = {}
    for name, options in (("indexed", {}), ("browser_recording", {"live": "1"})):
        path = paths[name] = folder / f"{size[1]}p_10min_{name}.webm"
        if not path.exists():
            frames = iter_face_frames(seconds * 30, size, period=90)
            write_video(path, frames, "libvpx", 30, options={"deadline": "realtime", "cpu-used": "8", "b": "1M"}, container_options=options)
    return paths


def measure_recordings(recordings: dict[str, Path], count: int = 20, runs: int = 3) -> list[dict]:
    """Decode time of `count` frames of each recording, as the detector reads them (median of `runs`)."""
    from model.video import read_frames

    rows = []
    for name, path in recordings.items():
        seconds, sampled = median_seconds(lambda: read_frames(path, count), runs)
        rows.append({"recording": name, "frames": count, "seconds": seconds, "method": sampled.method})
    return rows


def median_seconds(work: Callable[[], T], runs: int) -> tuple[float, T]:
    """The median time of `runs` calls of `work`, and what the last returned."""
    times = []
    for _ in range(runs):
        begun = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - begun)
    return statistics.median(times), result


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line with the peak RSS."""
    logging.disable(logging.WARNING)
    if args.child in ("ours", "web"):
        result = measure_ours(args.clip, args.sequence_length, args.runs, args.weights, explain=args.child == "web")
    else:
        result = measure_baseline(args.clip, args.sequence_length, args.runs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(kind: str, clip: Path, sequence_length: int, runs: int, weights: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--clip", str(clip), "--sequence-length", str(sequence_length), "--runs", str(runs), "--weights", weights]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), choices=list(CLIPS), help="none: the decoding-only measurements alone")
    parser.add_argument("--sequence-lengths", nargs="+", type=int, default=list(SEQUENCE_LENGTHS))
    parser.add_argument("--clip-dir", default=str(ROOT / "bench" / ".clips"))
    parser.add_argument("--weights", default=str(ROOT / "weights" / "detector.pt"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"{datetime.date.today()}.json"))
    parser.add_argument("--child", choices=["ours", "web", "baseline"])
    parser.add_argument("--clip")
    parser.add_argument("--sequence-length", type=int)
    args = parser.parse_args()
    if args.child:
        return child(args)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = make_clips(Path(args.clip_dir), {*args.clips, "1080p_10s"})  # the latter for the seek crossover
    report = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "rows": []}
    log.info("machine: %s", report["machine"])
    header = f"{'clip':<12} {'N':>4} {'path':<9} {'total s':>8} {'decode':>7} {'faces':>7} {'model':>7} {'fps':>6} {'RSS MB':>7}"
    log.info(header)
    for name in args.clips:
        for n in args.sequence_lengths:
            kinds = ["ours"]
            # The baseline runs on the 720p clip only: full-resolution HOG makes it minutes per
            # 1080p case, and it decodes every frame into memory (~110 GB for the 10-minute clip).
            # There too, "web" is our path with the heatmaps the result page shows.
            if name == BASELINE_CLIP:
                kinds.append("web")
                if not args.no_baseline:
                    kinds.append("baseline")
            for kind in kinds:
                runs = args.runs if kind == "ours" else args.baseline_runs
                result = run_child(kind, clips[name], n, runs, args.weights)
                seconds = result["seconds"]
                row = {"clip": name, "sequence_length": n, "path": kind, "runs": runs, **result, "frames_per_second": n / seconds["total"]}
                report["rows"].append(row)
                log.info(
                    f"{name:<12} {n:>4} {kind:<9} {seconds['total']:>8.3f} {seconds['decode']:>7.3f} {seconds['faces']:>7.3f} "
                    f"{seconds['model']:>7.3f} {row['frames_per_second']:>6.1f} {result['peak_rss_mb']:>7.0f}"
                )
            if "baseline" in kinds:
                ours, base = report["rows"][-len(kinds)]["seconds"]["total"], report["rows"][-1]["seconds"]["total"]
                report["rows"][-1]["speedup_ours_vs_baseline"] = base / ours
                log.info(f"{'':<12} {n:>4} speed-up ×{base / ours:.1f}")
    crossover_clip = clips["1080p_10s"]
    report["seek_crossover"] = measure_crossover(crossover_clip)
    log.info("decode only, %s: seconds for one sequential pass vs seeking to each frame", crossover_clip.name)
    for row in report["seek_crossover"]:
        log.info(f"  {row['frames']:>3} frames, gap {row['gap_frames']:>6.1f}: sequential {row['sequential']:.3f}  seek {row['seek']:.3f}")
    for name, key in (("1080p_10min", "parts"), ("1080p_10min_ts", "parts_transport_stream"), ("1080p_10min_h264", "parts_raw_stream")):
        if name in args.clips:
            report[key] = measure_parts(clips[name])
            log.info("decode only, %s: seconds for 20 frames of a 30 s part", clips[name].name)
            for row in report[key]:
                log.info(f"  from {row['start_s']:.0f} s: seeking to the part {row['seek_to_part']:.2f}  decoding from the start {row['decode_from_start']:.2f}")
    report["recordings"] = measure_recordings(make_recordings(Path(args.clip_dir)))
    log.info("decode only, 10-minute 360p VP8 WebM: seconds for 20 frames")
    for row in report["recordings"]:
        log.info(f"  {row['recording']:<18} {row['seconds']:.2f} ({row['method']})")
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
