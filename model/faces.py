"""Finding, following and cropping faces, on numpy RGB frames."""
from __future__ import annotations

import logging
import math
import queue
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

import cv2
import dlib
import face_recognition
import face_recognition.api
import numpy as np

from .decoders import upright
from .layout import Region, picture_region

log = logging.getLogger(__name__)

# A box is (top, right, bottom, left) in pixels, as face_recognition returns it.
Box = tuple[int, int, int, int]

DETECT_MAX_SIDE = 640  # HOG runs on a copy no longer than this (0.46× of 720p, 0.31× of 1080p)
# How finely a frame can be searched, coarsest first: (longest side of the copy, HOG's upsamplings).
# Each level finds faces about half as large as the one before. A frame is searched at the first
# two until faces are found; a video whose faces neither finds goes on to the third.
SEARCH_LEVELS = ((DETECT_MAX_SIDE, 0), (DETECT_MAX_SIDE, 1), (2 * DETECT_MAX_SIDE, 1))
PROBE_FRAMES = 2  # frames searched more ways first, to choose how to search the rest
# The score a face found beside others by a search one level finer than theirs must reach: at
# the finer level HOG also finds face-like patterns (a badge on a jacket, 0.1–0.3) that real
# faces outscore (1.0–1.3 for an 80 px face in 720p video).
SMALL_FACE_MIN_SCORE = 0.5
# A face-like pattern on a person's clothes (the badge and the mission patch on the tests'
# astronaut's suit, which HOG scores 0.0–0.25 where compression or a close-up brings them up) lies
# below their face: within this many of its heights below its chin, and of its widths to either
# side of its centre.
BODY_HEIGHTS, BODY_WIDTHS = 4.0, 1.5
# HOG finds faces turned too, upside down mostly, but is less sure of them: on the two probe frames
# of 138 clips of real footage turned upside down, at most 1.29 (0.43 of the same face's score
# upright), on their side 0.14, against 0.67–3.5 upright
TURNED_FACE_MAX_SCORE = 1.5
CROP_MARGIN = 0.25  # fraction of the face box added on each side
MATCH_IOU = 0.3
# Two tracks never in the same frame whose faces' encodings (face_recognition's 128-d) lie closer
# than this show one person: 0.6 is face_recognition's usual tolerance, stricter here, as a
# merge is not undone.
SAME_FACE_DISTANCE = 0.5
MERGE_CANDIDATES = 8  # tracks, the most often seen first, that merging considers
STEADY_IOU = 0.6  # neighbours' boxes this similar let the frame between skip detection
# A face leaning this far or further from upright (its eye line against the horizontal) is turned
# upright before it is cropped: heads tilted by 30° made real videos look manipulated (model
# card, "Tilted heads"). The training clips' faces lean less (at most 22.6° over the 32 frames
# training takes, at every quality the training and cross-validation crop them at), so their
# crops are never turned. The default; a checkpoint trained otherwise (`train --upright-from`)
# names its own.
UPRIGHT_FROM_DEGREES = 25.0


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


# dlib's HOG detector keeps the picture it scans in itself, so it searches one at a time: searches
# made at once (on several threads) each take one of these, made as needed (0.2 s each), and put it back
_idle_detectors: queue.SimpleQueue = queue.SimpleQueue()
_idle_detectors.put(face_recognition.api.face_detector)


def _hog(image: np.ndarray, upsample: int, min_score: float = 0.0) -> list[tuple[Box, float]]:
    """dlib's HOG face boxes (face_recognition's detector) scoring at least `min_score`, with their scores."""
    height, width = image.shape[:2]
    try:
        detector = _idle_detectors.get_nowait()
    except queue.Empty:
        detector = dlib.get_frontal_face_detector()
    try:
        rects, scores, _ = detector.run(image, upsample, min_score)
    finally:
        _idle_detectors.put(detector)
    return [
        ((max(0, r.top()), min(width, r.right()), min(height, r.bottom()), max(0, r.left())), score)
        for r, score in zip(rects, scores)
    ]


