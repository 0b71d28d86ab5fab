// zfarm web page: plain JavaScript, no build step. It uses the same /v1 API as the CLI and the client.
"use strict";

const FINAL = new Set(["succeeded", "failed", "canceled", "dead"]);
const PRESETS = [
  ["Square 1024 · PNG", 1024, 1024, "png"],
  ["Marketplace main 2000 · JPEG", 2000, 2000, "jpeg"],
  ["Portrait 768×1024 · WebP", 768, 1024, "webp"],
  ["Landscape 1024×768 · WebP", 1024, 768, "webp"],
  ["Thumbnail 512 · WebP", 512, 512, "webp"],
  ["Custom", null, null, null],
];
const state = { key: localStorage.getItem("zfarm.apiKey") || "", streams: new Map(), blobs: new Map() };

// ---- helpers -------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}
const $ = (sel) => document.querySelector(sel);
const short = (id) => id.slice(0, 8);
const secs = (s) => (s === null || s === undefined ? "–" : `${Number(s).toFixed(2)} s`);
const mib = (m) => (m === null || m === undefined ? "–" : `${(m / 1024).toFixed(1)} GiB`);

function notice(text, kind = "warn") {
  const n = $("#notice");
  n.hidden = !text;
  n.className = `notice ${kind}`;
  n.textContent = text || "";
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) {
    notice("This farm needs an API key: paste it in the box at the top right.");
    throw new Error("API key required");
  }
  if (res.status === 403) {
    notice("This view needs an admin API key.");
    throw new Error("admin key required");
  }
  if (!res.ok) {
    let detail = await res.text();
    try {
      const body = JSON.parse(detail).detail;
      detail = Array.isArray(body) ? body.map((d) => d.message || JSON.stringify(d)).join("; ") : body;
    } catch (_) { /* not JSON: keep the text */ }
    throw new Error(`HTTP ${res.status}: ${detail}`);
  }
  return res;
}
// Seeds run to 2^63 - 1; JavaScript numbers hold integers exactly only to 2^53. Integers beyond that are read
// as their digits (strings), so the page shows and sends back the seed that made the image, not a rounding.
const NUMBER = /-?\d+(\.\d+)?([eE][+-]?\d+)?/y;
function exactJSON(text) {
  let out = "", i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '"') { // copy a string literal whole, escapes included
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (c === "-" || (c >= "0" && c <= "9")) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      const num = m ? m[0] : c;
      out += m && !m[1] && !m[2] && !Number.isSafeInteger(Number(num)) ? `"${num}"` : num;
      i += num.length;
    } else { out += c; i += 1; }
  }
  return JSON.parse(out);
}
const getJSON = async (path) => exactJSON(await (await api(path)).text());
// The reverse: a body whose integer fields (seeds) are written as exact JSON numbers from their digits.
function bodyWithIntegers(body, integers) {
  const plain = Object.fromEntries(Object.entries(body).filter(([k]) => !integers.includes(k)));
  const exact = integers.filter((k) => body[k] !== undefined && body[k] !== "")
    .map((k) => `${JSON.stringify(k)}:${BigInt(body[k]).toString()}`);
  const text = JSON.stringify(plain);
  return exact.length ? `${text.slice(0, -1)}${text === "{}" ? "" : ","}${exact.join(",")}}` : text;
}

