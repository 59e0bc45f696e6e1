// The token canvas and the schedules, drawn in the page from a run's feed (magnet_demo/canvas_feed.py).
// Runs as a gr.HTML js_on_load body: `element`, `props` and `watch` are given by Gradio.
// props.role "live": reads the feed (its value) into the page's store and draws the newest step.
// props.role "inspect": draws the step chosen with the "Step" slider (props.scrub_id), from the store.
const ROW = 22, ROW_GAP = 2, STRIP = 12, STRIP_GAP = 6, LABEL = 84, RIGHT = 12, AXIS = 18;
const TARGET_TICKS = 10, SCHEDULE_HEIGHT = 190, SCRUB_POLL_MS = 200;
const STATE_FIXED = 1, STATE_GIVEN = 4, STATE_REVISED = 5;
const TEXT = "#282830", MUTED = "#6e6e78", NOT_PREDICTED = "#e4e4e8", NOT_PREDICTED_BYTE = 255;
const PLAN_COLOUR = "#9aa3b0", USED_COLOUR = "#d1495b", CURSOR_COLOUR = "#2d3039", STAGE_LINE = "#c8ccd2";
const REGION_FILL = "rgba(255, 255, 255, 0.35)", REGION_EDGE = "#d1495b";
// the audio panel's element ids and the region mode's label, from the page (props.ids, props.region_mode)
const IDS = props.ids, REGION_MODE = props.region_mode;
const MIN_DRAG_PX = 4, REGION_DECIMALS = 2;
const PANELS = [["mask_rate", "mask rate"], ["cfg_coef", "CFG coefficient"], ["temperature", "temperature"]];

const store = (window.magnetCanvasStore = window.magnetCanvasStore || {
  headerLine: null, header: null, plans: {}, steps: [], stageEnds: {}, consumed: 0, views: new Set(),
});
const canvas = element.querySelector(".mc-canvas");
const schedule = element.querySelector(".mc-schedule");
const title = element.querySelector(".mc-title");
const readout = element.querySelector(".mc-readout");
const legendBox = element.querySelector(".mc-legend");
let shown = null;  // the step drawn now (or null: the blank canvas of a run that has not stepped)
let pending = false;
let scrubbed = null;  // the "Step" slider's value, for the inspect role
let drawnKey = null;  // what the last drawing showed

