"""Flask web app: upload a video, get REAL / FAKE with a confidence (page and JSON API)."""
from __future__ import annotations

import base64
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from flask import Blueprint, Flask, current_app, jsonify, render_template, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import secure_filename

from model.detector import DEFAULT_WEIGHTS, MAX_SEQUENCE, MIN_SEQUENCE, DetectionResult, Detector
from model.video import VideoError

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent

bp = Blueprint("detect", __name__)


class UploadError(Exception):
    """A request we refuse, with an HTTP status, a machine code and a human message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def get_detector() -> Detector:
    """The app's detector, loaded once on first use; UploadError(503) when no weights are installed."""
    detector = current_app.extensions.get("detector")
    if detector is None:
        weights = Path(current_app.config["WEIGHTS"])
        if not weights.is_file():
            raise UploadError(503, "no_model", f"No model is installed: put a trained checkpoint at {weights.name} in weights/.")
        detector = Detector(weights, current_app.config["DEVICE"])
        current_app.extensions["detector"] = detector
    return detector


def _sequence_length(form: dict) -> int | None:
    raw = (form.get("sequence_length") or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not MIN_SEQUENCE <= value <= MAX_SEQUENCE:
        raise UploadError(400, "bad_sequence_length", f"sequence_length must be a whole number from {MIN_SEQUENCE} to {MAX_SEQUENCE}.")
    return value


def _save_upload(upload: FileStorage | None) -> Path:
    if upload is None or not upload.filename:
        raise UploadError(400, "no_file", "Choose a video file to upload (form field 'video').")
    name = secure_filename(upload.filename) or "video"
    path = Path(current_app.config["UPLOAD_FOLDER"]) / f"{uuid.uuid4().hex}_{name}"
    upload.save(path)
    if path.stat().st_size == 0:
        path.unlink()
        raise UploadError(400, "empty_file", "The uploaded file is empty.")
    return path


def run_detection() -> tuple[DetectionResult, str]:
    """Save the upload, judge it, and always delete it; returns the result and the original file name."""
    detector = get_detector()
    sequence_length = _sequence_length(request.form)
    upload = request.files.get("video")
    path = None
    try:
        path = _save_upload(upload)
        try:
            return detector.detect(path, sequence_length), upload.filename
        except VideoError as error:
            raise UploadError(415, "not_a_video", f"{error} Upload a video file (MP4, MOV, AVI, MKV or WebM).") from error
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def _data_url(crop: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


@bp.get("/")
def index():
    weights = Path(current_app.config["WEIGHTS"])
    return render_template("index.html", model_installed=weights.is_file(), max_mb=current_app.config["MAX_CONTENT_LENGTH"] // 2**20)


@bp.post("/detect")
def detect_page():
    result, filename = run_detection()
    crops = [_data_url(c) for c in result.crops] if result.crops is not None else []
    detector = get_detector()
    return render_template("result.html", result=result, filename=filename, crops=crops, model=detector.name, threshold=detector.config.threshold)


@bp.post("/api/v1/detect")
def detect_api():
    result, filename = run_detection()
    return jsonify({"filename": filename, "model": get_detector().name, **result.as_dict()})


@bp.get("/healthz")
def healthz():
    installed = Path(current_app.config["WEIGHTS"]).is_file()
    return jsonify({"status": "ok", "model_installed": installed}), 200


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_response(status: int, code: str, message: str):
    if _wants_json():
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("error.html", status=status, message=message), status


def _register_errors(app: Flask) -> None:
    @app.errorhandler(UploadError)
    def upload_error(error: UploadError):
        return _error_response(error.status, error.code, error.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        limit = app.config["MAX_CONTENT_LENGTH"] // 2**20
        return _error_response(413, "too_large", f"The file is larger than the {limit} MB limit.")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return _error_response(error.code or 500, (error.name or "error").lower().replace(" ", "_"), error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return _error_response(500, "internal_error", "Something went wrong while analysing the video. Please try again.")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Application factory; settings come from `config`, then DETECTOR_* environment variables."""
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(
        WEIGHTS=os.environ.get("DETECTOR_WEIGHTS", str(DEFAULT_WEIGHTS)),
        UPLOAD_FOLDER=os.environ.get("DETECTOR_UPLOAD_FOLDER", str(ROOT / "uploaded_files")),
        MAX_CONTENT_LENGTH=int(float(os.environ.get("DETECTOR_MAX_UPLOAD_MB", "100")) * 2**20),
        DEVICE=os.environ.get("DETECTOR_DEVICE") or None,
    )
    app.config.update(config or {})
    Path(app.config["UPLOAD_FOLDER"]).mkdir(parents=True, exist_ok=True)
    app.register_blueprint(bp)
    _register_errors(app)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "3000")), threaded=True)