// Images need the API key too, so they come through fetch() and are shown from blob URLs. A presigned link
// into the bucket (ZFARM_PRESIGNED_URLS=true) is another origin and needs no key: it is used as it is (the
// bucket would refuse a second credential, and fetch() would need CORS on it).
async function imageURL(url) {
  if (new URL(url, location.href).origin !== location.origin) return url;
  if (!state.blobs.has(url)) {
    state.blobs.set(url, api(url).then((r) => r.blob()).then((b) => URL.createObjectURL(b)));
  }
  return state.blobs.get(url);
}
function img(url, alt, cls) {
  const node = el("img", { alt, class: cls });
  imageURL(url).then((src) => { node.src = src; }).catch(() => { node.alt = `${alt} (not loaded)`; });
  return node;
}
async function download(url, name) {
  const a = el("a", { href: await imageURL(url), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

// Server-sent events over fetch(): EventSource cannot send the Authorization header.
async function streamEvents(path, onEvent, signal) {
  const res = await api(path, { signal, headers: { Accept: "text/event-stream" } });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(event, exactJSON(data.join("\n")));
    }
  }
}

// ---- jobs: live progress -------------------------------------------------------------------------

function progressBar(p) {
  const label = p.phase === "denoising" ? `step ${p.step}/${p.total}`
    : p.phase === "finishing" ? `step ${p.step}/${p.total} · decoding` : p.phase;
  return el("div", { class: "bar", role: "progressbar", "aria-valuenow": Math.round(p.fraction * 100) },
    el("div", { class: "fill", style: `width:${(p.fraction * 100).toFixed(1)}%` }),
    el("span", { class: "bar-label" }, label));
}

function jobItem(job) {
  const p = job.parameters;
  const thumbs = job.images.map((im) => img(im.url, `image ${im.index} of job ${short(job.id)}`, "thumb"));
  return el("li", { class: `job ${job.status}`, "data-id": job.id, onclick: () => showDetail(job) },
    el("div", { class: "job-head" },
      el("code", {}, short(job.id)),
      el("span", { class: `status ${job.status}` }, job.status),
      job.test_model_noise ? el("span", { class: "badge" }, "test model: noise") : ""),
    el("div", { class: "prompt" }, p.prompt),
    el("div", { class: "muted" }, `${p.width}×${p.height} · ${p.steps} steps · seed ${p.seed}`),
    FINAL.has(job.status) ? "" : progressBar(job.progress),
    job.error ? el("div", { class: "error" }, job.error) : "",
    thumbs.length || Object.keys(job.inputs || {}).length ? el("div", { class: "thumbs" }, inputThumbs(job), thumbs) : "");
}

function placeJob(job) {
  const old = document.querySelector(`li.job[data-id="${job.id}"]`);
  const node = jobItem(job);
  if (FINAL.has(job.status)) {
    if (old) old.remove();
    $("#finished").prepend(node);
    while ($("#finished").children.length > 12) $("#finished").lastChild.remove();
  } else if (old && old.parentElement.id === "live") {
    old.replaceWith(node);
  } else {
    if (old) old.remove();
    $("#live").prepend(node);
  }
  $("#live-empty").hidden = $("#live").children.length > 0;
}

function follow(jobId) {
  if (state.streams.has(jobId)) return;
  const ctrl = new AbortController();
  state.streams.set(jobId, ctrl);
  streamEvents(`/v1/jobs/${jobId}/events`, (_event, job) => placeJob(job), ctrl.signal)
    .catch(() => { /* aborted or dropped: the next refresh picks it up again */ })
    .finally(() => state.streams.delete(jobId));
}

async function refreshLive() {
  const [running, queued] = await Promise.all([
    getJSON("/v1/jobs?status=running&limit=50"), getJSON("/v1/jobs?status=queued&limit=50"),
  ]);
  for (const job of [...queued.jobs, ...running.jobs]) {
    placeJob(job);
    follow(job.id);
  }
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const body = { prompt: form.prompt.value };
  for (const name of ["negative_prompt", "output_format"]) if (form[name].value) body[name] = form[name].value;
  if (form.enhance.checked) body.enhance = true;
  for (const name of ["width", "height", "steps", "num_images"]) {
    if (form[name].value !== "") body[name] = Number(form[name].value);
  }
  const loras = chosenLoras();
  if (loras.length) body.loras = loras;
  if (loras.length && $("#add_trigger_words").checked) body.add_trigger_words = true;
  const err = $("#submit-error");
  err.hidden = true;
  try {
    dropOwnSize(Object.assign(body, await photoFields(form)));  // photos.js: image modes, files uploaded first
    body.seed = form.seed.value.trim(); // digits, sent as an exact integer (Number() would round it)
    const job = exactJSON(await (await api("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: bodyWithIntegers(body, ["seed"]),
    })).text());
    placeJob(job);
    follow(job.id);
  } catch (e) {
    err.textContent = e.message;
    err.hidden = false;
  }
}

