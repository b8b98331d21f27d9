"use strict";
// openft's dashboard: a client of the public API (/v1) like the SDKs, with the user's key. Every
// value that comes from the server goes into the page as text (textContent), never as HTML.

const TERMINAL = ["succeeded", "failed", "cancelled"];
const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const KEY_NAME = "openft.apiKey";
const enc = encodeURIComponent;
let stopPage = () => {}; // ends the current page's polling when another page opens

// ---------------------------------------------------------------- elements

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (typeof value !== "string" && name in el) el[name] = value; // disabled, selected, checked
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const $ = (selector, root = document) => root.querySelector(selector);
const card = (title, ...children) => h("section", { class: "card" }, title ? h("h2", { text: title }) : null, children);
const table = (id, headers, body) =>
  h("table", { id }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { text: t })))), body);
const time = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "—");
const num = (value, digits = 3) => (value === null || value === undefined ? "—" : Number(value).toFixed(digits));
const statusBadge = (status) => h("span", { class: `status ${status}`, text: status.replace("_", " ") });

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function duration(seconds) {
  const s = Math.round(seconds);
  const [hours, minutes, secs] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  return hours ? `${hours} h ${minutes} min` : minutes ? `${minutes} min ${secs} s` : `${secs} s`;
}

function progressBar(step, total, label) {
  const percent = label === "done" ? 100 : total ? Math.min(100, (100 * step) / total) : 0;
  return h("div", { class: "row nowrap" },
    h("div", { class: "progress" }, h("div", { style: `width: ${percent}%` })),
    h("span", { class: "muted", text: label || (total ? `step ${step}/${total}` : "") }));
}

// ---------------------------------------------------------------- the API

const auth = {
  get: () => sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "",
  set(key, remember) { this.clear(); (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key); },
  clear() { sessionStorage.removeItem(KEY_NAME); localStorage.removeItem(KEY_NAME); },
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function request(path, { method = "GET", json, form, signal } = {}) {
  const headers = {};
  const key = auth.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body = form;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const response = await fetch(`/v1${path}`, { method, headers, body, signal });
  if (!response.ok) {
    let payload = null;
    try { payload = await response.json(); } catch { /* not JSON: the status says enough */ }
    const error = new ApiError(response.status, payload);
    if (response.status === 401) { auth.clear(); showLogin(error.message); }
    throw error;
  }
  return response;
}
const api = async (path, options) => (await request(path, options)).json();

async function allEvents(jobId, lastSeen, limit) {
  // Events come newest first, and `after` pages to older ones: read until the last one seen.
  const fresh = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after) query.set("after", after);
    const page = await api(`/fine_tuning/jobs/${enc(jobId)}/events?${query}`);
    for (const event of page.data) {
      if (event.id === lastSeen) return fresh.reverse();
      fresh.push(event);
    }
    if (!page.has_more || !page.data.length) return fresh.reverse(); // oldest first
    after = page.data[page.data.length - 1].id;
  }
}

