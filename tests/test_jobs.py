"""Analysis jobs through the API: lifecycle, progress, failures, restarts and expiry."""
from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ProgressUntilStopped, app_config
from media import face_frames, write_h264

from app import create_app, stored_name
from model.jobs import RESTART_MESSAGE, AnalysisError, Cancelled, JobStore


def submit(client, path, **form):
    form["video"] = (io.BytesIO(path.read_bytes()), path.name)
    return client.post("/api/v1/jobs", data=form, content_type="multipart/form-data")


def wait_until_finished(client, status_url, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(status_url).get_json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job still {body['status']} after {timeout} s")


class Gate:
    """An analysis that reports progress, then waits until the test lets it finish."""

    def __init__(self, outcome: Exception | None = None):
        self.entered, self.release, self.outcome = threading.Event(), threading.Event(), outcome

    def __call__(self, job, progress):
        progress("finding_faces", 55)
        self.entered.set()
        assert self.release.wait(30)
        if self.outcome:
            raise self.outcome
        return {"id": job.id, "face_tracks": [], "frame_scores": [], "label": "NO_FACE"}, {}


def test_job_lifecycle(app, client, media, upload_dir):
    response = submit(client, media["face_h264"], sequence_length="12")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] in ("queued", "running", "done") and 0 <= body["progress"] <= 100
    assert response.headers["Location"] == body["status_url"] == f"/api/v1/jobs/{body['id']}"

    done = wait_until_finished(client, body["status_url"])
    assert done["status"] == "done" and done["progress"] == 100, done
    result = done["result"]
    assert result["label"] in ("REAL", "FAKE") and result["frames"] == 12
    assert list(upload_dir.iterdir()) == []  # deleted as soon as the analysis ended

    report = client.get(done["report_url"]).get_json()
    assert report == result
    assert report["filename"] == "face.mp4" and report["model"]["name"] == "tiny.pt"
    assert {"decode", "faces", "model", "total"} <= set(report["seconds"])
    assert report["face_tracks"][0]["frame_scores"][0]["crop_url"].startswith(f"/results/{body['id']}/images/")
    page = client.get(done["result_url"])
    assert page.status_code == 200 and b"Face 1" in page.data
    partial = client.get(done["result_url"] + "?partial=1").data
    assert b"<html" not in partial and b'id="result-title"' in partial


def test_a_result_deleted_through_the_api_is_gone_with_its_images(app, client, media):
    done = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    crop_url = done["result"]["face_tracks"][0]["frame_scores"][0]["crop_url"]
    crop = client.get(crop_url).data
    assert crop[:2] == b"\xff\xd8"  # a JPEG

    response = client.delete(done["status_url"])
    assert response.status_code == 204
    for url in (done["status_url"], done["report_url"], crop_url):
        assert client.get(url, headers={"Accept": "application/json"}).get_json()["error"]["code"] == "not_found", url
    assert client.delete(done["status_url"]).status_code == 404
    # gone from the disk too, not only from the tables (on a build of SQLite that leaves deleted
    # content in free pages, the store's secure_delete is what does it)
    database = app.config["JOBS_DB"]
    stored = b"".join(open(f, "rb").read() for f in (database, database + "-wal") if os.path.exists(f))
    assert crop[200:264] not in stored


def test_a_result_deleted_from_its_page_is_gone(app, client, media):
    done = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    delete_from_its_page(client, done["result_url"], b"Delete this result", "/?deleted=1", b"The result was deleted")
    assert client.get(done["result_url"]).status_code == 404


def delete_from_its_page(client, result_url: str, button: bytes, then: str, notice: bytes) -> None:
    """Delete a job with its page's form, as a browser without JavaScript does: the browser is
    sent to `then`, which says `notice`."""
    page = client.get(result_url)
    assert f'action="{result_url}/delete"'.encode() in page.data and button in page.data
    response = client.post(result_url + "/delete")
    assert response.status_code == 303 and response.headers["Location"] == then
    assert notice in client.get(then).data


