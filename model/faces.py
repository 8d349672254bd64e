"""Finding, following and cropping faces, on numpy RGB frames."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import face_recognition
import numpy as np

# A box is (top, right, bottom, left) in pixels, as face_recognition returns it.
Box = tuple[int, int, int, int]

DETECT_MAX_SIDE = 640  # HOG runs on a copy no longer than this (0.46× of 720p, 0.31× of 1080p)
CROP_MARGIN = 0.25  # fraction of the face box added on each side
MATCH_IOU = 0.3
STEADY_IOU = 0.6  # neighbours' boxes this similar let the frame between skip detection


@dataclass
class FaceTrack:
    """One face followed through the sampled frames."""

    frame_positions: list[int] = field(default_factory=list)  # positions in the sampled list
    boxes: list[Box] = field(default_factory=list)

    @property
    def score(self) -> tuple[int, float]:
        """Seen in more frames first, then larger."""
        areas = [(b[2] - b[0]) * (b[1] - b[3]) for b in self.boxes]
        return len(self.boxes), float(np.median(areas)) if areas else 0.0


def detection_scale(height: int, width: int, max_side: int = DETECT_MAX_SIDE) -> float:
    """The largest scale that fits `max_side` and lies on the full-resolution detector's grid.

    dlib's HOG scans an image pyramid in steps of 5/6; full-resolution detection with one
    upsampling scans 2·(5/6)^k. Scaling the frame by 2·(5/6)^n keeps our pyramid levels on that
    grid, so the boxes match full-resolution detection to a few pixels instead of ~10% of the face.
    """
    target = min(1.0, max_side / max(height, width))
    return 2 * (5 / 6) ** math.ceil(math.log(2 / target) / math.log(6 / 5))


def detect_faces(frame: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> list[Box]:
    """HOG face boxes in full-resolution coordinates, found on a downscaled copy."""
    height, width = frame.shape[:2]
    scale = detection_scale(height, width, max_side)
    small = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    boxes = face_recognition.face_locations(small, number_of_times_to_upsample=0)
    if not boxes:
        boxes = face_recognition.face_locations(small, number_of_times_to_upsample=1)
    return [
        (
            max(0, round(t / scale)),
            min(width, round(r / scale)),
            min(height, round(b / scale)),
            max(0, round(l / scale)),
        )
        for t, r, b, l in boxes
    ]


def expand_box(box: Box, frame_shape: tuple[int, ...], margin: float = CROP_MARGIN) -> Box:
    """A square around the face, `margin` larger on each side, kept inside the frame."""
    height, width = frame_shape[:2]
    top, right, bottom, left = box
    side = max(bottom - top, right - left) * (1 + 2 * margin)
    side = min(side, height, width)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    top_new = int(round(min(max(cy - side / 2, 0), height - side)))
    left_new = int(round(min(max(cx - side / 2, 0), width - side)))
    side_px = int(round(side))
    return top_new, left_new + side_px, top_new + side_px, left_new


def crop_face(frame: np.ndarray, box: Box, size: int = 112, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face region, enlarged and clamped, resized to size×size."""
    top, right, bottom, left = expand_box(box, frame.shape, margin)
    return cv2.resize(frame[top:bottom, left:right], (size, size), interpolation=cv2.INTER_AREA)


def iou(a: Box, b: Box) -> float:
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0, bottom - top) * max(0, right - left)
    area = lambda x: (x[2] - x[0]) * (x[1] - x[3])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def _affinity(previous: Box, box: Box, gap: int = 1) -> float:
    """How likely a box is the face last seen at `previous`, `gap` sampled frames earlier: their
    overlap, or, for a face that moved too far to overlap (or was missed for a while), a lower
    score if it is about the same size and near enough for the time that passed."""
    overlap = iou(previous, box)
    if overlap > MATCH_IOU:
        return overlap
    side_a, side_b = previous[2] - previous[0], box[2] - box[0]
    if side_b <= 0 or not 2 / 3 <= side_a / side_b <= 3 / 2:
        return 0.0
    distance = math.hypot((previous[0] + previous[2] - box[0] - box[2]) / 2, (previous[1] + previous[3] - box[1] - box[3]) / 2)
    reach = max(side_a, side_b) * min(1 + (gap - 1) / 2, 3)
    return MATCH_IOU * max(0.0, 1 - distance / reach)  # below any real overlap; nearer scores higher