async function download(fileId) {
  const file = await api(`/files/${enc(fileId)}`);
  let blob = await (await request(`/files/${enc(fileId)}/content`)).blob();
  if (file.purpose === "fine-tune-results") { // served base64-encoded, as OpenAI serves it
    blob = new Blob([Uint8Array.from(atob(await blob.text()), (c) => c.charCodeAt(0))], { type: "text/csv" });
  }
  const link = h("a", { href: URL.createObjectURL(blob), download: file.filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function upload(file, purpose) {
  const form = new FormData();
  form.append("purpose", purpose);
  form.append("file", file, file.name);
  return api("/files", { method: "POST", form });
}

// ---------------------------------------------------------------- shell: login, banner, routes

function showError(error) {
  if (error?.status === 401 || error?.name === "AbortError") return; // the login form says it
  const banner = $("#banner");
  banner.textContent = error?.message || String(error);
  banner.hidden = false;
}
const hideBanner = () => { $("#banner").hidden = true; };

function showWho() {
  const who = $("#who");
  const key = auth.get();
  who.replaceChildren(key
    ? h("span", {}, `key ${key.slice(0, 5)}…`, h("button", { id: "logout", text: "Sign out", onclick: logout }))
    : h("span", { text: "single-user mode" }));
}

function logout() {
  auth.clear();
  showLogin();
}

function showLogin(message) {
  stopPage();
  hideBanner();
  $("#who").replaceChildren();
  const key = h("input", { id: "api-key", type: "password", placeholder: "sk-…", autocomplete: "off" });
  const remember = h("input", { id: "remember", type: "checkbox" });
  const problem = h("p", { id: "login-error", class: "report-bad", text: message || "" });
  const submit = async (event) => {
    event.preventDefault();
    auth.set(key.value.trim(), remember.checked);
    try {
      await api("/models");
    } catch (error) {
      if (error.status !== 401) problem.textContent = error.message;
      return;
    }
    start();
  };
  $("#main").replaceChildren(h("form", { class: "card login", onsubmit: submit },
    h("h2", { text: "Sign in to openft" }),
    h("p", { class: "muted", text: "This server has API keys: enter one of them. Its organization's jobs, files and models are what you will see." }),
    h("label", {}, "API key", key),
    h("label", { class: "inline" }, remember, "remember on this browser"),
    problem,
    h("button", { id: "login", class: "primary", type: "submit", text: "Sign in" })));
  key.focus();
}

const PAGES = { jobs: jobsPage, job: jobPage, new: newJobPage, files: filesPage, models: modelsPage, playground: playgroundPage };

function route() {
  stopPage();
  hideBanner();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let name = PAGES[parts[0]] ? parts[0] : "jobs";
  if (name === "jobs" && parts[1]) name = "job";
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === (name === "job" ? "jobs" : name));
  }
  const page = { alive: true, timers: [], aborts: [] };
  stopPage = () => {
    page.alive = false;
    page.timers.forEach(clearTimeout);
    page.aborts.forEach((controller) => controller.abort());
  };
  const main = $("#main");
  main.replaceChildren();
  PAGES[name](main, parts.slice(1), new URLSearchParams(query || ""), page).catch(showError);
}

function every(page, milliseconds, work) {
  // Runs `work` now and again after each run, until it returns false or the page closes.
  const tick = async () => {
    if (!page.alive) return;
    let again = true;
    try { again = (await work()) !== false; } catch (error) { showError(error); }
    if (page.alive && again) page.timers.push(setTimeout(tick, milliseconds));
  };
  return tick();
}

async function start() {
  try {
    await api("/models"); // without keys configured this answers; with keys, 401 shows the login
  } catch (error) {
    if (error.status !== 401) showError(error);
    return;
  }
  showWho();
  route();
}

window.addEventListener("hashchange", () => { if (!$("#login")) route(); });
window.addEventListener("DOMContentLoaded", start);

// ---------------------------------------------------------------- jobs

async function jobsPage(main, _parts, params, page) {
  const filter = params.get("status") || "";
  const select = h("select", { id: "status-filter", onchange: () => { location.hash = select.value ? `#/jobs?status=${select.value}` : "#/jobs"; } },
    h("option", { value: "", text: "all" }), STATUSES.map((s) => h("option", { value: s, text: s.replace("_", " "), selected: s === filter })));
  const body = h("tbody");
  const note = h("p", { class: "muted" });
  main.append(
    h("h1", {}, "Fine-tuning jobs", h("a", { class: "button", href: "#/new", text: "New job" })),
    card(null, h("div", { class: "row" }, h("label", { class: "inline" }, "Status", select)),
      table("jobs", ["Job", "Status", "Model", "Fine-tuned model", "Created", "Finished", "Progress"], body), note));
  await every(page, 3000, async () => {
    const list = await api("/fine_tuning/jobs?limit=100");
    const jobs = list.data.filter((job) => !filter || job.status === filter);
    const progress = await Promise.all(jobs.map((job) => jobProgress(job)));
    body.replaceChildren(...jobs.map((job, i) => jobRow(job, progress[i])));
    if (!jobs.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: filter ? `No ${filter} jobs.` : "No jobs yet." })));
    note.textContent = list.has_more ? "The 100 newest jobs." : "";
  });
}

async function jobProgress(job) {
  if (job.status !== "running" && job.status !== "paused") return null;
  const events = await api(`/fine_tuning/jobs/${enc(job.id)}/events?limit=20`);
  const metrics = events.data.find((event) => event.type === "metrics" && event.data);
  return metrics ? [metrics.data.step, metrics.data.total_steps] : null;
}

function jobRow(job, progress) {
  const done = job.status === "succeeded";
  return h("tr", { dataset: { job: job.id } },
    h("td", {}, h("a", { class: "mono", href: `#/jobs/${enc(job.id)}`, text: job.id })),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "mono", text: job.model }),
    h("td", { class: "mono", text: job.fine_tuned_model || "—" }),
    h("td", { text: time(job.created_at) }),
    h("td", { text: time(job.finished_at) }),
    h("td", {}, progress ? progressBar(...progress) : done ? progressBar(1, 1, "done") : "—"));
}

// ---------------------------------------------------------------- one job