def test_progress_is_visible_while_running_and_nothing_is_ready_yet(app, client, media):
    gate = Gate()
    app.extensions["job_worker"].analyse = gate
    body = submit(client, media["face_h264"]).get_json()
    assert gate.entered.wait(30)
    running = client.get(body["status_url"]).get_json()
    assert (running["status"], running["stage"], running["progress"]) == ("running", "finding_faces", 55)
    assert "result" not in running
    pending = client.get(body["result_url"])
    assert pending.status_code == 200 and b"Finding faces (55%)" in pending.data
    not_ready = client.get(body["report_url"])  # no report yet
    assert not_ready.status_code == 409 and not_ready.get_json()["error"]["code"] == "not_ready"
    gate.release.set()
    assert wait_until_finished(client, body["status_url"])["status"] == "done"
    assert client.delete(body["status_url"]).status_code == 204


def test_an_analysis_deleted_while_it_runs_stops_and_its_video_is_deleted(app, client, media, upload_dir):
    analysis = ProgressUntilStopped()
    app.extensions["job_worker"].analyse = analysis
    body = submit(client, media["face_h264"]).get_json()
    assert analysis.started.wait(30)
    assert len(list(upload_dir.iterdir())) == 1
    assert client.delete(body["status_url"]).status_code == 204
    assert analysis.ended.wait(5)  # at its next progress, not after its 30 s
    assert isinstance(analysis.stopped_by, Cancelled)
    assert app.extensions["job_worker"].join(10)
    assert list(upload_dir.iterdir()) == []
    for url in (body["status_url"], body["report_url"]):
        assert client.get(url).get_json()["error"]["code"] == "not_found", url
    assert client.get(body["result_url"]).status_code == 404
    assert client.delete(body["status_url"]).status_code == 404

    app.extensions["job_worker"].analyse = Gate()  # the worker goes on with the next job
    app.extensions["job_worker"].analyse.release.set()
    assert wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])["status"] == "done"


def test_a_queued_job_deleted_never_runs(app, client, media, upload_dir):
    gate = Gate()
    app.extensions["job_worker"].analyse = gate
    first = submit(client, media["face_h264"]).get_json()
    assert gate.entered.wait(30)
    second = submit(client, media["face_h264"]).get_json()
    assert client.get(second["status_url"]).get_json()["status"] == "queued"
    assert len(list(upload_dir.iterdir())) == 2
    assert client.delete(second["status_url"]).status_code == 204
    assert len(list(upload_dir.iterdir())) == 1  # the queued job's video, at once

    analysed = []  # what the worker analyses after the first, which is in the gate
    app.extensions["job_worker"].analyse = lambda job, progress: analysed.append(job.id)
    gate.release.set()
    assert wait_until_finished(client, first["status_url"])["status"] == "done"
    assert app.extensions["job_worker"].join(10)
    assert analysed == []  # the second never ran
    assert client.get(second["status_url"]).get_json()["error"]["code"] == "not_found"


def test_an_analysis_stopped_from_its_page_says_so(app, client, media, upload_dir):
    analysis = ProgressUntilStopped()
    app.extensions["job_worker"].analyse = analysis
    body = submit(client, media["face_h264"]).get_json()
    assert analysis.started.wait(30)
    notice = b"The analysis was stopped, and the video deleted."
    delete_from_its_page(client, body["result_url"], b"Stop and delete the video", "/?cancelled=1", notice)
    assert analysis.ended.wait(5) and isinstance(analysis.stopped_by, Cancelled)
    assert app.extensions["job_worker"].join(10)
    assert client.get(body["result_url"]).status_code == 404


def test_an_analysis_that_runs_past_the_time_limit_fails_clearly(tiny_weights, upload_dir, media):
    app = create_app(app_config(tiny_weights, upload_dir.parent, MAX_ANALYSIS_MINUTES=0.005))  # 0.3 s
    analysis = ProgressUntilStopped()
    app.extensions["job_worker"].analyse = analysis
    client = app.test_client()
    body = submit(client, media["face_h264"]).get_json()
    failed = wait_until_finished(client, body["status_url"], timeout=10)
    assert failed["error"] == {
        "code": "too_long",
        "message": "The analysis took longer than 0.3 seconds, this server's limit, and was stopped."
        " Examine a part of the video (from, to), or fewer frames.",
    }
    assert client.get(body["report_url"]).status_code == 422
    assert list(upload_dir.iterdir()) == []


