"""Whether a face wears glasses: the frame of a pair of spectacles crosses the bridge of the nose.

Real people wearing glasses were called FAKE far more often than others (model card, "Clips from
elsewhere"), so a FAKE verdict on such a face says so. Between the inner corners of the eyes,
where bare skin shows no edge across the nose, a frame's bridge draws a line from one side to
the other; this looks for that line, in crops twice the network's size, where a thin metal
bridge is still a few pixels wide."""

from __future__ import annotations

import cv2
import numpy as np

from .faces import CROP_MARGIN, UPRIGHT_FROM_DEGREES, FaceTrack, crop_face, face_landmarks_points, upright_rotation

CROP_PX = 224
FRAMES = 8  # of a track's frames, spread over it; a face's verdict is the median of theirs
# How strong a line across the bridge must be, against the edges of the nose below it: set on 65
# of the 138 faces of the training clips and the clips from elsewhere (8 wearing glasses), below
# the weakest of theirs; over all 138, 9 of the 11 faces wearing glasses were above it and 3 of
# the 127 without (model card, "Glasses").
BRIDGE_LINE_LEVEL = 2.8

_INNER_CORNERS = (39, 42)  # of the eyes, in `faces.face_landmarks_points` order (dlib's 68 points)
_NOSE_BRIDGE_LOW, _NOSE_TIP_TOP = 29, 30


def _face_box(size: int) -> tuple[int, int, int, int]:
    """Where `faces.crop_face` puts the face box in its crop (top, right, bottom, left)."""
    near = round(size * CROP_MARGIN / (1 + 2 * CROP_MARGIN))
    return near, size - near, size - near, near


def bridge_line(crop: np.ndarray) -> float | None:
    """How strongly a horizontal edge crosses the bridge of the nose in an RGB face crop: the
    strongest row of the middle 40% between the inner corners of the eyes, from above the eyes to
    just below them, each row its median vertical gradient, against the median gradient of the
    nose below. None where the face's landmarks are not found or the eyes lie too close."""
    marks = face_landmarks_points(crop, _face_box(crop.shape[0]))
    if len(marks) < 68:
        return None
    inner_right, inner_left = marks[list(_INNER_CORNERS)]
    between = inner_left[0] - inner_right[0]
    if between < 6:
        return None
    grey = cv2.GaussianBlur(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0)
    across = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    along = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3))
    columns = slice(int(inner_right[0] + 0.3 * between), int(inner_left[0] - 0.3 * between) + 1)
    eye_line = (inner_right[1] + inner_left[1]) / 2
    rows = slice(max(0, int(eye_line - 0.6 * between)), int(eye_line + 0.25 * between))
    band = across[rows, columns]
    if band.size == 0:
        return None
    nose = np.hypot(along, across)[int(marks[_NOSE_BRIDGE_LOW, 1]) : int(marks[_NOSE_TIP_TOP, 1]), columns]
    nose_level = float(np.median(nose)) + 1.0 if nose.size else 1.0
    return float(np.median(band, axis=1).max()) / nose_level


def wears_glasses(frames: list[np.ndarray], track: FaceTrack, upright_from: float = UPRIGHT_FROM_DEGREES) -> bool:
    """Whether the face followed by `track` wears glasses, from up to `FRAMES` of its frames,
    cropped as the network's crops are (turned upright from `upright_from` degrees)."""
    picks = np.unique(np.linspace(0, len(track.boxes) - 1, min(FRAMES, len(track.boxes))).round().astype(int))
    lines = []
    for pick in picks:
        frame, box = frames[track.frame_positions[pick]], track.boxes[pick]
        line = bridge_line(crop_face(frame, box, CROP_PX, rotation=upright_rotation(frame, box, upright_from)))
        if line is not None:
            lines.append(line)
    return bool(lines) and float(np.median(lines)) >= BRIDGE_LINE_LEVEL
