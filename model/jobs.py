"""Analysis jobs: their state in SQLite, run one at a time by an in-process worker.

The store survives a restart: jobs that were queued or running when the process stopped are
marked failed (their uploads are handed back for deletion) instead of being lost.
"""
from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_MESSAGE = "The server restarted while this video was being analysed, so the analysis stopped. Please upload the video again."
PROGRESS_INTERVAL_S = 0.2  # pollers ask about twice a second; more writes only cost time
INTERNAL_MESSAGE = "Something went wrong while analysing the video. Please try again."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,          -- queued, running, done, failed
    stage TEXT NOT NULL,
    progress INTEGER NOT NULL,     -- 0-100
    filename TEXT NOT NULL,
    upload TEXT,                   -- the uploaded file while it exists
    options TEXT NOT NULL,         -- JSON
    result TEXT,                   -- JSON report, when done
    error_status INTEGER,
    error_code TEXT,
    error_message TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated);
CREATE TABLE IF NOT EXISTS images (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, name)
);
"""


class AnalysisError(Exception):
    """A video or request we refuse, with an HTTP status, a machine code and a human message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class QueueFull(AnalysisError):
    def __init__(self) -> None:
        super().__init__(503, "busy", "The server is busy with other videos. Please try again in a few minutes.")


class TooLong(AnalysisError):
    def __init__(self, limit_s: float) -> None:
        super().__init__(
            422, "too_long",
            f"The analysis took longer than {_duration(limit_s)}, this server's limit, and was stopped. "
            "Examine a part of the video (from, to), or fewer frames.",
        )  # fmt: skip


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    if minutes >= 1:
        return f"{minutes:g} minute{'s' * (minutes != 1)}"
    return f"{seconds:g} second{'s' * (seconds != 1)}"


class Cancelled(Exception):
    """Raised through an analysis whose job was deleted while it ran."""


@dataclass
class Job:
    id: str
    status: str
    stage: str
    progress: int
    filename: str
    upload: str | None
    options: dict
    result: dict | None
    error: dict | None  # {"status", "code", "message"}
    created: float
    updated: float

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class JobStore:
    """Job rows and their images (JPEG crops and heatmaps) in one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers (pollers) never wait for the worker
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        # A deleted result's face crops are overwritten, not left in free pages (not every build's default).
        db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe from corruption, fewer flushes
        try:
            with db:  # one transaction
                yield db
        finally:
            db.close()

    def create(self, filename: str, upload: str | Path, options: dict) -> Job:
        now = time.time()
        job_id = uuid.uuid4().hex
        with self._connect() as db:
            db.execute(
                "INSERT INTO jobs (id, status, stage, progress, filename, upload, options, created, updated)"
                " VALUES (?, 'queued', 'queued', 0, ?, ?, ?, ?, ?)",
                (job_id, filename, str(upload), json.dumps(options), now, now),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        error = None
        if row["error_code"]:
            error = {"status": row["error_status"], "code": row["error_code"], "message": row["error_message"]}
        return Job(
            row["id"], row["status"], row["stage"], row["progress"], row["filename"], row["upload"],
            json.loads(row["options"]), json.loads(row["result"]) if row["result"] else None, error,
            row["created"], row["updated"],
        )  # fmt: skip

    def set_progress(self, job_id: str, stage: str, progress: int) -> bool:
        """Record a queued or running job's progress (it is running from then on); False where
        the job is neither, or no longer exists."""
        with self._connect() as db:
            return bool(
                db.execute(
                    "UPDATE jobs SET status = 'running', stage = ?, progress = ?, updated = ? WHERE id = ? AND status IN ('queued', 'running')",
                    (stage, progress, time.time(), job_id),
                ).rowcount
            )

    def finish(self, job_id: str, result: dict, images: dict[str, bytes]) -> None:
        """Store the result, unless the job was meanwhile failed (by a restart) or purged."""
        with self._connect() as db:
            updated = db.execute(
                "UPDATE jobs SET status = 'done', stage = 'done', progress = 100, upload = NULL, result = ?, updated = ?"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (json.dumps(result), time.time(), job_id),
            ).rowcount
            if updated:
                db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?)", [(job_id, n, d) for n, d in images.items()])

    def fail(self, job_id: str, error: AnalysisError) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET status = 'failed', upload = NULL, error_status = ?, error_code = ?, error_message = ?,"
                " updated = ? WHERE id = ? AND status IN ('queued', 'running')",
                (error.status, error.code, error.message, time.time(), job_id),
            )

    def image(self, job_id: str, name: str, updated_after: float = 0.0) -> bytes | None:
        """A stored image of a job last updated after `updated_after` (a time.time() value)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT data FROM images JOIN jobs ON jobs.id = images.job_id"
                " WHERE job_id = ? AND name = ? AND jobs.updated >= ?",
                (job_id, name, updated_after),
            ).fetchone()
        return row["data"] if row else None

    def fail_interrupted(self) -> list[str]:
        """Mark jobs left queued or running by a previous process failed; their uploads, to delete."""
        with self._connect() as db:
            rows = db.execute("SELECT id, upload FROM jobs WHERE status IN ('queued', 'running')").fetchall()
        for row in rows:
            self.fail(row["id"], AnalysisError(500, "interrupted", RESTART_MESSAGE))
        if rows:
            log.warning("marked %d interrupted job(s) failed", len(rows))
        return [row["upload"] for row in rows if row["upload"]]

    def delete(self, job_id: str) -> tuple[str, str | None] | None:
        """Delete a job with its images now, whatever its state: its status and upload as they
        were when deleted (None where there was no such job)."""
        with self._connect() as db:
            row = db.execute("DELETE FROM jobs WHERE id = ? RETURNING status, upload", (job_id,)).fetchone()
        return (row["status"], row["upload"]) if row else None

    def purge(self, max_age_s: float, now: float | None = None) -> int:
        """Delete finished jobs (and their images) last updated more than `max_age_s` ago."""
        cutoff = (now if now is not None else time.time()) - max_age_s
        with self._connect() as db:
            count = db.execute("DELETE FROM jobs WHERE status IN ('done', 'failed') AND updated < ?", (cutoff,)).rowcount
        return count