// The chart's lines: which metrics keys each one reads (a DPO job reports preference accuracy).
const LINES = [
  { label: "training loss", keys: ["train_loss"], scale: "loss", stroke: "#2f6fed", width: 2 },
  { label: "validation loss", keys: ["valid_loss"], scale: "loss", stroke: "#e8590c", width: 2, spanGaps: true, points: { show: true } },
  { label: "full validation loss", keys: ["full_valid_loss"], scale: "loss", stroke: "#c2255c", paths: () => null, points: { show: true, size: 9 } },
  { label: "training accuracy", keys: ["train_mean_token_accuracy", "train_preference_accuracy"], scale: "acc", stroke: "#2b8a3e", dash: [5, 4] },
  { label: "validation accuracy", keys: ["valid_mean_token_accuracy", "valid_preference_accuracy"], scale: "acc", stroke: "#862e9c", dash: [5, 4], spanGaps: true },
];

class LossChart {
  // Training and validation loss (left axis) and accuracy (right axis, 0-1) over steps, from the
  // job's metrics events; only the lines the job reports. `data-points`: how many steps are plotted.
  constructor(element) {
    this.element = element;
    this.steps = new Map();
    this.total = 0;
    this.plot = null;
    this.lines = "";
    window.addEventListener("resize", () => this.plot?.setSize({ width: this.width(), height: 300 }));
  }

  width() { return Math.max(320, this.element.clientWidth); }

  add(events) {
    for (const event of events) {
      const data = event.data;
      if (event.type !== "metrics" || !data || data.step === undefined) continue;
      this.steps.set(data.step, { ...this.steps.get(data.step), ...data });
      this.total = data.total_steps || this.total;
    }
    this.draw();
  }

  draw() {
    const steps = [...this.steps.keys()].sort((a, b) => a - b);
    this.element.dataset.points = String(steps.length);
    if (!steps.length) {
      this.element.replaceChildren(h("p", { class: "muted", text: "No metrics yet: the chart grows as the job trains." }));
      return;
    }
    const value = (data, keys) => { const key = keys.find((k) => data[k] !== undefined && data[k] !== null); return key ? data[key] : null; };
    const columns = LINES.map((line) => steps.map((step) => value(this.steps.get(step), line.keys)));
    const shown = LINES.map((_, i) => i).filter((i) => columns[i].some((v) => v !== null));
    const data = [steps, ...shown.map((i) => columns[i])];
    if (this.plot && this.lines === shown.join()) { this.plot.setData(data); return; }
    this.plot?.destroy(); // a line appeared (the first validation loss): a new plot with it
    this.lines = shown.join();
    this.element.replaceChildren();
    this.plot = new uPlot({
      width: this.width(),
      height: 300,
      legend: { live: false }, // names only: the values under the cursor would read "--" elsewhere
      scales: { x: { time: false, range: (_u, _min, max) => [1, Math.max(2, this.total, max)] }, loss: {}, acc: { range: [0, 1] } },
      axes: [
        { label: "step" },
        { scale: "loss", label: "loss" },
        { scale: "acc", label: "accuracy", side: 1, grid: { show: false } },
      ],
      series: [{ label: "step" }, ...shown.map((i) => { const { keys, ...line } = LINES[i]; return line; })],
    }, data, this.element);
  }
}