// ---- LoRA adapters (brand styles) ----------------------------------------------------------------

// The pickers list the adapters this key may use; an empty scale means the adapter's default_scale.
async function loadLoras() {
  let loras = [];
  try {
    ({ loras } = await getJSON("/v1/loras"));
  } catch (_) { /* older farm, or no key yet: the pickers stay empty */ }
  for (const select of document.querySelectorAll("#loras .lora-name")) {
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "" }, "none"),
      ...loras.map((l) => el("option", { value: l.name }, `${l.name} (rank ${l.rank}, ×${l.default_scale})`)));
    select.value = loras.some((l) => l.name === chosen) ? chosen : "";
  }
}

function chosenLoras() {
  const out = [];
  for (const label of document.querySelectorAll("#loras .lora")) {
    const name = label.querySelector(".lora-name").value;
    const scale = label.querySelector(".lora-scale").value;
    if (name) out.push(scale === "" ? { name } : { name, scale: Number(scale) });
  }
  return out;
}

function loraText(loras) {
  return (loras || []).map((l) => `${l.name} ×${l.scale} (${short(l.sha256)})`).join(", ") || "–";
}

// ---- gallery and detail --------------------------------------------------------------------------

async function renderGallery() {
  const { jobs } = await getJSON("/v1/jobs?status=succeeded&limit=60");
  const grid = $("#gallery");
  grid.replaceChildren();
  let n = 0;
  for (const job of jobs) {
    for (const im of job.images) {
      n += 1;
      grid.append(el("figure", { class: "tile", "data-id": job.id, onclick: () => showDetail(job, im.index) },
        img(im.url, `job ${short(job.id)} image ${im.index}`),
        job.test_model_noise ? el("span", { class: "badge overlay" }, "test model: noise") : "",
        el("figcaption", {}, job.parameters.prompt)));
    }
  }
  $("#gallery-count").textContent = `${n} image(s)`;
}

function showDetail(job, index = 0) {
  const p = job.parameters;
  const image = job.images.find((im) => im.index === index) || job.images[0];
  const ext = { png: "png", webp: "webp", jpeg: "jpg" };
  const rows = [
    ["Job", job.id], ["Status", job.status], ["Prompt", p.prompt], ["Negative prompt", p.negative_prompt || "–"],
    ["Seed", image ? image.seed : p.seed], ["Size", `${p.width}×${p.height}`], ["Steps", p.steps],
    ["Guidance", p.guidance_scale], ["Format", p.output_format], ["Queued", secs(job.queued_seconds)],
    ["GPU time", secs(job.gpu_seconds)], ["Worker", job.worker_name || "–"], ["Device", job.device_name || "–"],
    ["Memory policy", job.memory_policy || "–"], ["Model", `${job.model_id || "–"} ${job.model_revision || ""}`],
    ["SHA-256", image ? image.sha256 : "–"], ["LoRA adapters", loraText(job.loras)],
    // What the farm changed before rendering (enhance words, its default negative prompt) and retries it needed.
    ...(job.requested_prompt ? [["Prompt as sent", job.requested_prompt]] : []),
    ...((job.adjustments || []).length ? [["Adjustments", job.adjustments.join("; ")]] : []),
    ...(job.recovery ? [["Recovery", job.recovery]] : []),
  ];
  $("#detail-body").replaceChildren(
    job.test_model_noise
      ? el("p", { class: "notice warn" }, "Made by the tiny random TEST model: this image is noise, not a product.")
      : "",
    el("div", { class: "side-by-side" }, inputThumbs(job, "large"),
      image ? img(image.url, `job ${short(job.id)} image ${image.index}`, "large") : el("p", {}, "No image.")),
    el("table", { class: "table kv" }, [...rows, ...modeRows(job)].map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))),
    el("div", { class: "row" }, job.images.flatMap((im) => [
      el("button", {
        class: "download", type: "button",
        onclick: () => download(im.url, `${job.id}_${im.index}.${ext[im.format]}`),
      }, `Download image ${im.index} (${im.format}, ${(im.bytes / 1024).toFixed(0)} KiB)`),
      // Renditions made from this image on the worker (e.g. a WebP thumbnail beside the PNG master).
      ...(im.renditions || []).map((r) => el("button", {
        class: "download", type: "button",
        onclick: () => download(r.url, `${job.id}_${im.index}_${r.name}.${ext[r.format]}`),
      }, `${r.name} ${r.width}×${r.height} (${r.format}, ${(r.bytes / 1024).toFixed(0)} KiB)`)),
    ])),
  );
  $("#detail").showModal();
}

