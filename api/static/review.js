// zfarm catalog review board: the merchandiser's screen. Uses app.js's helpers (el, $, api, getJSON, img,
// exactJSON, downloadFile, state) and the same /v1 API as the CLI: batches, a dry run of an upload, a batch's
// rows page by page, and approve / reject / re-roll per row.
"use strict";

const REVIEW_PAGE = 50;
const JOB_STATES = ["queued", "running", "succeeded", "failed", "dead", "canceled"];
const review = { batchId: null, offset: 0, status: "", approval: "", timer: null, checked: null };

// A request whose refusals the board shows itself (api() would fold them into one message).
async function reviewFetch(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  return fetch(path, { ...options, headers });
}

function refusalsOf(body) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.message || JSON.stringify(d));
  return [typeof detail === "string" ? detail : JSON.stringify(body)];
}

// ---- the board: new batch from a catalog, and the list of batches ---------------------------------

function uploadForm(presets) {
  const form = el("form", { id: "review-upload", class: "card form" },
    el("h2", {}, "New batch from a catalog"),
    el("div", { class: "row" },
      el("label", {}, "Catalog (CSV or JSONL)", el("input", { id: "review-file", name: "file", type: "file", accept: ".csv,.jsonl,.json", required: true })),
      el("label", {}, "Name", el("input", { id: "review-name", name: "name", placeholder: "spring catalog" })),
      el("label", {}, "Key column", el("input", { id: "review-key-column", name: "key_column", placeholder: "sku" }))),
    el("label", {}, "Prompt template", el("input", { id: "review-template", name: "template", required: true, placeholder: "studio photo of a {material} {product}" })),
    el("div", { class: "row" },
      el("label", {}, "Preset", el("select", { id: "review-preset", name: "preset" },
        el("option", { value: "" }, "(none)"), presets.map((p) => el("option", { value: p.name }, `${p.name} · ${p.width}×${p.height}`)))),
      el("label", { class: "check" }, "Enhance", el("input", { id: "review-enhance", name: "enhance", type: "checkbox" })),
      el("button", { id: "review-preview-button", type: "button", onclick: () => previewUpload() }, "Preview"),
      el("button", { id: "review-submit", class: "primary", type: "submit", disabled: true }, "Submit batch")),
    el("div", { id: "review-check" }));
  form.addEventListener("submit", (e) => { e.preventDefault(); submitUpload(); });
  form.addEventListener("input", () => { review.checked = null; $("#review-submit").disabled = true; });
  return form;
}

function uploadData() {
  const data = new FormData();
  data.append("file", $("#review-file").files[0]);
  data.append("template", $("#review-template").value);
  for (const [id, name] of [["#review-name", "name"], ["#review-key-column", "key_column"], ["#review-preset", "preset"]]) {
    if ($(id).value.trim()) data.append(name, $(id).value.trim());
  }
  if ($("#review-enhance").checked) data.append("enhance", "true");
  return data;
}

async function previewUpload() {
  const box = $("#review-check");
  if (!$("#review-file").files.length || !$("#review-template").value.trim()) {
    box.replaceChildren(el("p", { class: "error" }, "Choose a catalog file and write a template first."));
    return;
  }
  const res = await reviewFetch("/v1/batches?dry_run=true", { method: "POST", body: uploadData() });
  const body = exactJSON(await res.text());
  if (!res.ok) {
    const problems = refusalsOf(body);
    box.replaceChildren(
      el("p", { class: "error" }, `${problems.length} problem(s): nothing was submitted. Fix the file and preview again.`),
      el("ul", { id: "review-refusals", class: "refusals" }, problems.map((m) => el("li", {}, m))));
    return;
  }
  review.checked = true;
  $("#review-submit").disabled = false;
  box.replaceChildren(
    el("p", { id: "review-summary" }, `${body.rows} rows: ${body.jobs_queued} to render, ${body.jobs_reused} reused from earlier renders. The first ${body.preview.length}:`),
    el("table", { class: "table", id: "review-preview" },
      el("thead", {}, el("tr", {}, ["Key", "Prompt", "Size", "Format", "Seed"].map((h) => el("th", {}, h)))),
      el("tbody", {}, body.preview.map((p) => el("tr", { "data-key": p.key },
        el("td", {}, p.key), el("td", {}, p.prompt, p.adjustments.length ? el("div", { class: "muted" }, p.adjustments.join("; ")) : ""),
        el("td", {}, `${p.width}×${p.height}`), el("td", {}, p.output_format), el("td", {}, String(p.seed)))))));
}