def test_a_real_analysis_past_the_time_limit_fails_and_the_next_one_runs(app, client, media, upload_dir):
    worker = app.extensions["job_worker"]
    worker.time_limit_s = 0.001  # past at the analysis's second progress, wherever that is
    failed = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "too_long", failed
    assert list(upload_dir.iterdir()) == []
    worker.time_limit_s = 60.0
    done = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    assert done["status"] == "done" and done["result"]["label"] in ("REAL", "FAKE")


def test_a_real_analysis_stops_where_its_job_is_deleted_and_the_next_one_runs(app, client, media, upload_dir, caplog):
    worker = app.extensions["job_worker"]
    analyse, stages = worker.analyse, []

    def deleted_while_finding_faces(job, progress):
        def hear(stage, percent):
            stages.append(stage)
            if stage == "finding_faces" and stages.count(stage) == 1:
                assert client.delete(f"/api/v1/jobs/{job.id}").status_code == 204
            progress(stage, percent)

        return analyse(job, hear)

    worker.analyse = deleted_while_finding_faces
    body = submit(client, media["face_h264"]).get_json()
    assert worker.join(60)
    assert stages[-1] == "finding_faces" and "scoring" not in stages  # stopped there
    assert client.get(body["status_url"]).status_code == 404
    assert list(upload_dir.iterdir()) == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []

    worker.analyse = analyse  # the detector is free for the next video
    done = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    assert done["status"] == "done" and done["result"]["label"] in ("REAL", "FAKE")


def test_failed_job_reports_its_error(app, client, media, upload_dir):
    gate = Gate(AnalysisError(415, "not_a_video", "The video has no decodable frames."))
    gate.release.set()
    app.extensions["job_worker"].analyse = gate
    body = submit(client, media["face_h264"]).get_json()
    failed = wait_until_finished(client, body["status_url"])
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "not_a_video", "message": "The video has no decodable frames."}
    assert client.get(body["report_url"]).status_code == 415
    page = client.get(body["result_url"])
    assert page.status_code == 415 and b"no decodable frames" in page.data
    assert list(upload_dir.iterdir()) == []


def test_unexpected_failure_hides_internals(app, client, media):
    gate = Gate(RuntimeError("secret internals"))
    gate.release.set()
    app.extensions["job_worker"].analyse = gate
    failed = wait_until_finished(client, submit(client, media["face_h264"]).get_json()["status_url"])
    assert failed["error"]["code"] == "internal_error" and "secret" not in failed["error"]["message"]


@pytest.mark.parametrize("clip,status,code", [("not_video", 415, "not_a_video"), ("empty", 400, "empty_file")])
def test_bad_upload_is_refused_at_once(client, media, clip, status, code):
    response = submit(client, media[clip])
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_full_queue_refuses_and_cleans_up(tiny_weights, upload_dir, media):
    app = create_app(app_config(tiny_weights, upload_dir.parent, MAX_QUEUED_JOBS=1))
    gate = Gate()
    app.extensions["job_worker"].analyse = gate
    client = app.test_client()
    first = submit(client, media["face_h264"]).get_json()
    assert gate.entered.wait(30)  # the worker took the first; the queue is empty again
    second = submit(client, media["face_h264"])
    assert second.status_code == 202
    third = submit(client, media["face_h264"])
    assert third.status_code == 503 and third.get_json()["error"]["code"] == "busy"
    assert len(list(upload_dir.iterdir())) == 2  # the running and the queued job; the refused one is gone
    gate.release.set()
    for body in (first, second.get_json()):
        assert wait_until_finished(client, body["status_url"])["status"] == "done"


def test_restart_marks_interrupted_jobs_failed(tiny_weights, upload_dir, media):
    config = app_config(tiny_weights, upload_dir.parent)
    before = create_app(config)
    gate = Gate()
    before.extensions["job_worker"].analyse = gate
    body = submit(before.test_client(), media["face_h264"]).get_json()
    assert gate.entered.wait(30)
    assert len(list(upload_dir.iterdir())) == 1

    after = create_app(config)  # a new process over the same job database and upload folder
    client = after.test_client()
    failed = client.get(body["status_url"]).get_json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "interrupted", "message": RESTART_MESSAGE}
    assert list(upload_dir.iterdir()) == []
    assert b"server restarted" in client.get(body["result_url"]).data

    gate.release.set()  # the old worker's late result must not resurrect the job
    before.extensions["job_worker"].join(30)
    assert client.get(body["status_url"]).get_json()["status"] == "failed"


