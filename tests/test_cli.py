from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import face_frames, write_animated_webp, write_h264

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_detect_json_several_files(media, tiny_weights):
    files = [media["face_h264"], media["not_video"], media["no_face"], media["face_mp4v"]]
    done = run_cli("detect", "--json", "--sequence-length", "10", "--weights", str(tiny_weights), *map(str, files))
    assert done.returncode == 1, done.stderr  # one file was unreadable
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, files))
    face, bad, blank, face2 = lines
    for line in (face, face2):
        assert line["label"] in ("REAL", "FAKE")
        assert {"path", "label", "confidence", "p_fake", "frames", "faces", "seconds"} <= set(line)
        assert line["frames"] == 10 and line["faces"] >= 8 and line["seconds"] > 0
    assert "error" in bad and "video" in bad["error"]
    assert blank["label"] == "NO_FACE" and blank["confidence"] is None


def test_detect_text_output(media, tiny_weights):
    done = run_cli("detect", "--weights", str(tiny_weights), str(media["face_h264"]))
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(str(media["face_h264"]) + ": ")
    assert ("REAL" in line or "FAKE" in line) and "%" in line and "frames 20" in line


@pytest.mark.parametrize("lowest_share_right, undecided", [(0.4, True), (0.55, False)])
def test_a_verdict_as_confident_as_a_coin_toss_is_printed_undecided(media, tmp_path, lowest_share_right, undecided):
    from model.cli import _result_line
    from model.detector import Detector
    from model.network import DeepfakeNet, NetworkConfig, save_checkpoint

    band = {"confidence": [0.5, 1.0], "judged": 60, "right": 36, "share_right": 0.6, "share_right_ci95": [lowest_share_right, 0.75]}
    weights = tmp_path / "measured.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, validation={"reliability": {"bands": [band]}})
    result = Detector(weights).detect(media["face_h264"], 10)
    line = _result_line("clip.mp4", result, 1.0, as_json=False, whole=True)
    verdict = f"{result.label} {result.confidence:.1f}% (frames 10, 1.00 s)"
    assert line.startswith(f"clip.mp4: undecided, leans {verdict} Note: " if undecided else f"clip.mp4: {verdict}"), line


def test_detect_rejects_bad_sequence_length(media, tiny_weights):
    done = run_cli("detect", "--sequence-length", "3", "--weights", str(tiny_weights), str(media["face_h264"]))
    assert done.returncode == 2
    assert "sequence_length" in done.stderr


def test_detect_a_part_of_each_video(media, tiny_weights):
    files = [media["face_h264"], media["face_mp4v"]]
    text = run_cli("detect", "--sequence-length", "10", "--start", "1.2", "--end", "0:03", "--weights", str(tiny_weights), *map(str, files))
    assert text.returncode == 0, text.stderr
    assert all("frames 10 from 0:01.2 to 0:03," in line for line in text.stdout.splitlines()), text.stdout
    done = run_cli("detect", "--json", "--start", "2", "--weights", str(tiny_weights), str(media["face_h264"]))
    line = json.loads(done.stdout)
    assert line["span_s"] == [2.0, 4.0] and all(s["time_s"] >= 2.0 for s in line["frame_scores"])


def test_detect_a_part_past_the_end_or_no_time_at_all(media, tiny_weights):
    past = run_cli("detect", "--start", "9", "--weights", str(tiny_weights), str(media["face_h264"]), str(media["face_mp4v"]))
    assert past.returncode == 1  # an error line for each video, none of them a traceback
    assert past.stdout.count("ERROR The video is 0:04 long: the part to examine must start before its end") == 2
    for args in (["--start", "1:75"], ["--start", "3", "--end", "2"]):
        refused = run_cli("detect", *args, "--weights", str(tiny_weights), str(media["face_h264"]))
        assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
        assert ("from 0 to 59" in refused.stderr) or ("must come after its start" in refused.stderr), refused.stderr


def test_detect_every_video_in_a_folder(media, tiny_weights, tmp_path):
    import shutil

    folder = tmp_path / "clips"
    (folder / "more").mkdir(parents=True)
    (folder / ".hidden").mkdir()
    shutil.copy(media["face_h264"], folder / "b.mp4")
    shutil.copy(media["face_mp4v"], folder / "more" / "a.MOV")
    shutil.copy(media["face_h264"], folder / ".hidden" / "c.mp4")
    write_animated_webp(folder / "sticker.webp", face_frames(12), [100] * 12, lossless=False)
    write_h264(folder / "dashcam.h264", face_frames(12))  # a raw stream, as CCTV recorders and dashcams export
    (folder / "notes.txt").write_text("not a video")
    done = run_cli("detect", "--json", "--sequence-length", "10", "--weights", str(tiny_weights), str(folder), str(media["no_face"]))
    assert done.returncode == 0, done.stderr
    paths = [json.loads(line)["path"] for line in done.stdout.splitlines()]
    found = ["b.mp4", "dashcam.h264", "more/a.MOV", "sticker.webp"]
    assert paths == [str(folder / name) for name in found] + [str(media["no_face"])]
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run_cli("detect", "--weights", str(tiny_weights), str(empty))
    assert refused.returncode == 2 and "holds no video file" in refused.stderr and "Traceback" not in refused.stderr


