from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from model.damage import Damage
from model.detector import SMALL_FACE_PX, Detector, video_p_fake
from model.network import DeepfakeNet, NetworkConfig, pick_device, save_checkpoint, to_input
from model.video import TimeRange, read_frames


def test_cpu_fallback_without_cuda(monkeypatch, tiny_weights, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device().type == "cpu"
    assert Detector(tiny_weights).device.type == "cpu"
    # CUDA asked for by name (DETECTOR_DEVICE=cuda, --device cuda) on a machine without it
    detector = Detector(tiny_weights, "cuda")
    assert detector.device.type == "cpu" and "no CUDA device" in caplog.text
    p_fake, _ = detector.score_crops(np.zeros((4, 112, 112, 3), np.uint8))
    assert 0.0 <= p_fake <= 1.0
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="use cpu or cuda"):
        pick_device("gpu")


@pytest.mark.parametrize(
    "files, cores",
    [
        ({}, 3),  # no control group's files: the cores it may run on
        ({"cpu.max": "max 100000\n"}, 3),  # cgroup v2, no quota
        ({"cpu.max": "150000 100000\n"}, 2),  # `docker --cpus 1.5`: two threads, the second not always busy
        ({"cpu.max": "800000 100000\n"}, 3),  # more than it may run on
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1, no quota
        ({"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu.max": "garbled"}, 3),
    ],
)
def test_the_cores_used_are_those_the_process_may_use(monkeypatch, tmp_path, files, cores):
    """Not the host's (`os.cpu_count()`): a container's CPU set or quota allows fewer, and more
    threads than cores slow the network down."""
    import model.processes as processes

    monkeypatch.setattr(processes.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {4, 5, 6}, raising=False)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert processes.available_cores(tmp_path) == cores