function bytes(b64) {
  const raw = atob(b64), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function decoded(step) {  // typed arrays of a step, decoded once
  if (!step.arrays) {
    const tokens = bytes(step.tokens);
    step.arrays = {
      state: bytes(step.state),
      confidence: bytes(step.confidence),
      rescorer: step.rescorer ? bytes(step.rescorer) : null,
      tokens: new Uint16Array(tokens.buffer, 0, tokens.length / 2),
      rows: step.rows ? bytes(step.rows) : null,  // a lab run's step: every codebook's states
      rowTokens: step.row_tokens ? new Uint16Array(bytes(step.row_tokens).buffer) : null,
    };
  }
  return step.arrays;
}

function readHeader(header) {
  const K = header.codebooks, T = header.frames;
  header.givenAt = (k, f) => false;
  if (header.given) {
    const bits = bytes(header.given), raw = bytes(header.given_tokens);
    const tokens = new Uint16Array(raw.buffer, 0, raw.length / 2);
    header.givenAt = (k, f) => ((bits[(k * T + f) >> 3] >> (7 - ((k * T + f) & 7))) & 1) === 1;
    header.givenToken = (k, f) => tokens[k * T + f];
  }
  return header;
}

function ingest(text) {  // read the lines of the feed not read yet
  if (!text) return;
  const firstEnd = text.indexOf("\n");
  if (firstEnd < 0) return;
  const headerLine = text.slice(0, firstEnd);
  if (headerLine !== store.headerLine || text.length < store.consumed) {
    Object.assign(store, {
      headerLine, header: readHeader(JSON.parse(headerLine)), plans: {}, steps: [], stageEnds: {},
      consumed: firstEnd + 1,
    });
  }
  const end = text.lastIndexOf("\n") + 1;
  for (const line of text.slice(store.consumed, end).split("\n")) {
    if (!line) continue;
    const item = JSON.parse(line);
    if (item.kind === "plan") store.plans[item.id] = item;
    else if (item.kind === "step") {
      store.steps[item.index] = item;
      if (item.step === item.steps_in_stage - 1) store.stageEnds[item.stage] = item.index;
    }
  }
  store.consumed = Math.max(store.consumed, end);
  store.views.forEach((redraw) => redraw());
}

function stepToShow() {
  const count = store.steps.length;
  if (!count) return null;
  if (props.role !== "inspect") return count - 1;
  const wanted = parseInt(scrubbed, 10);
  return Math.max(0, Math.min(count, Number.isFinite(wanted) ? wanted : count) - 1);
}

function stateOf(step, k, f) {  // state of codebook k, frame f after `step` (null: before any step)
  const header = store.header;
  if (header.givenAt(k, f)) return STATE_GIVEN;
  if (!step) return 0;
  if (step.rows) return decoded(step).rows[k * header.frames + f];
  if (k < step.stage) return STATE_FIXED;
  if (k > step.stage) return 0;
  return decoded(step).state[f];
}

function tokenOf(step, k, f) {
  const header = store.header;
  if (header.givenAt(k, f)) return header.givenToken(k, f);
  if (step && step.rows) return decoded(step).rowTokens[k * header.frames + f];
  if (!step || k > step.stage) return null;
  const source = k === step.stage ? step : store.steps[store.stageEnds[k]];
  return source ? decoded(source).tokens[f] : null;
}

function sizeCanvas(target, cssHeight) {  // a new backing store only when the size changes
  const width = Math.max(320, element.clientWidth || 800), ratio = window.devicePixelRatio || 1;
  const pixels = [Math.round(width * ratio), Math.round(cssHeight * ratio)];
  if (target.width !== pixels[0] || target.height !== pixels[1]) {
    target.style.width = `${width}px`;
    target.style.height = `${cssHeight}px`;
    [target.width, target.height] = pixels;
  }
  const ctx = target.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, cssHeight);
  ctx.font = "12px sans-serif";
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  return { ctx, width };
}

function niceStep(raw) {
  if (raw <= 0) return 1;
  const base = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((f) => base * f).find((v) => v >= raw - 1e-12);
}

function layout(step) {
  const K = store.header.codebooks;
  const canvasH = K * ROW + (K - 1) * ROW_GAP;
  const rescored = !!(step && step.rescorer);
  const stripsTop = canvasH + STRIP_GAP;
  const stripsH = rescored ? 2 * STRIP + STRIP_GAP : STRIP;
  return { canvasH, stripsTop, stripsH, rescored, axisTop: stripsTop + stripsH + 2 };
}

function fillRow(ctx, x0, fw, y, h, colours) {  // one band, as runs of equal colour
  let start = 0;
  for (let f = 1; f <= colours.length; f++) {
    if (f === colours.length || colours[f] !== colours[start]) {
      ctx.fillStyle = colours[start];
      ctx.fillRect(x0 + Math.round(start * fw), y, Math.round(f * fw) - Math.round(start * fw), h);
      start = f;
    }
  }
}

function confidenceColours(values) {
  return Array.from(values, (v) => (v === NOT_PREDICTED_BYTE ? NOT_PREDICTED : props.lut[Math.round((v * 255) / 254)]));
}