// ---- batch view --------------------------------------------------------------------------------

// The manifest is the batch's per-SKU record: one CSV line per image (or per job without images).
function parseCSV(text) {
  const rows = [];
  let row = [], cell = "", quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i += 1; }
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(cell); cell = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell); rows.push(row); row = []; cell = "";
    } else cell += c;
  }
  if (cell || row.length) { row.push(cell); rows.push(row); }
  const [head = [], ...body] = rows;
  return body.filter((r) => r.length > 1).map((r) => Object.fromEntries(head.map((h, i) => [h, r[i] ?? ""])));
}

let batchStream = null;

async function renderBatch(batchId) {
  if (batchStream) batchStream.abort();
  const box = $("#batch");
  if (!batchId) {
    box.replaceChildren(el("p", { class: "muted" }, "Open a batch by its id."));
    return;
  }
  $("#batch-id").value = batchId;
  const path = `/v1/batches/${encodeURIComponent(batchId)}`;
  const draw = async () => {
    const batch = await getJSON(path);
    const lines = parseCSV(await (await api(`${path}/manifest.csv`)).text());
    // One row per SKU image; its renditions (thumb/KEY.webp ...) are listed beside it, not as rows of their own.
    const items = lines.filter((it) => !it.rendition);
    const renditionsOf = (it) => lines.filter((r) => r.rendition && r.job_id === it.job_id && r.image_index === it.image_index);
    const fraction = batch.progress ?? 0;
    box.replaceChildren(
      el("h2", {}, `${batch.name || "batch"} `, el("code", {}, batch.id), " ", el("span", { class: `status ${batch.status}` }, batch.status)),
      el("div", { class: "bar" }, el("div", { class: "fill", style: `width:${(fraction * 100).toFixed(1)}%` }),
        el("span", { class: "bar-label" }, `${batch.done ?? 0}/${batch.rows ?? "?"} done`)),
      el("p", { class: "counts" }, Object.entries(batch.counts || {}).map(([st, n]) => el("span", { class: `status ${st}` }, `${st} ${n}`))),
      batch.webhook
        ? el("p", { class: "muted", id: "batch-webhook" }, `webhook: ${batch.webhook.state} (${batch.webhook.attempts} attempt(s))`)
        : "",
      el("p", { class: "row" },
        el("button", { type: "button", id: "manifest-link", onclick: () => downloadFile(`${path}/manifest.csv`, `${batch.id}_manifest.csv`) }, "manifest.csv"),
        el("button", { type: "button", id: "archive-link", onclick: () => downloadFile(`${path}/archive.zip`, `${batch.id}.zip`) }, "archive.zip")),
      el("table", { class: "table", id: "batch-items" },
        el("thead", {}, el("tr", {}, ["SKU", "Status", "Job", "Image", "Error"].map((h) => el("th", {}, h)))),
        el("tbody", {}, items.map((it) => el("tr", { "data-key": it.key },
          el("td", {}, it.key), el("td", {}, el("span", { class: `status ${it.status}` }, it.status)),
          el("td", {}, el("code", {}, short(it.job_id || ""))),
          el("td", {}, [it.file || "–", ...renditionsOf(it).map((r) => ` + ${r.file}`)].join("")),
          el("td", { class: "error" }, it.error || ""))))),
    );
  };
  try {
    await draw();
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, `Batch ${batchId}: ${e.message}`));
    return;
  }
  batchStream = new AbortController();
  let pending = null;
  streamEvents(`${path}/events`, () => {
    pending = pending || setTimeout(() => { pending = null; draw().catch(() => {}); }, 500);
  }, batchStream.signal).catch(() => {});
}

