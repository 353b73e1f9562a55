// kws serve: the page. Live state arrives by server-sent events (/api/events); changes are
// POSTs that carry the token. Plain JavaScript, no framework, no build step.
"use strict";

const $ = (sel) => document.querySelector(sel);
const IGNORED = new Set(["_silence_", "_unknown_"]);
const MAX_ROWS = 200;
const TAKE_SECONDS = 2.0;
const MIN_TAKES = 3;

const state = {
  info: {}, status: {}, hops: [], detections: [], words: [], takes: [], token: "",
  drawQueued: false, busy: false,
};

// ---- messages and the API ------------------------------------------------------------------
function showMessage(text, ok = false) {
  const m = $("#message");
  m.textContent = text;
  m.className = ok ? "ok" : "";
  m.hidden = false;
  clearTimeout(showMessage.timer);
  showMessage.timer = setTimeout(() => { m.hidden = true; }, ok ? 5000 : 15000);
}

async function api(path, { json = null, form = null, change = false } = {}) {
  const headers = {};
  if (change) headers[state.info.token_header || "X-KWS-Token"] = state.token;
  let body = null;
  if (json) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  else if (form) body = form;
  const r = await fetch(path, { method: "POST", headers, body });
  let data;
  try { data = await r.json(); } catch (e) { data = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

function initToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("kws-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);  // keep it out of the address bar
  }
  state.token = sessionStorage.getItem("kws-token") || "";
  const input = $("#token");
  input.value = state.token;
  input.addEventListener("input", () => {
    state.token = input.value.trim();
    sessionStorage.setItem("kws-token", state.token);
  });
}

// ---- live state ----------------------------------------------------------------------------
function setStatus(st) {
  state.status = st || {};
  const pill = $("#status");
  const s = state.status.state || "connecting";
  pill.dataset.state = s;
  pill.textContent = { listening: "live", starting: "starting" }[s] || s;
  $("#status-message").textContent = state.status.message || "";
}

function applyInfo(info) {
  state.info = info || {};
  const i = state.info;
  if (!i.bundle) return;
  $("#info").textContent = `bundle ${i.bundle} · ${i.source} · backend ${i.backend} · ` +
    `δ ${Array.isArray(i.delta) ? i.delta.join("/") : i.delta} · gate ${i.gate} · hop ${i.hop_ms} ms · average ${i.average_window_ms} ms · ` +
    `threshold ${i.threshold} (enrolled words: their own)`;
  const legend = [];
  for (let k = 1; k <= (i.exits || 0); k++) legend.push(`<span><i style="background:${exitColor(k)}"></i>exit ${k}</span>`);
  legend.push(`<span><i style="background:${css("--gated")}"></i>gated (no stage ran)</span>`);
  legend.push(`<span><i style="background:${css("--skipped")}"></i>skipped (interpolated)</span>`);
  legend.push(`<span><i style="background:#1d2330;height:2px"></i>smoothed average</span>`);
  legend.push(`<span><i style="border-top:2px dashed #c0392b;height:0"></i>threshold</span>`);
  $("#legend").innerHTML = legend.join("");
  const ro = i.read_only;
  for (const el of document.querySelectorAll("#enrol-panel button, #enrol-panel input")) el.disabled = !!ro;
  $("#record-hint").textContent = ro ? `read-only: ${ro}` :
    `Takes of ${TAKE_SECONDS} s; at least ${MIN_TAKES}. The loudest second of each is what enrolment uses (shaded).`;
  updateEnrolButton();
}

function addHop(h) {
  state.hops.push(h);
  const span = state.info.history_s || 60;
  const cut = h.t - span - 1;
  let k = 0;
  while (k < state.hops.length && state.hops[k].t < cut) k++;
  if (k) state.hops.splice(0, k);
  queueDraw();
}

function fmt(x, d = 2) { return (x === null || x === undefined) ? "–" : Number(x).toFixed(d); }

function addDetection(d, live) {
  state.detections.push(d);
  if (state.detections.length > MAX_ROWS) state.detections.shift();
  const tbody = $("#detections tbody");
  const tr = document.createElement("tr");
  tr.dataset.word = d.label;
  tr.dataset.time = d.time_s;
  for (const text of [`${fmt(d.time_s)} s`, d.label, fmt(d.probability), `${d.exit}`,
                      `${fmt(d.latency_ms)} ms`]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  if (live) tr.className = "new";
  tbody.insertBefore(tr, tbody.firstChild);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  $("#last-word").textContent = d.label;
  $("#last-detail").textContent = `at ${fmt(d.time_s)} s · p ${fmt(d.probability)} · exit ${d.exit} · ${fmt(d.latency_ms)} ms`;
  if (live) {
    const big = $("#last-word");
    big.classList.add("flash");
    clearTimeout(addDetection.timer);
    addDetection.timer = setTimeout(() => big.classList.remove("flash"), 1000);
  }
  queueDraw();
}

function applyStats(s) {
  if (!s || !s.hops) return;
  $("#cost-mean").textContent = `${fmt(s.mean_ms, 2)} ms`;
  $("#cost-p95").textContent = `${fmt(s.p95_ms, 2)} ms`;
  $("#cost-rtf").textContent = fmt(s.rtf, 4);
  const shares = Object.entries(s.shares || {}).map(([k, v]) =>
    `${k.replace("exit", "exit ")} ${Math.round(100 * v)}%`);
  $("#cost-shares").textContent = shares.join(" · ");
  $("#cost").title = `last ${s.window_s} s of stream (${s.hops} hops); since the start: ` +
    `${s.total_hops} hops, ${fmt(s.total_mean_ms)} ms per hop`;
}

function applySnapshot(s) {
  applyInfo(s.info);
  setStatus(s.status);
  applyWords(s.words);
  state.hops = s.hops || [];
  state.detections = [];
  $("#detections tbody").innerHTML = "";
  for (const d of s.detections || []) addDetection(d, false);
  applyStats(s.stats);
  queueDraw();
}

function connect() {
  const es = new EventSource("/api/events");
  const on = (kind, fn) => es.addEventListener(kind, (e) => fn(JSON.parse(e.data)));
  on("hello", applySnapshot);
  on("hop", addHop);
  on("detection", (d) => addDetection(d, true));
  on("stats", applyStats);
  on("status", setStatus);
  on("words", applyWords);
  on("info", applyInfo);
  es.onerror = () => {
    if (es.readyState !== EventSource.OPEN) setStatus({ state: "disconnected", message: "reconnecting…" });
  };
}

// ---- the timeline (canvas) -----------------------------------------------------------------
function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
function exitColor(k) { return css(`--exit${Math.min(Math.max(k, 1), 5)}`) || "#888"; }

function queueDraw() {
  if (state.drawQueued) return;
  state.drawQueued = true;
  requestAnimationFrame(() => { state.drawQueued = false; draw(); });
}

function draw() {
  const c = $("#timeline");
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth, h = c.clientHeight;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const info = state.info, hops = state.hops;
  const span = info.history_s || 60;
  const last = hops.length ? hops[hops.length - 1].t : 0;
  const tEnd = Math.max(span, last), t0 = tEnd - span;
  const left = 40, right = 10, top = 32, lane = 12, axis = 18;
  const plotH = h - top - lane - axis - 8;
  const laneY = top + plotH + 4;
  const X = (t) => left + ((t - t0) / span) * (w - left - right);
  const Y = (p) => top + (1 - p) * plotH;

  g.font = "11px system-ui, sans-serif";
  g.fillStyle = css("--muted");
  g.strokeStyle = css("--line");
  g.lineWidth = 1;
  for (const p of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(left, Y(p) + 0.5); g.lineTo(w - right, Y(p) + 0.5); g.stroke();
    g.fillText(p.toFixed(1), 8, Y(p) + 4);
  }
  g.fillText("exit", 8, laneY + 10);
  for (let s = Math.ceil(t0 / 10) * 10; s <= tEnd; s += 10) {
    const x = X(s);
    g.fillText(`${s} s`, Math.min(x - 10, w - right - g.measureText(`${s} s`).width), h - 4);
    g.beginPath(); g.moveTo(x + 0.5, top); g.lineTo(x + 0.5, laneY + lane); g.stroke();
  }

  const bw = Math.max(1, ((w - left - right) * ((info.hop_ms || 100) / 1000)) / span);
  for (const hop of hops) {
    if (hop.t < t0) continue;
    const x = X(hop.t) - bw;
    const color = hop.gated ? css("--gated") : hop.skipped ? css("--skipped") : exitColor(hop.exit);
    g.fillStyle = color;
    if (!hop.gated && hop.kw > 0) g.fillRect(x, Y(hop.kw), Math.max(1, bw - 0.5), Y(0) - Y(hop.kw));
    g.fillRect(x, laneY, Math.max(1, bw - 0.5), lane);
  }
  // the smoother's average of the label it would fire (words only)
  g.strokeStyle = "#1d2330"; g.lineWidth = 1.2; g.beginPath();
  let pen = false;
  for (const hop of hops) {
    if (hop.t < t0) continue;
    const v = IGNORED.has(hop.avg_label) ? 0 : hop.avg;
    if (!pen) { g.moveTo(X(hop.t), Y(v)); pen = true; } else g.lineTo(X(hop.t), Y(v));
  }
  g.stroke();
  if (info.threshold !== undefined) {
    g.strokeStyle = css("--bad"); g.setLineDash([5, 4]); g.lineWidth = 1;
    g.beginPath(); g.moveTo(left, Y(info.threshold)); g.lineTo(w - right, Y(info.threshold)); g.stroke();
    g.setLineDash([]);
  }
  g.fillStyle = css("--accent"); g.strokeStyle = css("--accent");
  g.font = "bold 12px system-ui, sans-serif";
  let ends = [-Infinity, -Infinity];  // right end of the last label on each of two rows
  for (const d of state.detections) {
    if (d.time_s < t0) continue;
    const x = X(d.time_s);
    const row = x - 2 > ends[0] ? 0 : x - 2 > ends[1] ? 1 : 0;  // stagger labels that meet
    const y = top - 18 + 14 * row;
    g.beginPath(); g.moveTo(x + 0.5, y + 2); g.lineTo(x + 0.5, Y(0)); g.stroke();
    g.fillText(d.label, x + 3, y + 10);
    ends[row] = x + 3 + g.measureText(d.label).width;
  }
}

// ---- words ---------------------------------------------------------------------------------
function applyWords(w) {
  if (!w || !w.words) return;
  state.words = w.words;
  const tbody = $("#words tbody");
  tbody.innerHTML = "";
  const ro = !!state.info.read_only;
  for (const row of w.words) {
    const tr = document.createElement("tr");
    tr.dataset.word = row.word;
    const name = document.createElement("td");
    name.textContent = row.word;
    if (row.confusable_with.length) {
      name.title = `may be confused with ${row.confusable_with.join(", ")}`;
      name.className = "warn";
    }
    const thr = document.createElement("td");
    const input = document.createElement("input");
    Object.assign(input, { type: "number", min: "0", max: "1", step: "0.01", value: row.threshold.toFixed(3), disabled: ro });
    input.className = "threshold";
    const set = document.createElement("button");
    Object.assign(set, { type: "button", textContent: "Set", className: "secondary set", disabled: ro });
    set.addEventListener("click", () => setThreshold(row.word, input.value));
    const src = document.createElement("span");
    src.className = "muted small";
    src.textContent = ` ${row.threshold_source}`;
    thr.append(input, " ", set, src);
    const me = document.createElement("td");
    me.textContent = `${row.min_exit}`;
    const en = document.createElement("td");
    en.textContent = row.enrolled ? `${row.examples} takes` : "";
    const act = document.createElement("td");
    if (row.enrolled) {
      const b = document.createElement("button");
      Object.assign(b, { type: "button", textContent: "Forget", className: "secondary forget", disabled: ro });
      b.addEventListener("click", () => forgetWord(row.word));
      act.appendChild(b);
    }
    tr.append(name, thr, me, en, act);
    tbody.appendChild(tr);
  }
}

async function setThreshold(word, value) {
  const t = Number(value);
  if (!(value !== "" && t >= 0 && t <= 1)) { showMessage(`threshold must be in [0, 1], got ${value}`); return; }
  try {
    const r = await api("/api/threshold", { json: { word, threshold: t }, change: true });
    showMessage(r.report.join(" "), true);
  } catch (e) { showMessage(e.message); }
}

async function forgetWord(word) {
  if (!confirm(`Forget '${word}'? Its unit leaves every exit head.`)) return;
  try {
    const r = await api("/api/forget", { json: { word }, change: true });
    showMessage(r.report.join(" "), true);
  } catch (e) { showMessage(e.message); }
}

// ---- takes: recording, upload, preview, enrolment --------------------------------------------
function wavBlob(samples, rate) {
  // 16-bit PCM mono WAV: what the device's audio reader decodes without any codec
  const n = samples.length, buf = new ArrayBuffer(44 + 2 * n), v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, rate, true); v.setUint32(28, 2 * rate, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, 2 * n, true);
  for (let i = 0; i < n; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + 2 * i, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

async function recordTake(seconds) {
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new Error("the browser lends its microphone only to a page on https or localhost: " +
      "open this page through an SSH tunnel (ssh -L 8000:127.0.0.1:8000 DEVICE, then " +
      "http://localhost:8000/) or add recordings instead");
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: {
    channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const ctx = new AudioContext();
  try {
    await ctx.audioWorklet.addModule("/static/recorder.js");
    const src = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "take-recorder");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    const need = Math.round(seconds * ctx.sampleRate);
    const chunks = [];
    let got = 0;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the microphone delivered no audio")), (seconds + 5) * 1000);
      node.port.onmessage = (e) => {
        chunks.push(e.data); got += e.data.length;
        if (got >= need) { clearTimeout(timer); resolve(); }
      };
      src.connect(node); node.connect(mute); mute.connect(ctx.destination);
    });
    src.disconnect(); node.disconnect();
    const samples = new Float32Array(got);
    let o = 0;
    for (const c of chunks) { samples.set(c, o); o += c.length; }
    return wavBlob(samples.subarray(0, need), ctx.sampleRate);
  } finally {
    stream.getTracks().forEach((t) => t.stop());
    ctx.close();
  }
}

function takesForm(takes) {
  const form = new FormData();
  form.append("word", $("#enrol-word").value.trim());
  for (const t of takes) form.append("take", t.blob, t.name);
  return form;
}

async function addTakes(added) {
  if (!added.length) return;
  const next = state.takes.concat(added);
  setBusy("reading the takes…");
  try {
    const r = await api("/api/preview", { form: takesForm(next) });
    next.forEach((t, i) => { t.preview = r.takes[i]; t.name = r.takes[i].name; });
    state.takes = next;
    state.report = r;
    renderTakes();
  } catch (e) {
    showMessage(e.message);  // the takes are not added; nothing changed
  } finally { setBusy(""); }
}

async function refreshPreview() {
  if (!state.takes.length) { state.report = null; renderTakes(); return; }
  try {
    state.report = await api("/api/preview", { form: takesForm(state.takes) });
    renderTakes();
  } catch (e) { showMessage(e.message); }
}

function drawTake(canvas, p) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 220, h = canvas.clientHeight || 60;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const X = (s) => (s / p.seconds) * w;
  g.fillStyle = "#e3ebff";
  g.fillRect(X(p.window[0]), 0, X(p.window[1]) - X(p.window[0]), h);
  g.fillStyle = p.silent ? css("--bad") : css("--accent");
  const n = p.peaks.length;
  for (let i = 0; i < n; i++) {
    const [lo, hi] = p.peaks[i];
    const y0 = h / 2 - hi * h / 2, y1 = h / 2 - lo * h / 2;
    g.fillRect((i / n) * w, y0, Math.max(1, w / n), Math.max(1, y1 - y0));
  }
}

