// zfarm web page, product photos (issue 12): pick a file, upload it as an asset, submit an image mode; show a
// job's input beside its outputs. Loaded after app.js (both deferred, in order) and uses its helpers.
"use strict";

const OWN_SIZE_MODES = new Set(["img2img", "inpaint"]);

// The mode fields of the submit form, the picked files uploaded first (POST /v1/assets answers their ids).
async function photoFields(form) {
  const mode = form.mode.value;
  if (mode === "text") return {};
  const image = $("#image-file").files[0];
  if (!image) throw new Error(`image: mode ${mode} starts from an image: pick a file`);
  const fields = { mode, image: (await uploadAsset(image)).id };
  const mask = $("#mask-file").files[0];
  if (mode === "inpaint" && mask) fields.mask = (await uploadAsset(mask)).id;
  if (form.strength.value !== "") fields.strength = Number(form.strength.value);
  if (mode === "place") fields.placement = { fit: Number(form.fit.value), anchor: form.anchor.value };
  if (form.white_main.checked && (mode === "place" || mode === "inpaint")) {
    fields.renditions = [{ name: "main", background: "white", width: 2000, height: 2000, format: "jpeg" }];
  }
  return fields;
}

// img2img and inpaint render at the image's own size: the form's width and height are not sent.
function dropOwnSize(body) {
  if (OWN_SIZE_MODES.has(body.mode)) { delete body.width; delete body.height; }
  return body;
}

async function uploadAsset(file) {
  const data = new FormData();
  data.append("file", file, file.name);
  return (await api("/v1/assets", { method: "POST", body: data })).json();
}

// The job's input (and mask) as small pictures labelled "input", for beside its outputs.
function inputThumbs(job, cls = "thumb") {
  const inputs = job.inputs || {};
  return Object.entries(inputs).map(([role, asset]) => el("figure", { class: `input ${role}` },
    img(asset.url, `${role} of job ${short(job.id)}`, cls), el("figcaption", {}, role === "image" ? "input" : role)));
}

function modeRows(job) {
  const p = job.parameters;
  if (!job.mode || job.mode === "text") return [];
  const rows = [["Mode", job.mode], ["Strength", p.strength]];
  if (p.placement) rows.push(["Placement", `fit ${p.placement.fit}, ${p.placement.anchor}, offset ${p.placement.offset_x},${p.placement.offset_y}`]);
  for (const [role, asset] of Object.entries(job.inputs || {})) rows.push([`Input ${role}`, `${asset.id} · sha256 ${asset.sha256.slice(0, 16)}…`]);
  return rows;
}

function initPhotos() {
  const mode = $("#mode");
  const show = () => {
    const m = mode.value;
    $("#photo-fields").hidden = m === "text";
    $("#mask-label").hidden = m !== "inpaint";
    $("#place-fields").hidden = m !== "place";
    $("#white-main-label").hidden = !(m === "place" || m === "inpaint");
    for (const id of ["#width", "#height"]) $(id).disabled = OWN_SIZE_MODES.has(m);
  };
  mode.addEventListener("change", show);
  $("#image-file").addEventListener("change", () => {
    const file = $("#image-file").files[0];
    const preview = $("#image-preview");
    preview.hidden = !file;
    if (file) preview.src = URL.createObjectURL(file);
  });
  show();
}

document.addEventListener("DOMContentLoaded", initPhotos);
