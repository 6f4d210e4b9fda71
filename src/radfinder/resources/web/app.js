// radfinder library page: plain JS over the JSON API (no framework, no CDN, no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { base: null, nSlices: 0, slice: 0, window: "lung", sliceZ: [] };

function showError(msg) {
  const el = $("error");
  el.textContent = msg;
  el.hidden = !msg;
}

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function topFindings(findings, n) {
  return Object.entries(findings).sort((a, b) => b[1] - a[1]).slice(0, n);
}

async function loadInfo() {
  try {
    const info = await getJSON("/api/info");
    $("lib-info").textContent = `${info.studies} studies · checkpoint ${info.checkpoint_hash}`;
  } catch (e) { showError(e.message); }
}

// A search is a URL (/?q=...&k=...[&over=report]): the page runs the one in its address on load and writes each
// new search into the address bar, so a search can be bookmarked, shared, reloaded and walked with back/forward.
function searchParams() {
  const params = new URLSearchParams({ q: $("q").value.trim(), k: $("k").value || "10" });
  if ($("over").value !== "image") params.set("over", $("over").value);
  return params;
}

function formFromURL() {
  const u = new URLSearchParams(window.location.search);
  $("q").value = u.get("q") || "";
  if (u.get("k")) $("k").value = u.get("k");
  $("over").value = u.get("over") === "report" ? "report" : "image";
  return !!$("q").value.trim();
}

function rankingLine(data) {
  if (data.ranking === "finding") {
    const what = data.present ? data.finding : `no ${data.finding}`;
    return `ranked by the scans' zero-shot probability of ${what}` +
      (data.calibrated ? " (calibrated on the training reports)" : " (uncalibrated)");
  }
  if (data.ranking !== "similarity") return "";
  return `ranked by similarity of the sentence to each ${$("over").value === "report" ? "stored report" : "scan"}`;
}

async function runSearch(ev, urlMode) {
  if (ev) ev.preventDefault();
  showError("");
  const q = $("q").value.trim();
  if (!q) return;
  const params = searchParams();
  const url = `/?${params}`;
  if (urlMode === "replace") window.history.replaceState({ q }, "", url);
  else if (urlMode !== "none" && `${window.location.pathname}${window.location.search}` !== url) {
    window.history.pushState({ q }, "", url);
  }
  const box = $("results");
  box.textContent = "searching…";
  try {
    const data = await getJSON(`/api/search?${params}`);
    box.textContent = "";
    const line = rankingLine(data);
    if (line) box.appendChild(el("div", { id: "ranking", class: "muted", "data-ranking": data.ranking || "" }, line));
    if (!data.results.length) box.appendChild(el("div", {}, "no results"));
    data.results.forEach((r, i) => {
      const card = el("div", { class: "result-card", "data-study": r.study, "data-id": r.id });
      card.appendChild(el("img", { src: `/api/study/${r.id}/thumbnail`, alt: r.study }));
      const body = el("div");
      body.appendChild(el("div", { class: "title" }, `${i + 1}. ${r.study}`));
      const label = data.ranking === "finding" ? `p(${data.present ? "" : "no "}${data.finding})` : "score";
      body.appendChild(el("div", { class: "score" }, `${label} ${r.score.toFixed(3)}`));
      if (r.depth_mm !== null) body.appendChild(el("div", { class: "muted" }, `best depth ${r.depth_mm.toFixed(0)} mm (slice ${r.slice})`));
      for (const [name, p] of topFindings(r.findings, 3)) body.appendChild(el("span", { class: "tag" }, `${name} ${p.toFixed(2)}`));
      card.appendChild(body);
      card.addEventListener("click", () => {
        document.querySelectorAll(".result-card").forEach((c) => c.classList.remove("selected"));
        card.classList.add("selected");
        openStudy(r.id, q, r.slice);
      });
      box.appendChild(card);
    });
  } catch (e) { box.textContent = ""; showError(e.message); }
}

function setSlice(i) {
  if (!state.nSlices) return;
  state.slice = Math.max(0, Math.min(state.nSlices - 1, i));
  const img = $("slice-img");
  img.src = `${state.base}/slice/${state.slice}?window=${state.window}`;
  img.setAttribute("data-slice", String(state.slice));
  $("slice-range").value = String(state.slice);
  const z = state.sliceZ[state.slice];
  // Mark the depth cell nearest the shown slice (cells are 12 mm, slices usually thinner).
  const z0 = state.sliceZ[state.slice];
  let near = null, dist = Infinity;
  document.querySelectorAll("#heat-strip .heat-cell").forEach((c) => {
    const d = Math.abs(parseFloat(c.dataset.z) - z0);
    if (d < dist) { dist = d; near = c; }
    c.classList.remove("current");
  });
  if (near) near.classList.add("current");
  $("slice-label").textContent = `slice ${state.slice} / ${state.nSlices - 1}` + (z !== undefined ? ` · z ${z.toFixed(1)} mm` : "");
}

function renderFindings(findings, calibrated) {
  const box = $("findings");
  box.textContent = "";
  // raw zero-shot probabilities sit near 0.5 for every finding: say so instead of letting them pass for odds
  box.appendChild(el("div", { id: "calibration-note", class: "muted", "data-calibrated": String(!!calibrated) },
    calibrated ? "probabilities calibrated on the training split's reports"
      : "uncalibrated scores (sigmoid of the prompt margin): compare studies, do not read them as odds"));
  for (const [name, p] of topFindings(findings, 100)) {
    const row = el("div", { class: "finding", "data-finding": name });
    row.appendChild(el("span", { class: "name" }, name));
    const bar = el("span", { class: "bar" });
    bar.style.width = `${Math.round(p * 120)}px`;
    row.appendChild(bar);
    row.appendChild(el("span", {}, p.toFixed(2)));
    box.appendChild(row);
  }
}

