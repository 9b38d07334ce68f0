// The genie2 browser player: send the keys held, draw each dreamed frame as it arrives.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("world");
const context = canvas.getContext("2d");
context.imageSmoothingEnabled = false;

// One request (reset or step) is in flight at a time: `pending` is its id, and only its reply
// (frame or error) lets the next one go.
const state = {
  info: null, socket: null, token: null, running: true, pending: null, start: 0,
  held: new Set(), tapped: new Set(), sentAt: 0, arrivals: [], recording: false, nextId: 0,
  lastSent: 0, idle: false, // idle: the server closed the socket after idle_timeout s without a message
  resetting: null, // the id of the latest reset: its frame clears the error line (an upload that failed, say)
};
// read by tests and benchmarks: frames received, connections opened, the last frame (a data URL,
// made when read), whether a request is in flight, the page's own rates
window.genie2 = { frames: 0, connections: 0, fps: 0, latencyMs: 0, errors: [] };
Object.defineProperty(window.genie2, "lastImage", { get: () => (window.genie2.frames ? canvas.toDataURL() : null) });
Object.defineProperty(window.genie2, "busy", { get: () => state.pending !== null });

function showError(text) {
  $("error").textContent = text;
  window.genie2.errors.push(text);
}

function send(message) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  state.socket.send(JSON.stringify(message));
  state.lastSent = performance.now();
}

// A visible page pings when it has sent nothing for a third of the server's idle timeout, so a
// paused tab keeps its session; a hidden one stays quiet, is closed once idle, and reconnects when shown.
function keepAlive() {
  const period = (state.info.idle_timeout * 1000) / 3;
  setInterval(() => {
    if (!document.hidden && performance.now() - state.lastSent > period) send({ type: "ping" });
  }, period);
}

function keysToSend() {
  const keys = new Set([...state.held, ...state.tapped].map((key) => state.info.keymap[key]));
  state.tapped.clear();
  if (keys.size === 0 && $("idle").value !== "") keys.add(Number($("idle").value));
  let list = [...keys];
  if (!state.info.multiple_actions) list = list.slice(-1);
  return list.slice(0, state.info.max_num_actions);
}

function request(message) {
  state.pending = state.nextId++;
  state.sentAt = performance.now();
  send(Object.assign({ id: state.pending }, message));
}

function stepIfReady(once = false) {
  if (!(state.running || once) || state.pending !== null || !state.token || document.hidden) return;
  request({ type: "step", keys: keysToSend() });
}

function reset(message) {
  // a reset may overtake a step in flight: the step's frame, when it comes, is drawn but ignored
  request(Object.assign({ type: "reset" }, message));
  state.resetting = state.pending;
}

// A binary frame: header length (uint32 little-endian), JSON header, then size x size RGB bytes.
function readFrame(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const message = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const rgb = new Uint8Array(buffer, 4 + length);
  const pixels = new ImageData(message.size, message.size);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    pixels.data[j] = rgb[i];
    pixels.data[j + 1] = rgb[i + 1];
    pixels.data[j + 2] = rgb[i + 2];
    pixels.data[j + 3] = 255;
  }
  message.pixels = pixels;
  return message;
}

