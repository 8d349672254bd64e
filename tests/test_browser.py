"""End to end in headless Chromium: the page, its upload and analysis progress, the result.

Needs Debian's `chromium` (make test installs it) and the Playwright driver from PyPI; no browser
is downloaded. Without them these tests are skipped, unless DETECTOR_REQUIRE_BROWSER=1 (set by
make test) turns the skip into a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from conftest import ProgressUntilStopped, app_config
from werkzeug.serving import make_server

from app import create_app
from model.detector import DEFAULT_WEIGHTS
from model.jobs import Cancelled

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
PHONE = {"width": 375, "height": 740}

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

missing = "Playwright is not installed" if sync_playwright is None else "chromium is not installed" if not CHROMIUM else None
if missing:
    if os.environ.get("DETECTOR_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"browser tests required but {missing}")
    pytest.skip(missing, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with the shipped weights, served on a free local port."""
    folder = tmp_path_factory.mktemp("server")
    app = create_app(app_config(DEFAULT_WEIGHTS, folder, MAX_CONTENT_LENGTH=20 * 2**20))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_port}", "uploads": folder / "uploads", "app": app}
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def policed_page(browser, **options) -> Iterator[Page]:
    """A page in a fresh context; afterwards, fails if the server's Content-Security-Policy
    refused anything on it (Chromium reports each refusal on the console)."""
    context = browser.new_context(**options)
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    assert refused == []


@pytest.fixture
def page(browser):
    with policed_page(browser, viewport={"width": 1100, "height": 900}) as page:
        yield page


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    from media import two_face_frames, write_h264

    return write_h264(tmp_path_factory.mktemp("clips") / "two_people.mp4", two_face_frames(60))


def record_stages(page: Page) -> None:
    """Keep every text the progress line shows, however briefly."""
    page.evaluate(
        """() => {
            window.seenStages = [];
            const line = document.getElementById("progress-stage");
            new MutationObserver(() => window.seenStages.push(line.textContent))
                .observe(line, {childList: true, characterData: true, subtree: true});
        }"""
    )


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_upload_progress_and_result(server, page, two_faces, tmp_path):
    page.goto(server["url"])
    expect(page.get_by_role("heading", name="Is your video fake? Check it!")).to_be_visible()
    record_stages(page)
    page.set_input_files("#video", two_faces)
    page.fill("#sequence_length", "60")
    page.get_by_role("button", name="Check the video").click()
    expect(page.locator("#progress")).to_be_visible()

    expect(page.locator("#result-title")).to_be_visible(timeout=60_000)
    stages = page.evaluate("window.seenStages")
    assert any(s.startswith("Uploading: ") for s in stages), stages
    assert {"Decoding frames", "Finding faces", "Scoring faces"} & {s.split(":")[0] for s in stages}, stages
    assert re.fullmatch(r".*/results/[0-9a-f]{32}", page.url)  # the permalink, without a page load

    verdict = page.locator(".verdict")
    expect(verdict).to_contain_text(re.compile(r"(REAL|FAKE) \d+\.\d% confidence"))
    # undecided where, and only where, the page's note says verdicts as confident were no better than a coin toss
    undecided = page.locator(".caveat[data-caveat='uncertain']").count() == 1
    expect(verdict).to_have_class("verdict verdict-undecided" if undecided else re.compile(r"verdict verdict-(real|fake)$"))
    expect(page.locator(".combined")).to_contain_text(re.compile(r"It weighs all 2 faces together: face [12] looks the most manipulated"))
    tracks = page.locator("section.track")
    expect(tracks).to_have_count(2)  # one entry per face
    expect(page.locator(".tracks-summary li")).to_have_count(2)
    expect(page.locator(".timeline svg")).to_have_count(2)
    assert page.locator(".track").first.locator(".timeline circle").count() >= 40
    heatmaps = page.locator(".heatmaps img[alt^='heatmap']")
    assert heatmaps.count() == 6  # three per face
    crops = page.locator("ol.crops img")
    assert crops.count() >= 80
    assert page.evaluate("[...document.querySelectorAll('.heatmaps img')].every(i => i.complete && i.naturalWidth === 112)")
    assert list(server["uploads"].iterdir()) == []

    shot = Path(os.environ.get("DETECTOR_SCREENSHOT_DIR") or tmp_path) / "result.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    page.reload()  # the permalink shows the same result on its own
    expect(page.locator(".verdict")).to_have_text(verdict.text_content())
    expect(page.locator("section.track")).to_have_count(2)