function drawCanvas(step) {
  const { codebooks: K, frames: T, frame_rate: rate, legend } = store.header;
  const box = layout(step);
  const { ctx, width } = sizeCanvas(canvas, box.axisTop + AXIS);
  const fw = (width - LABEL - RIGHT) / T;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (let k = 0; k < K; k++) {
    const y = k * (ROW + ROW_GAP);
    const colours = Array.from({ length: T }, (_, f) => legend[stateOf(step, k, f)].colour);
    fillRow(ctx, LABEL, fw, y, ROW, colours);
    ctx.fillStyle = TEXT;
    ctx.fillText(`codebook ${k + 1}`, LABEL - 6, y + ROW / 2);
  }
  const strips = [["confidence", step ? decoded(step).confidence : null]];
  if (box.rescored) strips.push(["rescorer", decoded(step).rescorer]);
  strips.forEach(([name, values], i) => {
    const y = box.stripsTop + i * (STRIP + STRIP_GAP);
    fillRow(ctx, LABEL, fw, y, STRIP, values ? confidenceColours(values) : Array(T).fill(NOT_PREDICTED));
    ctx.fillStyle = TEXT;
    ctx.fillText(name, LABEL - 6, y + STRIP / 2);
  });
  const seconds = T / rate, tick = niceStep(seconds / TARGET_TICKS);
  ctx.textAlign = "left";
  ctx.fillStyle = MUTED;
  ctx.strokeStyle = MUTED;
  for (let s = 0; s <= seconds + 1e-9; s += tick) {
    const x = LABEL + Math.min(Math.round(s * rate * fw), Math.round(T * fw) - 1) + 0.5;
    const label = `${+s.toFixed(3)} s`;
    if (x + 3 + ctx.measureText(label).width > width) continue;
    ctx.beginPath();
    ctx.moveTo(x, box.axisTop);
    ctx.lineTo(x, box.axisTop + AXIS - 4);
    ctx.stroke();
    ctx.fillText(label, x + 3, box.axisTop + AXIS / 2);
  }
  canvas.dataset.step = step ? String(step.index + 1) : "0";
}

function panelScale(key, plan, upTo) {
  let top = 1e-3;
  for (const v of plan ? plan[key] : []) top = Math.max(top, v);
  for (let i = 0; i <= upTo; i++) if (store.steps[i]) top = Math.max(top, store.steps[i][key]);
  return Number((top * 1.12).toPrecision(3));
}