function renderTakes() {
  const box = $("#takes");
  box.innerHTML = "";
  state.takes.forEach((t, i) => {
    const p = t.preview;
    const card = document.createElement("div");
    card.className = "take" + (p.silent ? " silent" : "");
    card.dataset.name = t.name;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = `${t.name} · ${fmt(p.seconds, 1)} s · ${fmt(p.level_dbfs, 0)} dBFS`;
    const canvas = document.createElement("canvas");
    const heard = document.createElement("div");
    heard.className = "heard";
    heard.dataset.label = p.heard.label;
    heard.textContent = p.silent ? "silent: record again closer to the microphone" :
      `heard as ${p.heard.label} (p ${fmt(p.heard.probability)}, exit ${p.heard.exit})`;
    if (p.silent) heard.classList.add("warn");
    const audio = document.createElement("audio");
    audio.controls = true;
    if (!t.url) t.url = URL.createObjectURL(t.blob);
    audio.src = t.url;
    const rm = document.createElement("button");
    Object.assign(rm, { type: "button", textContent: "Remove", className: "secondary" });
    rm.addEventListener("click", () => {
      URL.revokeObjectURL(t.url);
      state.takes.splice(i, 1);
      refreshPreview();
    });
    card.append(name, canvas, heard, audio, rm);
    box.appendChild(card);
    drawTake(canvas, p);
  });
  const r = state.report, heard = $("#heard");
  heard.innerHTML = "";
  if (r && state.takes.length) {
    const line = document.createElement("div");
    line.textContent = "before learning it, the model heard the takes as: " +
      Object.entries(r.heard_as).map(([k, v]) => `${k} ${v}`).join(", ");
    heard.appendChild(line);
    const word = $("#enrol-word").value.trim() || "the word";
    for (const other of r.confusable_with) {
      const warn = document.createElement("div");
      warn.className = "warn";
      warn.textContent = `warning: ${word} may be confused with ${other} (${r.heard_as[other]} of ` +
        `${state.takes.length} takes were heard as ${other}): expect each to fire on the other`;
      heard.appendChild(warn);
    }
  }
  updateEnrolButton();
}