def _on_body(box: Box, face: Box) -> bool:
    """Whether a box's centre lies where the body of the person whose face is `face` would be."""
    height, width = face[2] - face[0], face[1] - face[3]
    middle_y, middle_x = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return face[2] < middle_y < face[2] + BODY_HEIGHTS * height and abs(middle_x - (face[1] + face[3]) / 2) < BODY_WIDTHS * width


def _not_on_clothes(found: list[tuple[Box, float]]) -> list[Box]:
    """The boxes, less the ones scoring under SMALL_FACE_MIN_SCORE on the body of a face found
    with them that scores at least that (`_on_body`): a badge, a mission patch, a face printed on
    a shirt. A weak face below a pattern as weak is kept."""
    sure = [box for box, score in found if score >= SMALL_FACE_MIN_SCORE]
    return [box for box, score in found if score >= SMALL_FACE_MIN_SCORE or not any(_on_body(box, face) for face in sure)]


def _beside(found: list[Box], boxes: list[Box]) -> list[Box]:
    """The boxes that overlap none of `found`."""
    return [box for box in boxes if all(iou(box, other) <= MATCH_IOU for other in found)]


def _search(frame: np.ndarray, level: int, min_score: float = 0.0) -> list[tuple[Box, float]]:
    """HOG face boxes in full-resolution coordinates, at one of SEARCH_LEVELS, with their scores."""
    max_side, upsample = SEARCH_LEVELS[level]
    height, width = frame.shape[:2]
    scale = detection_scale(height, width, max_side)
    small = cv2.resize(frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return [
        (
            (max(0, round(t / scale)), min(width, round(r / scale)), min(height, round(b / scale)), max(0, round(l / scale))),
            score,
        )
        for (t, r, b, l), score in _hog(small, upsample, min_score)
    ]


def _each(pool: Executor | None, function: Callable[..., object], *items: Iterable) -> Iterator:
    """`map`: on the `pool`'s threads where there is one, which search frames side by side (dlib's
    HOG lets go of Python's lock while it runs); the results in order, each as it is ready."""
    return pool.map(function, *items) if pool else map(function, *items)


# A frame's searches so far (`_search`), kept for a caller that asks about the same frame more
# than one way: (level, min_score) → the boxes found, with their scores
Searches = dict[tuple[int, float], list[tuple[Box, float]]]


def _searched(frame: np.ndarray, level: int, min_score: float, searches: Searches) -> list[tuple[Box, float]]:
    """`_search`, answered from the frame's `searches` where one at the level asked for faces as
    sure or less: HOG keeps a box only where no surer one overlaps it, so the boxes it finds
    scoring `min_score` or more are the same whatever lower score it was asked for."""
    known = next((found for (at, least), found in searches.items() if at == level and least <= min_score), None)
    if known is None:
        known = searches[level, min_score] = _search(frame, level, min_score)
    return [(box, score) for box, score in known if score >= min_score]


def detect_faces(frame: np.ndarray, deepest: int = 1, look_beside: bool = False, searches: Searches | None = None) -> list[Box]:
    """HOG face boxes in full-resolution coordinates: the frame is searched at SEARCH_LEVELS in
    turn, up to level `deepest`, until faces are found. With `look_beside`, the next level also
    searches for smaller faces beside those, and adds the ones it is sure of. `searches` keeps
    the frame's searches for a caller that asks about it more than one way. A pattern on a
    person's clothes that HOG takes for a face is left out (`_not_on_clothes`)."""
    searches = {} if searches is None else searches

    def search(level: int, min_score: float = 0.0) -> list[Box]:
        return _not_on_clothes(_searched(frame, level, min_score, searches))

    for level in range(deepest + 1):
        if boxes := search(level):
            if look_beside and level + 1 < len(SEARCH_LEVELS):
                return boxes + _beside(boxes, search(level + 1, SMALL_FACE_MIN_SCORE))
            return boxes
    return []


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


def crop_face(
    frame: np.ndarray, box: Box, size: int = 112, margin: float = CROP_MARGIN, rotation: np.ndarray | None = None
) -> np.ndarray:
    """The face region, enlarged and clamped, resized to size×size; turned by `rotation` (a 2×3
    affine of the frame, `upright_rotation`) where one is given."""
    top, right, bottom, left = expand_box(box, frame.shape, margin)
    if rotation is None:
        region = frame[top:bottom, left:right]
    else:  # only the region's own pixels are turned
        region = cv2.warpAffine(
            frame, rotation - [[0, 0, left], [0, 0, top]], (right - left, bottom - top), borderMode=cv2.BORDER_REFLECT101
        )
    return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)


