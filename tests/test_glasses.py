"""Glasses are told on the face that decides a FAKE verdict, and the verdict says what they do."""

from __future__ import annotations

from pathlib import Path

import face_recognition
import numpy as np
import pytest
from media import face_frames, two_face_frames, write_h264
from test_detector import scoring_faces_as

from model.augment import Glasses
from model.detector import Detector
from model.faces import extract_face_crops, face_landmarks_points
from model.glasses import wears_glasses
from model.video import read_frames

# a thin dark frame with rectangular lenses: about a pixel wide on the tests' 640 px frames
THIN_FRAME = Glasses(width=1.7, height=1.1, thickness=0.2, colour=(40, 40, 40), tint=0.0, round_lenses=False)


def wearing_glasses(frame: np.ndarray, right_half_only: bool = False) -> np.ndarray:
    """The frame with glasses drawn on its face (on the right-hand one's only, if asked)."""
    boxes = face_recognition.face_locations(frame)
    if right_half_only:
        boxes = [b for b in boxes if b[3] > frame.shape[1] // 2]
    for box in boxes:
        frame = THIN_FRAME.apply(frame, face_landmarks_points(frame, box))
    return frame


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("glasses")
    frames = face_frames(20)
    two = two_face_frames(20)
    return {
        "bare": write_h264(folder / "bare.mp4", frames),
        "glasses": write_h264(folder / "glasses.mp4", [wearing_glasses(f) for f in frames]),
        # the right-hand person wears glasses; the most often seen face (track 1) is the left-hand one
        "two": write_h264(folder / "two.mp4", [wearing_glasses(f, right_half_only=True) for f in two]),
    }


@pytest.mark.parametrize("clip, wears", [("bare", False), ("glasses", True)])
def test_glasses_are_told_by_the_line_their_bridge_draws_across_the_nose(clips, clip, wears):
    frames = read_frames(clips[clip], 10).frames
    (face,) = extract_face_crops(frames, 112)
    assert wears_glasses(frames, face.track) is wears


@pytest.mark.parametrize("clip, p_fake, caveat", [
    ("glasses", 0.8, True),
    ("glasses", 0.2, False),  # a REAL verdict: glasses make real faces look fake, not fakes look real
    ("bare", 0.8, False),
])  # fmt: skip
def test_a_fake_verdict_on_a_face_with_glasses_says_it_means_less(tiny_weights, clips, monkeypatch, clip, p_fake, caveat):
    scoring_faces_as(monkeypatch, p_fake)
    result = Detector(tiny_weights).detect(clips[clip], 10)
    assert result.label == ("FAKE" if p_fake > 0.5 else "REAL")
    glasses = [c["message"] for c in result.caveats if c["code"] == "glasses"]
    assert glasses == (
        ["The person appears to wear glasses. Real people wearing glasses were called FAKE far more often than others "
         "(its training data shows almost none), so a FAKE verdict says less than usual."] if caveat else []
    )  # fmt: skip


@pytest.mark.parametrize("scores, caveat", [((0.2, 0.9), True), ((0.9, 0.2), False)])
def test_glasses_are_looked_for_on_the_face_that_decided_the_verdict(tiny_weights, clips, monkeypatch, scores, caveat):
    scoring_faces_as(monkeypatch, *scores)
    result = Detector(tiny_weights).detect(clips["two"], 10, max_faces=2)
    assert result.label == "FAKE" and len(result.tracks) == 2
    glasses = [c["message"].split(" appears")[0] for c in result.caveats if c["code"] == "glasses"]
    assert glasses == (["Face 2"] if caveat else [])
