"use strict";
/* The live comparison player of sr-hls (sr-hls(1), --serve): the super-resolved rendition, the low-res
   rendition as the browser scales it, and a wipe between any two of them, kept in sync, with a
   statistics panel fed by stats.json. No framework and no build step: hls.js (vendored by make) where
   the server has it, else the browser's native HLS.

   A *layer* is anything that draws the stream on the stage: a <video> playing a rendition here; a
   canvas drawn by the page itself can be added the same way, by another script too: once the page
   has started ("srplayer-ready" on window), srPlayer.addLayer(id, label, element) puts it on the
   stage, in the views and in the wipe's choices, which all follow the list of layers. The first
   layer leads: it plays the audio and sets the time; the other videos follow it, moved to its
   position whenever they drift by more than a frame while it plays, to its very frame while it is
   paused (a canvas follows whatever it draws from). */

const SYNC_EVERY_MS = 250;
const PAUSED_TOLERANCE_S = 0.001;  // a seek sets currentTime exactly: no seek loop
const STATS_EVERY_MS = 1000;
const MASTER = "index.m3u8";

const player = {
  engine: null,        // "hls.js" or "native"
  layers: new Map(),   // id -> layer, the leader first
  view: null,          // a layer's id, or "wipe"
  left: null,          // the wipe's layers
  right: null,
  divider: 0.5,        // the wipe's position, a share of the picture's width
  frameS: 1 / 25,      // one frame of the leader, measured where the browser says
  stats: null,         // the last stats.json
};
window.srPlayer = player;  // for the console and the tests

const $ = (id) => document.getElementById(id);

function setStatus(text) {
  $("status").textContent = text;
}

/* ---- layers ---------------------------------------------------------------------------------- */

/** Add a layer: ``element`` (a video or a canvas) drawn on the stage under ``label``. */
function addLayer(id, label, element) {
  const box = document.createElement("div");
  box.className = "layer";
  box.dataset.layer = id;
  box.appendChild(element);
  $("layers").appendChild(box);
  const layer = { id, label, element, box, hls: null, level: 0, corrections: 0 };
  player.layers.set(id, layer);
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.view = id;
  button.textContent = label;
  button.addEventListener("click", () => show(id));
  $("views").insertBefore(button, $("views").querySelector('[data-view="wipe"]'));
  for (const select of [$("left"), $("right")]) {
    select.add(new Option(label, id));
  }
  return layer;
}

function levelUri(level) {
  return String(level.uri || level.url || "");
}

/** A layer playing a rendition: with hls.js, ``source.hls`` (pinned to the variant ``source.pin`` of a
 *  master playlist); natively, ``source.native``. */
function addVideoLayer(id, label, source) {
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  video.autoplay = true;
  const layer = addLayer(id, label, video);
  if (player.engine === "hls.js") {
    const hls = new Hls({ lowLatencyMode: true });
    layer.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      const index = source.pin ? hls.levels.findIndex((level) => levelUri(level).endsWith(source.pin)) : 0;
      if (index >= 0) {
        layer.level = index;
        hls.startLevel = index;
        hls.currentLevel = index;  // pinned: the comparison shows this rendition, not the ABR's choice
      }
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (data.fatal) setStatus(`${label}: error ${data.details}`);
    });
    hls.loadSource(source.hls);
    hls.attachMedia(video);
  } else {
    video.src = source.native;
  }
  video.play().catch(() => {});
  return layer;
}

function leader() {
  return player.layers.values().next().value;
}

/* ---- views ----------------------------------------------------------------------------------- */

function show(view) {
  player.view = view;
  render();
}

function render() {
  const wipe = player.view === "wipe";
  document.body.classList.toggle("wipe", wipe);
  $("stage").classList.toggle("wipe", wipe);
  const share = 100 * player.divider;
  for (const [id, layer] of player.layers) {
    let visible = id === player.view, clip = "none", z = 0;
    if (wipe && id === player.left) {
      visible = true;
      clip = player.left === player.right ? "none" : `inset(0 ${100 - share}% 0 0)`;
      z = 1;
    }
    if (wipe && id === player.right && id !== player.left) {
      visible = true;
      clip = `inset(0 0 0 ${share}%)`;
      z = 2;
    }
    layer.box.style.visibility = visible ? "visible" : "hidden";
    layer.box.style.clipPath = clip;
    layer.box.style.zIndex = z;
  }
  $("divider").style.left = `${share}%`;
  $("divider").setAttribute("aria-valuenow", String(Math.round(share)));
  const name = (id) => (player.layers.get(id) || {}).label || "";
  $("label-left").textContent = wipe ? name(player.left) : name(player.view);
  $("label-right").textContent = wipe ? name(player.right) : "";
  $("label-right").hidden = !wipe;
  $("left").value = player.left;
  $("right").value = player.right;
  for (const button of $("views").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === player.view));
  }
}

