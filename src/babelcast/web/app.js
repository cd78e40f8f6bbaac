// babelcast live captions: microphone -> AudioWorklet -> WebSocket /v1/listen -> captions.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), language: $("language"), langSelect: $("lang-select"), latency: $("latency-select"),
  keyField: $("key-field"), key: $("api-key"), start: $("start"), placeholder: $("placeholder"),
  finals: $("finals"), partial: $("partial"), model: $("model"), session: $("session"), stats: $("stats"),
  error: $("error"),
};

// State, also read by the end-to-end test.
const state = window.babelcast = {
  running: false, finals: [], partial: "", language: null, locked: false, events: 0, error: null, framesSent: 0, sampleRate: null,
  authRequired: false, audioConstraints: null,
};
let ws = null, ctx = null, media = null, node = null;

// The browser's voice processing (on by default) is made for calls: it gates, flattens and re-levels speech,
// which the model was not trained on. Ask for the microphone as it is.
const AUDIO = { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false };

// What a person at the page should do, for the server's error codes that concern them.
function advice(code, message) {
  if (code === "unauthorized") {
    return ui.key.value
      ? "The API key was not accepted. Check it with whoever runs this server, type it again, then press Start."
      : "This server needs an API key. Type it in the API key field, then press Start.";
  }
  if (code === "server_full" || code === "server_busy") return "The server is busy right now. Try again in a minute.";
  if (code === "unsupported_language") return "The server does not know this language. Pick another one.";
  return `${code}: ${message}`;
}

function setStatus(text, kind) {
  ui.status.textContent = text;
  ui.status.className = "pill " + (kind || "idle");
}

function showError(message) {
  state.error = message;
  ui.error.textContent = message || "";
  if (message) setStatus("error", "error");
}

async function loadInfo() {
  try {
    const info = await (await fetch("/v1/info")).json();
    ui.model.textContent = "model: " + info.model;
    addLanguages(info);
    for (const ms of info.latencies_ms) {
      const opt = new Option(ms + " ms", String(ms));
      opt.selected = ms === info.default_latency_ms;
      ui.latency.add(opt);
    }
    ui.keyField.hidden = !info.auth_required;
    state.authRequired = Boolean(info.auth_required);
    ui.key.value = localStorage.getItem("babelcast-key") || "";
  } catch (e) {
    showError("cannot reach the server: " + e);
  }
}

// Canonical locales, the ones the model was trained on first (in their own group), from /v1/info's
// `locales` and `trained_locales`; a server without them gives `languages`, shown as they come.
function addLanguages(info) {
  const trained = info.trained_locales || [];
  const locales = info.locales || info.languages.filter((l) => /^[a-z]{2,3}-[A-Z]{2}$/.test(l));
  const groups = trained.length
    ? [["trained", trained], ["not trained (results may be in another language)", locales.filter((l) => !trained.includes(l))]]
    : [[null, locales]];
  for (const [label, langs] of groups) {
    const parent = label ? document.createElement("optgroup") : ui.langSelect;
    if (label) { parent.label = label; ui.langSelect.append(parent); }
    for (const lang of langs) parent.append(new Option(lang, lang));
  }
}

