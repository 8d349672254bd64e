from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import (  # noqa: E402
    VARIABLE_RATE_TIMES_S,
    blank_frames,
    face_frames,
    iter_face_frames,
    stamp_number,
    write_flat_h264,
    write_h264,
    write_mp4v,
    write_sound,
    write_video,
)

from app import create_app  # noqa: E402
from model.network import DeepfakeNet, EnsembleNet, NetworkConfig, save_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    faces = face_frames()
    files = {
        "face_h264": write_h264(folder / "face.mp4", faces),
        "face_mp4v": write_mp4v(folder / "face_mp4v.mp4", faces),
        "no_face": write_h264(folder / "no_face.mp4", blank_frames()),
    }
    whole = files["face_h264"].read_bytes()
    files["truncated"] = folder / "truncated.mp4"
    files["truncated"].write_bytes(whole[: len(whole) // 3])
    files["not_video"] = folder / "notes.mp4"
    files["not_video"].write_text("These are plain notes, not a video.\n" * 50)
    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["sound_only"] = write_sound(folder / "voice_memo.m4a")
    files["song"] = write_sound(folder / "song.mp3", cover=faces[0])  # a face on its cover, not a video of one
    files["huge_frames"] = write_flat_h264(folder / "huge.mp4", (8448, 8192))  # over 8192 × 8192 pixels
    return files


@pytest.fixture(scope="session")
def two_minutes(tmp_path_factory) -> Path:
    """The astronaut clip at one frame a second for two minutes, her face moving back and forth
    every 20 s: frames 12 s apart find it in one place or another, 60 px apart."""
    return write_h264(tmp_path_factory.mktemp("long") / "long.mp4", iter_face_frames(120, (640, 360), period=20), fps=1)


@pytest.fixture(scope="session")
def variable_rate(tmp_path_factory) -> Path:
    """The astronaut clip at a frame rate that varies (VARIABLE_RATE_TIMES_S), each frame's
    number stamped on it (read_stamp)."""
    count = len(VARIABLE_RATE_TIMES_S)
    frames = (stamp_number(frame, i) for i, frame in enumerate(iter_face_frames(count, (640, 360))))
    return write_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4", frames, "libx264", fps=30, times_s=VARIABLE_RATE_TIMES_S)


def _stamped_clip(path: Path, codec: str, options: dict | None = None) -> Path:
    """300 frames of the astronaut clip, each frame's number modulo 256 stamped on it (read_stamp)."""
    frames = (stamp_number(frame, i % 256) for i, frame in enumerate(iter_face_frames(300, (320, 180))))
    return write_video(path, frames, codec, options=options)


@pytest.fixture(scope="session")
def transport_stream(tmp_path_factory) -> Path:
    """The astronaut clip as an H.264 MPEG transport stream (as broadcasts, camcorders' .mts and
    saved live streams are: no index) of 300 frames, 10 a second, each frame's number modulo 256
    stamped on it; x264's defaults give it B-frames and a key frame at 0 and at 250."""
    return _stamped_clip(tmp_path_factory.mktemp("ts") / "broadcast.ts", "libx264")


@pytest.fixture(scope="session")
def interlaced_transport_stream(tmp_path_factory) -> Path:
    """The same, interlaced (as television broadcasts and 1080i camcorders record): read by PyAV."""
    return _stamped_clip(tmp_path_factory.mktemp("ts") / "broadcast-1080i.ts", "libx264", {"x264-params": "interlaced=1:tff=1"})


@pytest.fixture(scope="session")
def program_stream(tmp_path_factory) -> Path:
    """The same 300 stamped frames as MPEG-2 video in an MPEG program stream (as .mpg files and
    DVDs' .vob are: no index), a key frame every 12 frames."""
    return _stamped_clip(tmp_path_factory.mktemp("ps") / "disc.mpg", "mpeg2video")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A small randomly initialised checkpoint: exercises the plumbing, says nothing about faces."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(DeepfakeNet(NetworkConfig(encoder="mobilenet_v2", hidden_size=16)), path)
    return path


@pytest.fixture(scope="session")
def tiny_ensemble_weights(tmp_path_factory) -> Path:
    """Two small randomly initialised networks as one ensemble checkpoint."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "tiny-ensemble.pt"
    save_checkpoint(EnsembleNet.of([DeepfakeNet(NetworkConfig(hidden_size=16)) for _ in range(2)]), path)
    return path


@pytest.fixture
def upload_dir(tmp_path) -> Path:
    folder = tmp_path / "uploads"
    yield folder
    assert list(folder.iterdir()) == [], "uploads must be deleted after processing"


class ProgressUntilStopped:
    """An analysis that reports progress every 10 ms for up to `seconds`, then finishes with no
    face found; `stopped_by` is what its progress raised, where something did."""

    def __init__(self, seconds: float = 30.0):
        self.seconds = seconds
        self.started, self.ended = threading.Event(), threading.Event()
        self.stopped_by: BaseException | None = None
        self.runs = 0

    def __call__(self, job, progress):
        self.runs += 1
        self.started.set()
        try:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                progress("finding_faces", 50)
                time.sleep(0.01)
        except BaseException as error:
            self.stopped_by = error
            raise
        finally:
            self.ended.set()
        return {"id": job.id, "face_tracks": [], "frame_scores": [], "label": "NO_FACE"}, {}


def app_config(weights: Path, folder: Path, **extra) -> dict:
    """Test settings: uploads and the job database under `folder`."""
    return {
        "TESTING": True,
        "WEIGHTS": str(weights),
        "UPLOAD_FOLDER": str(folder / "uploads"),
        "JOBS_DB": str(folder / "jobs.sqlite3"),
        "MAX_CONTENT_LENGTH": 5 * 2**20,
        **extra,
    }


@pytest.fixture
def app(tiny_weights, upload_dir):
    return create_app(app_config(tiny_weights, upload_dir.parent))


@pytest.fixture
def client(app):
    return app.test_client()
