"""How far apart face_recognition's identity encodings lie for one person and for two, on the
faces the app follows: what `model.faces.SAME_FACE_DISTANCE` is chosen from.

    python bench/same_face.py --manifest weights/ffpp_c23_train_clips.csv --root DATA \\
        [--out bench/results/same-face-DATE.json]

For each clip, 20 frames are sampled and its faces followed as the app does; the main face is
encoded once in the first third of its frames and once in the last third. "One person" is those
two encodings of each clip; "two people" is the first encodings of every two clips without a
person in common. Also counted: the clips where `merge_same_faces` joins any of the tracks.
Only figures are written.
"""
from __future__ import annotations

import datetime
import itertools
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fold_inference import manifest_arguments  # noqa: E402  (beside this script)
from model.dataset import read_manifest, shown_path  # noqa: E402
from model.faces import (  # noqa: E402
    SAME_FACE_DISTANCE,
    FaceTrack,
    detect_faces_in_frames,
    face_encoding,
    merge_same_faces,
    track_faces,
)
from model.video import read_frames  # noqa: E402

log = logging.getLogger("bench")


def study(path: Path, frames_to_sample: int = 20) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """The main face's encodings a third of the clip apart, and how many tracks merging joins."""
    frames = read_frames(path, frames_to_sample).frames
    tracks = track_faces(detect_faces_in_frames(frames, several_faces=True), max_tracks=None)
    if not tracks:
        return None, None, 0
    track, third = tracks[0], max(1, len(tracks[0].boxes) // 3)
    early = FaceTrack(track.frame_positions[:third], track.boxes[:third])
    late = FaceTrack(track.frame_positions[-third:], track.boxes[-third:])
    encodings = face_encoding(frames, early), face_encoding(frames, late)
    return *encodings, len(tracks) - len(merge_same_faces(tracks, frames))


def describe(distances: list[float]) -> dict:
    d = np.array(distances)
    return {
        "pairs": len(d),
        "min": round(float(d.min()), 3),
        "percentiles_5_50_95": [round(float(np.percentile(d, q)), 3) for q in (5, 50, 95)],
        "max": round(float(d.max()), 3),
        "under_threshold": int(np.sum(d < SAME_FACE_DISTANCE)),
        "under_0.6": int(np.sum(d < 0.6)),
    }


def main() -> None:
    args = manifest_arguments(__doc__.splitlines()[0], "same-face").parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    clips = read_manifest(args.manifest, args.root)
    encoded, joined = [], []
    for clip in clips:
        early, late, merges = study(clip.path)
        encoded.append((clip, early, late))
        if merges:
            joined.append(shown_path(clip, args.manifest, args.root))
    one = [float(np.linalg.norm(e - l)) for _, e, l in encoded if e is not None and l is not None]
    two = [
        float(np.linalg.norm(a[1] - b[1]))
        for a, b in itertools.combinations(encoded, 2)
        if a[1] is not None and b[1] is not None and not set(a[0].identities) & set(b[0].identities)
    ]
    report = {
        "date": datetime.date.today().isoformat(),
        "manifest": Path(args.manifest).name,
        "threshold": SAME_FACE_DISTANCE,
        "one_person_a_third_of_a_clip_apart": describe(one),
        "two_people": describe(two),
        "clips_with_tracks_joined": joined,
        "not_encoded": [shown_path(c, args.manifest, args.root) for c, e, l in encoded if e is None or l is None],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    log.info("%s; wrote %s", json.dumps(report), args.out)


if __name__ == "__main__":
    main()
