"""Text burnt in across a face is told, and a verdict on such a face says what text does to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from media import face_frames, two_face_frames, with_caption, write_h264

from model.captions import TEXT_SHARE, still_edge_share, text_across_face, text_share
from model.detector import Detector
from model.faces import extract_face_crops, face_landmarks_points
from model.video import read_frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("captions")
    frames = face_frames(20)  # the face moves about 180 px across the 640 px frame
    two = two_face_frames(20)
    return {
        "bare": write_h264(folder / "bare.mp4", frames),
        # across the mouth wherever the face goes, as a caption stays where it was put
        "mouth": write_h264(folder / "mouth.mp4", [with_caption(f, "so true, watch this", 320, 120, 320) for f in frames]),
        # over the suit below the face, as a lower third is
        "below": write_h264(folder / "below.mp4", [with_caption(f, "so true, watch this", 320, 300, 320) for f in frames]),
        # across the mouth of the right-hand person; the most often seen face (face 1) is the left-hand one
        "two": write_h264(folder / "two.mp4", [with_caption(f, "wait for it", 715, 120, 160) for f in two]),
    }


@pytest.mark.parametrize("clip, across", [("bare", False), ("mouth", True), ("below", False)])
def test_text_that_stays_put_while_the_face_moves_is_told(clips, clip, across):
    frames = read_frames(clips[clip], 20).frames
    (face,) = extract_face_crops(frames, 112)
    share = text_share(frames, face.track)
    assert share is not None  # the face moves: every frame has a partner
    assert text_across_face(frames, face.track) is across
    if not across:  # nowhere near: the face's own edges moved with it
        assert share < TEXT_SHARE / 5


def test_only_edges_that_are_unchanged_count_as_having_stayed_put(clips):
    frames = read_frames(clips["mouth"], 20).frames
    (face,) = extract_face_crops(frames, 112)
    frame, box = frames[face.track.frame_positions[0]], face.track.boxes[0]
    marks = face_landmarks_points(frame, box)[:48]
    unchanged = still_edge_share(frame, frame, box, marks)  # the same picture: every edge stayed put
    assert unchanged > TEXT_SHARE
    # the negative has the same edges in the same places, of other values (but about mid-grey)
    assert still_edge_share(frame, 255 - frame, box, marks) < unchanged / 5


def test_a_face_that_does_not_move_is_not_judged(clips):
    frames = read_frames(clips["mouth"], 20).frames
    still = [frames[0]] * 10  # a still picture: the face's own edges stay put as text does
    (face,) = extract_face_crops(still, 112)
    assert text_share(still, face.track) is None
    assert not text_across_face(still, face.track)


def captions(result) -> list[str]:
    return [c["message"] for c in result.caveats if c["code"] == "caption"]


@pytest.mark.parametrize("clip", ["bare", "below"])
def test_a_verdict_without_text_across_the_face_has_no_caption_caveat(tiny_weights, clips, clip):
    assert captions(Detector(tiny_weights).detect(clips[clip], 20)) == []


def test_a_verdict_on_a_face_with_text_across_it_says_so(tiny_weights, clips):
    result = Detector(tiny_weights).detect(clips["mouth"], 20)
    assert result.label in ("REAL", "FAKE")  # either way: text turned verdicts both ways
    (message,) = captions(result)
    assert message.startswith("Text is burnt into the video across the face (a caption, or a watermark with words).")
    assert "says less than usual" in message


def test_the_caption_caveat_names_the_face_the_text_lies_across(tiny_weights, clips):
    result = Detector(tiny_weights).detect(clips["two"], 20, max_faces=2)
    assert len(result.tracks) == 2
    (message,) = captions(result)
    assert message.startswith("Text is burnt into the video across face 2 ")


def test_the_caption_caveat_names_every_face_text_lies_across(tiny_weights, clips, monkeypatch):
    monkeypatch.setattr("model.detector.text_across_face", lambda frames, track: True)
    result = Detector(tiny_weights).detect(clips["two"], 20, max_faces=2)
    (message,) = captions(result)
    assert message.startswith("Text is burnt into the video across faces 1 and 2 ")