function listenUrl(sampleRate) {
  const q = new URLSearchParams({
    language: ui.langSelect.value, latency_ms: ui.latency.value, sample_rate: String(sampleRate),
    encoding: "pcm_s16le", interim_results: "true",
  });
  if (ui.key.value) q.set("api_key", ui.key.value);  // browsers cannot send headers on a WebSocket
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/listen?${q}`;
}

function fmtTime(s) {
  if (s == null) return "";
  const m = Math.floor(s / 60), sec = (s % 60).toFixed(1).padStart(4, "0");
  return `${m}:${sec}`;
}

function addFinal(ev) {
  if (!ev.text) return;
  state.finals.push(ev.text);
  const p = document.createElement("p");
  p.className = "final";
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = fmtTime(ev.start);
  p.append(meta);
  if (ev.language) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = ev.language;
    p.append(tag);
  }
  p.append(document.createTextNode(ev.text));
  ui.finals.append(p);
  ui.stats.textContent = "finals: " + state.finals.length;
}

function setLanguage(lang) {
  if (!lang) return;
  state.language = lang;
  ui.language.textContent = "language: " + lang + (state.locked ? " (locked)" : "");
}

function onEvent(ev) {
  state.events++;
  switch (ev.type) {
    case "ready":
      setStatus("live", "live");
      ui.session.textContent = `session: ${ev.session_id} · ${ev.settings.latency_ms} ms`;
      if (ev.warning) ui.error.textContent = ev.warning;  // e.g. a language the model was not trained on
      break;
    case "partial":
      state.partial = ev.text;
      ui.partial.textContent = ev.text;
      setLanguage(ev.language);
      break;
    case "final":
      state.partial = "";
      ui.partial.textContent = "";
      setLanguage(ev.language);
      addFinal(ev);
      break;
    case "language":  // the detected language changed (auto mode), or was locked
      state.locked = ev.locked;
      setLanguage(ev.language);
      break;
    case "error":
      showError(advice(ev.code, ev.message));
      break;
    case "closed":
      if (!state.error) setStatus("stopped", "idle");
      break;
  }
  const main = $("captions");
  main.scrollTop = main.scrollHeight;
}

async function start() {
  showError("");
  if (state.authRequired && !ui.key.value) {  // no microphone and no connection until there is a key to send
    showError(advice("unauthorized"));
    ui.key.focus();
    return;
  }
  ui.placeholder.hidden = true;
  setStatus("connecting", "connecting");
  localStorage.setItem("babelcast-key", ui.key.value);
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: AUDIO });
    state.audioConstraints = media.getAudioTracks()[0].getSettings();
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  } catch (e) {
    showError("microphone unavailable: " + e.message);
    await stopAudio();
    return;
  }
  const source = ctx.createMediaStreamSource(media);
  node = new AudioWorkletNode(ctx, "pcm-capture", { numberOfOutputs: 0, processorOptions: { frameMs: 40 } });
  ws = new WebSocket(listenUrl(ctx.sampleRate));
  ws.binaryType = "arraybuffer";
  ws.onmessage = (m) => onEvent(JSON.parse(m.data));
  ws.onclose = (e) => {
    if (state.running) stop(false);
    if (e.code !== 1000 && e.code !== 1005 && !state.error) showError(`connection closed (${e.code}) ${e.reason}`);
  };
  ws.onerror = () => { if (!state.error) showError("WebSocket error: is the server running?"); };
  node.port.onmessage = (m) => {
    if (ws && ws.readyState === WebSocket.OPEN) { ws.send(m.data); state.framesSent++; }
  };
  state.sampleRate = ctx.sampleRate;
  ws.onopen = () => {
    source.connect(node);  // no connection to the speakers: capture only
  };
  if (ctx.state === "suspended") await ctx.resume();
  state.running = true;
  ui.start.textContent = "Stop";
  ui.start.className = "stop";
}

async function stopAudio() {
  if (node) { node.port.onmessage = null; node.disconnect(); node = null; }
  if (media) { media.getTracks().forEach((t) => t.stop()); media = null; }
  if (ctx) { await ctx.close().catch(() => {}); ctx = null; }
}

async function stop(sendClose = true) {
  state.running = false;
  ui.start.textContent = "Start captions";
  ui.start.className = "primary";
  await stopAudio();
  if (ws && sendClose && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "close" }));  // the server sends the last final, then `closed`
  }
  ws = null;
}

ui.start.addEventListener("click", () => (state.running ? stop() : start()));
for (const select of [ui.langSelect, ui.latency]) {
  select.addEventListener("change", async () => {
    if (state.running) { await stop(); await start(); }  // settings apply to a new session
  });
}
loadInfo();