async function jobPage(main, [jobId], _params, page) {
  let job = await api(`/fine_tuning/jobs/${enc(jobId)}`);
  const title = h("h1");
  const buttons = {
    cancel: h("button", { id: "cancel", class: "danger", text: "Cancel", onclick: () => act("cancel") }),
    pause: h("button", { id: "pause", text: "Pause", onclick: () => act("pause") }),
    resume: h("button", { id: "resume", text: "Resume", onclick: () => act("resume") }),
  };
  const settings = h("dl", { id: "settings" });
  const progress = h("div", { id: "progress" });
  const chartElement = h("div", { id: "loss-chart", class: "chart" });
  const checkpoints = h("tbody");
  const events = h("tbody");
  const results = h("div", { id: "results" });
  main.append(title,
    h("div", { class: "grid" },
      card("Settings", settings),
      card("Result", results, h("h2", { text: "Progress", style: "margin-top: 14px" }), progress)),
    card("Loss and accuracy", chartElement),
    card("Checkpoints", table("checkpoints", ["Step", "Model", "Training loss", "Token accuracy", "Validation loss", "Validation accuracy", ""], checkpoints)),
    card("Events", h("div", { class: "events" }, table("events", ["Time", "Level", "Message"], events))));
  const chart = new LossChart(chartElement);
  let lastEvent = null;
  let step = [0, 0];

  async function act(action) {
    buttons[action].disabled = true;
    try {
      job = await api(`/fine_tuning/jobs/${enc(jobId)}/${action}`, { method: "POST" });
      poll(); // after a resume, the job trains again
    } catch (error) { showError(error); }
    render();
  }

  function render() {
    title.replaceChildren(h("span", { class: "mono", text: job.id }), statusBadge(job.status),
      h("span", { class: "row" }, buttons.cancel, buttons.pause, buttons.resume));
    title.dataset.status = job.status;
    buttons.cancel.disabled = TERMINAL.includes(job.status);
    buttons.pause.disabled = !["validating_files", "queued", "running"].includes(job.status);
    buttons.resume.disabled = job.status !== "paused";
    renderSettings(settings, job);
    progress.replaceChildren(job.status === "succeeded" ? progressBar(step[1], step[1], "done") : progressBar(...step));
    if (job.estimated_finish && !TERMINAL.includes(job.status)) {
      progress.append(h("p", { class: "muted", text: `expected to finish ${time(job.estimated_finish)}` }));
    }
    renderResults(results, job);
  }

  async function refreshCheckpoints() {
    const list = await api(`/fine_tuning/jobs/${enc(jobId)}/checkpoints?limit=100`);
    checkpoints.replaceChildren(...list.data.map(checkpointRow));
    if (!list.data.length) checkpoints.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "None yet." })));
  }

  let polling = false;
  function poll() {
    if (polling) return;
    polling = true;
    every(page, 1000, async () => {
      // This tick's own status: a cancel answered meanwhile sets `job` too, and stopping on that
      // would leave out its event, which these events were read too early to hold.
      const fetched = await api(`/fine_tuning/jobs/${enc(jobId)}`);
      job = fetched;
      const fresh = await allEvents(jobId, lastEvent, lastEvent ? 50 : 1000);
      if (fresh.length) {
        lastEvent = fresh[fresh.length - 1].id;
        chart.add(fresh);
        const latest = fresh.filter((event) => event.type === "metrics" && event.data).pop();
        if (latest) step = [latest.data.step, latest.data.total_steps];
        events.prepend(...fresh.reverse().map(eventRow));
        await refreshCheckpoints();
      }
      render();
      polling = !TERMINAL.includes(fetched.status);
      return polling; // a finished job has nothing more to show
    });
  }
  chart.draw();
  await refreshCheckpoints();
  render();
  poll();
}

function renderSettings(dl, job) {
  const method = job.method || { type: "supervised" };
  const hyperparameters = job.hyperparameters || method[method.type]?.hyperparameters || {};
  const fileLink = (id) => (id ? h("a", { class: "mono", href: `#/files?id=${enc(id)}`, text: id }) : "—");
  const rows = [
    ["Base model", h("span", { class: "mono", text: job.model })],
    ["Method", method.type],
    ...Object.entries(hyperparameters).map(([name, value]) => [name.replaceAll("_", " "), String(value ?? "auto")]),
    ["Training file", fileLink(job.training_file)],
    ["Validation file", fileLink(job.validation_file)],
    ["Suffix", job.user_provided_suffix || "—"],
    ["Seed", String(job.seed)],
    ["Trained tokens", job.trained_tokens === null ? "—" : job.trained_tokens.toLocaleString()],
    ["Created", time(job.created_at)],
    ["Finished", time(job.finished_at)],
  ];
  if (job.metadata && Object.keys(job.metadata).length) rows.push(["Metadata", JSON.stringify(job.metadata)]);
  if (job.integrations?.length) rows.push(["Integrations", job.integrations.map((i) => `${i.type}: ${i.wandb?.project}`).join(", ")]);
  if (job.error) rows.push(["Error", h("span", { class: "report-bad", text: `${job.error.code}: ${job.error.message}` })]);
  dl.replaceChildren(...rows.flatMap(([name, value]) => [h("dt", { text: name }), h("dd", {}, value)]));
}

function renderResults(element, job) {
  const parts = [];
  if (job.fine_tuned_model) {
    parts.push(h("p", {}, "Fine-tuned model: ", h("span", { class: "mono", id: "fine-tuned-model", text: job.fine_tuned_model })),
      h("p", { class: "row" },
        h("a", { class: "button", href: `#/playground?model=${enc(job.model)}&model=${enc(job.fine_tuned_model)}`, text: "Compare with the base model in the playground" })));
  }
  for (const id of job.result_files) {
    parts.push(h("p", {}, "Result file: ", h("a", { href: "#", class: "mono result-file", text: id, onclick: (e) => { e.preventDefault(); download(id).catch(showError); } }),
      h("span", { class: "muted", text: " (step metrics, CSV)" })));
  }
  if (!parts.length) parts.push(h("p", { class: "muted", text: TERMINAL.includes(job.status) ? "No fine-tuned model." : "The model and result file appear here when the job succeeds." }));
  element.replaceChildren(...parts);
}