async function submitUpload() {
  if (!review.checked) return previewUpload();
  const res = await reviewFetch("/v1/batches", { method: "POST", body: uploadData() });
  const body = exactJSON(await res.text());
  if (!res.ok) {
    $("#review-check").replaceChildren(el("ul", { id: "review-refusals", class: "refusals" }, refusalsOf(body).map((m) => el("li", {}, m))));
    return;
  }
  location.hash = `#/review/${body.id}`;
}

function batchRow(b) {
  const c = b.counts;
  return el("tr", { "data-id": b.id, class: "clickable", onclick: () => { location.hash = `#/review/${b.id}`; } },
    el("td", {}, el("strong", {}, b.name), el("div", {}, el("code", {}, short(b.id)))),
    el("td", {}, el("span", { class: `status ${b.status}` }, b.status)),
    el("td", { class: "progress-cell" }, el("div", { class: "bar" },
      el("div", { class: "fill", style: `width:${(b.progress * 100).toFixed(1)}%` }),
      el("span", { class: "bar-label" }, `${b.done}/${b.rows}`))),
    el("td", {}, `${c.succeeded} ok · ${c.failed + c.dead} failed · ${c.queued + c.running} to go`),
    el("td", {}, b.created_by || "–"),
    el("td", {}, new Date(b.created_at).toLocaleString()));
}

async function drawBatchList() {
  const { batches } = await getJSON("/v1/batches?limit=50");
  const body = $("#review-batches tbody");
  if (body) body.replaceChildren(...batches.map(batchRow));
  const empty = $("#review-batches-empty");
  if (empty) empty.hidden = batches.length > 0;
}

async function renderBoard() {
  let presets = [];
  try { presets = (await getJSON("/v1/presets")).presets; } catch (_) { /* an older farm: no preset list */ }
  $("#view-review").replaceChildren(
    uploadForm(presets),
    el("div", { class: "card" }, el("h2", {}, "Batches"),
      el("p", { class: "muted", id: "review-batches-empty", hidden: true }, "No batches yet."),
      el("table", { class: "table", id: "review-batches" },
        el("thead", {}, el("tr", {}, ["Batch", "Status", "Progress", "Counts", "Created by", "Created"].map((h) => el("th", {}, h)))),
        el("tbody"))));
  await drawBatchList();
  review.timer = setInterval(() => drawBatchList().catch(() => {}), 3000);
}

// ---- the contact sheet of one batch -------------------------------------------------------------

function tile(item, batchId) {
  const act = (what, body) => reviewAction(batchId, item.key, what, body);
  const master = item.images[0];
  return el("figure", { class: `sku-tile ${item.status} review-${item.review}`, "data-key": item.key },
    master ? img(master.url, `${item.key}`, "sku-image") : el("div", { class: "sku-image placeholder" }, item.status),
    item.test_model_noise ? el("span", { class: "badge overlay" }, "test model: noise") : "",
    el("figcaption", {},
      el("div", { class: "sku-head" }, el("strong", {}, item.key),
        el("span", { class: `status ${item.status}` }, item.status),
        el("span", { class: `review-state ${item.review}` }, item.review)),
      el("div", { class: "muted sku-prompt", title: item.prompt }, item.prompt),
      el("div", { class: "muted" }, `seed ${item.seed}${item.rerolls ? ` · re-rolled ${item.rerolls}×` : ""}`),
      item.error ? el("div", { class: "error" }, item.error) : "",
      item.review_note ? el("div", { class: "muted" }, `note: ${item.review_note}`) : "",
      master && master.renditions.length
        ? el("div", { class: "renditions" }, master.renditions.map((r) => el("button", {
          type: "button", class: "link", onclick: () => download(r.url, `${item.key}_${r.name}.${r.format === "jpeg" ? "jpg" : r.format}`),
        }, `${r.name} ${r.width}×${r.height}`)))
        : "",
      el("div", { class: "sku-actions" },
        el("button", { type: "button", class: "approve", disabled: item.status !== "succeeded", onclick: () => act("approve") }, "Approve"),
        el("button", { type: "button", class: "reject", onclick: () => {
          const note = prompt(`Why reject ${item.key}? (optional)`);
          if (note !== null) act("reject", note ? { note } : undefined);
        } }, "Reject"),
        el("button", { type: "button", class: "reroll", onclick: () => act("reroll") }, "Re-roll"))));
}