async function downloadFile(path, name) {
  const blob = await (await api(path)).blob();
  const a = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

// ---- workers -------------------------------------------------------------------------------------

async function renderWorkers() {
  const { workers } = await getJSON("/v1/workers");
  const now = Date.now();
  $("#workers tbody").replaceChildren(...workers.map((w) => el("tr", { "data-name": w.name },
    el("td", {}, el("code", {}, w.name)), el("td", { class: `state ${w.state}` }, w.state),
    el("td", {}, w.gpu_name || w.device), el("td", {}, `${mib(w.gpu_memory_used_mib)} / ${mib(w.gpu_memory_total_mib)}`),
    el("td", {}, w.memory_policy || "–"), el("td", {}, w.model_id || "–"), el("td", {}, w.jobs_done),
    el("td", {}, w.current_job_id ? el("code", {}, short(w.current_job_id)) : "–"),
    el("td", { class: "adapters" }, (w.adapters || []).map((a) => a.in_slot ? `${a.name} (in slot)` : a.name).join(", ") || "–"),
    el("td", {}, `${Math.max(0, Math.round((now - Date.parse(w.last_heartbeat)) / 1000))} s ago`))));
}

// ---- routing -------------------------------------------------------------------------------------

let timer = null;
// Views kept in files of their own (review.js) register here: hash name -> render(argument).
const EXTRA_VIEWS = {};

function route() {
  const [, view = "", arg = ""] = location.hash.split("/");
  const name = { "": "submit", gallery: "gallery", batches: "batch", workers: "workers" }[view]
    || (EXTRA_VIEWS[view] ? view : "submit");
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  clearInterval(timer);
  const refresh = { submit: refreshLive, gallery: renderGallery, workers: renderWorkers }[name];
  const run = () => refresh && refresh().catch((e) => console.warn(e.message));
  if (name === "submit") loadLoras();
  if (name === "batch") renderBatch(decodeURIComponent(arg)).catch((e) => console.warn(e.message));
  if (EXTRA_VIEWS[name]) EXTRA_VIEWS[name](decodeURIComponent(arg));
  run();
  if (name === "submit" || name === "workers") timer = setInterval(run, 3000);
}

// The farm's own presets (GET /v1/presets) where it has them, else a few common ones.
async function loadPresets() {
  try {
    const { presets } = await getJSON("/v1/presets");
    const custom = PRESETS[PRESETS.length - 1];
    PRESETS.splice(0, PRESETS.length,
      ...presets.map((p) => [`${p.name} · ${p.width}×${p.height} ${p.output_format || ""}`, p.width, p.height, p.output_format]),
      custom);
  } catch (_) { /* older farm without presets: keep the built-in list */ }
  const preset = $("#preset");
  preset.replaceChildren(...PRESETS.map(([label], i) => el("option", { value: i }, label)));
  preset.value = PRESETS.length - 1;
}

function init() {
  const preset = $("#preset");
  loadPresets();
  preset.addEventListener("change", () => {
    const [, w, h, fmt] = PRESETS[preset.value];
    if (w) { $("#width").value = w; $("#height").value = h; }
    if (fmt) $("#output_format").value = fmt;
  });
  for (const id of ["#width", "#height", "#output_format"]) {
    $(id).addEventListener("input", () => { preset.value = PRESETS.length - 1; });
  }
  $("#api-key").value = state.key;
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("#api-key").value.trim();
    localStorage.setItem("zfarm.apiKey", state.key);
    state.blobs.clear();
    notice("");
    route();
  });
  $("#submit-form").addEventListener("submit", submitJob);
  $("#batch-form").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/batches/${encodeURIComponent($("#batch-id").value.trim())}`;
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", init);
