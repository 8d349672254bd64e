"""Finding the picture in a video reposted over a blurred copy of itself.

Short-video apps show a landscape video in a portrait frame (and news and video sites a portrait
phone video in a landscape one) over a copy of the picture enlarged to fill the frame and
blurred. The copy holds the same faces, larger and without their detail; judged, they are read
as manipulated (real clips so framed were called FAKE), and, found first, they can keep the
real, smaller face from being searched for. Faces are searched for in the picture alone.
"""
from __future__ import annotations

import cv2
import numpy as np

Region = tuple[int, int, int, int]  # (top, right, bottom, left), as a face box

SAMPLE_SIDE = 240  # the frames are compared at this longest side
# The picture's share of the frame's height (or width), at most: 16:9 in 9:16 is 32%, 4:3 42%,
# 1:1 56%. A larger share leaves strips so thin that the picture's own edge rows, barely
# enlarged, resemble them whatever the video.
MAX_PICTURE_SHARE = 0.75
MIN_PICTURE_SHARE = 0.1
# How alike the strips and the enlarged picture must be, both blurred, averaged over the frames
# compared. The 106 data set clips as they are scored at most 0.923, and 32 clips from elsewhere
# (portrait phone videos among them) at most 0.937; framed over copies blurred by 8 or 20 px of a
# 720 × 1280 frame, 0.996 or more (27 of the data set clips); by 40 px, 0.974–0.991.
MIN_LIKENESS = 0.98
FRAMES_COMPARED = 5
COARSE_STEP = 3  # margins, in compared rows, tried first
COARSE_FRAMES = 2  # of those, the frames the margins tried first are compared in
# Where the best margin tried first is less alike than this, in those frames, the video shows no
# picture over a copy of itself. The 106 data set clips, framed over copies blurred by 8, 20 or
# 40 px (landscape in portrait, and portrait in landscape), scored 0.925 or more there.
NO_PICTURE_BELOW = 0.85


def _grey(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    scale = SAMPLE_SIDE / max(height, width)
    small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _likeness(grey: np.ndarray, margin: int) -> float:
    """How alike the strips above and below the middle rows are to those rows enlarged to fill the
    frame (centred, as apps place them), both blurred alike: a correlation, 1 for a blurred copy."""
    height, width = grey.shape
    picture = grey[margin : height - margin]
    enlarged_width = max(width, round(width * height / picture.shape[0]))
    enlarged = cv2.resize(picture, (enlarged_width, height), interpolation=cv2.INTER_LINEAR)
    x0 = (enlarged_width - width) // 2
    enlarged = enlarged[:, x0 : x0 + width]
    blur = height / 40  # washes out how much the app blurred its copy
    strips = [cv2.GaussianBlur(np.concatenate([image[:margin], image[height - margin :]]), (0, 0), blur).ravel() for image in (grey, enlarged)]
    if min(strip.std() for strip in strips) < 1e-3:  # flat bars: no copy to tell, and no face in them
        return 0.0
    return float(np.corrcoef(*strips)[0, 1])


def _picture_rows(greys: list[np.ndarray]) -> int | None:
    """The margin, in the compared frames' rows, above and below a picture over a copy of itself."""
    height = greys[0].shape[0]
    margins = range(max(1, round(height * (1 - MAX_PICTURE_SHARE) / 2)), round(height * (1 - MIN_PICTURE_SHARE) / 2))

    def best(candidates: range, compared: list[np.ndarray]) -> tuple[float, int]:
        return max(((float(np.mean([_likeness(grey, m) for grey in compared])), m) for m in candidates), default=(0.0, 0))

    # every third margin in a few frames (a picture's margin is the same in each), then the rows
    # around the best in them all: the likeness changes slowly with the margin
    spread = greys[:: max(1, len(greys) // COARSE_FRAMES)][:COARSE_FRAMES]
    likeness, near = best(margins[::COARSE_STEP], spread)
    if likeness < NO_PICTURE_BELOW:
        return None
    likeness, margin = best(range(max(margins.start, near - COARSE_STEP + 1), min(margins.stop, near + COARSE_STEP)), greys)
    return margin if likeness >= MIN_LIKENESS else None


def picture_region(frames: list[np.ndarray]) -> Region | None:
    """Where the picture lies in frames that show it over a blurred, enlarged copy of itself
    (above and below it, or beside it), in the frames' pixels; None for any other video."""
    if not frames:
        return None
    step = max(1, len(frames) // FRAMES_COMPARED)
    greys = [_grey(frame) for frame in frames[step // 2 :: step][:FRAMES_COMPARED]]
    height, width = frames[0].shape[:2]
    # a compared row's worth of the copy is kept rather than an edge of the picture lost
    if (rows := _picture_rows(greys)) is not None:
        margin = round((rows - 1) * height / greys[0].shape[0])
        return margin, width, height - margin, 0
    if (columns := _picture_rows([np.ascontiguousarray(grey.T) for grey in greys])) is not None:
        margin = round((columns - 1) * width / greys[0].shape[1])
        return 0, width - margin, height, margin
    return None