def face_roll(frame: np.ndarray, box: Box) -> float | None:
    """How far the face in `box` leans, in degrees: its eye line's angle against the horizontal
    (dlib's 5-point landmarks), positive where it falls to the right; None if no eyes are found."""
    marks = face_recognition.face_landmarks(frame, face_locations=[box], model="small")
    if not marks:
        return None
    (x0, y0), (x1, y1) = sorted((np.mean(marks[0][eye], axis=0) for eye in ("left_eye", "right_eye")), key=lambda p: p[0])
    return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))


def upright_rotation(frame: np.ndarray, box: Box, from_degrees: float = UPRIGHT_FROM_DEGREES) -> np.ndarray | None:
    """The 2×3 affine that turns the face in `box` upright about the box's centre, where it leans
    `from_degrees` or more (0: wherever its eyes are found); else None."""
    roll = face_roll(frame, box)
    if roll is None or abs(roll) < from_degrees:
        return None
    top, right, bottom, left = box
    return cv2.getRotationMatrix2D(((left + right) / 2, (top + bottom) / 2), roll, 1.0)


def rotation_degrees(rotation: np.ndarray | None) -> float:
    """How far a 2×3 rotation (`upright_rotation`) turns, in degrees counter-clockwise as shown; 0 for None."""
    return 0.0 if rotation is None else float(np.degrees(np.arctan2(rotation[0, 1], rotation[0, 0])))


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


def _continues(track: FaceTrack, box: Box, position: int) -> float:
    """How likely a box is the face a track follows: its affinity to the track's last box, or to
    the one before where that is higher (both over the time since the last), so that a face's box
    that jumps in size for one frame (78 px tall, then 108, then 64, in a clip re-encoded at 480p)
    does not end the track."""
    gap = position - track.frame_positions[-1]
    return max(_affinity(previous, box, gap) for previous in track.boxes[-2:])


def track_faces(detections: list[list[Box]], max_tracks: int | None = 1) -> list[FaceTrack]:
    """Link per-frame boxes into tracks; the most consistently seen (then largest) first (all of
    them where `max_tracks` is None)."""
    tracks: list[FaceTrack] = []
    for position, boxes in enumerate(detections):
        free = list(range(len(tracks)))
        for box in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[1] - b[3])):
            best, best_score = None, 0.0
            for i in free:
                score = _continues(tracks[i], box, position)
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


def face_encoding(frames: list[np.ndarray], track: FaceTrack) -> np.ndarray | None:
    """The identity encoding of a track's face, at its middle frame."""
    middle = len(track.boxes) // 2
    found = face_recognition.face_encodings(frames[track.frame_positions[middle]], [track.boxes[middle]])
    return found[0] if found else None