Analysis = Callable[[Job, Callable[[str, int], None]], tuple[dict, dict[str, bytes]]]


class JobWorker:
    """One background thread that runs submitted jobs in order, at most `max_queued` waiting.

    `analyse(job, progress)` returns the report and its images, or raises AnalysisError. The
    job's upload is deleted as soon as its analysis ends, whatever the outcome. An analysis is
    stopped at its next progress once it has run `time_limit_s`, or its job was deleted
    (`cancel`).
    """

    def __init__(self, store: JobStore, analyse: Analysis, max_queued: int = 8, time_limit_s: float = float("inf")):
        self.store = store
        self.analyse = analyse
        self.time_limit_s = time_limit_s
        self._queue: queue.Queue[str] = queue.Queue(maxsize=max_queued)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job.id)
        except queue.Full:
            raise QueueFull() from None
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="detector-jobs", daemon=True)
                self._thread.start()

    def run(self, job_id: str) -> Job | None:
        """Run one job now, in this thread; returns its final state (None where it was deleted)."""
        job = self.store.get(job_id)
        # running from here: a job deleted before, while queued, had its upload deleted with it
        if job is None or not self.store.set_progress(job_id, "starting", 0):
            return None
        try:
            report, images = self.analyse(job, self._progress_writer(job_id))
            self.store.finish(job_id, report, images)
        except Cancelled:
            log.info("job %s was deleted while it ran: its analysis stopped", job_id)
        except AnalysisError as error:
            self.store.fail(job_id, error)
        except Exception:
            log.exception("job %s failed", job_id)
            self.store.fail(job_id, AnalysisError(500, "internal_error", INTERNAL_MESSAGE))
        finally:
            if job.upload:
                Path(job.upload).unlink(missing_ok=True)
        return self.store.get(job_id)

    def cancel(self, job_id: str) -> str | None:
        """Delete a job whatever its state, and stop its analysis: one queued never runs (its
        upload is deleted now), one running stops at its next progress (`Cancelled`; the worker
        deletes the upload). The job's status when deleted; None where there was no such job."""
        deleted = self.store.delete(job_id)
        if deleted is None:
            return None
        status, upload = deleted
        if status == "queued" and upload:  # `run` finds it gone, and leaves its upload alone
            Path(upload).unlink(missing_ok=True)
        return status

    def _progress_writer(self, job_id: str) -> Callable[[str, int], None]:
        """Records progress in the store on each new stage, and otherwise at most every
        PROGRESS_INTERVAL_S; raises `Cancelled` where the job is found deleted then, and `TooLong`
        once the analysis has run `time_limit_s` from its first progress (before which it may wait
        for the detector, busy with a request that waits for its own analysis)."""
        last = {"stage": None, "time": 0.0, "started": None}

        def write(stage: str, percent: int) -> None:
            now = time.monotonic()
            last["started"] = last["started"] or now
            if now - last["started"] > self.time_limit_s:
                raise TooLong(self.time_limit_s)
            if stage != last["stage"] or now - last["time"] >= PROGRESS_INTERVAL_S:
                if not self.store.set_progress(job_id, stage, percent):
                    raise Cancelled(job_id)
                last.update(stage=stage, time=now)

        return write

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has finished (for tests and shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self.run(job_id)
            finally:
                self._queue.task_done()
