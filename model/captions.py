"""Whether text is burnt in across a face: a caption, or a watermark or sticker with words.

A caption across the chin turned verdicts both ways (model card, "Captions across the face"), so
a verdict on such a face says so. Burnt-in text stays where it is in the picture while the face
moves under it: between two frames in which the face's landmarks have moved, the strong edges
that stayed put inside the face's outline are the text's, the face's own having moved with it.
A face that does not move in the picture is not judged."""

from __future__ import annotations

import cv2
import numpy as np

from .faces import Box, FaceTrack, expand_box, face_landmarks_points

# Two frames are compared where the face's landmarks lie this far apart (their median shift, as
# a share of the face's width): far enough that the face's own strong edges no longer line up
MOVED_SHARE = 0.03
EDGE_LEVEL = 250.0  # an edge: Sobel gradient magnitude of the slightly blurred grey picture
STILL_LEVELS = 10.0  # a pixel that stayed put differs by less than this (of 255) between the two
CHIN_BELOW = 0.1  # the face's outline reaches this share of its height below the jaw's landmarks
# The share of the face's outline covered by edges that stayed put, over which text lies across
# it: twice the most of the 106 training clips' uncaptioned copies (0.0019), rounded up; 205 of
# their 211 copies with a caption across the face reach it (model card, "Captions across the face")
TEXT_SHARE = 0.004
# The face's crop region is shrunk to at most this side before edges are measured, the size it has
# in the 480p videos the threshold was set on, so that a face filmed sharper is measured alike
REGION_PX = 160
FRAMES = 20  # of a track's frames, spread over it, compared with each other
MIN_PAIRS = 3  # frames with a partner the face moved from, below which nothing is said

_JAW, _BROWS = list(range(0, 17)), list(range(26, 16, -1))  # dlib's 68 points, along the face's outline


def face_outline(shape: tuple[int, int], marks: np.ndarray) -> np.ndarray:
    """A mask of the face inside its jaw line and eyebrows (landmarks in `shape`'s pixels), reaching
    a little below the jaw to cover the chin."""
    jaw, brows = marks[_JAW].copy(), marks[_BROWS]
    jaw[:, 1] += CHIN_BELOW * (jaw[:, 1].max() - brows[:, 1].min())
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.concatenate([jaw, brows]).astype(np.int32)), 1)
    return mask.astype(bool)


def _edges(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A grey picture slightly blurred, and its gradient magnitude."""
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (3, 3), 0)
    return smooth, np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))


def _region(frame: np.ndarray, box: Box) -> tuple[np.ndarray, tuple[int, int], float]:
    """The face's crop region of a frame (RGB) in grey, shrunk to at most `REGION_PX` a side;
    where it lies (top, left) and how much it was shrunk."""
    top, right, bottom, left = expand_box(box, frame.shape)
    scale = min(1.0, REGION_PX / (bottom - top))
    grey = cv2.cvtColor(frame[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return grey, (top, left), scale


def _still_share(grey: np.ndarray, other: np.ndarray, outline: np.ndarray) -> float:
    """The share of `outline` (a mask over `grey`) covered by strong edges that are in the same
    place in `other`, unchanged."""
    smooth, edges = _edges(grey)
    other_smooth, other_edges = _edges(other)
    still = (edges > EDGE_LEVEL) & (other_edges > EDGE_LEVEL) & (np.abs(smooth - other_smooth) < STILL_LEVELS)
    return float(still[outline].mean()) if outline.any() else 0.0


def still_edge_share(frame: np.ndarray, other: np.ndarray, box: Box, marks: np.ndarray) -> float:
    """The share of the face's outline in `frame` (its `box` and landmark `marks`, in the frame's
    pixels) covered by strong edges that are in the same place in `other`, unchanged."""
    grey, (top, left), scale = _region(frame, box)
    return _still_share(grey, _region(other, box)[0], face_outline(grey.shape, (marks - [left, top]) * scale))


def text_share(frames: list[np.ndarray], track: FaceTrack) -> float | None:
    """How much of the face followed by `track` in `frames` (RGB) is covered by edges that stayed
    put while it moved: the median `still_edge_share` over up to `FRAMES` of its frames, each
    against the nearest of them the face moved from. None where fewer than `MIN_PAIRS` have one."""
    picks = np.unique(np.linspace(0, len(track.boxes) - 1, min(FRAMES, len(track.boxes))).round().astype(int))
    found = []  # (pick, its region in grey, landmarks in the region's pixels, and in the frame's)
    for pick in picks:
        box = track.boxes[pick]
        grey, (top, left), scale = _region(frames[track.frame_positions[pick]], box)
        inside = tuple(round(v * scale) for v in (box[0] - top, box[1] - left, box[2] - top, box[3] - left))
        points = face_landmarks_points(grey, inside)  # dlib reads grey as it reads colour, quicker on a small region
        if len(points) >= 48:  # dlib's 68-point order up to the eyes (face_recognition repeats lip points after)
            found.append((pick, grey, points[:48], points[:48] / scale + [left, top]))
    if len(found) < 2:
        return None
    marks = np.array([in_frame for *_, in_frame in found])
    shifts = np.median(np.linalg.norm(marks[:, None] - marks[None], axis=-1), axis=-1)  # between every two frames
    widths = np.linalg.norm(marks[:, 16] - marks[:, 0], axis=-1)
    shares = []
    for i, (pick, grey, in_region, _) in enumerate(found):
        moved = np.flatnonzero(shifts[i] >= MOVED_SHARE * widths[i])
        if len(moved):
            partner = found[min(moved, key=lambda j: abs(found[j][0] - pick))][0]
            other = _region(frames[track.frame_positions[partner]], track.boxes[pick])[0]
            shares.append(_still_share(grey, other, face_outline(grey.shape, in_region)))
    return float(np.median(shares)) if len(shares) >= MIN_PAIRS else None


def text_across_face(frames: list[np.ndarray], track: FaceTrack) -> bool:
    """Whether text is burnt in across the face followed by `track`: its `text_share` reaches `TEXT_SHARE`."""
    share = text_share(frames, track)
    return share is not None and share >= TEXT_SHARE