async function reviewAction(batchId, key, what, body) {
  const res = await reviewFetch(`/v1/batches/${encodeURIComponent(batchId)}/items/${encodeURIComponent(key)}/${what}`, {
    method: "POST", headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) notice(`${what} ${key}: ${refusalsOf(exactJSON(await res.text())).join("; ")}`);
  followSheet(await drawSheet());
}

async function batchAction(path, method, label) {
  try {
    await api(path, { method });
  } catch (e) {
    notice(`${label}: ${e.message}`);
  }
  followSheet(await drawSheet());
}

// Redraws the sheet every 2 s while the batch has rows to run (a re-roll or a retry makes it active again).
function followSheet(batch) {
  clearInterval(review.timer);
  if (batch.status !== "active") return;
  review.timer = setInterval(async () => {
    if (document.querySelector("#view-review").hidden) return;
    try {
      if ((await drawSheet()).status !== "active") clearInterval(review.timer);
    } catch (_) { /* the next round tries again */ }
  }, 2000);
}

function pagerText(page) {
  if (!page.total) return "No rows match.";
  return `Rows ${page.offset + 1}–${page.offset + page.items.length} of ${page.total}`;
}

async function drawSheet() {
  const id = review.batchId;
  const path = `/v1/batches/${encodeURIComponent(id)}`;
  const params = new URLSearchParams({ offset: review.offset, limit: REVIEW_PAGE });
  if (review.status) params.set("status", review.status);
  if (review.approval) params.set("approval", review.approval);
  const [batch, page] = await Promise.all([getJSON(path), getJSON(`${path}/items?${params}`)]);
  const c = batch.counts;
  $("#review-head").replaceChildren(
    el("h2", {}, `${batch.name} `, el("code", {}, batch.id), " ", el("span", { class: `status ${batch.status}` }, batch.status)),
    el("div", { class: "bar" }, el("div", { class: "fill", style: `width:${(batch.progress * 100).toFixed(1)}%` }),
      el("span", { class: "bar-label" }, `${batch.done}/${batch.rows} done`)),
    el("p", { class: "counts" }, Object.entries(c).map(([st, n]) => el("span", { class: `status ${st}` }, `${st} ${n}`))));
  $("#review-pager-text").textContent = pagerText(page);
  $("#review-prev").disabled = review.offset === 0;
  $("#review-next").disabled = review.offset + page.items.length >= page.total;
  $("#review-sheet").replaceChildren(...page.items.map((item) => tile(item, batch.id)));
  return batch;
}

function sheetControls(path, batchId) {
  const select = (id, label, options, key) => el("label", {}, label, el("select", {
    id, onchange: (e) => { review[key] = e.target.value; review.offset = 0; drawSheet().catch(() => {}); },
  }, options.map(([value, text]) => el("option", { value, selected: review[key] === value }, text))));
  return el("div", { class: "row sheet-controls" },
    select("review-filter-status", "Status", [["", "all"], ...JOB_STATES.map((s) => [s, s])], "status"),
    select("review-filter-approval", "Review", [["", "all"], ["pending", "pending"], ["approved", "approved"], ["rejected", "rejected"]], "approval"),
    el("button", { type: "button", id: "review-prev", onclick: () => { review.offset = Math.max(0, review.offset - REVIEW_PAGE); drawSheet(); } }, "← Prev"),
    el("span", { id: "review-pager-text", class: "muted" }),
    el("button", { type: "button", id: "review-next", onclick: () => { review.offset += REVIEW_PAGE; drawSheet(); } }, "Next →"),
    el("span", { class: "spacer" }),
    el("button", { type: "button", id: "review-retry", onclick: () => batchAction(`${path}/retry-failed`, "POST", "retry failed") }, "Retry failed"),
    el("button", { type: "button", id: "review-cancel", onclick: () => batchAction(path, "DELETE", "cancel") }, "Cancel batch"),
    el("button", { type: "button", id: "review-manifest", onclick: () => downloadFile(`${path}/manifest.csv`, `${batchId}_manifest.csv`) }, "manifest.csv"),
    el("button", { type: "button", id: "review-approved-zip", onclick: () => downloadFile(`${path}/archive.zip?approved=true`, `${batchId}_approved.zip`) }, "Approved images (zip)"));
}

async function renderSheet(batchId) {
  if (review.batchId !== batchId) Object.assign(review, { batchId, offset: 0, status: "", approval: "" });
  const path = `/v1/batches/${encodeURIComponent(batchId)}`;
  $("#view-review").replaceChildren(el("div", { class: "card" },
    el("p", {}, el("a", { href: "#/review" }, "← all batches")),
    el("div", { id: "review-head" }), sheetControls(path, batchId),
    el("div", { id: "review-sheet", class: "sheet" })));
  followSheet(await drawSheet());
}

EXTRA_VIEWS.review = (arg) => {
  clearInterval(review.timer);
  (arg ? renderSheet(arg) : renderBoard()).catch((e) => {
    $("#view-review").replaceChildren(el("p", { class: "error card" }, `Review: ${e.message}`));
  });
};