def test_non_video_shows_the_error(server, page, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("Plain notes, not a video.\n" * 20)
    page.goto(server["url"])
    page.set_input_files("#video", notes)
    page.get_by_role("button", name="Check the video").click()
    alert = page.locator("#upload-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("could not be opened as a video")
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.get_by_role("button", name="Check the video")).to_be_enabled()
    assert list(server["uploads"].iterdir()) == []


def test_no_face_shows_its_page(server, page, media):
    """Its page comes with a 4xx, as bad input's answers do; the script shows it all the same."""
    page.goto(server["url"])
    page.set_input_files("#video", media["no_face"])
    page.get_by_role("button", name="Check the video").click()
    expect(page.locator(".verdict")).to_contain_text("No face found. We looked at", timeout=60_000)
    expect(page.locator(".hint.no-face")).to_contain_text("Faces are found where they look roughly towards the camera")
    expect(page.locator("#upload-error")).to_be_hidden()
    expect(page).to_have_title("No face found – Deepfake detector")
    assert re.fullmatch(r".*/results/[0-9a-f]{32}", page.url)
    assert list(server["uploads"].iterdir()) == []

def test_several_videos_are_checked_one_after_another(server, page, media):
    page.goto(server["url"])
    page.set_input_files("#video", [media["face_h264"], media["not_video"], media["face_mp4v"]])
    page.fill("#start", "1")
    page.fill("#end", "0:03.5")  # each video is examined over this part
    page.get_by_role("button", name="Check the video").click()
    expect(page.locator("#batch-status")).to_have_text("All 3 videos checked; each result links to its page.", timeout=90_000)
    rows = page.locator("#batch-rows tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator("td").first).to_have_text("face.mp4")
    expect(rows.nth(1)).to_contain_text("Not checked: This file could not be opened as a video.")
    for good in (0, 2):
        expect(rows.nth(good).locator("a")).to_have_text(re.compile(r"^([✓⚠]|\? Undecided: leans) (REAL|FAKE) \d+\.\d% confidence$"))
        undecided = "Undecided" in rows.nth(good).locator("a").text_content()
        assert undecided == ("coin toss" in rows.nth(good).text_content())  # said so as on its page
    expect(page.get_by_role("button", name="Check the video")).to_be_enabled()
    assert list(server["uploads"].iterdir()) == []

    verdict = rows.nth(2).locator("a .tag").text_content()
    rows.nth(2).locator("a").click()  # each row leads to its video's own result page
    expect(page.locator("h1")).to_contain_text("face_mp4v.mp4")
    expect(page.locator(".verdict")).to_have_text(re.compile(re.escape(verdict.split(" ", 1)[1])))
    expect(page.locator(".facts")).to_contain_text("0:01 to 0:03.5 (of 0:04)")
    result_url = page.url
    page.get_by_role("button", name="Delete this result").click()
    expect(page.get_by_text("The result was deleted, with its face images.")).to_be_visible()
    assert page.goto(result_url).status == 404


@contextmanager
def analysing_until_stopped(server) -> Iterator[ProgressUntilStopped]:
    """The server's analysis, while in the block, one that runs until stopped (up to 30 s)."""
    worker = server["app"].extensions["job_worker"]
    analyse, worker.analyse = worker.analyse, ProgressUntilStopped()
    try:
        yield worker.analyse
    finally:
        worker.analyse = analyse


def test_an_analysis_is_stopped_from_the_page(server, page, media):
    with analysing_until_stopped(server) as analysis:
        page.goto(server["url"])
        page.set_input_files("#video", media["face_h264"])
        page.get_by_role("button", name="Check the video").click()
        expect(page.locator("#progress-stage")).to_have_text("Finding faces: 50%", timeout=30_000)
        page.get_by_role("button", name="Stop and delete the video").click()
        expect(page.locator("#upload-error")).to_have_text("The analysis was stopped, and the video deleted.")
        expect(page.locator("#progress")).to_be_hidden()
        expect(page.get_by_role("button", name="Check the video")).to_be_enabled()
        assert analysis.ended.wait(5) and isinstance(analysis.stopped_by, Cancelled)
        assert server["app"].extensions["job_worker"].join(10)
    assert list(server["uploads"].iterdir()) == []


def test_an_upload_is_stopped_from_the_page(server, page, tmp_path):
    from media import face_frames, write_h264

    video = write_h264(tmp_path / "large.mp4", face_frames(200, (1280, 720)), preset="ultrafast")
    assert video.stat().st_size > 400_000
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")  # the upload at 100 kB/s: it takes seconds
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 100_000})
    page.goto(server["url"])
    page.set_input_files("#video", video)
    page.get_by_role("button", name="Check the video").click()
    expect(page.locator("#progress-stage")).to_contain_text("Uploading: ")
    page.get_by_role("button", name="Stop and delete the video").click()
    expect(page.locator("#upload-error")).to_have_text("The upload was stopped: nothing was kept.")
    expect(page.get_by_role("button", name="Check the video")).to_be_enabled()
    page.wait_for_timeout(500)  # the server hears the request end
    assert list(server["uploads"].iterdir()) == []
    with closing(sqlite3.connect(server["app"].config["JOBS_DB"])) as db:
        assert db.execute("SELECT count(*) FROM jobs WHERE filename = 'large.mp4'").fetchone()[0] == 0  # no job made