function drawFrame(message, now, latency) {
  // the canvas has the model's own size; CSS shows it large with sharp pixels
  if (canvas.width !== message.size) canvas.width = canvas.height = message.size;
  context.putImageData(message.pixels, 0, 0);
  window.genie2.frames += 1;
  state.arrivals.push(now);
  while (state.arrivals.length > 1 && now - state.arrivals[0] > 2000) state.arrivals.shift();
  const span = (state.arrivals[state.arrivals.length - 1] - state.arrivals[0]) / 1000;
  const fps = span > 0 ? (state.arrivals.length - 1) / span : 0;
  Object.assign(window.genie2, { fps, latencyMs: latency });
  $("frame-index").textContent = message.index;
  $("fps").textContent = fps.toFixed(1);
  $("latency").textContent = latency.toFixed(0) + " ms";
  $("compute").textContent = message.compute_ms.toFixed(0) + " ms";
  const full = message.recorded >= state.info.max_recorded_frames ? " (full: stop and download)" : "";
  $("recorded").textContent = state.recording ? `${message.recorded} frames recorded${full}` : "";
}

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?frames=raw`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onmessage = (event) => {
    const message = typeof event.data === "string" ? JSON.parse(event.data) : readFrame(event.data);
    if (message.type === "hello") {
      state.token = message.token;
      window.genie2.connections += 1;
      showRecording(false, false); // a new session: nothing recorded yet
      reset({ start: state.start });
    } else if (message.type === "status") {
      $("status").textContent = message.message; // "warming up": the reply waits for a compile
    } else if (message.idle) {
      state.idle = true;
      $("error").textContent = "closed while hidden and idle: it reconnects when shown";
    } else if (message.type === "frame" || message.type === "error") {
      const now = performance.now(), latency = now - state.sentAt;
      if (message.id !== null && message.id === state.pending) {
        state.pending = null;
        $("status").textContent = ""; // what it waited for is done
        stepIfReady(); // ask for the next frame first: the server dreams it while this one is drawn
      }
      const started = message.type === "frame" && message.id !== null && message.id === state.resetting;
      if (started) $("error").textContent = ""; // a reset worked: an error from before (a bad upload) is stale
      if (message.type === "frame") drawFrame(message, now, latency);
      else showError(message.message);
    }
  };
  socket.onclose = (event) => {
    state.token = null;
    state.pending = null;
    if (state.idle) {
      if (!document.hidden) reconnect(); // else when shown again
      return;
    }
    if (event.code !== 1013) showError("disconnected from the server: reload the page");
  };
}

function reconnect() {
  state.idle = false;
  $("error").textContent = "";
  connect();
}

function showRecording(on, links) {
  state.recording = on;
  $("record").textContent = on ? "Stop recording" : "Record";
  for (const kind of ["gif", "mp4"]) {
    $(kind).hidden = !links;
    $(kind).href = `/api/recording/${state.token}.${kind}`;
  }
}

function setRunning(running) {
  state.running = running;
  $("run").textContent = running ? "Pause" : "Play";
  stepIfReady();
}

function pressed(event, down) {
  if (!(event.key in state.info.keymap)) return;
  event.preventDefault();
  if (down) { state.held.add(event.key); state.tapped.add(event.key); } else state.held.delete(event.key);
  if (down && !state.running && !event.repeat) stepIfReady(true); // paused: one frame per key press
  const cell = document.querySelector(`[data-action="${state.info.keymap[event.key]}"]`);
  if (cell) cell.classList.toggle("pressed", down);
}

function slider(id, value, key) {
  const input = $(id), label = $(id + "-value");
  input.value = value;
  label.textContent = value;
  input.oninput = () => { label.textContent = input.value; };
  input.onchange = () => send({ type: "settings", [key]: Number(input.value) }); // on release, not every move
}

// A parallel (MaskGIT) model fills each frame in K passes: the page offers K, a live setting of the session.
function decodeSteps(info) {
  if (info.decoding !== "parallel") return; // a raster model decodes one code at a time: nothing to choose
  const select = $("decode-steps");
  const choices = [...new Set([1, 2, 4, 8, 16, info.decode_steps])].sort((a, b) => a - b);
  for (const k of choices) select.add(new Option(String(k), String(k)));
  select.value = String(info.decode_steps);
  select.onchange = () => send({ type: "settings", decode_steps: Number(select.value) });
  $("decode-steps-row").hidden = false;
}

// A raster model fills a frame one code a step, or in whole-frame passes over a draft: a live setting too.
function rasterMode(info) {
  if (info.decoding !== "raster") return;
  const select = $("raster");
  for (const mode of ["sequential", "speculative", "diagonal"]) select.add(new Option(mode, mode));
  select.value = info.raster;
  select.onchange = () => send({ type: "settings", raster: select.value });
  $("raster-row").hidden = false;
}

function keyLabel(key) {
  return { ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓", " ": "space" }[key] || key;
}

async function main() {
  state.info = await (await fetch("/api/info")).json();
  const info = state.info;
  $("multi").textContent = info.multiple_actions ? `Up to ${info.max_num_actions} keys at once.` : "One action per frame.";
  const rows = new Map(); // one row per action: its keys side by side (an arrow and its w a s d twin)
  for (const [key, action] of info.keys) { // in the server's order: a JS object lists "1" before "ArrowLeft"
    if (!rows.has(action)) {
      const row = $("keymap").insertRow();
      row.insertCell();
      const cell = row.insertCell();
      cell.textContent = info.action_names[action];
      cell.dataset.action = action;
      rows.set(action, row);
    }
    const keys = rows.get(action).cells[0];
    keys.innerHTML += `${keys.innerHTML ? " " : ""}<kbd>${keyLabel(key)}</kbd>`;
  }
  const idle = $("idle");
  idle.add(new Option("no action (the model decides)", ""));
  info.action_names.forEach((name, i) => idle.add(new Option(name, String(i))));
  const noop = info.action_names.findIndex((n) => ["noop", "done", "none", "wait"].includes(n.toLowerCase()));
  idle.value = noop >= 0 ? String(noop) : "";
  slider("temperature", info.temperature, "temperature");
  slider("cond-scale", info.cond_scale, "cond_scale");
  decodeSteps(info);
  rasterMode(info);
  for (let i = 0; i < info.start_frames; i++) {
    const image = new Image();
    image.src = `/api/start/${i}.png`;
    image.title = `start frame ${i}`;
    image.className = i === 0 ? "chosen" : "";
    image.onclick = () => {
      document.querySelectorAll("#starts img").forEach((other) => other.classList.remove("chosen"));
      image.classList.add("chosen");
      state.start = i;
      reset({ start: i });
    };
    $("starts").appendChild(image);
  }
  $("run").onclick = () => setRunning(!state.running);
  $("reset").onclick = () => reset({ start: state.start });
  $("record").onclick = () => {
    const on = !state.recording;
    send({ type: "record", on });
    showRecording(on, !on); // the download links show once recording stops
  };
  $("upload").onchange = () => {
    const file = $("upload").files[0];
    $("upload").value = ""; // so choosing the same file again (fixed, say) uploads it again
    if (!file) return;
    if (file.size > info.max_upload_bytes) return showError(`that image is over the ${info.max_upload_bytes}-byte limit`);
    const reader = new FileReader();
    reader.onload = () => reset({ image: reader.result });
    reader.readAsDataURL(file);
  };
  document.addEventListener("keydown", (event) => pressed(event, true));
  document.addEventListener("keyup", (event) => pressed(event, false));
  window.addEventListener("blur", () => state.held.clear());
  document.addEventListener("visibilitychange", () => {
    if (state.idle && !document.hidden) reconnect(); // closed while hidden: a new session
    else stepIfReady(); // hidden tabs stop dreaming
  });
  connect();
  keepAlive();
}

main();
