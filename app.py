"""Flask web app: upload a video, get REAL / FAKE with a confidence (pages, jobs and a JSON API)."""
from __future__ import annotations

import copy
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.utils import secure_filename

from model.container import IndexMissing
from model.detector import (
    DEFAULT_MAX_FACES,
    DEFAULT_WEIGHTS,
    MAX_SEQUENCE,
    MIN_SEQUENCE,
    DetectionResult,
    Detector,
    describe_turn,
    undecided_band,
)
from model.images import encode_jpeg
from model.jobs import AnalysisError, Job, JobStore, JobWorker
from model.network import pick_device
from model.timing import OutsideVideo, Timeline, TimeRange, format_time, parse_time
from model.video import FramesTooLarge, VideoError, probe_video

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent
PURGE_INTERVAL_S = 60  # expired results are hidden at once, deleted at most this often
IMAGE_JPEG_QUALITY = 90  # the face crops and heatmaps a report names
MAX_NAME_KEPT = 64  # characters of an upload's own name (and as many of its suffix) kept in the stored name
STORED_NAME = re.compile(r"[0-9a-f]{32}_")  # how `stored_name` begins
# No face to judge is answered as bad input is, with the report beside the error: what was read,
# and caveats such as damage that may be why
NO_FACE_STATUS = 422
NO_FACE_HINT = (
    "Faces are found where they look roughly towards the camera and are at least about 30 px tall in a 720p video "
    "(50 px in 1080p): a face turned far to the side, far away, or half hidden (by a caption, a mask or hands) may "
    "be missed. Where the face shows clearly in only part of the video, check that part, or more frames."
)

# Scripts, styles, images and requests from this server only; no plugins, no framing by other
# sites. A result's address is the only key to it, so it is never sent on to another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

bp = Blueprint("detect", __name__)


def get_detector() -> Detector:
    """The app's detector, loaded once on first use; AnalysisError(503) when no weights are installed."""
    detector = current_app.extensions.get("detector")
    if detector is None:
        weights = Path(current_app.config["WEIGHTS"])
        if not weights.is_file():
            raise AnalysisError(503, "no_model", f"No model is installed: put a trained checkpoint at {weights.name} in weights/.")
        detector = Detector(weights, current_app.config["DEVICE"])
        current_app.extensions["detector"] = detector
    return detector


def store() -> JobStore:
    return current_app.extensions["job_store"]


def worker() -> JobWorker:
    return current_app.extensions["job_worker"]


