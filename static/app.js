// Upload with progress, follow the analysis job, then show the result without reloading the page;
// several videos are checked one after another, each row of a list linking to its result.
// Without JavaScript the form posts one video to /detect and the server answers with its result page.
// What is under way can be stopped: the upload, or the analysis (its job deleted, with the video).
(function () {
  "use strict";

  const STAGES = {
    uploading: "Uploading",
    queued: "Waiting for its turn",
    starting: "Starting",
    decoding: "Decoding frames",
    finding_faces: "Finding faces",
    looking_closer: "Looking again where the face was found",
    scoring: "Scoring faces",
  };
  const POLL_MS = 400;
  const byId = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const megabytes = (bytes) => (bytes / 1048576).toFixed(1);

  const stageText = (stage, percent, detail) => `${STAGES[stage] || stage}: ${percent}%${detail ? ` (${detail})` : ""}`;
  const uploaded = (loaded, total) => [Math.round((100 * loaded) / total), `${megabytes(loaded)} of ${megabytes(total)} MB`];

  // The video under way: whether it was stopped, its upload's request, then its job.
  class Stopped extends Error {}
  const STOPPED = "The analysis was stopped, and the video deleted.";
  let current = null;

  async function stopCurrent() {
    const run = current;
    if (!run || run.stopped) return;
    run.stopped = true;
    if (run.request) run.request.abort();
    if (run.job) await fetch(run.job.status_url, { method: "DELETE", headers: { Accept: "application/json" } });
  }

  // Uploads the video in `data` and returns its job, unless stopped on the way (Stopped). The job
  // is `current` as soon as the upload's answer comes: no click can come between the two.
  async function start(url, data, onProgress) {
    const run = (current = { stopped: false, request: null, job: null });
    run.job = await upload(url, data, onProgress, run);
    return run.job;
  }

  function showProgress(stage, percent, detail) {
    byId("progress").hidden = false;
    byId("progress-stage").textContent = stageText(stage, percent, detail);
    byId("progress-bar").value = percent;
    const items = [...document.querySelectorAll("[data-stage]")];
    const at = items.findIndex((item) => item.dataset.stage === stage);
    if (at < 0) return; // a stage between the listed ones ("starting"): the list stays as it was
    items.forEach((item, index) => {
      item.classList.toggle("done", index < at);
      if (index === at) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    });
  }

  function showError(message) {
    const box = byId("upload-error");
    box.textContent = message;
    box.hidden = false;
    const progress = byId("progress");
    if (progress) progress.hidden = true;
    const button = document.querySelector("#upload-form button");
    if (button) button.disabled = false;
  }

  // Creates an analysis job for the video in `data`; `onProgress(loaded, total)` hears the bytes
  // sent; `run.request` is the request, for `stopCurrent` to abort.
  function upload(url, data, onProgress, run) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      run.request = request;
      request.open("POST", url);
      request.responseType = "json";
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      });
      request.addEventListener("load", () => {
        const body = request.response || {};
        if (request.status === 202) resolve(body);
        else reject(new Error((body.error && body.error.message) || `The upload failed (HTTP ${request.status}).`));
      });
      request.addEventListener("error", () => reject(new Error("The upload failed. Check the connection and try again.")));
      request.addEventListener("abort", () => reject(new Stopped("The upload was stopped: nothing was kept.")));
      request.send(data);
    });
  }

  // The finished job; `onProgress(stage, percent)` hears each state on the way.
  async function follow(statusUrl, onProgress) {
    const run = current;
    for (;;) {
      const response = await fetch(statusUrl, { headers: { Accept: "application/json" } });
      const job = await response.json();
      if (run && run.stopped) throw new Stopped(STOPPED);
      if (!response.ok) throw new Error(job.error ? job.error.message : `HTTP ${response.status}`);
      if (job.status === "failed") throw new Error(job.error.message);
      if (job.status === "done") {
        current = null; // nothing left to stop: the result is kept until deleted from its page
        return job;
      }
      onProgress(job.stage, job.progress);
      await sleep(POLL_MS);
    }
  }

  async function showResult(job) {
    const response = await fetch(`${job.result_url}?partial=1`);
    // no face to judge comes as bad input does (422), with its page all the same
    if (!response.ok && job.result.label !== "NO_FACE") throw new Error(`The result could not be loaded (HTTP ${response.status}).`);
    byId("app").innerHTML = await response.text();
    if (location.pathname !== job.result_url) history.pushState({}, "", job.result_url);
    document.title = `${verdictTitle(job.result)} – Deepfake detector`;
    byId("result-title").focus();
  }

  const tooLarge = (form) => `The file is larger than the ${megabytes(form.dataset.maxBytes)} MB limit.`;

  async function check(form) {
    const files = [...form.elements.video.files];
    if (files.length > 1) return checkSeveral(form, files);
    if (files[0] && files[0].size > Number(form.dataset.maxBytes)) {
      showError(tooLarge(form));
      return;
    }
    byId("upload-error").hidden = true;
    form.querySelector("button").disabled = true;
    showProgress("uploading", 0);
    try {
      const job = await start(form.dataset.jobsUrl, new FormData(form), (loaded, total) =>
        showProgress("uploading", ...uploaded(loaded, total)),
      );
      showProgress(job.stage, job.progress);
      await showResult(await follow(job.status_url, showProgress));
    } catch (error) {
      showError(error.message);
    }
  }

  // As the result page says it: the server's caveat marks a verdict as confident as those that were
  // right no more often than a coin toss.
  const undecided = (report) => report.caveats.some((caveat) => caveat.code === "uncertain");

  // As the result page's title says it
  function verdictTitle(report) {
    if (report.label === "NO_FACE") return "No face found";
    return undecided(report) ? `Undecided, leans ${report.label}` : report.label;
  }

  function showVerdict(cell, job) {
    const report = job.result;
    const link = document.createElement("a");
    link.href = job.result_url;
    if (report.label === "NO_FACE") {
      link.textContent = "No face found";
    } else {
      const tag = document.createElement("span");
      const verdict = undecided(report)
        ? { kind: "undecided", words: `? Undecided: leans ${report.label}` }
        : { kind: report.label.toLowerCase(), words: `${report.label === "FAKE" ? "⚠" : "✓"} ${report.label}` };
      tag.className = `tag tag-${verdict.kind}`;
      tag.textContent = `${verdict.words} ${report.confidence.toFixed(1)}% confidence`;
      link.append(tag);
    }
    cell.replaceChildren(link);
    const notes = report.caveats.map((caveat) =>
      caveat.code === "uncertain" ? "verdicts this confident were right no more often than a coin toss" : "read the note on its page",
    );
    if (notes.length) cell.append(` (${[...new Set(notes)].join("; ")})`);
  }

  // One job at a time, as the server runs them: nobody else's videos wait behind a whole batch.
  async function checkSeveral(form, files) {
    const button = form.querySelector("button");
    button.disabled = true;
    byId("upload-error").hidden = true;
    const rows = byId("batch-rows");
    rows.replaceChildren();
    const cells = files.map((file) => {
      const row = rows.insertRow();
      const name = row.insertCell();
      name.className = "filename";
      name.textContent = file.name;
      const cell = row.insertCell();
      cell.textContent = "Waiting to upload";
      return cell;
    });
    byId("batch").hidden = false;
    const status = byId("batch-status");
    const stop = byId("batch-cancel");
    let stopped = false; // also where stopped between two videos, with none under way
    stop.onclick = () => {
      stopped = true;
      stopCurrent();
    };
    stop.hidden = false;
    for (const [index, file] of files.entries()) {
      const cell = cells[index];
      if (stopped) {
        cell.textContent = "Not checked: stopped";
        continue;
      }
      status.textContent = `Checking video ${index + 1} of ${files.length}: ${file.name}`;
      try {
        if (file.size > Number(form.dataset.maxBytes)) throw new Error(tooLarge(form));
        const data = new FormData(form); // every option the form sets, with this one video
        data.set("video", file);
        const job = await start(form.dataset.jobsUrl, data, (loaded, total) => {
          cell.textContent = stageText("uploading", ...uploaded(loaded, total));
        });
        showVerdict(cell, await follow(job.status_url, (stage, percent) => (cell.textContent = stageText(stage, percent))));
      } catch (error) {
        cell.textContent = error instanceof Stopped ? error.message : `Not checked: ${error.message}`;
        cell.classList.toggle("failed", !(error instanceof Stopped));
      }
    }
    stop.hidden = true;
    status.textContent = stopped
      ? "Stopped; each video checked before links to its result."
      : `All ${files.length} videos checked; each result links to its page.`;
    button.disabled = false;
  }

  const form = byId("upload-form");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      check(form);
    });
  }

  const cancel = byId("cancel");
  if (cancel) cancel.addEventListener("click", stopCurrent);

  const pending = document.querySelector("[data-status-url]");
  if (pending) {
    follow(pending.dataset.statusUrl, showProgress).then(showResult).catch((error) => showError(error.message));
  }

  // Printed reports show every crop, folded or not.
  window.addEventListener("beforeprint", () => {
    for (const details of document.querySelectorAll("details")) details.open = true;
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-print]")) window.print();
  });
})();
