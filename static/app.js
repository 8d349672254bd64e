// Upload with progress, follow the analysis job, then show the result without reloading the page.
// Without JavaScript the form posts to /detect and the server answers with the result page.
(function () {
  "use strict";

  const STAGES = {
    uploading: "Uploading",
    queued: "Waiting for its turn",
    starting: "Starting",
    decoding: "Decoding frames",
    finding_faces: "Finding faces",
    scoring: "Scoring faces",
  };
  const POLL_MS = 400;
  const byId = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const megabytes = (bytes) => (bytes / 1048576).toFixed(1);

  function showProgress(stage, percent, detail) {
    byId("progress").hidden = false;
    byId("progress-stage").textContent = `${STAGES[stage] || stage}: ${percent}%${detail ? ` (${detail})` : ""}`;
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

  function upload(form) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", form.dataset.jobsUrl);
      request.responseType = "json";
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) {
          const percent = Math.round((100 * event.loaded) / event.total);
          showProgress("uploading", percent, `${megabytes(event.loaded)} of ${megabytes(event.total)} MB`);
        }
      });
      request.addEventListener("load", () => {
        const body = request.response || {};
        if (request.status === 202) resolve(body);
        else reject(new Error((body.error && body.error.message) || `The upload failed (HTTP ${request.status}).`));
      });
      request.addEventListener("error", () => reject(new Error("The upload failed. Check the connection and try again.")));
      request.send(new FormData(form));
    });
  }

  async function follow(statusUrl) {
    for (;;) {
      const response = await fetch(statusUrl, { headers: { Accept: "application/json" } });
      const job = await response.json();
      if (!response.ok) throw new Error(job.error ? job.error.message : `HTTP ${response.status}`);
      if (job.status === "failed") throw new Error(job.error.message);
      if (job.status === "done") return job;
      showProgress(job.stage, job.progress);
      await sleep(POLL_MS);
    }
  }

  async function showResult(job) {
    const response = await fetch(`${job.result_url}?partial=1`);
    if (!response.ok) throw new Error(`The result could not be loaded (HTTP ${response.status}).`);
    byId("app").innerHTML = await response.text();
    if (location.pathname !== job.result_url) history.pushState({}, "", job.result_url);
    document.title = `${job.result.label} – Deepfake detector`;
    byId("result-title").focus();
  }

  async function check(form) {
    const file = form.elements.video.files[0];
    if (file && file.size > Number(form.dataset.maxBytes)) {
      showError(`The file is larger than the ${megabytes(form.dataset.maxBytes)} MB limit.`);
      return;
    }
    byId("upload-error").hidden = true;
    form.querySelector("button").disabled = true;
    showProgress("uploading", 0);
    try {
      const job = await upload(form);
      showProgress(job.stage, job.progress);
      await showResult(await follow(job.status_url));
    } catch (error) {
      showError(error.message);
    }
  }

  const form = byId("upload-form");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      check(form);
    });
  }

  const pending = document.querySelector("[data-status-url]");
  if (pending) {
    follow(pending.dataset.statusUrl).then(showResult).catch((error) => showError(error.message));
  }

  // Printed reports show every crop, folded or not.
  window.addEventListener("beforeprint", () => {
    for (const details of document.querySelectorAll("details")) details.open = true;
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-print]")) window.print();
  });
})();