function moveDivider(share) {
  player.divider = Math.min(1, Math.max(0, share));
  render();
}

function setUpWipe() {
  const stage = $("stage");
  let dragging = null;
  const follow = (event) => {
    const box = stage.getBoundingClientRect();
    moveDivider((event.clientX - box.left) / box.width);
  };
  stage.addEventListener("pointerdown", (event) => {
    if (player.view !== "wipe") return;
    dragging = event.pointerId;
    stage.setPointerCapture(dragging);
    follow(event);
  });
  stage.addEventListener("pointermove", (event) => {
    if (event.pointerId === dragging) follow(event);
  });
  const stop = (event) => {
    if (event.pointerId === dragging) dragging = null;
  };
  stage.addEventListener("pointerup", stop);
  stage.addEventListener("pointercancel", stop);
  $("divider").addEventListener("keydown", (event) => {
    const step = { ArrowLeft: -0.02, ArrowRight: 0.02 }[event.key];
    if (step) {
      moveDivider(player.divider + step);
      event.preventDefault();
    }
  });
  $("left").addEventListener("change", () => { player.left = $("left").value; render(); });
  $("right").addEventListener("change", () => { player.right = $("right").value; render(); });
}

/* ---- sync ------------------------------------------------------------------------------------ */

function fragments(layer) {
  const level = layer.hls && layer.hls.levels && layer.hls.levels[layer.level];
  return level && level.details ? level.details.fragments : null;
}

/** Where ``follower`` should be when the leader is at its current time, or null while unknown. With
 *  hls.js each player has a timeline of its own (it starts where that player joined the live
 *  stream), so the position is carried over by segment: the renditions' segments start together and
 *  have the same media sequence numbers. Natively the page sees no segments: the follower is kept at
 *  the leader's time, which is right where the browser's timelines follow the streams' timestamps. */
function followerTime(lead, follower) {
  const t = lead.element.currentTime;
  if (!lead.hls || !follower.hls) return t;
  const mine = fragments(lead), theirs = fragments(follower);
  if (!mine || !theirs) return null;
  const fragment = mine.find((f) => f.start <= t && t < f.start + f.duration);
  const other = fragment && theirs.find((f) => f.sn === fragment.sn);
  return other ? other.start + (t - fragment.start) : null;
}

function sync() {
  const lead = leader();
  if (!lead) return;
  for (const layer of player.layers.values()) {
    const video = layer.element;
    if (layer === lead || !(video instanceof HTMLVideoElement)) continue;
    if (lead.element.paused && !video.paused) video.pause();
    if (!lead.element.paused && video.paused) video.play().catch(() => {});
    const target = followerTime(lead, layer);
    // Playing, a frame's drift is not worth a seek's stall; paused, the two must show one frame.
    const tolerance = lead.element.paused ? PAUSED_TOLERANCE_S : player.frameS;
    if (target !== null && video.readyState > 0 && Math.abs(video.currentTime - target) > tolerance) {
      video.currentTime = target;
      layer.corrections += 1;
    }
  }
}

/** Each follower's distance from where the leader says it should be, in seconds (null while unknown). */
player.drift = () => {
  const lead = leader(), drift = {};
  for (const layer of player.layers.values()) {
    if (layer === lead || !(layer.element instanceof HTMLVideoElement)) continue;
    const target = followerTime(lead, layer);
    drift[layer.id] = target === null ? null : layer.element.currentTime - target;
  }
  return drift;
};

function measureFrames(video) {
  if (!video.requestVideoFrameCallback) return;
  let last = null;
  const deltas = [];
  const step = (_, metadata) => {
    if (last !== null && metadata.mediaTime > last) {
      deltas.push(metadata.mediaTime - last);
      if (deltas.length > 12) deltas.shift();
      // The shortest step: a browser that drops frames (a busy machine) presents multiples of it.
      player.frameS = Math.min(0.1, Math.max(1 / 120, Math.min(...deltas)));
    }
    last = metadata.mediaTime;
    video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);
}

/* ---- statistics ------------------------------------------------------------------------------ */