def merge_same_faces(tracks: list[FaceTrack], frames: list[np.ndarray]) -> list[FaceTrack]:
    """Join the tracks that follow one person: a face that jumps between sampled frames (a camera
    cut, or frames seconds apart in a long video) starts a new track, which tells nothing about
    a second face. Tracks are joined when they share no frame and their faces' encodings lie
    within SAME_FACE_DISTANCE; encodings are computed only for such pairs. The most often seen
    first, as from track_faces."""
    candidates = {id(t) for t in tracks[:MERGE_CANDIDATES] if len(t.boxes) >= 2}
    if len(candidates) < 2:
        return tracks
    encodings: dict[int, np.ndarray | None] = {}  # by track, at its middle frame before any merge

    def encoding(track: FaceTrack) -> np.ndarray | None:
        if id(track) not in encodings:
            encodings[id(track)] = face_encoding(frames, track)
        return encodings[id(track)]

    def same_person(a: FaceTrack, b: FaceTrack) -> bool:
        if not {id(a), id(b)} <= candidates or not set(a.frame_positions).isdisjoint(b.frame_positions):
            return False
        first, second = encoding(a), encoding(b)
        return first is not None and second is not None and float(np.linalg.norm(first - second)) < SAME_FACE_DISTANCE

    kept: list[FaceTrack] = []
    for track in tracks:
        same = next((k for k in kept if same_person(k, track)), None)
        if same is None:
            kept.append(track)
            continue
        joined = sorted(zip(same.frame_positions + track.frame_positions, same.boxes + track.boxes))
        same.frame_positions, same.boxes = [p for p, _ in joined], [b for _, b in joined]
    kept.sort(key=lambda t: t.score, reverse=True)
    return kept


LANDMARKS = 72  # face_recognition's parts of dlib's 68-point model, the lips' corners counted twice


def face_landmarks_points(frame: np.ndarray, box: Box) -> np.ndarray:
    """The face's landmark points (dlib's 68-point model, by part), as an (N, 2) array of x, y."""
    marks = face_recognition.face_landmarks(frame, face_locations=[box])
    if not marks:
        return np.zeros((0, 2), np.float32)
    return np.array([p for part in marks[0].values() for p in part], np.float32)


@dataclass
class FaceCrops:
    """A track's crops (N×size×size×3 RGB) with the sampled-frame positions they come from, and
    how far each was turned upright (`rotation_degrees`; 0 where the face did not lean far)."""

    track: FaceTrack
    crops: np.ndarray
    turned: list[float]


def _interpolated(before: list[Box], after: list[Box]) -> list[Box] | None:
    """Boxes halfway between two neighbouring frames' detections, if every face is steady across them."""
    if not before or len(before) != len(after):
        return None
    pairs = [(a, max(after, key=lambda b: iou(a, b))) for a in before]
    if any(iou(a, b) < STEADY_IOU for a, b in pairs):
        return None
    return [tuple(int(round((x + y) / 2)) for x, y in zip(a, b)) for a, b in pairs]


