// The Atelier console's scripts: tag review in place, uploads with progress, live job rows,
// action buttons and the generator playground. Plain JavaScript, no build step, no library.
// Every call goes through /console/api/..., which adds the signed-in key (an HttpOnly cookie).
"use strict";

const API = "/console/api";

function toast(message, isError) {
  const el = document.getElementById("toast");
  if (!el) return;
  el.textContent = message;
  el.classList.toggle("toast-error", Boolean(isError));
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 5000);
}

function errorMessage(body, status) {
  if (body && typeof body.error === "string") return body.error;
  if (body && body.error && body.error.message) return body.error.message;
  return "The request failed (" + status + ").";
}

function loginIfNeeded(response) {
  const target = response.headers.get("X-Console-Login");
  if (response.status === 401 && target) {
    window.location.assign(target);
    return true;
  }
  return false;
}

async function api(method, path, body) {
  const init = { method, headers: { "X-Atelier-Console": "1", Accept: "application/json" },
                 credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  loginIfNeeded(response);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

async function fragment(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (loginIfNeeded(response) || !response.ok) return null;
  return response.text();
}

// Content cards -------------------------------------------------------------------------------

// An upload's row in the list says "tagged" once its card is no longer pending.
function markUpload(card) {
  const id = card.dataset.contentId;
  const row = document.querySelector('.upload-list li[data-content-id="' + CSS.escape(id) + '"]');
  if (row && card.dataset.status !== "pending") {
    row.querySelector(".upload-state").textContent =
      card.dataset.status === "ready" ? "tagged" : card.dataset.status;
  }
}

async function refreshCard(id, focusHeading) {
  const old = document.getElementById("card-" + id);
  if (!old) return;
  if (old.classList.contains("plain")) { window.location.reload(); return; }
  const html = await fragment("/console/content/" + encodeURIComponent(id) + "/card");
  if (html === null) return;
  const holder = document.createElement("div");
  holder.innerHTML = html.trim();
  const card = holder.firstElementChild;
  if (!card || !old.parentNode) return;
  old.replaceWith(card);
  markUpload(card);
  if (focusHeading) {
    const link = card.querySelector("h3 a");
    if (link) link.focus();
  }
}

async function reviewTag(button) {
  const { content, tag, action } = button.dataset;
  button.disabled = true;
  const path = "/content/" + encodeURIComponent(content) + "/tags/" +
    encodeURIComponent(tag) + ":" + action;
  const result = await api("POST", path);
  if (!result.ok) {
    button.disabled = false;
    toast(errorMessage(result.data, result.status), true);
    return;
  }
  toast((action === "reject" ? "Rejected " : "Accepted ") + tag);
  await refreshCard(content, true);
}

function pollPendingCards() {
  document.querySelectorAll('.card[data-status="pending"]:not(.plain)').forEach((card) => {
    refreshCard(card.dataset.contentId, false);
  });
}

// Uploads -------------------------------------------------------------------------------------

function uploadFile(file, list) {
  const row = document.createElement("li");
  const name = document.createElement("span");
  name.className = "upload-name";
  name.textContent = file.name;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", "upload of " + file.name);
  const state = document.createElement("span");
  state.className = "upload-state";
  state.textContent = "uploading";
  row.append(name, bar, state);
  list.prepend(row);

  const form = new FormData();
  form.append("file", file);
  form.append("title", file.name.replace(/\.[^.]+$/, ""));
  const xhr = new XMLHttpRequest();
  xhr.open("POST", API + "/content");
  xhr.setRequestHeader("X-Atelier-Console", "1");
  xhr.responseType = "json";
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) bar.value = event.loaded / event.total;
  });
  xhr.addEventListener("load", async () => {
    const body = xhr.response;
    if (xhr.status === 202 || xhr.status === 200) {
      bar.value = 1;
      state.textContent = "uploaded; tagging";
      row.dataset.contentId = body.id;
      await addCard(body.id);
    } else {
      state.textContent = errorMessage(body, xhr.status);
      row.classList.add("error");
    }
  });
  xhr.addEventListener("error", () => {
    state.textContent = "network error";
    row.classList.add("error");
  });
  xhr.send(form);
}