function ago(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  if (seconds < 120) return `${Math.round(seconds)} s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function since(stats, iso) {
  const then = Date.parse(iso), now = Date.parse(stats.time);
  return isNaN(then) || isNaN(now) ? null : (now - then) / 1000;
}

const number = (value, digits = 1) => (value === null || value === undefined ? "-" : Number(value).toFixed(digits));
const percent = (share) => (share === null || share === undefined ? "-" : `${Math.round(100 * share)} %`);
const rate = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);

function showStats(stats) {
  player.stats = stats;
  const set = (name, text) => { document.querySelector(`[data-stat="${name}"]`).textContent = text; };
  set("model", stats.model
    ? [stats.model, stats.model_age_s !== null ? `arrived ${ago(stats.model_age_s)}` : ""].filter(Boolean).join(", ")
    : "none yet: bicubic");
  set("swaps", String(stats.swaps));
  set("block_share", stats.block_share === null ? "- (whole frames)" : percent(stats.block_share));
  set("late_frames", String(stats.late_frames));
  set("tcsr", stats.tcsr_refined === null ? "- (no sr-tcsr)"
    : `${stats.tcsr_refined} of ${stats.tcsr_frames}` + (stats.tcsr_frames ? ` (${percent(stats.tcsr_refined / stats.tcsr_frames)})` : ""));
  set("fps", `${number(stats.input_fps)} / ${number(stats.output_fps)}`);
  set("segment_age", stats.segment_age_s === null ? "-" : `${number(stats.segment_age_s)} s`);
  const request = stats.request;
  set("request", request
    ? `at ${number(request.t)} s of stream` + (request.psnr !== undefined ? `, Y-PSNR ${number(request.psnr, 2)} dB` : "")
      + `, ${ago(since(stats, request.received))}`
    : "none");
  const upload = stats.upload;
  set("upload", upload
    ? `${upload.arch || "model"} v${upload.version}: ${Math.round(upload.bytes / 1000)} kB in ${number(upload.seconds)} s`
      + (upload.gain_db !== undefined && upload.gain_db !== null ? `, +${number(upload.gain_db, 2)} dB held out` : "")
      + `, ${ago(since(stats, upload.received))}`
    : "none");
  set("renditions", Object.entries(stats.renditions || {})
    .map(([name, r]) => `${name}${r.resolution ? " " + r.resolution.join("x") : ""} ${rate(r.average_bps)}`)
    .join("; "));
}

async function pollStats() {
  try {
    const response = await fetch("stats.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    showStats(await response.json());
    $("stats-status").textContent = "";
  } catch (error) {
    $("stats-status").textContent = `(unavailable: ${error.message})`;
  }
  setTimeout(pollStats, STATS_EVERY_MS);
}

/* ---- start ----------------------------------------------------------------------------------- */

function loadScript(src) {
  return new Promise((resolve) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = script.onerror = resolve;
    document.head.appendChild(script);
  });
}

/** The master playlist, once sr-hls has written it (at the first segment). */
async function masterPlaylist() {
  for (;;) {
    try {
      const response = await fetch(MASTER, { cache: "no-store" });
      if (response.ok) return await response.text();
    } catch (error) { /* the server is starting */ }
    setStatus("waiting for the first segment");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function start() {
  await loadScript("hls.min.js");  // absent where the checkout does not vendor it
  const params = new URLSearchParams(location.search);
  const wipeButton = document.createElement("button");
  wipeButton.type = "button";
  wipeButton.dataset.view = "wipe";
  wipeButton.textContent = "wipe comparison";
  wipeButton.addEventListener("click", () => show("wipe"));
  $("views").appendChild(wipeButton);
  if (window.Hls && Hls.isSupported() && !params.has("native")) {
    player.engine = "hls.js";
  } else if (document.createElement("video").canPlayType("application/vnd.apple.mpegurl")) {
    player.engine = "native";
  } else {
    setStatus("this browser cannot play HLS");
    return;
  }
  const master = await masterPlaylist();
  setStatus(player.engine === "hls.js" ? `hls.js ${Hls.version}` : "native HLS");
  const sr = addVideoLayer("sr", "super-resolved", { hls: MASTER, pin: "sr.m3u8", native: "index-sr.m3u8" });
  if (/^lr\.m3u8$/m.test(master)) {
    addVideoLayer("lr", "low-res, scaled by the browser", { hls: "lr.m3u8", native: "lr.m3u8" });
  }
  const ids = [...player.layers.keys()];
  player.left = ids[ids.length > 1 ? 1 : 0];
  player.right = ids[0];
  player.view = player.layers.has(params.get("view")) || params.get("view") === "wipe" ? params.get("view")
    : ids.length > 1 ? "wipe" : ids[0];
  const video = sr.element;
  video.id = "video";
  video.addEventListener("timeupdate", () => { $("time").textContent = video.currentTime.toFixed(2); });
  video.addEventListener("loadedmetadata", () => {
    if (video.videoWidth) $("stage").style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
  });
  measureFrames(video);
  $("play").addEventListener("click", () => {
    if (video.paused) video.play().catch(() => {}); else video.pause();
  });
  video.addEventListener("play", () => { $("play").textContent = "pause"; });
  video.addEventListener("pause", () => { $("play").textContent = "play"; });
  $("mute").addEventListener("click", () => {
    video.muted = !video.muted;
    $("mute").textContent = video.muted ? "unmute" : "mute";
  });
  setUpWipe();
  render();
  setInterval(sync, SYNC_EVERY_MS);
  pollStats();
  player.addLayer = (id, label, element) => {
    const layer = addLayer(id, label, element);
    render();
    return layer;
  };
  window.dispatchEvent(new Event("srplayer-ready"));
}

start();