function checkpointRow(checkpoint) {
  const m = checkpoint.metrics;
  return h("tr", {},
    h("td", { class: "num", text: String(checkpoint.step_number) }),
    h("td", { class: "mono", text: checkpoint.fine_tuned_model_checkpoint }),
    h("td", { class: "num", text: num(m.train_loss) }),
    h("td", { class: "num", text: num(m.train_mean_token_accuracy) }),
    h("td", { class: "num", text: num(m.full_valid_loss ?? m.valid_loss) }),
    h("td", { class: "num", text: num(m.full_valid_mean_token_accuracy ?? m.valid_mean_token_accuracy) }),
    h("td", {}, h("a", { href: `#/playground?model=${enc(checkpoint.fine_tuned_model_checkpoint)}`, text: "try" })));
}

function eventRow(event) {
  return h("tr", { class: event.level },
    h("td", { class: "muted", text: time(event.created_at) }),
    h("td", { text: event.level }),
    h("td", { text: event.message }));
}

// ---------------------------------------------------------------- new job

async function newJobPage(main, _parts, params, page) {
  const [files, models] = await Promise.all([api("/files?purpose=fine-tune&limit=1000"), api("/models")]);
  const fileOptions = (preselect) => [
    h("option", { value: "", text: preselect ? "choose a file…" : "none" }),
    files.data.map((f) => h("option", { value: f.id, text: `${f.filename} (${f.id})`, selected: preselect && f.id === params.get("file") })),
  ];
  const training = h("select", { id: "training-file" }, fileOptions(true));
  const validation = h("select", { id: "validation-file" }, fileOptions(false));
  const trainingUpload = h("input", { id: "training-upload", type: "file", accept: ".jsonl,.json,.txt" });
  const validationUpload = h("input", { id: "validation-upload", type: "file", accept: ".jsonl,.json,.txt" });
  const model = h("select", { id: "model" }, models.data.map((m) => h("option", { value: m.id, text: m.id })));
  const method = h("select", { id: "method" }, h("option", { value: "supervised", text: "supervised" }), h("option", { value: "dpo", text: "DPO (preference pairs)" }));
  const field = (id, placeholder = "auto") => h("input", { id, placeholder, autocomplete: "off" });
  const suffix = field("suffix", "my-model");
  const epochs = field("n-epochs");
  const batch = field("batch-size");
  const rate = field("learning-rate");
  const beta = field("beta");
  const seed = field("seed", "random");
  const betaLabel = h("label", { class: "hidden" }, "beta (DPO)", beta);
  const reports = h("div", { id: "check-report", class: "reports" });
  const startButton = h("button", { id: "start", class: "primary", text: "Start fine-tuning" });
  const startNote = h("span", { class: "muted" });
  let checks = 0;
  let blocked = false;

  async function check() {
    const run = ++checks;
    const chosen = [["Training file", training.value], ["Validation file", validation.value]].filter(([, id]) => id);
    if (!chosen.length) { reports.replaceChildren(); return; }
    reports.replaceChildren(h("p", { class: "muted", id: "checking", text: "Checking… (the first check of a model measures its training speed)" }));
    const query = new URLSearchParams({ model: model.value });
    if (/^\d+$/.test(epochs.value.trim())) query.set("n_epochs", epochs.value.trim());
    try {
      const results = await Promise.all(chosen.map(([name, id]) =>
        api(`/files/${enc(id)}/check?${query}${name === "Validation file" ? "&validation=true" : ""}`)));
      if (run !== checks) return; // a newer check started meanwhile
      blocked = results.some((report) => report.n_errors);
      reports.replaceChildren(...results.map((report, i) => renderReport(chosen[i][0], report)));
    } catch (error) {
      if (run === checks) reports.replaceChildren(h("p", { class: "report-bad", text: error.message }));
    }
    updateStart();
  }

  function updateStart() {
    startButton.disabled = !training.value || blocked;
    startNote.textContent = blocked ? "Fix the errors above first." : training.value ? "" : "Choose or upload a training file.";
  }

  async function uploaded(input, select) {
    if (!input.files.length) return;
    try {
      const file = await upload(input.files[0], "fine-tune");
      for (const other of [training, validation]) other.append(h("option", { value: file.id, text: `${file.filename} (${file.id})` }));
      select.value = file.id;
      input.value = "";
      check();
    } catch (error) { showError(error); }
  }

  async function startJob() {
    const hyperparameters = {};
    const numeric = [["n_epochs", epochs, parseInt], ["batch_size", batch, parseInt], ["learning_rate_multiplier", rate, parseFloat]];
    if (method.value === "dpo") numeric.push(["beta", beta, parseFloat]);
    for (const [name, input, parse] of numeric) if (input.value.trim()) hyperparameters[name] = parse(input.value);
    const body = { model: model.value, training_file: training.value, method: { type: method.value, [method.value]: { hyperparameters } } };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    if (seed.value.trim()) body.seed = parseInt(seed.value, 10);
    startButton.disabled = true;
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", json: body });
      location.hash = `#/jobs/${enc(job.id)}`;
    } catch (error) { showError(error); updateStart(); }
  }

  training.addEventListener("change", () => { blocked = false; updateStart(); check(); });
  validation.addEventListener("change", check);
  model.addEventListener("change", check);
  epochs.addEventListener("change", check);
  method.addEventListener("change", () => betaLabel.classList.toggle("hidden", method.value !== "dpo"));
  trainingUpload.addEventListener("change", () => uploaded(trainingUpload, training));
  validationUpload.addEventListener("change", () => uploaded(validationUpload, validation));
  startButton.addEventListener("click", startJob);
  main.append(h("h1", { text: "New fine-tuning job" }),
    card("Data",
      h("div", { class: "form" },
        h("label", {}, "Training file", training, h("span", { class: "upload" }, "or upload one: ", trainingUpload)),
        h("label", {}, "Validation file (optional)", validation, h("span", { class: "upload" }, "or upload one: ", validationUpload))),
      reports),
    card("Model and hyperparameters",
      h("div", { class: "form" },
        h("label", {}, "Base model (or a fine-tuned one, to continue it)", model),
        h("label", {}, "Method", method),
        h("label", {}, "Suffix", suffix),
        h("label", {}, "Epochs", epochs),
        h("label", {}, "Batch size", batch),
        h("label", {}, "Learning rate multiplier", rate),
        betaLabel,
        h("label", {}, "Seed", seed)),
      h("div", { class: "row" }, startButton, startNote)));
  updateStart();
  if (training.value) check();
}