async function addCard(id) {
  const grid = document.getElementById("content-grid");
  if (!grid) return;
  const html = await fragment("/console/content/" + encodeURIComponent(id) + "/card");
  if (html === null) return;
  const empty = document.getElementById("no-content");
  if (empty) empty.remove();
  const holder = document.createElement("div");
  holder.innerHTML = html.trim();
  const old = document.getElementById("card-" + id);
  if (old) old.remove();
  const card = holder.firstElementChild;
  grid.prepend(card);
  markUpload(card);
}

function setUpUploads() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("upload-files");
  const list = document.getElementById("upload-list");
  if (!zone || !input || !list) return;
  const send = (files) => Array.from(files).forEach((f) => uploadFile(f, list));
  input.addEventListener("change", () => { send(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => {
    zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files) send(event.dataTransfer.files);
  });
}

// Live regions and action buttons -------------------------------------------------------------

async function refreshRegion(region) {
  const html = await fragment(region.dataset.poll);
  if (html === null) return;
  const focused = document.activeElement;
  const focusUrl = focused && region.contains(focused) ? focused.dataset.url : null;
  region.innerHTML = html;
  if (focusUrl) {
    const again = region.querySelector('[data-url="' + CSS.escape(focusUrl) + '"]');
    if (again) again.focus();
  }
}

function setUpPolling() {
  document.querySelectorAll("[data-poll]").forEach((region) => {
    const every = Number(region.dataset.every || 2000);
    setInterval(() => { if (!document.hidden) refreshRegion(region); }, every);
  });
  setInterval(() => { if (!document.hidden) pollPendingCards(); }, 1500);
}

async function runAction(button) {
  button.disabled = true;
  const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
  const result = await api(button.dataset.api, button.dataset.url, body);
  button.disabled = false;
  if (!result.ok) {
    toast(errorMessage(result.data, result.status), true);
    return;
  }
  toast("Done.");
  if (button.dataset.done === "reload") {
    window.location.reload();
  } else {
    const region = button.closest("[data-poll]");
    if (region) refreshRegion(region);
  }
}

// Playground ----------------------------------------------------------------------------------

function formBody(form) {
  const body = {};
  for (const field of form.elements) {
    if (!field.name || field.value === "") continue;
    body[field.name] = field.type === "number" ? Number(field.value) : field.value;
  }
  return body;
}

async function waitForJob(jobId, output) {
  for (let i = 0; i < 600; i += 1) {
    const result = await api("GET", "/jobs/" + encodeURIComponent(jobId));
    if (!result.ok) return result;
    const job = result.data;
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      return { ok: job.status === "succeeded", status: 200, data: job };
    }
    output.textContent = "Working (" + Math.round(job.progress * 100) + "%)...";
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return { ok: false, status: 504, data: { error: "still running; see Jobs" } };
}

function showResult(output, result) {
  output.replaceChildren();
  if (result.texts) {
    result.texts.forEach((text) => {
      const block = document.createElement("pre");
      block.className = "generated-text";
      block.textContent = text;
      output.append(block);
    });
  }
  (result.content_ids || []).forEach((id, index) => {
    const link = document.createElement("a");
    link.href = "/console/content/" + encodeURIComponent(id);
    const img = document.createElement("img");
    img.src = API + "/content/" + encodeURIComponent(id) + "/assets/original";
    img.alt = "generated image " + (index + 1);
    img.width = 96;
    img.height = 96;
    link.append(img);
    output.append(link);
  });
}

async function generate(form) {
  const output = document.getElementById(form.dataset.output);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  output.classList.remove("error");
  output.textContent = "Working...";
  let result = await api("POST", form.dataset.generate + "?wait=30", formBody(form));
  if (result.status === 202 && result.data && result.data.job_id) {
    result = await waitForJob(result.data.job_id, output);
  }
  button.disabled = false;
  if (!result.ok) {
    output.classList.add("error");
    output.textContent = errorMessage(result.data, result.status);
    return;
  }
  showResult(output, result.data.result || {});
}

// Wiring --------------------------------------------------------------------------------------

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  const tagButton = target && target.closest(".tag-act");
  if (tagButton) { reviewTag(tagButton); return; }
  const action = target && target.closest("button[data-api]");
  if (action) runAction(action);
});

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.generate) {
    event.preventDefault();
    generate(form);
  }
});

document.addEventListener("DOMContentLoaded", () => {
  setUpUploads();
  setUpPolling();
});