def test_missing_weights_is_a_clear_error(media, tmp_path):
    done = run_cli("detect", "--weights", str(tmp_path / "none.pt"), str(media["face_h264"]))
    assert done.returncode == 2
    assert "none.pt" in done.stderr and "Traceback" not in done.stderr


def test_progress_for_several_files(media, tiny_weights):
    files = [media["face_h264"], media["not_video"], media["face_mp4v"]]
    done = run_cli("detect", "--sequence-length", "10", "--weights", str(tiny_weights), *map(str, files))
    progress = [line for line in done.stderr.splitlines() if re.match(r"\[[#.]+\] ", line)]  # not ffmpeg's "[mov @ …]"
    assert [line.split("] ")[1].split(" files")[0] for line in progress] == ["1/3", "2/3", "3/3"]
    assert progress[-1].startswith("[" + "#" * 24 + "]")
    assert "notes.mp4" in progress[1]


def test_progress_bar_redraws_on_a_terminal():
    import io

    from model.cli import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = ProgressBar(2, stream, width=10)
    bar.update(1, "b.mp4", "finding_faces", 50)
    bar.close()
    assert stream.getvalue().startswith("\r[########..] 1/2 b.mp4: finding faces 50%")
    assert stream.getvalue().endswith("\n")


def test_a_real_verdict_on_a_small_face_comes_with_a_note(tmp_path, tiny_weights):
    from media import face_frames, write_h264

    from model.network import load_checkpoint, save_checkpoint

    model = load_checkpoint(tiny_weights)
    model.config.extra = {"logit_bias": -20.0}  # every face REAL
    weights = tmp_path / "real.pt"
    save_checkpoint(model, weights)
    clips = [write_h264(tmp_path / f"{name}.mp4", face_frames(20, size)) for name, size in (("small", (320, 180)), ("large", (640, 360)))]
    text = run_cli("detect", "--sequence-length", "10", "--weights", str(weights), *map(str, clips))
    small, large = text.stdout.splitlines()
    assert re.search(r": REAL [\d.]+% \(frames 10, [\d.]+ s\) Note: The face is only about \d+ px tall", small), small
    assert large.endswith(" s)"), large
    as_json = run_cli("detect", "--json", "--sequence-length", "10", "--weights", str(weights), *map(str, clips))
    assert [[c["code"] for c in json.loads(line)["caveats"]] for line in as_json.stdout.splitlines()] == [["small_face"], []]


def test_a_video_reposted_over_a_blurred_copy_of_itself_is_searched_in_its_picture(tmp_path, tiny_weights):
    from media import face_frames, over_blurred_copy, write_h264

    framed, _ = over_blurred_copy(face_frames(20), (360, 640), sigma=4)
    clip = write_h264(tmp_path / "reposted.mp4", framed)
    text = run_cli("detect", "--sequence-length", "10", "--weights", str(tiny_weights), str(clip)).stdout
    searched = "the picture alone searched, not the blurred copy around it"
    assert re.search(rf": (REAL|FAKE) [\d.]+% \(frames 10, {searched}, [\d.]+ s\)", text), text


def test_a_video_stored_on_its_side_says_its_picture_was_turned(tmp_path, tiny_weights):
    upside_down = write_h264(tmp_path / "upside_down.mp4", [np.ascontiguousarray(np.rot90(f, 2)) for f in face_frames(20)])
    line = run_cli("detect", "--sequence-length", "10", "--weights", str(tiny_weights), str(upside_down)).stdout
    turned = "faces found upright with the picture given half a turn"
    assert re.search(rf": (REAL|FAKE) [\d.]+% \(frames 10, {turned}, [\d.]+ s\)", line), line


def test_a_video_of_more_people_than_are_judged_says_how_many_were(tmp_path, tiny_weights):
    from media import grid_frames

    call = write_h264(tmp_path / "call.mp4", grid_frames())
    line = run_cli("detect", "--weights", str(tiny_weights), str(call)).stdout
    assert re.search(r"\(frames 20, 4 of 6 faces judged, [\d.]+ s\) Note: 6 faces were found in enough of the frames", line), line