def test_the_detector_runs_as_many_threads_as_the_process_may_use_cores(monkeypatch, tiny_weights):
    import model.processes as processes

    before = torch.get_num_threads()
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(processes, "CGROUP_ROOT", Path("/nonexistent"))
    try:
        Detector(tiny_weights, "cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("weights", ["tiny_weights", "tiny_ensemble_weights"])
def test_cuda_path_matches_cpu(weights, request):
    weights = request.getfixturevalue(weights)
    crops = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    p_cpu, _ = Detector(weights, "cpu").score_crops(crops)
    p_gpu, _ = Detector(weights, "cuda").score_crops(crops)
    assert abs(p_cpu - p_gpu) < 0.02  # bf16 autocast on the GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_analysis_with_heatmaps_matches_cpu(tiny_weights, media):
    """The app's whole analysis, Grad-CAM included, as the web layer asks for it."""
    on_cpu = Detector(tiny_weights, "cpu").detect(media["face_h264"], 12, explain=True)
    on_gpu = Detector(tiny_weights, "cuda").detect(media["face_h264"], 12, explain=True)
    assert on_gpu.label == on_cpu.label and abs(on_gpu.p_fake - on_cpu.p_fake) < 0.02
    assert len(on_gpu.decisive.heatmaps) == len(on_cpu.decisive.heatmaps) > 0


def test_an_ensemble_checkpoint_judges_with_the_mean_of_its_members(tiny_ensemble_weights, media):
    # The mean is checked on the CPU, where both sides run in fp32; the whole analysis on this machine's device.
    detector = Detector(tiny_ensemble_weights, "cpu")
    assert detector.describe()["members"] == 2
    crops = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = torch.stack([m(to_input(crops[None], m.config))[0] for m in detector.model.members]).mean(0)
    p_fake, per_frame = detector.score_crops(crops)
    assert p_fake == pytest.approx(float(detector.calibrated_p_fake(logits)[0]), abs=1e-5) and per_frame.shape == (6,)
    result = Detector(tiny_ensemble_weights).detect(media["face_h264"], 12, explain=True)
    assert result.label in ("REAL", "FAKE") and result.tracks[0].heatmaps


def test_calibration_is_applied(tiny_weights):
    detector = Detector(tiny_weights)
    logits = torch.tensor([[2.0, 0.0]])
    assert float(detector.calibrated_p_fake(logits)) == pytest.approx(1 / (1 + np.exp(-2.0)))
    detector.config.temperature = 4.0
    detector.config.extra = {"logit_bias": -0.5}
    assert float(detector.calibrated_p_fake(logits)) == pytest.approx(1 / (1 + np.exp(-(2.0 / 4.0 - 0.5))))


def test_concurrent_requests_run_one_at_a_time(tiny_weights, media):
    detector = Detector(tiny_weights)
    results = []
    threads = [threading.Thread(target=lambda: results.append(detector.detect(media["face_h264"], 10))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = sorted(r.seconds["queue"] for r in results)
    assert len(results) == 2 and all(r.label in ("REAL", "FAKE") for r in results)
    # The second waited for (most of) the first's analysis.
    assert queued[1] >= 0.5 * min(r.seconds["total"] for r in results)


def test_progress_runs_through_the_stages_in_order(tiny_weights, media):
    events = []
    Detector(tiny_weights).detect(media["face_h264"], 10, progress=lambda stage, percent: events.append((stage, percent)))
    stages = [stage for stage, _ in events]
    assert stages[0] == "decoding" and stages[-1] == "scoring"
    order = ["decoding", "finding_faces", "scoring"]
    assert [order.index(s) for s in stages] == sorted(order.index(s) for s in stages)
    percents = [percent for _, percent in events]
    assert percents == sorted(percents) and percents[0] == 0 and percents[-1] == 100


def test_the_search_for_faces_is_heard_before_the_picture_region_is_looked_for(tiny_weights, media, monkeypatch):
    """The picture's region and the choice of search come before any face is found: the stage is
    heard first, so an analysis stopped then stops there."""
    import model.detector as detector

    events = []
    looked_for = detector.picture_region

    def picture_region(frames):
        events.append(("picture_region", None))
        return looked_for(frames)

    monkeypatch.setattr(detector, "picture_region", picture_region)
    Detector(tiny_weights).detect(media["face_h264"], 10, progress=lambda stage, percent: events.append((stage, percent)))
    at = events.index(("picture_region", None))
    assert events[at - 1] == ("finding_faces", detector.STAGE_SPANS["finding_faces"][0])


def test_progress_never_goes_back_where_the_reading_starts_again(tiny_weights, tmp_path):
    """A stretch of zeros ends the first pass, and the frames are read again by their times."""
    from media import face_frames, write_key_every_10, zeroed_stretch_copy

    intact = write_key_every_10(tmp_path / "intact.mp4", face_frames(90))
    holed = zeroed_stretch_copy(intact, tmp_path / "holed.mp4", 30, 64)
    events = []
    result = Detector(tiny_weights).detect(holed, 10, progress=lambda stage, percent: events.append((stage, percent)))
    assert result.video.duration_s == pytest.approx(9.0)  # read again, not cut at the zeros
    percents = [percent for stage, percent in events if stage == "decoding"]
    assert len(percents) > 5 and percents == sorted(percents)


def test_damage_in_a_frame_examined_is_told_though_no_other_picture_refers_to_it(tiny_weights, tmp_path):
    """The check over the whole video leaves such pictures out (their damage spoils themselves
    alone); the frames examined it looks at first, and whole. That frame, patched over where it
    is read, is not judged: the face is judged on the others."""
    from media import damaged_unreferenced_picture_copy, face_frames, write_h264

    intact = write_h264(tmp_path / "clip.mp4", face_frames(60))
    damaged, shown_s = damaged_unreferenced_picture_copy(intact, tmp_path / "damaged.mp4")
    result = Detector(tiny_weights).detect(damaged, 60)
    assert result.frames == 60 and shown_s not in [score["time_s"] for score in result.frame_scores]
    assert len(result.frame_scores) == 59
    assert "damaged" in [caveat["code"] for caveat in result.caveats]


def test_frames_that_may_show_a_damaged_picture_are_not_judged(tiny_weights, tmp_path):
    """A picture that does not decode at all leaves those decoded after it in its group of
    pictures patched over from what came before, as a player patches them: the face is judged
    on the other frames (those that show the group's first pictures, and the other groups), and
    the damage is told."""
    from media import face_frames, undecodable_frame_copy, write_key_every_10

    intact = write_key_every_10(tmp_path / "intact.mp4", face_frames(30, (320, 180)))
    damaged = undecodable_frame_copy(intact, tmp_path / "damaged.mp4", packet=12)  # in the second group
    with av.open(str(intact)) as container:
        stream = container.streams.video[0]
        shown = [round((p.pts - stream.start_time) * stream.time_base * 10) for p in container.demux(stream) if p.size]
    spoiled = {frame for frame in shown[12:] if 10 <= frame < 20}  # decoded after it, in its group
    result = Detector(tiny_weights).detect(damaged, 30)
    judged = {round(score["time_s"] * 10) for score in result.frame_scores}
    assert len(spoiled) > 3 and not judged & spoiled
    assert judged >= set(range(10)) | set(range(20, 30))
    assert "damaged" in [caveat["code"] for caveat in result.caveats]


def late_damage_check(monkeypatch, found: list[Damage]) -> tuple[Callable[[str, int], None], threading.Event]:
    """The check for damage set going only after the scoring (and half a second more), as a
    thread of the lowest priority may be on cores the analysis keeps busy; what it finds is added
    to `found`. Returns the progress callback that tells it the scoring is done, and an event set
    once the check is through."""
    import model.detector as detector

    check, scored, through = detector.check_damage, threading.Event(), threading.Event()

    def late(*args, **kwargs):
        scored.wait(30)
        threading.Event().wait(0.5)
        try:
            found.append(check(*args, **kwargs))
            return found[-1]
        finally:
            through.set()

    def progress(stage: str, percent: int) -> None:
        if (stage, percent) == ("scoring", 100):
            scored.set()

    monkeypatch.setattr(detector, "check_damage", late)
    return progress, through


def test_the_verdict_waits_for_the_check_of_the_frames_examined(tiny_weights, tmp_path, monkeypatch):
    """However late the check for damage starts, within the share of the analysis's time the
    verdict waits for it, the frames examined are looked at before the verdict: their damage may
    have moved it."""
    import model.detector as detector
    from media import damaged_unreferenced_picture_copy, face_frames, write_h264

    intact = write_h264(tmp_path / "clip.mp4", face_frames(60, (320, 180)))
    damaged, _ = damaged_unreferenced_picture_copy(intact, tmp_path / "damaged.mp4")
    monkeypatch.setattr(detector, "EXAMINED_WAIT_SHARE", 100.0)
    found: list[Damage] = []
    progress, _ = late_damage_check(monkeypatch, found)
    result = Detector(tiny_weights).detect(damaged, 60, progress=progress)
    assert [damage.pictures for damage in found] == [1] and "damaged" in [caveat["code"] for caveat in result.caveats]


def test_the_verdict_waits_for_the_check_of_the_frames_examined_for_a_share_of_the_analysis(
    tiny_weights, tmp_path, monkeypatch
):
    """A look at the frames examined that takes longer (a minute of pictures from one key frame,
    decoded again) is abandoned then, and what it found so far is told."""
    import model.detector as detector
    from media import face_frames, write_h264

    clip = write_h264(tmp_path / "clip.mp4", face_frames(20, (320, 180)))
    abandoned = []

    def slow_check(path, span_s, stop, stream_index, examined_s, abandon, damage_seen):
        abandoned.append(abandon.wait(30))  # a look that ends only when abandoned
        return Damage(3)  # the pictures that failed before

    monkeypatch.setattr(detector, "check_damage", slow_check)
    monkeypatch.setattr(detector, "EXAMINED_WAIT_SHARE", 0.1)
    result = Detector(tiny_weights).detect(clip, 20)
    assert abandoned == [True]
    assert "3 pictures" in next(caveat["message"] for caveat in result.caveats if caveat["code"] == "damaged")


def test_the_verdict_waits_longer_for_a_look_at_the_frames_examined_that_has_found_damage(tiny_weights, tmp_path, monkeypatch):
    """Which frames examined a damaged picture spoils, and so are not judged, the look finds as
    far as it gets: once it has found one, the verdict waits `EXAMINED_WAIT_SHARE_DAMAGED` of the
    analysis's time for it, so that the same damaged upload gets the same verdict."""
    import model.detector as detector
    from media import face_frames, write_h264

    clip = write_h264(tmp_path / "clip.mp4", face_frames(20, (320, 180)))
    abandoned = []

    def look(finds_damage: bool, path, span_s, stop, stream_index, examined_s, abandon, damage_seen):
        if finds_damage:
            damage_seen.set()
        abandoned.append(abandon.wait(2.0))  # a look of two seconds, unless abandoned
        return Damage(3 if finds_damage else 0)

    monkeypatch.setattr(detector, "EXAMINED_WAIT_SHARE", 0.0)
    monkeypatch.setattr(detector, "EXAMINED_WAIT_SHARE_DAMAGED", 100.0)
    for finds_damage in (False, True):
        monkeypatch.setattr(detector, "check_damage", partial(look, finds_damage))
        result = Detector(tiny_weights).detect(clip, 20)
        assert ("damaged" in [caveat["code"] for caveat in result.caveats]) == finds_damage
    assert abandoned == [True, False]


def test_an_analysis_stopped_while_waiting_for_the_check_for_damage_stops(tiny_weights, tmp_path, monkeypatch):
    """The wait reports the progress now and then, as a job's analysis is stopped (deleted, out
    of time: the report raises), and the check is abandoned: the frames examined are not looked at."""
    from media import damaged_unreferenced_picture_copy, face_frames, write_h264

    from model.jobs import Cancelled

    intact = write_h264(tmp_path / "clip.mp4", face_frames(60, (320, 180)))
    damaged, _ = damaged_unreferenced_picture_copy(intact, tmp_path / "damaged.mp4")
    found: list[Damage] = []
    scored, through = late_damage_check(monkeypatch, found)
    reports = []

    def progress(stage: str, percent: int) -> None:
        scored(stage, percent)
        reports.append((stage, percent))
        if reports.count(("scoring", 100)) > 1:  # a report from the wait, the scoring done
            raise Cancelled("job")

    with pytest.raises(Cancelled):
        Detector(tiny_weights).detect(damaged, 60, progress=progress)
    assert through.wait(30) and [damage.pictures for damage in found] == [0]  # the damage in a frame examined not looked for


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory):
    from media import two_face_frames, write_h264

    return write_h264(tmp_path_factory.mktemp("two") / "two.mp4", two_face_frames())


def scoring_faces_as(monkeypatch, *scores: float) -> None:
    """Make the detector score its faces, in track order, with these probabilities."""
    pending = iter(scores)

    def score_features(self, features):
        p = next(pending)
        return p, np.full(len(features), p)

    monkeypatch.setattr(Detector, "score_features", score_features)


def test_every_face_is_judged_and_the_video_weighs_them_all(tiny_weights, two_faces, monkeypatch):
    scoring_faces_as(monkeypatch, 0.2, 0.8)  # the most often seen face looks real, the other fake
    result = Detector(tiny_weights).detect(two_faces, 20)
    assert [t.label for t in result.tracks] == ["REAL", "FAKE"]
    # odds 0.25 and 4, mean 2.125: p = 2.125 / 3.125
    assert (result.label, result.p_fake, result.confidence, result.deciding_track) == ("FAKE", 0.68, 68.0, 2)
    first, second = result.tracks
    assert first.box[1] < 480 < second.box[3]  # left person, then right person
    assert len(first.crops) == 20 and len(second.crops) >= 10
    body = result.as_dict()
    assert [t["frames_seen"] for t in body["face_tracks"]] == [len(first.crops), len(second.crops)]
    assert body["frame_scores"] == body["face_tracks"][1]["frame_scores"] and body["faces"] == len(second.crops)


def test_a_face_just_over_the_threshold_beside_a_real_one_leaves_the_video_real(tiny_weights, two_faces, monkeypatch):
    scoring_faces_as(monkeypatch, 0.3, 0.6)  # with several faces, one scoring a little high is likely by chance
    result = Detector(tiny_weights).detect(two_faces, 20)
    assert [t.label for t in result.tracks] == ["REAL", "FAKE"]
    assert result.label == "REAL" and result.p_fake == pytest.approx(0.4909, abs=1e-4) and result.deciding_track == 2


def test_one_face_keeps_its_own_probability_and_several_combine_as_mean_odds():
    assert video_p_fake([0.73]) == pytest.approx(0.73)
    assert video_p_fake([0.6, 0.6, 0.6]) == pytest.approx(0.6)
    assert video_p_fake([0.5, 0.9]) == pytest.approx(5 / 6)  # odds 1 and 9, mean 5
    assert video_p_fake([0.1, 0.1, 0.9]) < 0.9  # three chances of a high score by accident
    assert video_p_fake([1.0, 0.2]) == pytest.approx(1.0, abs=1e-5) and video_p_fake([0.0, 0.0]) == pytest.approx(0.0, abs=1e-5)


def test_faces_in_shrunk_frames_are_placed_in_the_video_s_pixels(tiny_weights, media, monkeypatch):
    detector = Detector(tiny_weights)
    full = detector.detect(media["face_h264"], 10)
    monkeypatch.setattr("model.detector.read_frames", partial(read_frames, max_side=320))  # as a 4K video is shrunk
    shrunk = detector.detect(media["face_h264"], 10)
    assert (shrunk.video.width, shrunk.video.height) == (640, 360)
    assert np.abs(np.subtract(shrunk.tracks[0].box, full.tracks[0].box)).max() <= 8
    assert shrunk.tracks[0].crops.shape[1:] == (112, 112, 3)


def test_max_faces_limits_the_tracks_and_the_faces_left_are_told(tiny_weights, two_faces):
    one, both = Detector(tiny_weights).detect(two_faces, 20, max_faces=1), Detector(tiny_weights).detect(two_faces, 20)
    assert len(one.tracks) == 1 and one.faces_not_judged == 1 and one.as_dict()["faces_not_judged"] == 1
    (caveat,) = [c["message"] for c in one.caveats if c["code"] == "faces_not_judged"]
    assert caveat.startswith("2 faces were found in enough of the frames to judge; the one seen most often was judged, and the other was not")
    assert len(both.tracks) == 2 and both.faces_not_judged == 0
    assert "faces_not_judged" not in [c["code"] for c in both.caveats]


def test_heatmaps_for_the_most_suspicious_frames(tiny_weights, media):
    result = Detector(tiny_weights).detect(media["face_h264"], 12, explain=True)
    track = result.tracks[0]
    scores = np.array([s["p_fake"] for s in track.frame_scores])
    chosen = sorted(track.heatmaps)
    # Scores can tie (bf16 on a GPU, rounding to 4 places): no frame left out may score above one chosen.
    assert len(chosen) == 3 and scores[chosen].min() >= np.delete(scores, chosen).max()
    for position, overlay in track.heatmaps.items():
        assert overlay.shape == track.crops[position].shape and overlay.dtype == np.uint8
    assert Detector(tiny_weights).detect(media["face_h264"], 12).tracks[0].heatmaps == {}


@pytest.fixture(scope="module")
def small_face(tmp_path_factory):
    """The astronaut clip at 320×180: her face box under 50 px tall."""
    from media import face_frames, write_h264

    return write_h264(tmp_path_factory.mktemp("small") / "small.mp4", face_frames(20, (320, 180)))


def test_the_small_face_caveat_says_how_many_fakes_were_caught_where_the_checkpoint_measured_it(small_face, monkeypatch, tmp_path):
    headline = lambda recall_fake: {"auc": 0.7, "balanced_accuracy": 0.7, "ece": 0.1, "recall_fake": recall_fake, "recall_real": 0.8}
    validation = {
        "method": "cross-validation", "folds": 5, "clips": 106, "identity_groups": 20,
        "qualities": {"orig": headline(0.662), "crf40_480p": headline(0.603)}, "other_qualities": {"crf23_240p": headline(0.574)},
    }
    weights = tmp_path / "measured.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, validation=validation)
    scoring_faces_as(monkeypatch, 0.2)
    (caveat,) = Detector(weights).detect(small_face, 10).caveats
    assert caveat["message"].endswith(
        "a REAL verdict says less than usual: on people it had not seen, it caught 57% of the fakes "
        "in videos re-encoded small (240p), against 66% as published."
    )


@pytest.fixture(scope="module")
def hiding_clips(tmp_path_factory) -> dict[str, Path]:
    """The astronaut clip as an animated GIF, in black and white, toned sepia, dimly lit, and grainy
    from a camera's gain."""
    from fractions import Fraction

    import cv2
    from media import face_frames, write_h264

    from model.augment import dim, gained, sepia, write_gif

    folder = tmp_path_factory.mktemp("hiding")
    frames = face_frames(20)
    write_gif(iter(frames), folder / "clip.gif", Fraction(10))
    grey = [cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for frame in frames]
    return {
        "gif": folder / "clip.gif",
        "black_and_white": write_h264(folder / "grey.mp4", grey),
        "toned": write_h264(folder / "sepia.mp4", [sepia(frame) for frame in frames]),
        # a room dimmer still than the validation's: dimmed once, her white suit stays about as bright as DIM_HIGHLIGHTS
        "dim": write_h264(folder / "dim.mp4", [dim(dim(frame)) for frame in frames]),
        "grainy": write_h264(folder / "gained.mp4", [gained(frame) for frame in frames]),
    }


def test_a_single_tone_is_told_from_colour_and_from_grey(media, hiding_clips, tmp_path):
    """Sepia, and the green of a night-vision camera, through H.264's colour noise."""
    from media import face_frames, write_h264

    from model.augment import grey
    from model.conditions import colourless, toned
    from model.faces import extract_face_crops

    green = [np.clip(grey(frame) * np.array([0.35, 1.0, 0.35]), 0, 255).astype(np.uint8) for frame in face_frames(20)]
    clips = {"green": write_h264(tmp_path / "green.mp4", green), "sepia": hiding_clips["toned"]}
    clips |= {"colour": media["face_h264"], "grey": hiding_clips["black_and_white"]}
    crops = {name: extract_face_crops(read_frames(path, 10).frames, 112)[0].crops for name, path in clips.items()}
    assert {name: toned(c) for name, c in crops.items()} == {"green": True, "sepia": True, "colour": False, "grey": False}
    assert colourless(crops["grey"]) and not colourless(crops["green"])


def test_a_dim_face_is_told_by_the_light_around_it_not_by_its_skin(media, hiding_clips):
    """A face in shade beside a lit background (as a dark-skinned face in daylight shows) is not
    taken for dimly lit; the whole picture dimmed is."""
    import face_recognition
    from media import face_frames

    from model.conditions import DIM_HIGHLIGHTS, highlights
    from model.faces import extract_face_crops

    shaded = []
    for frame in face_frames(10):
        top, right, bottom, left = face_recognition.face_locations(frame)[0]
        frame[top:bottom, left:right] = frame[top:bottom, left:right] // 3
        shaded.append(frame)
    lit = extract_face_crops(read_frames(media["face_h264"], 10).frames, 112)[0].crops
    shade = extract_face_crops(shaded, 112)[0].crops
    dimmed = extract_face_crops(read_frames(hiding_clips["dim"], 10).frames, 112)[0].crops
    centre = lambda crops: crops[:, 28:84, 28:84].mean()  # noqa: E731
    assert centre(shade) < centre(lit) / 2  # the face itself is dark
    assert highlights(lit) > highlights(shade) > DIM_HIGHLIGHTS > highlights(dimmed)


@pytest.mark.parametrize("both_dim", [True, False])
def test_the_dim_caveat_needs_every_face_dim_and_says_faces_where_there_are_several(tiny_weights, tmp_path, monkeypatch, both_dim):
    from media import two_face_frames, write_h264

    from model.augment import dim

    filmed = two_face_frames(20)
    frames = [dim(dim(frame)) for frame in filmed]
    if not both_dim:  # the right-hand person lit as filmed
        for frame, lit in zip(frames, filmed):
            frame[:, frame.shape[1] // 2 :] = lit[:, lit.shape[1] // 2 :]
    scoring_faces_as(monkeypatch, 0.2, 0.2)
    result = Detector(tiny_weights).detect(write_h264(tmp_path / "two.mp4", frames), 10, max_faces=2)
    assert result.label == "REAL" and len(result.tracks) == 2
    dim_caveats = [c["message"] for c in result.caveats if c["code"] == "dim"]
    assert [m.split(" dimly lit")[0] for m in dim_caveats] == (["The faces are"] if both_dim else [])


# per caveat: how its message begins, the validation quality it quotes, and what that quality did to the videos
HIDING = {
    "gif": ("This video is an animated GIF", "gif_480p", "turned into animated GIFs"),
    "black_and_white": ("This video is in black and white", "bw_crf23_480p", "turned black and white"),
    "toned": ("This video is toned in a single colour", "sepia_crf23_480p", "toned sepia"),
    "dim": ("The face is dimly lit in this video", "dim_crf23_480p", "darkened as if filmed in a dim room"),
    "grainy": ("The face is grainy in this video", "gained_crf23_480p", "filmed in a dim room with the camera's gain up"),
}


@pytest.mark.parametrize("kind", sorted(HIDING))
@pytest.mark.parametrize("p_fake, hiding, states, caveat", [
    (0.2, True, True, True),
    (0.2, True, False, True),  # a checkpoint that states no validation: the message gives no figures
    (0.8, True, True, False),  # none makes real faces look fake: a FAKE verdict stands as it is
    (0.2, False, True, False),  # a colour H.264 clip
])  # fmt: skip
def test_a_real_verdict_on_video_that_hides_fakes_says_it_means_less(media, hiding_clips, monkeypatch, tmp_path, kind, p_fake, hiding, states, caveat):
    start, quality, videos = HIDING[kind]
    headline = lambda recall_fake: {"auc": 0.7, "balanced_accuracy": 0.7, "ece": 0.1, "recall_fake": recall_fake, "recall_real": 0.8}  # noqa: E731
    validation = {"qualities": {"orig": headline(0.662)}, "other_qualities": {quality: headline(0.48)}} if states else {}
    weights = tmp_path / "measured.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, validation=validation)
    scoring_faces_as(monkeypatch, p_fake)
    result = Detector(weights).detect(hiding_clips[kind] if hiding else media["face_h264"], 10)
    assert result.video.codec == ("gif" if hiding and kind == "gif" else "h264")
    assert [c["code"] for c in result.caveats] == ([kind] if caveat else [])
    if caveat:
        message = result.caveats[0]["message"]
        figures = f": on people it had not seen, it caught 48% of the fakes in videos {videos}, against 66% as published."
        assert message.startswith(start) and message.endswith(figures if states else "so a REAL verdict says less than usual.")


@pytest.mark.parametrize("p_fake, states, caveat", [(0.45, True, True), (0.62, True, True), (0.75, True, False), (0.97, True, False), (0.45, False, False)])
def test_a_verdict_as_confident_as_validated_coin_tosses_is_called_undecided(media, monkeypatch, tmp_path, p_fake, states, caveat):
    bands = [  # as a checkpoint states them: 0.5–0.7 could not be told from chance, 0.7–0.8 could, above nothing was seen
        {"confidence": [0.5, 0.6], "judged": 39, "right": 22, "share_right": 0.564, "share_right_ci95": [0.371, 0.737]},
        {"confidence": [0.6, 0.7], "judged": 51, "right": 26, "share_right": 0.51, "share_right_ci95": [0.353, 0.673]},
        {"confidence": [0.7, 0.8], "judged": 59, "right": 46, "share_right": 0.78, "share_right_ci95": [0.638, 0.896]},
        {"confidence": [0.8, 0.9], "judged": 0, "right": 0}, {"confidence": [0.9, 1.0], "judged": 0, "right": 0},
    ]
    validation = {"reliability": {"qualities": ["orig", "crf40_480p"], "clips": 106, "bands": bands}} if states else {}
    weights = tmp_path / "measured.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(hidden_size=8)), weights, validation=validation)
    scoring_faces_as(monkeypatch, p_fake)
    result = Detector(weights).detect(media["face_h264"], 10)
    assert result.confidence == round(100 * max(p_fake, 1 - p_fake), 1)
    assert [c["code"] for c in result.caveats] == (["uncertain"] if caveat else [])
    if caveat:
        band = "50%–60%) were right in 22 of 39" if p_fake == 0.45 else "60%–70%) were right in 26 of 51"
        assert result.caveats[0]["message"] == (
            f"On people it had not seen, verdicts as confident as this one ({band} cases, not measurably more "
            "often than a coin toss: treat this verdict as undecided."
        )


@pytest.mark.parametrize("p_fake, small, caveat", [(0.2, True, True), (0.8, True, False), (0.2, False, False)])
def test_a_real_verdict_on_a_small_face_says_it_means_less(tiny_weights, media, small_face, monkeypatch, p_fake, small, caveat):
    scoring_faces_as(monkeypatch, p_fake)
    result = Detector(tiny_weights).detect(small_face if small else media["face_h264"], 10)
    (track,) = result.tracks
    assert (track.height < SMALL_FACE_PX) == small and track.height == track.box[2] - track.box[0]
    caveats = result.as_dict()["caveats"]
    assert [c["code"] for c in caveats] == (["small_face"] if caveat else [])
    if caveat:  # small faces let fakes pass as REAL; they do not make real faces look fake
        assert caveats[0]["message"].startswith(f"The face is only about {track.height} px tall")
        assert caveats[0]["message"].endswith("says less than usual.")  # this checkpoint states no validation


@pytest.mark.parametrize("count, part, apart", [(10, TimeRange(), 12), (20, TimeRange(), None), (10, TimeRange(30, 90), None)])
def test_frames_far_apart_in_a_long_video_are_said_to_be(tiny_weights, two_minutes, monkeypatch, count, part, apart):
    scoring_faces_as(monkeypatch, 0.9)  # a verdict that carries no other caveat
    result = Detector(tiny_weights).detect(two_minutes, count, max_faces=1, part=part)
    assert result.frames == count and result.label == "FAKE"
    expected = [] if apart is None else [{
        "code": "sparse_frames",
        "message": f"The frames examined lie about {apart} s apart: a manipulated stretch shorter than that may fall "
        "between them. To look closer, examine the part you doubt, or more frames.",
    }]  # fmt: skip
    assert result.caveats == expected


def test_a_face_found_in_only_a_few_frames_is_said_to_be(tiny_weights, media, tmp_path, monkeypatch):
    from media import blank_frames, face_frames, write_h264

    faces, blank = face_frames(40), blank_frames(40, (640, 360))
    # at the start and at the end: the stretch between is the whole video, and not looked at again
    apart = write_h264(tmp_path / "apart.mp4", [faces[i] if i < 4 or i >= 36 else blank[i] for i in range(40)])
    scoring_faces_as(monkeypatch, 0.9, 0.9)
    result = Detector(tiny_weights).detect(apart, 20)
    assert result.faces == 4 and result.closer_look is None and result.caveats == [{
        "code": "few_frames",
        "message": "The face was found in only 4 of the 20 frames examined. Judged on 5 or fewer frames of a face, the detector "
        "told fakes from real videos less well than on 20 frames across the video, so this verdict says less than usual.",
    }]  # fmt: skip
    assert Detector(tiny_weights).detect(media["face_h264"], 20).caveats == []  # found in every frame


@pytest.fixture(scope="module")
def brief(tmp_path_factory) -> Path:
    """The astronaut in frames 18 to 21 of 40 (0.4 s of 4 s), blank frames around her."""
    from media import blank_frames, face_frames, write_h264

    faces, blank = face_frames(40), blank_frames(40, (640, 360))
    return write_h264(tmp_path_factory.mktemp("brief") / "brief.mp4", [faces[i] if 18 <= i <= 21 else blank[i] for i in range(40)])


def test_a_face_found_in_a_few_frames_of_a_short_stretch_is_looked_at_again_there(tiny_weights, brief, monkeypatch):
    """Found in frames 19 and 21 of the 20 examined (every other frame), between frames 17 and 23,
    where it was not: those frames are taken again, and the verdict comes from them."""
    scoring_faces_as(monkeypatch, 0.9)
    events = []
    result = Detector(tiny_weights).detect(brief, 20, progress=lambda stage, percent: events.append((stage, percent)))
    assert result.closer_look == {"span_s": [0.0, 4.0], "frames": 20, "seen": 2}
    assert result.span_s == pytest.approx((1.7, 2.3)) and result.frames == 6 and result.faces == 4
    assert result.label == "FAKE" and result.tracks[0].frame_scores[0]["time_s"] == pytest.approx(1.8)
    assert [caveat["code"] for caveat in result.caveats] == ["closer_look", "few_frames"]
    assert result.caveats[0]["message"] == (
        "The face was found in only 2 of the 20 frames examined from 0:00 to 0:04, between 0:01.7 and 0:02.3: "
        "the verdict comes from 6 frames spread over that part alone."
    )
    stages = [stage for stage, _ in events]
    assert stages.index("looking_closer") > stages.index("finding_faces") and stages[-1] == "scoring"
    assert {"looking_closer", "finding_faces"} >= set(stages[stages.index("finding_faces") : stages.index("scoring")])
    percents = [percent for _, percent in events]
    assert percents == sorted(percents) and percents[-1] == 100
    assert result.seconds["first_look"] < result.seconds["total"]


def test_a_face_not_found_again_where_it_was_is_judged_where_it_was_first_found(tiny_weights, brief, monkeypatch):
    import model.detector as detector

    searches, readings = [], []

    def second_search_finds_none(frames, *args, **kwargs):
        searches.append(len(frames))
        return [] if len(searches) == 2 else follow_faces(frames, *args, **kwargs)

    def reading(*args, **kwargs):
        readings.append(kwargs["part"])
        return read_frames(*args, **kwargs)

    follow_faces, read_frames = detector.follow_faces, detector.read_frames
    monkeypatch.setattr(detector, "follow_faces", second_search_finds_none)
    monkeypatch.setattr(detector, "read_frames", reading)
    scoring_faces_as(monkeypatch, 0.9)
    result = Detector(tiny_weights).detect(brief, 20)
    # the first look, then the closer one; the first look's frames and faces are then judged as they were found
    assert searches == [20, 6] and len(readings) == 2
    assert result.closer_look is None and result.frames == 20 and result.faces == 2 and result.span_s == (0.0, 4.0)
    assert [caveat["code"] for caveat in result.caveats] == ["few_frames"]
    assert [score["time_s"] for score in result.frame_scores] == pytest.approx([1.9, 2.1])
    assert result.seconds["first_look"] < result.seconds["total"] and result.label == "FAKE"


def test_a_video_on_its_side_is_turned_where_its_faces_show_better_so(tmp_path, media):
    """Stored on its side, something in a video may still be taken for a face in a few frames (in
    17 and 21 of 138 clips of real footage so stored, one way and the other; in up to 12 of 20
    frames): the turn is tried wherever the main face is seen in under half of them, or HOG is
    sure of no face as they are, and taken where turned it is seen in as many."""
    import model.detector as detector
    from media import face_frames, write_h264
    from model.faces import FaceTrack, follow_faces

    clip = write_h264(tmp_path / "sideways.mp4", [np.ascontiguousarray(np.rot90(f, 1)) for f in face_frames(20)])
    sampled = read_frames(clip, 20)
    seen_in = lambda count: [FaceTrack(list(range(count)), [(0, 40, 40, 0)] * count)]  # noqa: E731
    for count in (0, 6, 10, 20):
        turned, followed, turns = detector._turned_where_faces_show_better(sampled, seen_in(count), None, follow_faces)
        assert turns == 3 and len(followed[0].boxes) == 20 and turned.frames[0].shape == (360, 640, 3)
    fewer_turned = lambda frames, picture: seen_in(5)  # noqa: E731
    assert detector._turned_where_faces_show_better(sampled, seen_in(6), None, fewer_turned)[2] == 0
    upright = read_frames(media["face_h264"], 20)
    for count in (0, 9, 20):  # tried where seen in few frames; no turn shows a face HOG is surer of
        unturned, followed, turns = detector._turned_where_faces_show_better(upright, seen_in(count), None, follow_faces)
        assert turns == 0 and unturned is upright and len(followed[0].boxes) == count


def test_a_video_upside_down_is_turned_even_where_its_faces_are_taken_for_faces_as_it_is(tmp_path, media, monkeypatch):
    """HOG finds faces upside down too (in 63 of 138 clips of real footage so stored, in half the
    frames or more), but is less sure of them than of the same faces upright."""
    import model.detector as detector
    import model.faces as faces
    from media import face_frames, write_h264
    from model.faces import FaceTrack, best_turn, follow_faces

    clip = write_h264(tmp_path / "upside_down.mp4", [np.ascontiguousarray(np.rot90(f, 2)) for f in face_frames(20)])
    sampled = read_frames(clip, 20)
    seen_in_every_frame = [FaceTrack(list(range(20)), [(0, 40, 40, 0)] * 20)]  # as HOG may take it upside down
    turned, followed, turns = detector._turned_where_faces_show_better(sampled, seen_in_every_frame, None, follow_faces)
    assert turns == 2 and len(followed[0].boxes) == 20 and turned.frames[0].shape == (360, 640, 3)
    upright = read_frames(media["face_h264"], 20).frames
    assert best_turn(upright, turns=(2,)) == 0
    searched, search = [], faces._search
    monkeypatch.setattr(faces, "_search", lambda frame, level, min_score=0.0: searched.append(level) or search(frame, level, min_score))
    assert best_turn(upright, turns=(2,), unless_sure_of=0.5) == 0
    assert searched == [0, 0]  # the two probes as they are, at the coarsest search: sure enough not to turn them
    assert best_turn(sampled.frames, turns=(2,), unless_sure_of=detector.TURNED_FACE_MAX_SCORE) == 2


def test_an_upright_video_s_frames_are_searched_once_a_way_the_check_for_a_turn_included(tiny_weights, media, monkeypatch):
    """The check for a turn asks how sure HOG is of a face in the probe frames as they are: the
    face search has just searched them so, and its searches answer (a search for any face holds
    those it is sure of)."""
    import model.faces as faces

    searched, search = [], faces._search

    def counted(frame, level, min_score=0.0):
        searched.append((hash(frame.tobytes()), level))
        return search(frame, level, min_score)

    monkeypatch.setattr(faces, "_search", counted)
    result = Detector(tiny_weights).detect(media["face_h264"], sequence_length=20)
    assert result.label != "NO_FACE" and result.picture_turned_deg == 0
    assert searched and len(set(searched)) == len(searched)


def test_frames_are_searched_for_faces_side_by_side_a_core_each_finding_what_one_finds(tiny_weights, two_faces, monkeypatch):
    """dlib's HOG runs on one core: the detector searches frames on as many threads as it may use
    cores, and finds the same faces as it does on one."""
    import model.detector as detector
    import model.faces as faces

    threads, search = [], faces._search

    def recorded(frame, level, min_score=0.0):
        threads.append(threading.current_thread().name)
        return search(frame, level, min_score)

    monkeypatch.setattr(faces, "_search", recorded)
    before = torch.get_num_threads()
    found = {}
    try:
        for cores in (1, 2):
            monkeypatch.setattr(detector, "available_cores", lambda: cores)
            threads.clear()
            result = Detector(tiny_weights, "cpu").detect(two_faces, sequence_length=20)
            found[cores] = [(t.box, [s["index"] for s in t.frame_scores], t.p_fake) for t in result.tracks]
            assert len(set(threads)) == cores and all(name.startswith("face-search") for name in threads) == (cores > 1)
    finally:
        torch.set_num_threads(before)
    assert len(found[1]) == 2 and found[2] == found[1]


def test_threads_that_search_at_once_find_what_they_find_one_at_a_time(media):
    """dlib's HOG detector keeps the picture it scans in itself: threads that shared one crashed
    the process, or could find faces in one another's frames."""
    from concurrent.futures import ThreadPoolExecutor

    from model.faces import _search

    frames = read_frames(media["face_h264"], 12).frames
    frames = [frame if i % 2 else np.ascontiguousarray(frame[::-1]) for i, frame in enumerate(frames)]  # upside down: no face
    alone = [_search(frame, 1) for frame in frames]
    assert sum(map(bool, alone)) == 6
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            assert list(pool.map(lambda frame: _search(frame, 1), frames)) == alone