function updateEnrolButton() {
  $("#enrol").disabled = !!state.info.read_only || state.busy || !state.takes.length ||
    !$("#enrol-word").value.trim();
}

function setBusy(text) {
  state.busy = !!text;
  $("#enrol-busy").textContent = text;
  updateEnrolButton();
}

async function enrol() {
  const word = $("#enrol-word").value.trim();
  setBusy(`enrolling ${word}…`);
  const form = takesForm(state.takes);
  if ($("#enrol-update").checked) form.append("update", "1");
  try {
    const r = await api("/api/enroll", { form, change: true });
    $("#enrol-report").textContent = r.report.concat(r.warnings.map((w) => `warning: ${w}`)).join("\n");
    showMessage(`${r.updated ? "updated" : "enrolled"} ${r.word}`, true);
    for (const t of state.takes) URL.revokeObjectURL(t.url);
    state.takes = [];
    state.report = null;
    renderTakes();
  } catch (e) {
    showMessage(e.message);
  } finally { setBusy(""); }
}

function initEnrol() {
  $("#record").addEventListener("click", async () => {
    const b = $("#record");
    b.disabled = true; b.classList.add("recording"); b.textContent = "recording…";
    try {
      const blob = await recordTake(TAKE_SECONDS);
      const n = state.takes.length + 1;
      await addTakes([{ name: `take ${n}.wav`, blob }]);
    } catch (e) { showMessage(e.message); }
    finally { b.disabled = false; b.classList.remove("recording"); b.textContent = `Record a take (${TAKE_SECONDS} s)`; }
  });
  $("#upload").addEventListener("change", async (e) => {
    const files = Array.from(e.target.files || []);
    e.target.value = "";
    await addTakes(files.map((f) => ({ name: f.name, blob: f })));
  });
  $("#enrol-word").addEventListener("input", updateEnrolButton);
  $("#enrol-word").addEventListener("change", () => { if (state.takes.length) refreshPreview(); });
  $("#enrol").addEventListener("click", enrol);
  $("#clear-takes").addEventListener("click", () => {
    for (const t of state.takes) URL.revokeObjectURL(t.url);
    state.takes = []; state.report = null; renderTakes();
  });
}

window.addEventListener("resize", queueDraw);
initToken();
initEnrol();
connect();