function renderReport(title, report) {
  const t = report.tokens;
  const rows = [
    ["Examples", String(report.n_examples)],
    ["Format", report.format || "unknown"],
    ["Tokens per example", t ? `min ${t.min}, max ${t.max}, mean ${t.mean}, p50 ${t.p50}, p90 ${t.p90}` : "—"],
    [`Longer than the context (${report.context_length})`, String(report.n_over_context)],
    ["Without a system message", String(report.n_without_system)],
    ["Without an assistant message", String(report.n_without_assistant)],
    ["Exact duplicates", String(report.n_duplicates)],
  ];
  if (title !== "Validation file") {
    rows.push(["Trained tokens (billed)", report.n_epochs ? `${report.trained_tokens.toLocaleString()} over ${report.n_epochs} epoch(s)` : "—"],
      ["Expected training time", report.estimated_seconds === null ? "—" : `${duration(report.estimated_seconds)} (measured ${report.tokens_per_second} tokens/s on this machine)`]);
  }
  const verdict = report.n_errors
    ? h("p", { class: "report-bad", text: `${report.n_errors} error(s): this file can't be used for fine-tuning as it is.` })
    : h("p", { class: "report-ok", text: "No errors: this file can be used for fine-tuning." });
  const errors = report.errors.length
    ? table("check-errors", ["Line", "Code", "Problem"], h("tbody", {}, report.errors.map((e) => h("tr", {},
      h("td", { class: "num", text: e.line ? String(e.line) : "file" }),
      h("td", { class: "mono", text: e.code }),
      h("td", { text: e.message.split(" Invalid file format. ").pop() })))))
    : null;
  return h("div", { class: "report", dataset: { errors: String(report.n_errors), file: report.file_id } },
    h("h2", {}, `${title}: `, h("span", { class: "mono", text: report.filename }), h("span", { class: "muted", text: ` counted with ${report.model}` })),
    verdict,
    h("dl", {}, rows.flatMap(([name, value]) => [h("dt", { text: name }), h("dd", { text: value })])),
    report.problems.map((problem) => h("p", { class: "muted", text: `warning: ${problem}` })),
    errors);
}

// ---------------------------------------------------------------- files and models