function heatColor(p, min, max) {
  const t = max > min ? (p - min) / (max - min) : 0.5; // relative within the scan: the strip shows where, not how sure
  const r = Math.round(255 * Math.min(1, 2 * t)), g = Math.round(255 * Math.min(1, 2 * (1 - t)) * 0.6 + 40);
  return `rgb(${r},${g},60)`;
}

function renderHeat(heat) {
  const strip = $("heat-strip");
  strip.textContent = "";
  if (!heat) return;
  const cells = heat.cells.slice().sort((a, b) => b.z_mm - a.z_mm); // superior at the top
  const probs = cells.filter((c) => c.valid).map((c) => c.probability);
  const max = Math.max(...probs), min = Math.min(...probs);
  for (const c of cells) {
    const d = el("div", { class: "heat-cell" + (c.valid ? "" : " invalid") + (c.cell === heat.best_cell ? " best" : ""),
      "data-cell": c.cell, "data-slice": c.slice, "data-z": c.z_mm,
      title: `cell ${c.cell} · z ${c.z_mm.toFixed(0)} mm · p ${c.probability.toFixed(3)}` });
    if (c.valid) {
      d.style.background = heatColor(c.probability, min, max);
      d.addEventListener("click", () => setSlice(c.slice));
    }
    strip.appendChild(d);
  }
}

function renderReport(study) {
  const box = $("report");
  box.textContent = "";
  for (const [field, label] of [["findings", "Findings"], ["impressions", "Impressions"]]) {
    const text = study[`${field}_text`] || "";
    if (!text) continue;
    box.appendChild(el("strong", {}, `${label}: `));
    const refs = (study.references || []).filter((r) => r.field === field).sort((a, b) => a.start - b.start);
    let pos = 0;
    for (const r of refs) {
      box.appendChild(document.createTextNode(text.slice(pos, r.start)));
      if (r.slices.length) {
        const a = el("a", { class: "ref", "data-slice": r.slices[0],
          title: r.exact ? "DICOM instance" : "image number counted from the top (approximate)" }, text.slice(r.start, r.end));
        a.addEventListener("click", () => setSlice(r.slices[0]));
        box.appendChild(a);
      } else {
        box.appendChild(document.createTextNode(text.slice(r.start, r.end)));
      }
      pos = r.end;
    }
    box.appendChild(document.createTextNode(text.slice(pos) + "\n\n"));
  }
}

function showViewer(title, base, nSlices, sliceZ, startSlice) {
  $("study-view").hidden = false;
  $("study-title").textContent = title;
  state.base = base;
  state.nSlices = nSlices;
  state.sliceZ = sliceZ || [];
  $("slice-range").max = String(nSlices - 1);
  setSlice(startSlice === null || startSlice === undefined ? Math.floor(nSlices / 2) : startSlice);
}

async function openStudy(id, q, startSlice) {
  showError("");
  try {
    const s = await getJSON(`/api/study/${id}`);
    renderFindings(s.findings, s.calibrated);
    renderReport(s);
    let heat = null;
    if (q) heat = await getJSON(`/api/study/${id}/heat?${new URLSearchParams({ q })}`);
    renderHeat(heat);
    const start = startSlice !== null && startSlice !== undefined ? startSlice : heat ? heat.best_slice : null;
    showViewer(`${s.study} (${s.dataset} ${s.split})`, `/api/study/${id}`, s.n_slices, s.slice_z_mm, start);
  } catch (e) { showError(e.message); }
}

async function runUpload(ev) {
  ev.preventDefault();
  showError("");
  const f = $("upload-file").files[0];
  if (!f) { showError("choose a NIfTI (.nii, .nii.gz) or a zipped DICOM series (.zip) first"); return; }
  const form = new FormData();
  form.append("file", f);
  form.append("q", $("q").value.trim());
  $("upload-status").textContent = "uploading…";
  try {
    const r = await getJSON("/api/upload", { method: "POST", body: form });
    $("upload-status").textContent = `classified ${r.filename}`;
    renderFindings(r.findings, r.calibrated);
    $("report").textContent = "(uploaded scan: no report)";
    renderHeat(r.heat);
    showViewer(`upload: ${r.filename}`, `/api/upload/${r.token}`, r.n_slices, r.slice_z_mm, r.heat ? r.heat.best_slice : null);
  } catch (e) { $("upload-status").textContent = ""; showError(`upload failed: ${e.message}`); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", runSearch);
  $("upload-form").addEventListener("submit", runUpload);
  $("slice-range").addEventListener("input", (e) => setSlice(parseInt(e.target.value, 10)));
  $("slice-img").addEventListener("wheel", (e) => { e.preventDefault(); setSlice(state.slice + (e.deltaY > 0 ? 1 : -1)); });
  document.querySelectorAll(".windows button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".windows button").forEach((x) => x.classList.remove("active"));
    b.classList.add("active");
    state.window = b.dataset.window;
    setSlice(state.slice);
  }));
  window.addEventListener("popstate", () => { if (formFromURL()) runSearch(null, "none"); });
  loadInfo();
  if (formFromURL()) runSearch(null, "replace");
});