def test_an_upload_left_by_a_process_stopped_before_its_job_ended_is_deleted_on_start(tiny_weights, upload_dir):
    upload_dir.mkdir(parents=True)
    left = upload_dir / stored_name("clip.mp4")  # a job deleted while it ran, the process killed at once
    left.write_bytes(b"video")
    other = upload_dir / "notes.txt"
    other.write_text("not an upload")
    create_app(app_config(tiny_weights, upload_dir.parent))
    assert not left.exists() and other.exists()
    other.unlink()


def test_results_expire(tiny_weights, upload_dir, media):
    app = create_app(app_config(tiny_weights, upload_dir.parent))
    client = app.test_client()
    response = client.post(
        "/api/v1/detect", data={"video": (io.BytesIO(media["face_h264"].read_bytes()), "a.mp4")}, content_type="multipart/form-data"
    )
    body = response.get_json()
    image = body["frame_scores"][0]["crop_url"]
    assert client.get(f"/results/{body['id']}").status_code == 200
    jobs: JobStore = app.extensions["job_store"]
    assert jobs.purge(24 * 3600) == 0  # still fresh
    assert jobs.purge(24 * 3600, now=time.time() + 24 * 3600 + 1) == 1
    gone = client.get(f"/results/{body['id']}")
    assert gone.status_code == 404 and b"kept for 24 hours" in gone.data
    assert client.get(f"/api/v1/jobs/{body['id']}").get_json()["error"]["code"] == "not_found"
    assert client.get(image).status_code == 404


def test_retention_setting_is_used(tiny_weights, upload_dir, media):
    app = create_app(app_config(tiny_weights, upload_dir.parent, RESULT_TTL_HOURS=0))
    client = app.test_client()
    data = {"video": (io.BytesIO(media["face_h264"].read_bytes()), "a.mp4")}
    body = client.post("/api/v1/detect", data=data, content_type="multipart/form-data").get_json()
    assert client.get(f"/api/v1/jobs/{body['id']}").status_code == 404


def test_killed_server_fails_its_job_on_restart(tiny_weights, tmp_path, media):
    """A real server process killed mid-analysis: the next one reports the job failed, no upload left."""
    root = Path(__file__).resolve().parent.parent
    clip = write_h264(tmp_path / "long.mp4", face_frames(300, (1280, 720)), preset="ultrafast")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PORT": str(port),
        "DETECTOR_WEIGHTS": str(tiny_weights),
        "DETECTOR_UPLOAD_FOLDER": str(tmp_path / "uploads"),
        "DETECTOR_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
    }
    base = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                return server
            except OSError:
                time.sleep(0.2)
        server.kill()
        raise AssertionError("server did not start")

    def get(path: str) -> dict:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    server = start()
    try:
        boundary = "----test"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="sequence_length"\r\n\r\n100\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="long.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            base + "/api/v1/jobs", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            job = json.load(response)
        deadline = time.monotonic() + 60
        while get(job["status_url"])["status"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        assert len(list((tmp_path / "uploads").iterdir())) == 1
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()

    server = start()
    try:
        status = get(job["status_url"])
        assert status["status"] == "failed" and status["error"]["code"] == "interrupted", status
        assert "restarted" in status["error"]["message"]
        assert list((tmp_path / "uploads").iterdir()) == []
    finally:
        server.terminate()
        server.wait()


def test_a_part_past_the_end_of_a_video_of_unknown_length_fails_its_job_clearly(client, media, monkeypatch):
    from model.video import VideoInfo

    monkeypatch.setattr("app.probe_video", lambda path: VideoInfo(640, 360, 10.0, 0, 0.0))  # a header without a length
    response = submit(client, media["face_h264"], start="9")
    assert response.status_code == 202  # the length is only known once the video is read
    done = wait_until_finished(client, response.get_json()["status_url"])
    assert done["status"] == "failed"
    assert done["error"] == {
        "code": "bad_time_range",
        "message": "The video is 0:04 long: the part to examine must start before its end, not at 0:09."
        " Leave the start empty to examine the whole video.",
    }
    report = client.get(done["report_url"])
    assert report.status_code == 400 and report.get_json()["error"]["code"] == "bad_time_range"