async function filesPage(main, _parts, params, page) {
  const body = h("tbody");
  const detail = h("div", { id: "file-detail" });
  const input = h("input", { id: "file-upload", type: "file" });
  const purpose = h("select", { id: "file-purpose" }, ["fine-tune", "user_data", "batch", "assistants", "vision", "evals"].map((p) => h("option", { value: p, text: p })));
  const refresh = async () => {
    const files = await api("/files?limit=1000");
    body.replaceChildren(...files.data.map((file) => h("tr", { dataset: { file: file.id } },
      h("td", {}, h("a", { class: "mono", href: `#/files?id=${enc(file.id)}`, text: file.id })),
      h("td", { text: file.filename }),
      h("td", { text: file.purpose }),
      h("td", { class: "num", text: bytes(file.bytes) }),
      h("td", { text: time(file.created_at) }),
      h("td", {}, h("div", { class: "row nowrap" },
        h("button", { text: "Download", onclick: () => download(file.id).catch(showError) }),
        h("button", { class: "danger delete", text: "Delete", onclick: () => remove(file) }))))));
    if (!files.data.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted", text: "No files yet." })));
  };
  const remove = async (file) => {
    if (!confirm(`Delete ${file.filename} (${file.id})?`)) return;
    try { await api(`/files/${enc(file.id)}`, { method: "DELETE" }); } catch (error) { showError(error); }
    detail.replaceChildren();
    await refresh();
  };
  input.addEventListener("change", async () => {
    if (!input.files.length) return;
    try { await upload(input.files[0], purpose.value); input.value = ""; await refresh(); } catch (error) { showError(error); }
  });
  main.append(h("h1", { text: "Files" }),
    card(null, h("div", { class: "row" }, h("label", { class: "inline" }, "Upload as", purpose), input)),
    detail,
    card(null, table("files", ["File", "Name", "Purpose", "Size", "Created", ""], body)));
  await refresh();
  if (params.get("id")) await showFile(detail, params.get("id"));
}

async function showFile(element, fileId) {
  const file = await api(`/files/${enc(fileId)}`);
  const head = await firstBytes(fileId, 4096);
  const actions = h("div", { class: "row" });
  const report = h("div");
  if (file.purpose === "fine-tune") {
    actions.append(h("button", { text: "Check for fine-tuning", onclick: async () => {
      report.replaceChildren(h("p", { class: "muted", text: "Checking…" }));
      try { report.replaceChildren(renderReport("Check", await api(`/files/${enc(fileId)}/check`))); } catch (error) { report.replaceChildren(h("p", { class: "report-bad", text: error.message })); }
    } }), h("a", { class: "button", href: `#/new?file=${enc(fileId)}`, text: "Fine-tune on it" }));
  }
  element.replaceChildren(card(file.filename,
    h("dl", {}, [["Id", file.id], ["Purpose", file.purpose], ["Size", bytes(file.bytes)], ["Created", time(file.created_at)],
      ["Expires", time(file.expires_at)], ["Status", file.status]].flatMap(([name, value]) => [h("dt", { text: name }), h("dd", { text: value })])),
    h("h2", { text: file.bytes > 4096 ? "The first 4 KiB" : "Content", style: "margin-top: 12px" }),
    h("pre", { text: head }), actions, report));
}

async function firstBytes(fileId, limit) {
  const response = await request(`/files/${enc(fileId)}/content`);
  const reader = response.body.getReader();
  const parts = [];
  let size = 0;
  while (size < limit) {
    const { value, done } = await reader.read();
    if (done) break;
    parts.push(value);
    size += value.length;
  }
  reader.cancel();
  return new TextDecoder().decode(await new Blob(parts).slice(0, limit).arrayBuffer());
}

async function modelsPage(main) {
  const body = h("tbody");
  const refresh = async () => {
    const [models, jobs] = await Promise.all([api("/models"), api("/fine_tuning/jobs?limit=100")]);
    const trainedBy = new Map(jobs.data.filter((job) => job.fine_tuned_model).map((job) => [job.fine_tuned_model, job]));
    body.replaceChildren(...models.data.map((model) => {
      const job = trainedBy.get(model.id);
      const fineTuned = model.id.startsWith("ft:");
      return h("tr", { dataset: { model: model.id } },
        h("td", { class: "mono", text: model.id }),
        h("td", { text: fineTuned ? "fine-tuned" : "base" }),
        h("td", { text: model.owned_by }),
        h("td", { text: time(model.created) }),
        h("td", {}, job ? h("a", { class: "mono", href: `#/jobs/${enc(job.id)}`, text: job.id }) : "—"),
        h("td", {}, h("div", { class: "row nowrap" },
          h("a", { class: "button", href: `#/playground?model=${enc(model.id)}`, text: "Chat" }),
          fineTuned ? h("button", { class: "danger delete", text: "Delete", onclick: () => remove(model.id) }) : null)));
    }));
  };
  const remove = async (id) => {
    if (!confirm(`Delete ${id} and its adapter files?`)) return;
    try { await api(`/models/${enc(id)}`, { method: "DELETE" }); } catch (error) { showError(error); }
    await refresh();
  };
  main.append(h("h1", { text: "Models" }), card(null, table("models", ["Model", "Kind", "Owner", "Created", "Trained by", ""], body)));
  await refresh();
}

// ---------------------------------------------------------------- playground

async function streamChat(body, onDelta, signal) {
  const response = await request("/chat/completions", { method: "POST", json: { ...body, stream: true }, signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) { // one server-sent event per blank-line-ended frame
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const payload = line.slice(5).trim();
        if (payload === "[DONE]") return;
        const chunk = JSON.parse(payload);
        if (chunk.error) throw new ApiError(500, chunk);
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) onDelta(delta);
      }
    }
  }
}