function drawSchedules(index) {
  const { ctx, width } = sizeCanvas(schedule, SCHEDULE_HEIGHT);
  const steps = store.header.decoding_steps, total = steps.reduce((a, b) => a + b, 0);
  const step = index === null ? null : store.steps[index];
  const planIds = Object.keys(store.plans);
  const plan = step ? store.plans[step.plan] : store.plans[planIds[planIds.length - 1]];
  schedule.style.display = plan ? "" : "none";  // input audio shown before any run: no schedules
  if (!plan) return;
  const panelW = width / PANELS.length, top = 22, bottom = SCHEDULE_HEIGHT - 30;
  PANELS.forEach(([key, name], p) => {
    const left = p * panelW + 40, right = (p + 1) * panelW - 12;
    const upTo = index === null ? -1 : index;
    const yMax = panelScale(key, plan, upTo);
    const x = (s) => left + ((s + 0.5) / total) * (right - left);  // s: 0-based step
    const y = (v) => bottom - (v / yMax) * (bottom - top);
    ctx.strokeStyle = MUTED;
    ctx.strokeRect(left, top, right - left, bottom - top);
    ctx.fillStyle = TEXT;
    ctx.textAlign = "center";
    ctx.fillText(name, (left + right) / 2, 10);
    ctx.fillStyle = MUTED;
    ctx.fillText("step (all codebooks)", (left + right) / 2, SCHEDULE_HEIGHT - 8);
    ctx.textAlign = "right";
    ctx.fillText("0", left - 4, bottom);
    ctx.fillText(String(yMax), left - 4, top + 4);
    ctx.textAlign = "center";
    ctx.fillText("1", x(0), bottom + 10);
    ctx.fillText(String(total), x(total - 1), bottom + 10);
    ctx.setLineDash([2, 3]);
    ctx.strokeStyle = STAGE_LINE;
    let boundary = 0;
    for (const n of steps.slice(0, -1)) {
      boundary += n;
      ctx.beginPath();
      ctx.moveTo(x(boundary - 0.5), top);
      ctx.lineTo(x(boundary - 0.5), bottom);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (plan) {
      ctx.strokeStyle = PLAN_COLOUR;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      plan[key].forEach((v, s) => (s ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))));
      ctx.stroke();
      ctx.lineWidth = 1;
    }
    ctx.fillStyle = USED_COLOUR;
    for (let s = 0; s <= upTo; s++) {
      if (!store.steps[s]) continue;
      ctx.beginPath();
      ctx.arc(x(s), y(store.steps[s][key]), 2.2, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (step) {
      ctx.strokeStyle = CURSOR_COLOUR;
      ctx.beginPath();
      ctx.moveTo(x(index), top);
      ctx.lineTo(x(index), bottom);
      ctx.stroke();
    }
  });
}

function drawLegend() {
  const header = store.header;
  const items = header.legend.filter(
    (_, state) => (state !== STATE_GIVEN || header.given) && (state !== STATE_REVISED || header.revision),
  );
  const ramp = `linear-gradient(to right, ${props.lut.filter((_, i) => i % 32 === 0 || i === 255).join(", ")})`;
  legendBox.innerHTML = "";
  for (const { label, colour } of items) {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${colour}"></i>`;
    item.append(label);
    legendBox.append(item);
  }
  const scale = document.createElement("span");
  scale.innerHTML = `confidence 0 <b style="background:${ramp}"></b> 1 <i style="background:${NOT_PREDICTED}"></i>`;
  scale.append("not predicted");
  legendBox.append(scale);
}

function describe(event) {  // the hover readout: what is under the pointer
  if (!store.header) return;
  const { codebooks: K, frames: T, frame_rate: rate } = store.header;
  const step = shown === null ? null : store.steps[shown];
  const rect = canvas.getBoundingClientRect(), box = layout(step);
  const px = event.clientX - rect.left, py = event.clientY - rect.top;
  const fw = (rect.width - LABEL - RIGHT) / T, f = Math.floor((px - LABEL) / fw);
  if (f < 0 || f >= T) return;
  let k = Math.floor(py / (ROW + ROW_GAP));
  if (py >= box.canvasH) k = step ? step.stage : null;  // the strips belong to the current codebook
  if (k === null || k >= K) return;
  const state = stateOf(step, k, f), token = tokenOf(step, k, f);
  const parts = [`codebook ${k + 1}`, `frame ${f}`, `${(f / rate).toFixed(2)} s`, store.header.legend[state].label];
  if (step && k === step.stage) {
    const conf = decoded(step).confidence[f];
    parts.push(conf === NOT_PREDICTED_BYTE ? "confidence: not predicted" : `confidence ${(conf / 254).toFixed(2)}`);
    const rescored = decoded(step).rescorer;
    if (rescored && rescored[f] !== NOT_PREDICTED_BYTE) parts.push(`rescorer ${(rescored[f] / 254).toFixed(2)}`);
  }
  parts.push(token === null || state === 0 ? "token: masked" : `token ${token}`);
  readout.textContent = parts.join(" · ");
}

function field(id) {  // the number box of a Gradio slider or number field
  return document.querySelector(`#${id} input[type=number]`);
}

function region() {  // [start, end] seconds when the mode is "re-decode region", else null
  const mode = document.querySelector(`#${IDS.mode} input:checked`);
  if (!mode || mode.value !== REGION_MODE) return null;
  const [start, end] = [IDS.region_start, IDS.region_end].map((id) => parseFloat(field(id)?.value));
  return Number.isFinite(start) && Number.isFinite(end) ? [start, end] : null;
}

function drawRegion(span) {  // shade what the region re-decodes, on every codebook
  if (!span || !store.header) return;
  const { frames: T, frame_rate: rate, codebooks: K } = store.header;
  const ctx = canvas.getContext("2d"), fw = (canvas.clientWidth - LABEL - RIGHT) / T;
  const [a, b] = [LABEL + span[0] * rate * fw, LABEL + Math.min(span[1] * rate, T) * fw];
  const height = K * ROW + (K - 1) * ROW_GAP;
  ctx.fillStyle = REGION_FILL;
  ctx.fillRect(a, 0, b - a, height);
  ctx.strokeStyle = REGION_EDGE;
  ctx.lineWidth = 2;
  ctx.strokeRect(a, 1, b - a, height - 2);
  ctx.lineWidth = 1;
}

function setField(id, value) {  // as if typed: Gradio reads the box on input and on blur
  const input = field(id);
  if (!input) return;
  input.value = String(value);
  input.dispatchEvent(new Event("input", { bubbles: true }));
  input.dispatchEvent(new Event("change", { bubbles: true }));
  input.dispatchEvent(new Event("blur"));
}

function secondsAt(event) {
  const { frames: T, frame_rate: rate } = store.header;
  const rect = canvas.getBoundingClientRect(), fw = (rect.width - LABEL - RIGHT) / T;
  const frame = Math.max(0, Math.min(T, (event.clientX - rect.left - LABEL) / fw));
  return Number((frame / rate).toFixed(REGION_DECIMALS));
}

let drag = null;  // {x, start, end} while the pointer drags a region across the canvas
canvas.addEventListener("mousedown", (event) => {
  if (store.header) drag = { x: event.clientX, start: secondsAt(event), end: secondsAt(event) };
});
window.addEventListener("mousemove", (event) => {
  if (!drag) return;
  drag.end = secondsAt(event);
  drawnKey = null;
  requestDraw();
});
window.addEventListener("mouseup", (event) => {
  if (!drag) return;
  const { x, start } = drag, end = secondsAt(event);
  drag = null;
  if (Math.abs(event.clientX - x) < MIN_DRAG_PX) return;
  document.querySelector(`#${IDS.mode} input[value="${REGION_MODE}"]`)?.click();
  setField(IDS.region_start, Math.min(start, end));
  setField(IDS.region_end, Math.max(start, end));
  drawnKey = null;
  requestDraw();
});

function redraw() {
  pending = false;
  if (!store.header) return;
  shown = stepToShow();
  const step = shown === null ? null : store.steps[shown];
  // the same step of the same feed, drawn at the same width, looks the same: skip it
  const span = drag ? [Math.min(drag.start, drag.end), Math.max(drag.start, drag.end)] : region();
  const key = `${store.header.feed}:${shown}:${!!step}:${element.clientWidth}:${Object.keys(store.plans).length}:${span}`;
  if (key === drawnKey) return;
  drawnKey = key;
  const run = `Run #${store.header.run}`;
  title.textContent = step ? `${run} · ${step.title}` : store.header.title || `${run} · starting…`;
  drawCanvas(step);
  drawRegion(span);
  drawSchedules(shown);
  if (legendBox.dataset.feed !== String(store.header.feed)) {
    drawLegend();
    legendBox.dataset.feed = String(store.header.feed);
  }
}

function requestDraw() {  // at most one drawing per animation frame: a slow page skips steps
  if (pending) return;
  pending = true;
  requestAnimationFrame(redraw);
}

store.views.add(requestDraw);
canvas.addEventListener("mousemove", describe);
canvas.addEventListener("mouseleave", () => (readout.textContent = "Point at the canvas to read a token."));
new ResizeObserver(requestDraw).observe(element);
document.addEventListener("input", (event) => {
  if (event.target.closest && event.target.closest(`#${IDS.mode}, #${IDS.region_start}, #${IDS.region_end}`)) requestDraw();
}, true);
document.addEventListener("change", (event) => {
  if (event.target.closest && event.target.closest(`#${IDS.mode}`)) requestDraw();
}, true);
if (props.role === "inspect") {
  // the slider's own events redraw at once; polling catches values the server sets
  let polled = null;
  const scrub = (value) => {
    scrubbed = value;
    requestDraw();
  };
  document.addEventListener("input", (event) => {
    if (event.target.closest && event.target.closest(`#${props.scrub_id}`)) scrub(event.target.value);
  }, true);
  setInterval(() => {
    const input = document.querySelector(`#${props.scrub_id} input[type=number]`);
    if (input && input.value !== polled) scrub((polled = input.value));
  }, SCRUB_POLL_MS);
} else {
  watch("value", () => ingest(props.value));
  ingest(props.value);
}
requestDraw();
