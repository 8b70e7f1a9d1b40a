// ssmad inspection page: upload images to POST /v1/predict, show overlays, scores and a session history.
// Plain JavaScript, no build step, no external resources (works offline).
"use strict";

const HISTORY_KEY = "ssmad-history";
const HISTORY_SIZE = 20;
let modelClasses = [];
let minClassConfidence = null;

const $ = (id) => document.getElementById(id);

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.detail}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModel() {
  const response = await fetch("/v1/model", { headers: headers() });
  if (!response.ok) {
    $("model-line").textContent = `model information unavailable (${await errorText(response)})`;
    return;
  }
  const model = await response.json();
  modelClasses = model.classes;
  minClassConfidence = model.min_class_confidence;
  $("model-line").textContent =
    `${model.preset || "model"}, ${Object.values(model.input_sizes).join(", ")} px, classes: ${model.classes.join(", ")} (ssmad ${model.ssmad_version})`;
  const select = $("class-select");
  select.length = 1;
  for (const name of model.classes) select.add(new Option(name, name));
}

async function predict(file, className) {
  const form = new FormData();
  form.append("image", file, file.name);
  if (className) form.append("class", className);
  const response = await fetch("/v1/predict", { method: "POST", body: form, headers: headers() });
  if (!response.ok) throw new Error(`${file.name}: ${await errorText(response)}`);
  return (await response.json()).results[0];
}

function classSelect(current, onChange) {
  const select = document.createElement("select");
  select.className = "card-class";
  select.add(new Option("auto", ""));
  for (const name of modelClasses) select.add(new Option(name, name));
  select.value = current || "";
  select.addEventListener("change", () => onChange(select.value));
  return select;
}

// The overlay is two panels (image | heatmap), each result.width x result.height pixels: every
// region's box is drawn on both, in percent of the picture, so it follows the picture's display size.
function overlayWithBoxes(result) {
  const frame = document.createElement("div");
  frame.className = "overlay";
  const image = document.createElement("img");
  image.alt = `overlay of ${result.filename}`;
  image.src = `data:image/png;base64,${result.overlay_png}`;
  frame.append(image);
  for (const region of result.regions) {
    const [left, top, right, bottom] = region.box;
    for (const panel of [0, 1]) {
      const box = document.createElement("div");
      box.className = "region-box";
      box.title = `${region.area_px} px, peak ${region.peak_score.toFixed(4)}`;
      box.style.left = `${(100 * (left + panel * result.width)) / (2 * result.width)}%`;
      box.style.width = `${(100 * (right - left)) / (2 * result.width)}%`;
      box.style.top = `${(100 * top) / result.height}%`;
      box.style.height = `${(100 * (bottom - top)) / result.height}%`;
      frame.append(box);
    }
  }
  return frame;
}

// How the image's class was chosen (class_source, docs/serving.md), with the inferred class and
// its confidence where one was inferred, used or not.
function classFrom(result) {
  const guess = result.inferred_class === null
    ? ""
    : `${result.inferred_class}, confidence ${result.class_confidence.toFixed(2)}`;
  if (result.class_source === "inferred") return `inferred (${guess})`;
  if (result.class_source === "global") {
    return guess ? `global threshold: inferred ${guess}, below ${minClassConfidence}` : "global threshold: class unknown";
  }
  return result.class_source;
}

function renderCard(card, file, result) {
  card.replaceChildren();
  const image = overlayWithBoxes(result);
  const largest = Math.max(0, ...result.regions.map((region) => region.area_px));
  const facts = document.createElement("dl");
  const rows = [
    ["file", result.filename],
    ["score", result.score.toFixed(6)],
    ["normalised", result.normalized.toFixed(4)],
    ["threshold", result.threshold.toFixed(6)],
    ["decision", result.decision],
    ["defect regions", result.regions.length ? `${result.regions.length} (largest ${largest} px)` : "none"],
    ["pixel threshold", result.pixel_threshold.toFixed(6)],
    ["class", result["class"] || "global"],
    ["class from", classFrom(result)],
  ];
  if (result.warnings.length) rows.push(["notes", result.warnings.join("; ")]);
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name;
    if (name === "decision") dd.className = value;
    facts.append(dt, dd);
  }
  const dt = document.createElement("dt");
  dt.textContent = "score as class";
  const dd = document.createElement("dd");
  dd.append(classSelect(result["class"], (name) => score(file, name, card)));
  facts.append(dt, dd);
  card.append(image, facts);
}

async function score(file, className, card) {
  setStatus(`scoring ${file.name}…`);
  try {
    const result = await predict(file, className);
    renderCard(card, file, result);
    addHistory(result);
    setStatus(`scored ${file.name}`);
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function handleFiles(files) {
  for (const file of files) {
    const card = document.createElement("article");
    card.className = "card";
    card.textContent = `${file.name}: waiting…`;
    $("results").prepend(card);
    await score(file, $("class-select").value, card);
  }
}

function readHistory() {
  try {
    return JSON.parse(sessionStorage.getItem(HISTORY_KEY)) || [];
  } catch (_) {
    return [];
  }
}

function addHistory(result) {
  const entry = {
    time: new Date().toLocaleTimeString(), file: result.filename,
    cls: (result["class"] || "global") + (result.class_source === "inferred" ? " (inferred)" : ""),
    score: result.score, normalized: result.normalized, decision: result.decision,
  };
  const history = [entry, ...readHistory()].slice(0, HISTORY_SIZE);
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
  renderHistory();
}

function renderHistory() {
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const entry of readHistory()) {
    const row = body.insertRow();
    const cells = [entry.time, entry.file, entry.cls, entry.score.toFixed(6), entry.normalized.toFixed(4), entry.decision];
    for (const value of cells) row.insertCell().textContent = value;
    row.cells[5].className = entry.decision;
  }
}

function setUp() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    handleFiles([...event.dataTransfer.files]);
  });
  $("file-input").addEventListener("change", (event) => {
    handleFiles([...event.target.files]);
    event.target.value = "";
  });
  $("api-key").addEventListener("change", loadModel);
  renderHistory();
  loadModel();
}

setUp();