def test_checking_several_videos_is_stopped_at_the_one_under_way(server, page, media):
    with analysing_until_stopped(server) as analysis:
        page.goto(server["url"])
        page.set_input_files("#video", [media["face_h264"], media["face_mp4v"], media["no_face"]])
        page.get_by_role("button", name="Check the video").click()
        rows = page.locator("#batch-rows tr")
        expect(rows.nth(0)).to_contain_text("Finding faces: 50%", timeout=30_000)
        page.get_by_role("button", name="Stop, and delete the video being checked").click()
        expect(page.locator("#batch-status")).to_have_text("Stopped; each video checked before links to its result.")
        expect(rows.nth(0)).to_contain_text("The analysis was stopped, and the video deleted.")
        for later in (1, 2):
            expect(rows.nth(later)).to_contain_text("Not checked: stopped")
        expect(page.get_by_role("button", name="Stop, and delete the video being checked")).to_be_hidden()
        expect(page.get_by_role("button", name="Check the video")).to_be_enabled()
        assert analysis.runs == 1
        assert server["app"].extensions["job_worker"].join(10)
    assert list(server["uploads"].iterdir()) == []


def test_without_javascript_the_page_shows_the_progress_until_the_result_and_can_stop(server, browser, media):
    with policed_page(browser, java_script_enabled=False) as page:
        page.goto(server["url"])
        page.set_input_files("#video", media["face_h264"])
        page.get_by_role("button", name="Check the video").click()
        assert re.fullmatch(r".*/results/[0-9a-f]{32}", page.url)  # the permalink, which refreshes itself
        expect(page.locator(".verdict")).to_contain_text(re.compile(r"(REAL|FAKE)"), timeout=60_000)

        with analysing_until_stopped(server) as analysis:
            page.goto(server["url"])
            page.set_input_files("#video", media["face_h264"])
            page.get_by_role("button", name="Check the video").click()
            expect(page.get_by_text("Finding faces (50%)")).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Stop and delete the video").click()
            expect(page.get_by_text("The analysis was stopped, and the video deleted.")).to_be_visible()
            assert analysis.ended.wait(5) and isinstance(analysis.stopped_by, Cancelled)
            assert server["app"].extensions["job_worker"].join(10)
    assert list(server["uploads"].iterdir()) == []


def test_keyboard_only_upload_on_a_phone(server, browser, media):
    with policed_page(browser, viewport=PHONE, is_mobile=True) as page:
        # Playwright turns on file chooser interception without waiting for the browser to confirm;
        # a listener added before the page loads has it on well before the key press.
        page.on("filechooser", lambda chooser: None)
        page.goto(server["url"])
        assert no_horizontal_scroll(page)
        page.keyboard.press("Tab")  # the skip link
        page.keyboard.press("Tab")  # the brand link
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "video"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        chooser.value.set_files(media["face_h264"])
        for _ in range(4):  # the frames to examine, and the part of the video: from, to
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Check the video"
        page.keyboard.press("Enter")

        expect(page.locator("#result-title")).to_be_focused(timeout=60_000)  # announced to screen readers
        verdict = page.locator(".verdict").text_content()
        assert "REAL" in verdict or "FAKE" in verdict  # in words, not colour alone
        assert page.locator(".verdict .icon").text_content() in ("✓", "⚠", "?")
        assert no_horizontal_scroll(page)