def _probe_positions(count: int) -> list[int]:
    """PROBE_FRAMES of the frames always detected (the even ones), spread over the video."""
    evens = range(0, count, 2)
    return [evens[(2 * k + 1) * len(evens) // (2 * PROBE_FRAMES)] for k in range(min(PROBE_FRAMES, len(evens)))]


# Where faces are searched for: a region of the frames, None for the whole frame, or "find": the
# picture where the video shows it over a blurred copy of itself (`layout.picture_region`), else
# the whole frame
SearchArea = Region | None | Literal["find"]


def turn_box(box: Box, shape: tuple[int, ...], quarters: int) -> Box:
    """Where a box in a frame of `shape` (height, width, …) lies once the frame is turned
    `quarters` quarter turns counter-clockwise as shown (np.rot90's k)."""
    for _ in range(quarters % 4):
        height, width = shape[:2]
        top, right, bottom, left = box
        box, shape = (width - right, bottom, width - left, top), (width, height)
    return box


def turned_frames(frames: list[np.ndarray], quarters: int) -> list[np.ndarray]:
    """The frames turned `quarters` quarter turns counter-clockwise as shown (np.rot90's k), as a
    player turns a picture its header says to."""
    return [upright(frame, 90 * quarters) for frame in frames]


def best_turn(
    frames: list[np.ndarray],
    picture: Region | None = None,
    turns: Sequence[int] = (1, 3, 2),
    unless_sure_of: float = math.inf,
    searches: dict[int, Searches] | None = None,
    pool: Executor | None = None,
) -> int:
    """The quarter turns counter-clockwise as shown (np.rot90's k), among `turns`, under which the
    probe frames (`_probe_positions`), in the `picture` alone where there is one, show a face HOG is
    surer of than of any as they are, and sure of (SMALL_FACE_MIN_SCORE); the surest such turn, or
    0, also where as they are they show one scoring `unless_sure_of` or more. Each way, each probe
    is searched at the first two of SEARCH_LEVELS in turn until one finds a face HOG is sure of.
    For a video stored on its side or upside down whose file does not say so (an editor or an app
    dropped its rotation): HOG finds faces turned too, upside down mostly, but is far less sure of
    them (TURNED_FACE_MAX_SCORE). `searches` holds the frames' searches as they are, in the
    `picture` (`follow_faces`'), by position: the probes are not searched again. The searches
    run on the `pool`'s threads where there is one."""
    if not frames:
        return 0
    height, width = frames[0].shape[:2]
    top, right, bottom, left = picture or (0, width, height, 0)
    positions = _probe_positions(len(frames))
    probes = [frames[position][top:bottom, left:right] for position in positions]
    searches = {} if searches is None else searches

    def surest(probe: np.ndarray, known: Searches) -> float:
        for level in range(2):
            if found := _searched(probe, level, SMALL_FACE_MIN_SCORE, known):
                return max(score for _, score in found)
        return -math.inf

    as_they_are = max(_each(pool, surest, probes, [searches.setdefault(position, {}) for position in positions]))
    if as_they_are >= unless_sure_of:
        return 0
    turned = [(quarters, probe) for quarters in turns for probe in turned_frames(probes, quarters)]
    found = list(_each(pool, surest, [probe for _, probe in turned], [{} for _ in turned]))
    scores = {quarters: max(score for (turn, _), score in zip(turned, found) if turn == quarters) for quarters in turns}
    turn = max(turns, key=scores.get)
    return turn if scores[turn] > as_they_are else 0


def detect_faces_in_frames(
    frames: list[np.ndarray],
    progress: Callable[[float], None] | None = None,
    several_faces: bool = False,
    picture: SearchArea = "find",
    searches: dict[int, Searches] | None = None,
    pool: Executor | None = None,
) -> list[list[Box]]:
    """Face boxes for each frame (`_detect_in_frames`), searched for in the `picture` alone where
    there is one; the searches made, in the picture, are kept in `searches`, by position."""
    region = picture_region(frames) if picture == "find" else picture
    if region is None:
        return _detect_in_frames(frames, progress, several_faces, searches, pool)
    top, right, bottom, left = region
    log.info("the picture lies over a blurred copy of itself; faces are searched for in rows %d–%d, columns %d–%d", top, bottom, left, right)
    found = _detect_in_frames([frame[top:bottom, left:right] for frame in frames], progress, several_faces, searches, pool)
    return [[(t + top, r + left, b + top, l + left) for t, r, b, l in boxes] for boxes in found]


def _detect_in_frames(
    frames: list[np.ndarray],
    progress: Callable[[float], None] | None = None,
    several_faces: bool = False,
    searches: dict[int, Searches] | None = None,
    pool: Executor | None = None,
) -> list[list[Box]]:
    """Face boxes for each frame. HOG runs on every other frame; a frame between two detections of
    the same steady faces takes their average box instead, and is detected only when that fails.

    A few frames are searched first, to choose how to search them all: where they show a face
    only at the finest of SEARCH_LEVELS, every frame may be searched down to it; with
    `several_faces`, where a search one level finer than the one that found faces finds more
    beside them, every frame gets it too (else a face under about half the size of the smallest
    found is missed beside a larger one). `progress` hears the fraction of frames done (0 after
    each of the first searches). `searches` keeps each frame's searches, by position. Frames are
    searched side by side on the `pool`'s threads where there is one."""
    report = progress or (lambda fraction: None)
    found: dict[tuple[int, int, bool], list[Box]] = {}
    searches = {} if searches is None else searches  # the probes are asked several ways

    def detect(positions: Iterable[int], deepest: int, look_beside: bool, done: Callable[[int], None]) -> None:
        """Searches the frames at `positions` not yet searched so, `done` hearing of each in turn."""
        todo = [position for position in positions if (position, deepest, look_beside) not in found]
        known = [searches.setdefault(position, {}) for position in todo]

        def search(position: int, searched: Searches) -> list[Box]:
            return detect_faces(frames[position], deepest, look_beside, searched)

        for position, boxes in zip(todo, _each(pool, search, todo, known)):
            found[position, deepest, look_beside] = boxes
            done(position)

    # The probes are searched each way side by side (each is searched so later, or its searches
    # hold the answer), then asked in turn; a report after each search: no frame is done yet, but
    # the analysis is alive, and a stop takes effect between searches.
    def probe(position: int, deepest: int = 1, look_beside: bool = False) -> list[Box]:
        detect(probes, deepest, look_beside, done=lambda position: report(0.0))
        return found[position, deepest, look_beside]

    probes = _probe_positions(len(frames))
    finest = len(SEARCH_LEVELS) - 1
    deepest, look_beside = 1, False
    if probes and not any(probe(i) for i in probes) and any(probe(i, finest) for i in probes):
        deepest = finest
    if several_faces:
        look_beside = any(len(probe(i, deepest, look_beside=True)) > len(probe(i, deepest)) for i in probes)

    detections: list[list[Box] | None] = [None] * len(frames)
    evens, odds = range(0, len(frames), 2), range(1, len(frames), 2)
    detect(evens, deepest, look_beside, done=lambda i: report(0.8 * (i + 1) / len(frames)))
    for i in evens:
        detections[i] = found[i, deepest, look_beside]
    steady = {i: _interpolated(detections[i - 1], detections[i + 1]) if i + 1 < len(frames) else None for i in odds}
    detect([i for i in odds if steady[i] is None], deepest, look_beside, done=lambda i: report(0.8 + 0.2 * (i + 1) / len(frames)))
    for i in odds:
        detections[i] = steady[i] if steady[i] is not None else found[i, deepest, look_beside]
    report(1.0)
    return detections


def follow_faces(
    frames: list[np.ndarray],
    progress: Callable[[float], None] | None = None,
    several_faces: bool = False,
    picture: SearchArea = "find",
    searches: dict[int, Searches] | None = None,
    pool: Executor | None = None,
) -> list[FaceTrack]:
    """Detect faces in the frames (in the `picture` alone where there is one) and follow them, a
    person's tracks joined (`merge_same_faces`): every face, the most often seen first. The
    searches made are kept in `searches`, by position (`best_turn` asks about the frames too);
    they run side by side on the `pool`'s threads where there is one."""
    detections = detect_faces_in_frames(frames, progress, several_faces, picture=picture, searches=searches, pool=pool)
    return merge_same_faces(track_faces(detections, max_tracks=None), frames)


def crop_tracks(
    frames: list[np.ndarray], tracks: list[FaceTrack], size: int = 112, upright_from: float = UPRIGHT_FROM_DEGREES
) -> list[FaceCrops]:
    """Each track's crops, a face that leans `upright_from` degrees or more turned upright."""

    def cropped(track: FaceTrack) -> FaceCrops:
        rotations = [upright_rotation(frames[p], box, upright_from) for p, box in zip(track.frame_positions, track.boxes)]
        crops = [crop_face(frames[p], box, size, rotation=r) for p, box, r in zip(track.frame_positions, track.boxes, rotations)]
        return FaceCrops(track, np.stack(crops), [rotation_degrees(r) for r in rotations])

    return [cropped(track) for track in tracks]


def extract_face_crops(
    frames: list[np.ndarray],
    size: int = 112,
    max_tracks: int = 1,
    progress: Callable[[float], None] | None = None,
    picture: SearchArea = "find",
    upright_from: float = UPRIGHT_FROM_DEGREES,
) -> list[FaceCrops]:
    """The crops of the `max_tracks` faces seen most often (`follow_faces`, `crop_tracks`); empty
    when no face."""
    tracks = follow_faces(frames, progress, several_faces=max_tracks > 1, picture=picture)
    return crop_tracks(frames, tracks[:max_tracks], size, upright_from)