def track_faces(detections: list[list[Box]], max_tracks: int = 1) -> list[FaceTrack]:
    """Link per-frame boxes into tracks; the most consistently seen (then largest) first."""
    tracks: list[FaceTrack] = []
    for position, boxes in enumerate(detections):
        free = list(range(len(tracks)))
        for box in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[1] - b[3])):
            best, best_score = None, 0.0
            for i in free:
                score = _affinity(tracks[i].boxes[-1], box, position - tracks[i].frame_positions[-1])
                if score > best_score:
                    best, best_score = i, score
            if best is None:
                tracks.append(FaceTrack([position], [box]))
            else:
                free.remove(best)
                tracks[best].frame_positions.append(position)
                tracks[best].boxes.append(box)
    tracks.sort(key=lambda t: t.score, reverse=True)
    return tracks[:max_tracks]


LANDMARKS = 72  # face_recognition's parts of dlib's 68-point model, the lips' corners counted twice


def face_landmarks_points(frame: np.ndarray, box: Box) -> np.ndarray:
    """The face's landmark points (dlib's 68-point model, by part), as an (N, 2) array of x, y."""
    marks = face_recognition.face_landmarks(frame, face_locations=[box])
    if not marks:
        return np.zeros((0, 2), np.float32)
    return np.array([p for part in marks[0].values() for p in part], np.float32)


@dataclass
class FaceCrops:
    """A track's crops (N×size×size×3 RGB) with the sampled-frame positions they come from."""

    track: FaceTrack
    crops: np.ndarray


def _interpolated(before: list[Box], after: list[Box]) -> list[Box] | None:
    """Boxes halfway between two neighbouring frames' detections, if every face is steady across them."""
    if not before or len(before) != len(after):
        return None
    pairs = [(a, max(after, key=lambda b: iou(a, b))) for a in before]
    if any(iou(a, b) < STEADY_IOU for a, b in pairs):
        return None
    return [tuple(int(round((x + y) / 2)) for x, y in zip(a, b)) for a, b in pairs]


def detect_faces_in_frames(frames: list[np.ndarray], progress: Callable[[float], None] | None = None) -> list[list[Box]]:
    """Face boxes for each frame. HOG runs on every other frame; a frame between two detections of
    the same steady faces takes their average box instead, and is detected only when that fails.
    `progress` hears the fraction of frames done."""
    report = progress or (lambda fraction: None)
    detections: list[list[Box] | None] = [None] * len(frames)
    for i in range(0, len(frames), 2):
        detections[i] = detect_faces(frames[i])
        report(0.8 * (i + 1) / len(frames))
    for i in range(1, len(frames), 2):
        steady = _interpolated(detections[i - 1], detections[i + 1]) if i + 1 < len(frames) else None
        detections[i] = steady if steady is not None else detect_faces(frames[i])
        report(0.8 + 0.2 * (i + 1) / len(frames))
    return detections


def extract_face_crops(
    frames: list[np.ndarray], size: int = 112, max_tracks: int = 1, progress: Callable[[float], None] | None = None
) -> list[FaceCrops]:
    """Detect faces in the frames, follow them, and crop each track (the most often seen first);
    empty when no face."""
    detections = detect_faces_in_frames(frames, progress)
    tracks = track_faces(detections, max_tracks)
    return [
        FaceCrops(track, np.stack([crop_face(frames[p], box, size) for p, box in zip(track.frame_positions, track.boxes)]))
        for track in tracks
    ]