def _options(form: dict) -> dict:
    """The analysis options a request sets: `sequence_length`, and the part of the video to
    examine (`start`, `end`: seconds, or minutes and seconds as 1:30), stored in seconds."""
    options: dict[str, Any] = {}
    raw = (form.get("sequence_length") or "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if not MIN_SEQUENCE <= value <= MAX_SEQUENCE:
            raise AnalysisError(400, "bad_sequence_length", f"sequence_length must be a whole number from {MIN_SEQUENCE} to {MAX_SEQUENCE}.")
        options["sequence_length"] = value
    texts = [(form.get(name) or "").strip() for name in ("start", "end")]
    try:
        start, end = (parse_time(text) if text else None for text in texts)
        part = TimeRange(start or 0.0, end)
    except ValueError as error:
        raise AnalysisError(400, "bad_time_range", str(error)) from error
    if not part.whole:
        options.update(start_s=part.start_s, end_s=part.end_s)
    return options


def _part(options: dict) -> TimeRange:
    return TimeRange(options.get("start_s", 0.0), options.get("end_s"))


def _video_refused(error: VideoError) -> AnalysisError:
    if isinstance(error, FramesTooLarge):
        return AnalysisError(413, "frames_too_large", str(error))
    if isinstance(error, IndexMissing):
        return AnalysisError(415, "not_a_video", f"{error} Upload the whole file: as the camera saved it, or a download that finished.")
    return AnalysisError(415, "not_a_video", f"{error} Upload a video file (MP4, MOV, AVI, MKV, WebM, or an animated GIF or WebP).")


def _outside_video(error: OutsideVideo) -> AnalysisError:
    return AnalysisError(400, "bad_time_range", f"{error} Leave the start empty to examine the whole video.")


def _check_saved_upload(path: Path, part: TimeRange) -> None:
    """Refuse what cannot even be opened, or has no such part, before it waits in the queue."""
    if path.stat().st_size == 0:
        raise AnalysisError(400, "empty_file", "The uploaded file is empty.")
    try:
        info = probe_video(path)
    except VideoError as error:
        raise _video_refused(error) from error
    if info.frame_count > 0:  # else its frames are counted as it is read, and the part checked then
        try:
            part.frames(Timeline(info.fps, info.frame_count))
        except OutsideVideo as error:
            raise _outside_video(error) from error


def stored_name(filename: str) -> str:
    """A random name to store an upload under, with its own name cut short, in ASCII (file systems
    allow 255 bytes; a video saved from a web page may be named by a long title), and its suffix."""
    stem, suffix = os.path.splitext(secure_filename(filename) or "video")
    return f"{uuid.uuid4().hex}_{stem[:MAX_NAME_KEPT]}{suffix[:MAX_NAME_KEPT]}"


def accept_upload() -> Job:
    """Check the request, save the video and record a queued job for it; whatever fails on the
    way, the saved file is deleted."""
    get_detector()
    options = _options(request.form)
    uploads = request.files.getlist("video")
    if len(uploads) > 1:
        raise AnalysisError(
            400, "several_files",
            "Send one video a request: for several, create a job for each (POST /api/v1/jobs), or choose them"
            " on the page with JavaScript on, which checks them one after another.",
        )  # fmt: skip
    upload = uploads[0] if uploads else None
    if upload is None or not upload.filename:
        raise AnalysisError(400, "no_file", "Choose a video file to upload (form field 'video').")
    path = Path(current_app.config["UPLOAD_FOLDER"]) / stored_name(upload.filename)
    try:
        upload.save(path)
        _check_saved_upload(path, _part(options))
        purge_expired()
        return store().create(upload.filename, path, options)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def queue(job: Job) -> Job:
    """Hand the job to the worker; where the queue is full, it fails and its upload is deleted."""
    try:
        worker().submit(job)
    except AnalysisError as error:
        store().fail(job.id, error)
        Path(job.upload).unlink(missing_ok=True)
        raise
    return job


def run_now(job: Job) -> Job:
    """Analyse in this request (for clients that wait); raises the job's error if it failed."""
    job = worker().run(job.id)
    if job is None:  # deleted while it ran
        raise _no_such_result()
    if job.status == "failed":
        raise AnalysisError(**job.error)
    return job


def build_report(job: Job, result: DetectionResult, model: dict) -> tuple[dict, dict[str, bytes]]:
    """The full JSON report of an analysis and the images it names (face crops and heatmaps)."""
    report = {
        "id": job.id,
        "filename": job.filename,
        "created": _iso(job.created),
        "finished": _iso(time.time()),
        "model": model,
        "options": {"max_faces": DEFAULT_MAX_FACES, **job.options},
        **result.as_dict(),
    }
    images: dict[str, bytes] = {}
    for track, entry in zip(result.tracks, report["face_tracks"]):
        prefix = f"face{track.track_id}"
        for position, (crop, score) in enumerate(zip(track.crops, entry["frame_scores"])):
            score["crop"] = f"{prefix}-{position}.jpg"
            images[score["crop"]] = encode_jpeg(crop, IMAGE_JPEG_QUALITY)
            if position in track.heatmaps:
                score["heatmap"] = f"{prefix}-{position}-heatmap.jpg"
                images[score["heatmap"]] = encode_jpeg(track.heatmaps[position], IMAGE_JPEG_QUALITY)
        entry["thumbnail"] = entry["frame_scores"][len(track.crops) // 2]["crop"]
        if track.track_id == result.deciding_track:
            report["frame_scores"] = entry["frame_scores"]
    return report, images


def analyse_job(app: Flask) -> Callable[[Job, Callable[[str, int], None]], tuple[dict, dict[str, bytes]]]:
    """The worker's analysis: detect with heatmaps and progress, then build the report."""

    def analyse(job: Job, progress: Callable[[str, int], None]) -> tuple[dict, dict[str, bytes]]:
        with app.app_context():
            detector = get_detector()
        try:
            result = detector.detect(
                job.upload, job.options.get("sequence_length"), explain=True, progress=progress, part=_part(job.options)
            )
        except OutsideVideo as error:
            raise _outside_video(error) from error
        except VideoError as error:
            raise _video_refused(error) from error
        return build_report(job, result, detector.describe())

    return analyse


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def with_urls(report: dict) -> dict:
    """The report with a URL beside each image name, for this server."""
    report = copy.deepcopy(report)

    def image_url(name: str) -> str:
        return url_for("detect.result_image", job_id=report["id"], name=name)

    for track in report["face_tracks"]:
        track["thumbnail_url"] = image_url(track["thumbnail"])
    for score in [s for t in report["face_tracks"] for s in t["frame_scores"]] + report["frame_scores"]:
        for key in ("crop", "heatmap"):
            if key in score:
                score[key + "_url"] = image_url(score[key])
    return report


def score_segments(scores: list[dict]) -> list[list[dict]]:
    """Runs of frame scores with no examined frame missing between them, so that the chart's line
    does not bridge the frames where the face was not found."""
    if len(scores) < 2:
        return [scores]
    gaps = [b["time_s"] - a["time_s"] for a, b in itertools.pairwise(scores)]
    step = min(gaps)
    segments = [[scores[0]]]
    for score, gap in zip(scores[1:], gaps):
        if gap > 1.5 * step:
            segments.append([])
        segments[-1].append(score)
    return segments


def job_status(job: Job) -> dict:
    body = {
        "id": job.id,
        "status": job.status,
        "stage": job.stage,
        "progress": job.progress,
        "filename": job.filename,
        "created": _iso(job.created),
        "updated": _iso(job.updated),
        "status_url": url_for("detect.job_api", job_id=job.id),
        "result_url": url_for("detect.result_page", job_id=job.id),
        "report_url": url_for("detect.report_api", job_id=job.id),
    }
    if job.result is not None:
        body["result"] = with_urls(job.result)
    if job.error is not None:
        body["error"] = {"code": job.error["code"], "message": job.error["message"]}
    return body


def _expiry_cutoff() -> float:
    """Results last updated before this time have expired."""
    return time.time() - current_app.config["RESULT_TTL_HOURS"] * 3600


def purge_expired() -> None:
    """Delete expired results, at most once every PURGE_INTERVAL_S (requests come many a second)."""
    now = time.monotonic()
    if now - current_app.extensions.get("last_purge", -PURGE_INTERVAL_S) >= PURGE_INTERVAL_S:
        current_app.extensions["last_purge"] = now
        store().purge(current_app.config["RESULT_TTL_HOURS"] * 3600)


def _no_such_result() -> AnalysisError:
    hours = current_app.config["RESULT_TTL_HOURS"]
    return AnalysisError(404, "not_found", f"There is no such result. Results are kept for {hours:g} hours after the analysis.")


def find_job(job_id: str) -> Job:
    purge_expired()
    job = store().get(job_id)
    if job is None or (job.finished and job.updated < _expiry_cutoff()):
        raise _no_such_result()
    return job


@bp.get("/")
def index():
    weights = Path(current_app.config["WEIGHTS"])
    return render_template(
        "index.html",
        model_installed=weights.is_file(),
        max_mb=current_app.config["MAX_CONTENT_LENGTH"] // 2**20,
        max_bytes=current_app.config["MAX_CONTENT_LENGTH"],
        max_faces=DEFAULT_MAX_FACES,
        ttl_hours=current_app.config["RESULT_TTL_HOURS"],
        deleted=bool(request.args.get("deleted")),
        cancelled=bool(request.args.get("cancelled")),
    )


@bp.post("/detect")
def detect_page():
    """The form without JavaScript: the job is queued, and the browser sent to its permalink,
    which shows the analysis's progress (refreshing itself, with a button to stop it), then
    its result."""
    job = queue(accept_upload())
    return redirect(url_for("detect.result_page", job_id=job.id), 303)


def report_response(report: dict, **more: str) -> tuple[Response, int]:
    """A report as JSON (with `more` beside it), and the status that says whether it holds a verdict."""
    body = {**with_urls(report), **more}
    if report["label"] != "NO_FACE":
        return jsonify(body), 200
    message = f"No face found in the {report['frames']} frames examined, so there is no verdict. {NO_FACE_HINT}"
    return jsonify({"error": {"code": "no_face", "message": message}, **body}), NO_FACE_STATUS


@bp.post("/api/v1/detect")
def detect_api():
    job = run_now(accept_upload())
    return report_response(job.result, report_url=url_for("detect.report_api", job_id=job.id))


@bp.post("/api/v1/jobs")
def create_job_api():
    body = job_status(queue(accept_upload()))
    return jsonify(body), 202, {"Location": body["status_url"]}


@bp.get("/api/v1/jobs/<job_id>")
def job_api(job_id: str):
    return jsonify(job_status(find_job(job_id)))


@bp.get("/api/v1/jobs/<job_id>/report")
def report_api(job_id: str):
    job = find_job(job_id)
    if job.status == "failed":
        raise AnalysisError(job.error["status"], job.error["code"], job.error["message"])
    if job.status != "done":
        raise AnalysisError(409, "not_ready", f"The analysis is not finished yet ({job.stage}, {job.progress}%).")
    return report_response(job.result)


def delete_result(job_id: str) -> bool:
    """Delete a job with its report and images; one queued or running is cancelled (its analysis
    stops, its upload is deleted). Whether it was."""
    find_job(job_id)  # unknown or expired: 404
    status = worker().cancel(job_id)
    if status is None:  # deleted by another request meanwhile
        raise _no_such_result()
    return status in ("queued", "running")


@bp.delete("/api/v1/jobs/<job_id>")
def delete_job_api(job_id: str):
    delete_result(job_id)
    return "", 204


@bp.post("/results/<job_id>/delete")
def delete_result_page(job_id: str):
    if delete_result(job_id):
        return redirect(url_for("detect.index", cancelled=1), 303)
    return redirect(url_for("detect.index", deleted=1), 303)


@bp.get("/results/<job_id>")
def result_page(job_id: str):
    job = find_job(job_id)
    if job.status == "failed":
        return render_template("error.html", message=job.error["message"]), job.error["status"]
    if job.status != "done":
        return render_template("pending.html", job=job_status(job))
    template = "_result.html" if request.args.get("partial") else "result.html"
    status = NO_FACE_STATUS if job.result["label"] == "NO_FACE" else 200
    return render_template(template, report=with_urls(job.result), no_face_hint=NO_FACE_HINT), status


@bp.get("/results/<job_id>/images/<name>")
def result_image(job_id: str, name: str):
    data = store().image(job_id, name, updated_after=_expiry_cutoff())
    if data is None:
        raise _no_such_result()
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@bp.get("/healthz")
def healthz():
    installed = Path(current_app.config["WEIGHTS"]).is_file()
    return jsonify({"status": "ok", "model_installed": installed}), 200


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_response(status: int, code: str, message: str):
    if _wants_json():
        return jsonify({"error": {"code": code, "message": message}}), status
    return render_template("error.html", message=message), status


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(AnalysisError)
    def analysis_error(error: AnalysisError):
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


def _delete_uploads_left(folder: Path) -> None:
    """Uploads a previous process left where it stopped between saving one and its job's end
    (no job of this process runs yet); files of other names are not touched."""
    for path in folder.iterdir():
        if STORED_NAME.match(path.name) and path.is_file():
            log.warning("deleting %s, left by a previous process", path.name)
            path.unlink(missing_ok=True)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Application factory; settings come from `config`, then DETECTOR_* environment variables.

    Jobs run in this process, so serve the app from one process (threads are fine): on start it
    marks the jobs a previous process left unfinished as failed and deletes their uploads, and
    any other upload left in the folder.
    """
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    env = os.environ.get
    app.config.update(
        WEIGHTS=env("DETECTOR_WEIGHTS", str(DEFAULT_WEIGHTS)),
        UPLOAD_FOLDER=env("DETECTOR_UPLOAD_FOLDER", str(ROOT / "uploaded_files")),
        JOBS_DB=env("DETECTOR_JOBS_DB", str(Path(app.instance_path) / "jobs.sqlite3")),
        MAX_CONTENT_LENGTH=int(float(env("DETECTOR_MAX_UPLOAD_MB", "100")) * 2**20),
        RESULT_TTL_HOURS=float(env("DETECTOR_RESULT_TTL_HOURS", "24")),
        MAX_QUEUED_JOBS=int(env("DETECTOR_MAX_QUEUED_JOBS", "8")),
        MAX_ANALYSIS_MINUTES=float(env("DETECTOR_MAX_ANALYSIS_MINUTES", "5")),
        DEVICE=env("DETECTOR_DEVICE") or None,
    )
    app.config.update(config or {})
    pick_device(app.config["DEVICE"])  # a device name that is none stops the app here, not at every upload
    Path(app.config["UPLOAD_FOLDER"]).mkdir(parents=True, exist_ok=True)

    jobs = JobStore(app.config["JOBS_DB"])
    for upload in jobs.fail_interrupted():
        Path(upload).unlink(missing_ok=True)
    _delete_uploads_left(Path(app.config["UPLOAD_FOLDER"]))
    jobs.purge(app.config["RESULT_TTL_HOURS"] * 3600)
    app.extensions["last_purge"] = time.monotonic()
    app.extensions["job_store"] = jobs
    app.extensions["job_worker"] = JobWorker(
        jobs, analyse_job(app), app.config["MAX_QUEUED_JOBS"], app.config["MAX_ANALYSIS_MINUTES"] * 60
    )

    app.register_blueprint(bp)
    app.after_request(_add_security_headers)
    app.add_template_filter(score_segments)
    app.add_template_filter(format_time)
    app.add_template_filter(describe_turn)
    app.add_template_global(undecided_band)
    _register_errors(app)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    create_app().run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "3000")), threaded=True)
