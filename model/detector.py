"""The detector: video file in, REAL / FAKE / NO_FACE verdict out."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .captions import text_across_face
from .conditions import colourless, dim, grainy, toned
from .damage import Damage, check_damage
from .explain import grad_cam, overlay_heatmap
from .faces import (
    TURNED_FACE_MAX_SCORE,
    UPRIGHT_FROM_DEGREES,
    FaceCrops,
    FaceTrack,
    Searches,
    best_turn,
    crop_tracks,
    follow_faces,
    turn_box,
    turned_frames,
)
from .glasses import wears_glasses
from .layout import Region, picture_region
from .network import ClipModel, pick_device, read_checkpoint, to_input
from .processes import available_cores
from .timing import TimeRange, format_time
from .video import SampledFrames, VideoInfo, read_frames

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "detector.pt"
MIN_SEQUENCE, MAX_SEQUENCE = 10, 100
DEFAULT_MAX_FACES = 4
MIN_TRACK_SHARE = 0.25  # a second face must be seen in this share of the frames to be judged
HEATMAP_FRAMES = 3  # heatmaps for each face's most suspicious frames
# While the verdict waits for the check for damage at the frames examined, the progress is
# reported this often: where the job was deleted or ran out of time, that report raises.
WAITING_REPORT_S = 0.2
# The verdict waits for that check at most this share of the analysis's time so far: where
# the frames examined rest on a minute of pictures (one key frame), it decodes them all again.
EXAMINED_WAIT_SHARE = 0.5
# and this share where it has found a damaged picture: which frames it leaves out then depends
# on how far it got, and the same damaged upload got different verdicts
EXAMINED_WAIT_SHARE_DAMAGED = 2.0
# Under this face height more fakes pass as REAL; real faces are not called FAKE more often
# (measured on the training clips re-encoded small, and out of fold at 240p: model card, "Smaller faces").
SMALL_FACE_PX = 80
# The validation quality with faces that small (their box at a median 74 px), whose figures a
# checkpoint may state under validation["other_qualities"]
SMALL_FACE_QUALITY = "crf23_240p"
# An animated GIF's 256 dithered colours hide some of what gives fakes away; real faces are not called
# FAKE more often (model card, "Animated GIFs"). The validation quality that measures it:
GIF_QUALITY = "gif_480p"
# So does black and white (a pasted face's colour no longer shows), measured as:
BLACK_AND_WHITE_QUALITY = "bw_crf23_480p"
# So does a single tone over a grey picture (sepia, a night-vision green; model card, "Sepia"),
# measured as:
TONED_QUALITY = "sepia_crf23_480p"
# So does dim light (model card, "Dim light"), measured as:
DIM_QUALITY = "dim_crf23_480p"
# So may the grain a camera's gain brings up in a dim room whose exposure it kept (model card,
# "Grainy low light"), measured as:
GRAINY_QUALITY = "gained_crf23_480p"
# Frames further apart than this may step over a manipulated stretch (training clips are 10 s long)
SPARSE_FRAMES_S = 10.0
# A face found in no more frames than this is judged less surely: on people the recipe never saw,
# 1, 3 or 5 frames of a face one after another gave an AUC 0.03–0.09 below 20 frames across the
# clip (model card, "How the clip is judged changes little")
FEW_FRAMES = 5
# Where the main face is found in FEW_FRAMES frames or fewer, all within a stretch no longer than
# this share of the part examined, that stretch is examined again (`_closer_part`): what a few
# frames lack is their spread over the face's time more than their count (model card, "A face
# seen only briefly")
CLOSER_LOOK_MAX_SHARE = 0.5
# Where the main face is seen in under this share of the frames, the frames are searched turned
# too (`_turned_where_faces_show_better`), however sure HOG is of it: stored on its side, a
# video's face was taken for a face in few frames, or none (in 10 and 12 of 20 in 2 of 276 such
# copies of 138 clips of real footage)
TURN_CHECK_SHARE = 0.5

Progress = Callable[[str, int], None]  # (stage, percent of the whole analysis)


@dataclass
class TrackResult:
    """The verdict on one face followed through the clip."""

    track_id: int  # 1 = the face seen most often
    label: str  # REAL or FAKE
    confidence: float  # percent, for the label given
    p_fake: float
    box: tuple[int, int, int, int]  # median (top, right, bottom, left) in the video's pixels
    frame_scores: list[dict]  # per judged frame: index, time_s, p_fake, turned_deg (turned upright by, before judging)
    crops: np.ndarray  # the judged face crops, RGB
    heatmaps: dict[int, np.ndarray] = field(default_factory=dict)  # crop position → Grad-CAM overlay

    @property
    def height(self) -> int:
        """The face box's height in the video's pixels."""
        return self.box[2] - self.box[0]

    def as_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "label": self.label,
            "confidence": self.confidence,
            "p_fake": self.p_fake,
            "frames_seen": len(self.frame_scores),
            "box": list(self.box),
            "frame_scores": self.frame_scores,
        }


def video_p_fake(face_p_fakes: Sequence[float]) -> float:
    """The probability that a video holds a manipulated face, from its faces' calibrated p_fake:
    the mean of the faces' odds, as a probability.

    That is the posterior, from even odds, when a fake video has one manipulated face among its
    k (any of them alike) and the faces' scores are independent given what each face is: the
    likelihood ratio of "face i is the fake" is face i's odds (the calibration is class-balanced),
    and the video's is their mean. One face keeps its own probability. Taking the most suspicious
    face instead would call more real videos FAKE the more people they show, since each real face
    is another chance of a high score (measured in bench/multi_face.py)."""
    p = np.clip(np.asarray(face_p_fakes, dtype=np.float64), 1e-6, 1 - 1e-6)  # a face at 1.0 has infinite odds
    odds = float(np.mean(p / (1 - p)))
    return odds / (1 + odds)


@dataclass
class DetectionResult:
    """The video's verdict. `p_fake` combines every judged face's (`video_p_fake`); the deciding
    face is the one most likely FAKE, and `frame_scores` and `faces` are its own. `tracks` has
    every face judged."""

    label: str  # REAL, FAKE or NO_FACE
    confidence: float | None  # percent, for the label given
    p_fake: float | None
    frames: int  # frames sampled
    faces: int  # frames in which the deciding face was judged
    video: VideoInfo
    span_s: tuple[float, float]  # the part of the video the frames were sampled from, in seconds
    seconds: dict[str, float]
    tracks: list[TrackResult] = field(default_factory=list)
    deciding_track: int | None = None
    # what makes this verdict say less than the validation figures suggest: {code, message} each
    caveats: list[dict] = field(default_factory=list)
    # where faces were searched for alone, when the video shows its picture over a blurred copy
    # of itself (`layout.picture_region`); None when the whole frame was searched
    picture: Region | None = None
    # where the verdict comes from a closer look (`_closer_part`): the first look's part in
    # seconds, its frames, and in how many the main face was found; else None
    closer_look: dict | None = None
    # faces seen in enough frames to judge beyond the `max_faces` judged
    faces_not_judged: int = 0
    # how far the picture was turned, counter-clockwise as shown, for its faces to be found upright
    # (`_turned_where_faces_show_better`: a video stored on its side or upside down whose header does not say so)
    picture_turned_deg: int = 0

    @property
    def decisive(self) -> TrackResult | None:
        return next((t for t in self.tracks if t.track_id == self.deciding_track), None)

    @property
    def frame_scores(self) -> list[dict]:
        return self.decisive.frame_scores if self.decisive else []

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "p_fake": self.p_fake,
            "frames": self.frames,
            "faces": self.faces,
            "video": self.video.as_dict(),
            "span_s": [round(t, 3) for t in self.span_s],
            "seconds": self.seconds,
            "frame_scores": self.frame_scores,
            "deciding_track": self.deciding_track,
            "face_tracks": [t.as_dict() for t in self.tracks],
            "caveats": self.caveats,
            "picture": list(self.picture) if self.picture else None,
            "closer_look": self.closer_look,
            "faces_not_judged": self.faces_not_judged,
            "picture_turned_deg": self.picture_turned_deg,
        }


def describe_turn(degrees: int) -> str:
    """A turn of the picture (`DetectionResult.picture_turned_deg`: 90, 180 or 270, counter-clockwise) in words."""
    return {90: "a quarter turn counter-clockwise", 180: "half a turn", 270: "a quarter turn clockwise"}[degrees % 360]


def validate_sequence_length(value: int) -> int:
    if not MIN_SEQUENCE <= value <= MAX_SEQUENCE:
        raise ValueError(f"sequence_length must be between {MIN_SEQUENCE} and {MAX_SEQUENCE}")
    return value


class Detector:
    """Loads the network once; `detect` is safe to call from several threads."""

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, device: str | None = None):
        self.weights = Path(weights)
        self.device = pick_device(device)
        cores = available_cores()
        if self.device.type == "cpu":
            torch.set_num_threads(cores)
        model, self.metadata = read_checkpoint(self.weights)
        self.model: ClipModel = model.to(self.device)
        self.config = self.model.config
        self.version = hashlib.sha256(self.weights.read_bytes()).hexdigest()[:12]
        # how the model did on people it never saw, where its checkpoint states it
        self.validation: dict | None = self.metadata.get("validation")
        self._lock = threading.Lock()
        # looks for damage in the file (`check_damage`) while the analysis goes on
        self._damage_check = ThreadPoolExecutor(1, thread_name_prefix="damage-check", initializer=_yield_the_cores)
        # searches frames for faces side by side, a core each (dlib's HOG runs on one)
        self._face_search = ThreadPoolExecutor(cores, thread_name_prefix="face-search") if cores > 1 else None

    @property
    def name(self) -> str:
        return self.weights.name

    @property
    def upright_from(self) -> float:
        """How far a face leans before it is turned upright for this model: as its training crops were cut."""
        return float(self.config.extra.get("upright_from_degrees", UPRIGHT_FROM_DEGREES))

    def describe(self) -> dict:
        """Which model gives the verdicts: file, content hash, architecture, calibration and
        validation (None when the checkpoint states none)."""
        return {
            "name": self.name,
            "version": self.version,
            "encoder": self.config.encoder,
            "temporal": self.config.temporal,
            "members": self.config.members,
            "threshold": self.config.threshold,
            "temperature": self.config.temperature,
            "device": self.device.type,
            "validation": self.validation,
        }

    def calibrated_p_fake(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature-scaled probability of FAKE (class 0), from logits (..., 2)."""
        margin = (logits[..., 0] - logits[..., 1]).float() / self.config.temperature
        return torch.sigmoid(margin + float(self.config.extra.get("logit_bias", 0.0)))

    def _precision(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()

    @torch.no_grad()
    def encode(self, crops: np.ndarray) -> torch.Tensor:
        """Encoder features (T, C) of a sequence of RGB face crops (T, H, W, 3)."""
        with self._precision():
            features, _ = self.model.frame_features(to_input(crops, self.config, self.device))
        return features.float()

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> tuple[float, np.ndarray]:
        """Calibrated p_fake of a sequence from its encoder features (T, C), and per frame."""
        with self._precision():
            video_logits, frame_logits = self.model.temporal(features[None])
        return float(self.calibrated_p_fake(video_logits)[0]), self.calibrated_p_fake(frame_logits)[0].cpu().numpy()

    def score_crops(self, crops: np.ndarray) -> tuple[float, np.ndarray]:
        """Calibrated p_fake for a sequence of face crops, and per frame."""
        return self.score_features(self.encode(crops))

    def detect(
        self,
        path: str | Path,
        sequence_length: int | None = None,
        max_faces: int = DEFAULT_MAX_FACES,
        explain: bool = False,
        progress: Progress | None = None,
        part: TimeRange = TimeRange(),
    ) -> DetectionResult:
        """Judge one video, or a `part` of it: up to `max_faces` faces, each on its own. `explain`
        adds Grad-CAM heatmaps for each face's most suspicious frames; `progress(stage, percent)`
        hears how far the analysis is. Where the main face is found in only a few of the frames,
        all within a short stretch of the part, the frames are taken again over that stretch, and
        the verdict comes from them (`_closer_part`; the stage "looking_closer"). Analyses run one
        at a time (2 cores are not shared well); the wait is reported as `seconds["queue"]`."""
        count = validate_sequence_length(sequence_length or self.config.sequence_length)
        progress = progress or (lambda stage, percent: None)
        arrived = time.perf_counter()
        with self._lock:
            started = time.perf_counter()
            seconds = {"queue": started - arrived}
            analyse = partial(self._analyse, path, count, max_faces, explain, seconds=seconds, started=started)
            first = analyse(progress, part, look_closer=True)
            if isinstance(first, DetectionResult):
                return first
            seconds["first_look"] = time.perf_counter() - started
            closer = analyse(_closer_progress(progress), first.part, seconds=dict(seconds))
            if closer.label != "NO_FACE":
                return _with_closer_look(closer, first)
            # not found there again: judged where it was first found, on the first look's frames
            with self._checking_for_damage(path, first.found.sampled, started) as damage_found:
                return self._conclude(first.found, explain, _closer_progress(progress), damage_found, seconds, started)

    def _analyse(
        self,
        path: str | Path,
        count: int,
        max_faces: int,
        explain: bool,
        progress: Progress,
        part: TimeRange,
        seconds: dict[str, float],
        started: float,
        look_closer: bool = False,
    ) -> DetectionResult | _CloserLook:
        """`detect`'s analysis of the `part`, timed from when it `started`; where it may
        `look_closer` and should (`_closer_part`), the part to look at again instead of a verdict."""
        start = time.perf_counter()
        progress("decoding", 0)
        sampled = read_frames(path, count, progress=_stage(progress, "decoding"), part=part)
        seconds["decode"] = time.perf_counter() - start
        with self._checking_for_damage(path, sampled, started) as damage_found:
            found = self._find_faces(sampled, max_faces, progress, seconds)
            if look_closer and found.faces and (closer := _closer_part(found)):
                return closer  # the check for damage in these frames is abandoned
            return self._conclude(found, explain, progress, damage_found, seconds, started)

    def _find_faces(self, sampled: SampledFrames, max_faces: int, progress: Progress, seconds: dict[str, float]) -> _Found:
        """The faces in the frames to judge: up to `max_faces`, the most often seen first."""
        mark = time.perf_counter()
        finding = _stage(progress, "finding_faces")
        finding(0.0)  # before the picture's region and the choice of search, which find no face yet
        picture = picture_region(sampled.frames)
        follow = partial(follow_faces, progress=finding, several_faces=max_faces > 1, pool=self._face_search)
        searches: dict[int, Searches] = {}  # HOG's searches of the frames as read, asked again for a turn
        followed = follow(sampled.frames, picture=picture, searches=searches)
        sampled, followed, turns = _turned_where_faces_show_better(sampled, followed, picture, follow, searches, self._face_search)
        # The most often seen face is always judged; others need enough frames to say anything.
        minimum = max(2, MIN_TRACK_SHARE * len(sampled.frames))
        judgeable = followed[:1] + [t for t in followed[1:] if len(t.boxes) >= minimum]
        faces = crop_tracks(sampled.frames, judgeable[:max_faces], self.config.image_size, self.upright_from)
        seconds["faces"] = time.perf_counter() - mark
        return _Found(sampled, picture, faces, len(judgeable) - len(faces), turns)

    def _conclude(
        self,
        found: _Found,
        explain: bool,
        progress: Progress,
        damage_found: Callable[[Callable[[], None]], Damage],
        seconds: dict[str, float],
        started: float,
    ) -> DetectionResult:
        """The verdict on the faces `found`, with what the check for damage (`_checking_for_damage`)
        `damage_found` in their frames: a face is judged again without the frames that may show
        damage patched over (`Damage.examined_spoiled`), where it has others."""
        sampled, faces, frames = found.sampled, found.faces, len(found.sampled.frames)
        if not faces:
            damaged = damage_found(lambda: _stage(progress, "finding_faces")(1.0)).pictures
            notes = [note for note in (_cut_short_caveat(sampled.info, verdict=False), _damaged_caveat(damaged, verdict=False)) if note]
            seconds["total"] = time.perf_counter() - started
            return DetectionResult(
                "NO_FACE", None, None, frames, 0, sampled.info, sampled.span_s, _rounded(seconds), caveats=notes, picture=found.picture
            )

        mark = time.perf_counter()
        report = _stage(progress, "scoring")
        tracks = []
        for number, face in enumerate(faces, 1):
            tracks.append(self._judge(number, face, found, explain))
            report(number / len(faces))
        seconds["model"] = time.perf_counter() - mark
        damage = damage_found(lambda: report(1.0))
        damaged = damage.pictures
        faces = [_without_frames(face, damage.examined_spoiled) for face in faces]
        tracks = [
            track if len(face.crops) == len(track.crops) else self._judge(number, face, found, explain)
            for number, (face, track) in enumerate(zip(faces, tracks), 1)
        ]
        seconds["total"] = time.perf_counter() - started

        deciding = max(tracks, key=lambda t: t.p_fake)
        deciding_face = faces[tracks.index(deciding)]
        if len(tracks) == 1:  # its own verdict as it stands: its confidence was taken before p_fake was rounded
            label, confidence, p_fake = deciding.label, deciding.confidence, deciding.p_fake
        else:
            p_fake = video_p_fake([t.p_fake for t in tracks])
            label, confidence = self._verdict(p_fake)
        return DetectionResult(
            label,
            confidence,
            round(p_fake, 4),
            frames,
            len(deciding.crops),
            sampled.info,
            sampled.span_s,
            _rounded(seconds),
            tracks,
            deciding.track_id,
            self._caveats(label, confidence, tracks, sampled, faces, deciding_face, damaged, found.not_judged),
            found.picture,
            faces_not_judged=found.not_judged,
            picture_turned_deg=90 * found.turns,
        )

    @contextlib.contextmanager
    def _checking_for_damage(
        self, path: str | Path, sampled: SampledFrames, started: float
    ) -> Iterator[Callable[[Callable[[], None]], Damage]]:
        """`check_damage` runs beside the block, on what it leaves of the cores, the frames
        examined first. The callable yielded waits for the look at those, whose damage may move the
        verdict, for `EXAMINED_WAIT_SHARE` of the time since the analysis `started` at most
        (`EXAMINED_WAIT_SHARE_DAMAGED` once it has found a damaged picture), calling its argument
        now and then (a progress report, which raises where the analysis is to stop); stops the
        look over the whole part judged as far as it got; and says what it found, or what the
        reading found where more: frames that did not decode at all (`SampledFrames.undecoded`)."""
        stop, abandon, damage_seen = threading.Event(), threading.Event(), threading.Event()
        # the stream the frames were read from, as the sampling chose it: not sought again
        examined_s = [sampled.timeline.time_s(index) for index in sampled.indices]
        check = partial(check_damage, path, sampled.span_s, stop, sampled.stream, examined_s, abandon, damage_seen)
        future = self._damage_check.submit(check)

        def found(waiting: Callable[[], None]) -> Damage:
            stop.set()
            now = time.perf_counter()
            so_far = now - started
            until = {False: now + EXAMINED_WAIT_SHARE * so_far, True: now + EXAMINED_WAIT_SHARE_DAMAGED * so_far}
            while not wait([future], timeout=WAITING_REPORT_S).done:
                if time.perf_counter() > until[damage_seen.is_set()]:
                    abandon.set()  # what it found so far stands
                waiting()
            try:
                damage = future.result()
            except Exception:  # a check beside the analysis: its failure costs the caveat, not the verdict
                log.exception("the check for damage in %s failed", path)
                damage = Damage(0)
            return damage._replace(pictures=max(damage.pictures, sampled.undecoded))

        try:
            yield found
        finally:
            abandon.set()

    def _caveats(
        self,
        label: str,
        confidence: float,
        tracks: list[TrackResult],
        sampled: SampledFrames,
        faces: list[FaceCrops],
        deciding_face: FaceCrops,
        damaged: int,
        not_judged: int,
    ) -> list[dict]:
        """What makes this verdict say less than the validation's headline figures suggest."""
        caveats = (
            _faces_not_judged_caveat(len(tracks), not_judged),
            self._uncertain_caveat(confidence),
            self._small_face_caveat(label, tracks),
            self._gif_caveat(label, sampled),
            self._black_and_white_caveat(label, tracks),
            self._toned_caveat(label, tracks),
            self._dim_caveat(label, tracks),
            self._grainy_caveat(label, tracks, sampled),
            self._glasses_caveat(label, deciding_face, sampled, tracks),
            _caption_caveat(faces, sampled, tracks),
            _few_frames_caveat(tracks, len(sampled.frames)),
            _sparse_caveat(sampled),
            _cut_short_caveat(sampled.info),
            _damaged_caveat(damaged),
        )
        return [c for c in caveats if c]

    def _uncertain_caveat(self, confidence: float) -> dict | None:
        """A verdict as confident as verdicts that were right no more surely than a coin toss
        (`undecided_band`)."""
        band = undecided_band(self.validation, confidence)
        if band is None:
            return None
        low, high = band["confidence"]
        return {
            "code": "uncertain",
            "message": (
                f"On people it had not seen, verdicts as confident as this one ({low:.0%}–{high:.0%}) were right "
                f"in {band['right']} of {band['judged']} cases, not measurably more often than a coin toss: "
                "treat this verdict as undecided."
            ),
        }

    def _small_face_caveat(self, label: str, tracks: list[TrackResult]) -> dict | None:
        """A REAL verdict on a small face says less than usual: by how much, where the checkpoint's
        validation measured it."""
        smallest = min(tracks, key=lambda t: t.height)
        if label != "REAL" or smallest.height >= SMALL_FACE_PX:
            return None
        face = _named(smallest, tracks)
        why = f"{face} is only about {smallest.height} px tall in this video. On faces under {SMALL_FACE_PX} px the detector misses more fakes"
        return self._fakes_pass("small_face", why, SMALL_FACE_QUALITY, "re-encoded small (240p)")

    def _gif_caveat(self, label: str, sampled: SampledFrames) -> dict | None:
        """A REAL verdict on an animated GIF says less than usual, as on a small face."""
        if label != "REAL" or sampled.info.codec != "gif":
            return None
        why = "This video is an animated GIF, whose 256 dithered colours hide some of what gives fakes away"
        return self._fakes_pass("gif", why, GIF_QUALITY, "turned into animated GIFs")

    def _black_and_white_caveat(self, label: str, tracks: list[TrackResult]) -> dict | None:
        """A REAL verdict on black and white video says less than usual, as on an animated GIF."""
        if label != "REAL" or not all(colourless(t.crops) for t in tracks):
            return None
        why = "This video is in black and white, which hides some of what gives fakes away (a pasted face's colour)"
        return self._fakes_pass("black_and_white", why, BLACK_AND_WHITE_QUALITY, "turned black and white")

    def _toned_caveat(self, label: str, tracks: list[TrackResult]) -> dict | None:
        """A REAL verdict on video toned in a single colour says less than usual, as in black and white."""
        if label != "REAL" or not all(toned(t.crops) for t in tracks):
            return None
        why = (
            "This video is toned in a single colour (as sepia and night-vision filters tone it), which hides some of "
            "what gives fakes away (a pasted face's colour)"
        )
        return self._fakes_pass("toned", why, TONED_QUALITY, "toned sepia")

    def _dim_caveat(self, label: str, tracks: list[TrackResult]) -> dict | None:
        """A REAL verdict on a dimly lit face says less than usual, as in black and white."""
        if label != "REAL" or not all(dim(t.crops) for t in tracks):
            return None
        faces = "The faces are" if len(tracks) > 1 else "The face is"
        why = f"{faces} dimly lit in this video: shadow and the camera's noise hide some of what gives fakes away"
        return self._fakes_pass("dim", why, DIM_QUALITY, "darkened as if filmed in a dim room")

    def _grainy_caveat(self, label: str, tracks: list[TrackResult], sampled: SampledFrames) -> dict | None:
        """A REAL verdict on grainy faces, lit as in good light, says less than usual, as on dim
        ones. Grain on a dim face, and an animated GIF's dithering, which reads as grain, are the
        dim and the GIF caveats' to tell."""
        if label != "REAL" or sampled.info.codec == "gif":
            return None
        if not all(grainy(t.crops) and not dim(t.crops) for t in tracks):
            return None
        faces = "The faces are" if len(tracks) > 1 else "The face is"
        why = (
            f"{faces} grainy in this video, as a camera's gain makes faces in a dim room: the grain hides some of "
            "what gives fakes away"
        )
        return self._fakes_pass("grainy", why, GRAINY_QUALITY, "filmed in a dim room with the camera's gain up")

    def _glasses_caveat(self, label: str, face: FaceCrops, sampled: SampledFrames, tracks: list[TrackResult]) -> dict | None:
        """A FAKE verdict on a face that wears glasses says less than usual: real people wearing
        them were called FAKE far more often than others. Looked for only on a FAKE verdict, and on
        the face that decided it."""
        if label != "FAKE" or not wears_glasses(sampled.frames, face.track, self.upright_from):
            return None
        who = _named(max(tracks, key=lambda t: t.p_fake), tracks, alone="The person")
        return {
            "code": "glasses",
            "message": (
                f"{who} appears to wear glasses. Real people wearing glasses were called FAKE far more often than "
                "others (its training data shows almost none), so a FAKE verdict says less than usual."
            ),
        }

    def _fakes_pass(self, code: str, why: str, quality: str, videos: str) -> dict:
        """A caveat on a REAL verdict where more fakes pass: `why`, and how many fakes the
        validation caught at `quality` (`videos` says what it did to them)."""
        return {"code": code, "message": f"{why}, so a REAL verdict says less than usual{self._fakes_caught(quality, videos)}."}

    def _fakes_caught(self, quality: str, videos: str) -> str:
        """How many fakes the validation caught at `quality` against as published, where the
        checkpoint states both, as the end of a caveat's sentence; else nothing."""
        validation = self.validation or {}
        other = validation.get("other_qualities", {}).get(quality)
        usual = validation.get("qualities", {}).get("orig")
        if not (other and usual):
            return ""
        return (
            f": on people it had not seen, it caught {other['recall_fake']:.0%} of the fakes in videos {videos}, "
            f"against {usual['recall_fake']:.0%} as published"
        )

    def _verdict(self, p_fake: float) -> tuple[str, float]:
        """The label for a calibrated p_fake, and its confidence in percent."""
        is_fake = p_fake >= self.config.threshold
        return ("FAKE" if is_fake else "REAL"), round(100.0 * (p_fake if is_fake else 1.0 - p_fake), 1)

    def _judge(self, track_id: int, face: FaceCrops, found: _Found, explain: bool) -> TrackResult:
        sampled = found.sampled
        features = self.encode(face.crops)
        p_fake, per_frame = self.score_features(features)
        frame_scores = [
            {"index": index, "time_s": round(sampled.timeline.time_s(index), 3), "p_fake": round(float(p), 4), "turned_deg": round(turned, 1)}
            for index, p, turned in zip((sampled.indices[pos] for pos in face.track.frame_positions), per_frame, face.turned)
        ]
        heatmaps = {}
        if explain:
            suspicious = [int(p) for p in np.argsort(-per_frame, kind="stable")[:HEATMAP_FRAMES]]
            clip = to_input(face.crops[None], self.config, self.device)
            heat = grad_cam(self.model, clip, suspicious, features)
            heatmaps = {p: overlay_heatmap(face.crops[p], h) for p, h in zip(suspicious, heat)}
        median = turn_box(tuple(np.median(np.array(face.track.boxes), axis=0)), sampled.frames[0].shape, -found.turns)
        box = tuple(int(v / sampled.scale) for v in median)  # in the video's pixels, as it is stored
        return TrackResult(
            track_id,
            *self._verdict(p_fake),
            round(p_fake, 4),
            box,
            frame_scores,
            face.crops,
            heatmaps,
        )


def _caption_caveat(faces: list[FaceCrops], sampled: SampledFrames, tracks: list[TrackResult]) -> dict | None:
    """Text burnt in across a judged face (`text_across_face`): a caption across the chin turned
    verdicts both ways (model card, "Captions across the face")."""
    covered = [t.track_id for f, t in zip(faces, tracks) if text_across_face(sampled.frames, f.track)]
    if not covered:
        return None
    if len(tracks) == 1:
        where = "the face"
    else:
        where = f"face {covered[0]}" if len(covered) == 1 else f"faces {', '.join(map(str, covered[:-1]))} and {covered[-1]}"
    return {
        "code": "caption",
        "message": (
            f"Text is burnt into the video across {where} (a caption, or a watermark with words). In tests a caption "
            "across the chin turned up to one verdict in five, both ways, so this verdict says less than usual; a part "
            "of the video without the text, where there is one, says more."
        ),
    }


def _named(track: TrackResult, tracks: list[TrackResult], alone: str = "The face") -> str:
    """How a caveat names a face: by its number where several were judged."""
    return f"Face {track.track_id}" if len(tracks) > 1 else alone


def _faces_not_judged_caveat(judged: int, left: int) -> dict | None:
    """More faces seen often enough to judge than were judged (`max_faces`): `left` more."""
    if not left:
        return None
    most_seen = "the one seen most often was judged" if judged == 1 else f"the {judged} seen most often were judged"
    others = "the other was not: were it manipulated, it" if left == 1 else f"the other {left} were not: a manipulated face among them"
    return {
        "code": "faces_not_judged",
        "message": f"{judged + left} faces were found in enough of the frames to judge; {most_seen}, and {others} would not show in this verdict.",
    }


def _few_frames_caveat(tracks: list[TrackResult], frames: int) -> dict | None:
    """A judged face found in only a few of the frames (the main face is judged however few)."""
    rarest = min(tracks, key=lambda t: len(t.frame_scores))
    seen = len(rarest.frame_scores)
    if seen > FEW_FRAMES:
        return None
    face = _named(rarest, tracks)
    return {
        "code": "few_frames",
        "message": (
            f"{face} was found in only {seen} of the {frames} frames examined. Judged on {FEW_FRAMES} or fewer frames "
            "of a face, the detector told fakes from real videos less well than on 20 frames across the video, "
            "so this verdict says less than usual."
        ),
    }


class _Found(NamedTuple):
    """The frames read of a part, where faces were searched for (`picture`, in the frames as
    read), the faces to judge, the most often seen first, how many more could have been judged,
    and the quarter turns (`best_turn`) the frames and faces were turned by."""

    sampled: SampledFrames
    picture: Region | None
    faces: list[FaceCrops]
    not_judged: int
    turns: int = 0


class _CloserLook(NamedTuple):
    """A first look whose main face was found in `seen` of its `frames` alone, all within `part`;
    what it `found`, judged where a closer look finds no face."""

    part: TimeRange
    span_s: tuple[float, float]  # the first look's part, in seconds
    frames: int
    seen: int
    found: _Found


def _turned_where_faces_show_better(
    sampled: SampledFrames,
    followed: list[FaceTrack],
    picture: Region | None,
    follow: Callable[..., list[FaceTrack]],
    searches: dict[int, Searches] | None = None,
    pool: Executor | None = None,
) -> tuple[SampledFrames, list[FaceTrack], int]:
    """The frames and the faces `follow`ed in them, turned (by how many quarters: `best_turn`)
    where that shows a face HOG is surer of, and turned the main face is seen in as many frames
    or more: a video stored on its side or upside down whose file does not say so is judged upright,
    as a player told how it lies would show it. The turns are tried where the main face is seen in
    under TURN_CHECK_SHARE of the frames, or HOG is not as sure of a face in them as it may be of
    one turned (TURNED_FACE_MAX_SCORE: it finds faces upside down in any number of frames).
    `searches` holds those that found the faces `followed` (`follow_faces`'); the `pool`'s threads
    search the frames turned where there is one."""
    seen = len(followed[0].boxes) if followed else 0
    few = seen < TURN_CHECK_SHARE * len(sampled.frames)
    turns = best_turn(sampled.frames, picture, unless_sure_of=math.inf if few else TURNED_FACE_MAX_SCORE, searches=searches, pool=pool)
    if not turns:
        return sampled, followed, 0
    turned = replace(sampled, frames=turned_frames(sampled.frames, turns))
    turned_followed = follow(turned.frames, picture=picture and turn_box(picture, sampled.frames[0].shape, turns))
    if not turned_followed or len(turned_followed[0].boxes) < seen:
        return sampled, followed, 0
    return turned, turned_followed, turns


def _closer_part(found: _Found) -> _CloserLook | None:
    """Where the main face is found in `FEW_FRAMES` of the frames or fewer, the stretch they lie
    in, from the frame examined before the first to the one after the last (or the part's ends),
    where it is no longer than `CLOSER_LOOK_MAX_SHARE` of the part examined; else None."""
    sampled = found.sampled
    positions = found.faces[0].track.frame_positions
    if len(positions) > FEW_FRAMES:
        return None
    start_s, end_s = sampled.span_s
    times = [sampled.timeline.time_s(index) for index in sampled.indices]
    first, last = min(positions), max(positions)
    stretch = (times[first - 1] if first > 0 else start_s, times[last + 1] if last + 1 < len(times) else end_s)
    if stretch[1] - stretch[0] > CLOSER_LOOK_MAX_SHARE * (end_s - start_s):
        return None
    return _CloserLook(TimeRange(*stretch), sampled.span_s, len(sampled.frames), len(positions), found)


def _closer_progress(progress: Progress) -> Progress:
    """A closer look's progress: its reading and its search for faces as one stage, held where the
    first look's search ended; then its scoring."""
    held = STAGE_SPANS["finding_faces"][1]
    return lambda stage, percent: progress(stage, percent) if stage == "scoring" else progress("looking_closer", held)


def _with_closer_look(result: DetectionResult, first: _CloserLook) -> DetectionResult:
    """The verdict of a closer look (`_closer_part`), saying where it looked and why."""
    (start_s, end_s), (looked_from, looked_to) = first.span_s, result.span_s
    caveat = {
        "code": "closer_look",
        "message": (
            f"The face was found in only {first.seen} of the {first.frames} frames examined from {format_time(start_s)} "
            f"to {format_time(end_s)}, between {format_time(looked_from)} and {format_time(looked_to)}: the verdict "
            f"comes from {result.frames} frames spread over that part alone."
        ),
    }
    look = {"span_s": [round(t, 3) for t in first.span_s], "frames": first.frames, "seen": first.seen}
    return replace(result, caveats=[caveat, *result.caveats], closer_look=look)


def _sparse_caveat(sampled: SampledFrames) -> dict | None:
    """Frames so far apart in a long video that a manipulated stretch may lie between them."""
    start, end = sampled.span_s
    apart = (end - start) / len(sampled.frames)
    if apart <= SPARSE_FRAMES_S:
        return None
    return {
        "code": "sparse_frames",
        "message": (
            f"The frames examined lie about {apart:.0f} s apart: a manipulated stretch shorter than that may fall "
            "between them. To look closer, examine the part you doubt, or more frames."
        ),
    }


def _cut_short_caveat(info: VideoInfo, verdict: bool = True) -> dict | None:
    """A file that ends before the video does (`VideoInfo.cut_short`): before the length its
    header states, within a frame's data, or in zeros. What is missing was not examined."""
    if not info.cut_short:
        return None
    if info.stated_duration_s is not None:
        ends = f"its header gives the video a length of {format_time(info.stated_duration_s)}, but its data stops at "
    elif info.ends_in_zeros:
        ends = "zeros take the place of its data from "
    else:
        ends = "its data stops in the middle of a frame, at "
    examined = "Only that part was examined" if verdict else "Only that part was searched for faces"
    return {
        "code": "cut_short",
        "message": (
            f"The file ends early: {ends}{format_time(info.duration_s)}, as an unfinished download or copy leaves a "
            f"file. {examined}; a complete copy, where there is one, shows the rest."
        ),
    }


def _yield_the_cores() -> None:
    """In a worker thread: the lowest priority (Linux sets it a thread at a time), so that it
    takes only what the analysis leaves of the cores."""
    with contextlib.suppress(AttributeError, OSError):  # no such call, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _without_frames(face: FaceCrops, positions: frozenset[int]) -> FaceCrops:
    """`face` without its crops from the sampled frames at `positions`, where it keeps others."""
    kept = [at for at, position in enumerate(face.track.frame_positions) if position not in positions]
    if not kept or len(kept) == len(face.crops):
        return face
    track = FaceTrack([face.track.frame_positions[at] for at in kept], [face.track.boxes[at] for at in kept])
    return FaceCrops(track, face.crops[kept], [face.turned[at] for at in kept])


def _damaged_caveat(damaged: int, verdict: bool = True) -> dict | None:
    """A video whose file is damaged (`check_damage`): damage moved verdicts both ways
    (model card, "Damaged files"), and may leave no face to judge at all."""
    if not damaged:
        return None
    pictures = "1 picture" if damaged == 1 else f"{damaged} pictures"
    what = (
        "Damage like this turned verdicts both ways, REAL to FAKE more often, so this verdict says less than usual; "
        "an intact copy of the video, where there is one, says more."
        if verdict
        else "That may be why no face was found: an intact copy of the video, where there is one, may show a face this one hides."
    )
    return {
        "code": "damaged",
        "message": (
            f"The file is damaged: {pictures} of the video did not decode cleanly (a player patches over such "
            f"broken data, or skips it, unseen). {what}"
        ),
    }


def undecided_band(validation: dict | None, confidence: float) -> dict | None:
    """The band of confidence that a verdict of `confidence` (%) lies in where, on people the
    recipe never saw, such verdicts were right no more surely than a coin toss (the interval of
    their share right reaches 50%: `validation`'s reliability, a checkpoint's); None elsewhere,
    and where nothing was measured."""
    bands = (validation or {}).get("reliability", {}).get("bands", [])
    share = confidence / 100
    band = next((b for b in reversed(bands) if b["confidence"][0] <= share), None)
    if band is None or not band["judged"] or band["share_right_ci95"][0] > 0.5:
        return None
    return band


# Where each stage's progress lies on the 0–100 scale (measured shares of a 720p analysis).
STAGE_SPANS = {"decoding": (0, 45), "finding_faces": (45, 85), "scoring": (85, 100)}


def _stage(progress: Progress, stage: str) -> Callable[[float], None]:
    """A stage's progress on the whole scale. It never goes back: where the reading starts
    again (a header that counted wrong, a damaged stretch), it holds until the new pass passes it."""
    low, high = STAGE_SPANS[stage]
    reached = low

    def report(fraction: float) -> None:
        nonlocal reached
        reached = max(reached, int(low + (high - low) * min(max(fraction, 0.0), 1.0)))
        progress(stage, reached)

    return report


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in seconds.items()}