async function playgroundPage(main, _parts, params, page) {
  const models = (await api("/models")).data.map((m) => m.id);
  const names = h("datalist", { id: "model-names" }, models.map((id) => h("option", { value: id })));
  const system = h("textarea", { id: "system", rows: 2, placeholder: "System message (optional)" });
  const prompt = h("textarea", { id: "prompt", rows: 3, placeholder: "Your message" });
  const maxTokens = h("input", { id: "max-tokens", type: "number", value: "256", min: "1", style: "width: 90px" });
  const temperature = h("input", { id: "temperature", type: "number", value: "0", min: "0", max: "2", step: "0.1", style: "width: 80px" });
  const columns = h("div", { class: "columns", id: "columns" });
  const send = h("button", { id: "send", class: "primary", text: "Send" });
  const stop = h("button", { id: "stop", text: "Stop", disabled: true });
  const panes = [];

  function addPane(model) {
    const input = h("input", { class: "model mono", list: "model-names", value: model || models[0] || "", style: "flex: 1" });
    const log = h("div", { class: "log" });
    const pane = { input, log, messages: [] };
    const close = h("button", { text: "×", title: "Remove", onclick: () => { panes.splice(panes.indexOf(pane), 1); element.remove(); } });
    const element = h("section", { class: "card pane" }, h("div", { class: "row" }, input, close), log);
    panes.push(pane);
    columns.append(element);
  }

  async function answer(pane, controller) {
    const bubble = h("div", { class: "turn assistant", dataset: { state: "streaming", deltas: "0" } });
    pane.log.append(bubble);
    const messages = [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), ...pane.messages];
    const body = { model: pane.input.value.trim(), messages, max_tokens: parseInt(maxTokens.value, 10) || 256, temperature: parseFloat(temperature.value) || 0 };
    try {
      await streamChat(body, (delta) => {
        bubble.textContent += delta;
        bubble.dataset.deltas = String(Number(bubble.dataset.deltas) + 1);
      }, controller.signal);
      pane.messages.push({ role: "assistant", content: bubble.textContent });
    } catch (error) {
      if (error.name !== "AbortError") { bubble.classList.add("error"); bubble.textContent += (bubble.textContent ? "\n" : "") + error.message; }
      pane.messages.pop(); // the user turn that got no answer: asked again, it isn't doubled
    }
    bubble.dataset.state = "done";
  }

  send.addEventListener("click", async () => {
    const text = prompt.value.trim();
    if (!text || !panes.length) return;
    prompt.value = "";
    const controller = new AbortController();
    page.aborts.push(controller);
    stop.onclick = () => controller.abort();
    send.disabled = true;
    stop.disabled = false;
    await Promise.all(panes.map((pane) => {
      pane.messages.push({ role: "user", content: text });
      pane.log.append(h("div", { class: "turn user", text }));
      return answer(pane, controller);
    }));
    send.disabled = false;
    stop.disabled = true;
  });
  prompt.addEventListener("keydown", (event) => { if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) send.click(); });
  const requested = params.getAll("model");
  (requested.length ? requested : [models[0]]).forEach(addPane);
  main.append(names, h("h1", {}, "Playground",
    h("button", { id: "add-pane", text: "Add a model side by side", onclick: () => addPane(models[0]) }),
    h("button", { id: "clear", text: "Clear", onclick: () => panes.forEach((pane) => { pane.messages = []; pane.log.replaceChildren(); }) })),
    card(null, system, h("div", { style: "height: 8px" }), prompt,
      h("div", { class: "row", style: "margin-top: 8px" }, send, stop,
        h("label", { class: "inline" }, "max tokens", maxTokens),
        h("label", { class: "inline" }, "temperature", temperature),
        h("span", { class: "muted", text: "Ctrl+Enter sends; every model gets the same conversation." }))),
    columns);
  prompt.focus();
}
