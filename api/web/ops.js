/* The ops page: queues, workers by host, channels (buffer ahead of air, air lag, destinations, renders no
   worker serves), alerts and a live preview, refreshed every 2 s in place (setInterval + fetch, no reload). */
"use strict";

const REFRESH_MS = 2000;
// Set once when the page loads: a reload would change it (the browser tests read it).
window.opsPageLoadId = `${Date.now()}-${Math.random()}`;
window.opsRefreshes = 0;

let previewChannel = "";
let hlsUrl = null;

/** None (a CPU worker), or the GPU's name with its memory and, from the last heartbeat, how busy it is. */
function deviceText(w) {
  if (w.device === "cpu") return el("span", { class: "muted" }, "none (CPU)");
  const gib = (b) => (b / 2 ** 30).toFixed(1);
  const parts = [w.device];
  if (w.device_memory_bytes) {
    parts.push(w.device_memory_used_bytes !== undefined ?
      `${gib(w.device_memory_used_bytes)} of ${gib(w.device_memory_bytes)} GiB` : `${gib(w.device_memory_bytes)} GiB`);
  }
  if (w.device_load_percent !== undefined) parts.push(`${Math.round(w.device_load_percent)}% busy`);
  return parts.join(" · ");
}

function upDown(up) {
  if (up === null || up === undefined) return el("span", { class: "status idle" }, "unknown");
  return up ? el("span", { class: "status up" }, "up") : el("span", { class: "status down" }, "down");
}

function renderAlerts(alerts) {
  fill("alerts", alerts.length ? el("ul", { class: "alerts" }, alerts.map((a) => el("li", { class: a.severity },
    el("span", { class: `status ${a.severity}` }, a.severity), " ", el("strong", {}, a.alert), " ", a.message)))
    : el("p", { class: "empty" }, "No alert: everything is within its limits."));
}

/** Which host leads the scheduler (one of the `studio scheduler` processes; the others stand by). */
function schedulerText(s) {
  if (!s || !s.owner) return el("span", { class: "status idle" }, "never started");
  const since = new Date(s.since).toLocaleString();
  return s.leading ? el("span", {}, el("span", { class: "status up" }, "leading"), ` on ${s.host} since ${since}`)
    : el("span", {}, el("span", { class: "status down" }, "no leader"),
      ` (the lease of ${s.host} ran out at ${new Date(s.expires_at).toLocaleString()})`);
}

function renderQueues(overview) {
  fill("broker", el("p", {}, "Broker (Redis) ", upDown(overview.broker_up)),
    el("p", { id: "scheduler-leader" }, "Scheduler ", schedulerText(overview.scheduler)));
  const rows = Object.entries(overview.queues).map(([name, q]) => ({ name, ...q }));
  fill("queues", table(rows, [
    ["Queue", (q) => q.name], ["Waiting", (q) => num(q.depth, 0)],
    ["Oldest queued", (q) => (q.oldest_seconds === undefined ? "—" : `${num(q.oldest_seconds, 0)} s`)],
    ["Workers", (q) => (q.unserved_segments ?
      el("span", { class: "status down" }, `no worker serves ${q.name}`) : num(q.workers, 0))],
  ], overview.broker_up ? "No queue reported." : "No queue figures: the broker does not answer.",
  (q) => ({ class: "queue-row", dataset: { queue: q.name } })));
}

function renderWorkers(workers) {
  const rows = Object.entries(workers).map(([id, w]) => ({ id, ...w }))
    .sort((a, b) => (a.host || "").localeCompare(b.host || "") || a.id.localeCompare(b.id));
  fill("workers", table(rows, [
    ["Host", (w) => w.host || "—"], ["Worker", (w) => el("code", {}, w.id)], ["Queues", (w) => w.queues],
    ["Renderers", (w) => w.renderers || "—"], ["GPU", (w) => deviceText(w)],
    ["State", (w) => upDown(w.up)], ["Render fps", (w) => num(w.render_fps)],
    ["× real time", (w) => num(w.realtime_factor, 2)], ["Renders", (w) => num(w.renders, 0)],
    ["Stalled", (w) => (w.stalled_renders > 0 ?
      el("span", { class: "status down" }, `${num(w.stalled_renders, 0)} stuck`) : num(w.stalled_renders, 0))],
    ["Last seen", (w) => `${num(w.last_seen_seconds, 0)} s ago`],
  ], "No worker has reported.", (w) => ({ class: "worker-row", dataset: { worker: w.id } })));
}

function renderStreamers(streamers) {
  fill("streamers", table(streamers || [], [
    ["Host", (s) => s.host || "—"], ["Streamer", (s) => el("code", {}, s.owner)],
    ["Channels by lease", (s) => num(s.channels.length, 0)],
  ], "No streamer holds a channel.", (s) => ({ class: "streamer-row", dataset: { owner: s.owner } })));
}

function renderChannels(channels) {
  fill("channels", table(channels, [
    ["Channel", (c) => el("span", {}, el("strong", {}, c.name), el("br"), el("code", {}, c.id))],
    ["On air", (c) => (c.airing ? el("span", { class: "status live" }, "airing") : el("span", { class: "status idle" }, "off air"))],
    ["Aired by", (c) => (c.aired_by ? el("span", {}, c.aired_by, el("br"),
      el("span", { class: "muted" }, `since ${new Date(c.aired_since).toLocaleTimeString()} · lease ${c.lease_token}`)) :
      el("span", { class: "muted" }, "no streamer"))],
    ["Buffer ahead of air", (c) => `${num(c.buffer_seconds, 0)} s` +
      (c.buffer_target_seconds ? ` of ${num(c.buffer_target_seconds, 0)} s` : "")],
    ["Rendered or queued", (c) => `${num(c.ahead_seconds, 0)} s`],
    ["Renders waiting", (c) => (c.unserved.length ? el("ul", { class: "dests" }, c.unserved.map((u) => el("li", {},
      el("span", { class: "status down" }, u.status), ` ${num(u.segments, 0)} segment(s)`))) :
      el("span", { class: "muted" }, "—"))],
    ["Air lag", (c) => (c.air_lag_seconds === undefined ? "—" : `${num(c.air_lag_seconds, 0)} s`)],
    ["Status age", (c) => (c.status_age_seconds === undefined ? "—" : `${num(c.status_age_seconds, 0)} s`)],
    ["Destinations", (c) => (c.destinations.length ? el("ul", { class: "dests" }, c.destinations.map((d) => el("li", {},
      upDown(d.up), " ", el("span", { class: "mono" }, d.url || d.destination), ` ${d.platform || ""}`,
      el("span", { class: "muted" }, ` · ${num(d.reconnects, 0)} reconnects · ${num(d.attempts, 0)} attempts` +
        (d.bitrate_kbps !== undefined ? ` · ${num(d.bitrate_kbps)} kbit/s` : "") + (d.state ? ` · ${d.state}` : "")),
      d.last_error ? el("div", { class: "dest-error" }, `last error: ${d.last_error}`) : null))) :
      el("span", { class: "muted" }, "none"))],
    ["", (c) => el("button", { type: "button", class: "secondary", onclick: () => choosePreview(c.id) }, "Preview")],
  ], "No channel.", (c) => ({ class: "channel-row", dataset: { channelId: c.id } })));
  const select = document.getElementById("preview-channel");
  const ids = channels.map((c) => c.id).join(",");
  if (select.dataset.ids !== ids) {
    select.dataset.ids = ids;
    select.replaceChildren(...channels.map((c) => el("option", { value: c.id }, c.name)));
    if (!previewChannel && channels.length) {
      const airing = channels.find((c) => c.airing) || channels[0];
      choosePreview(airing.id);
    }
    select.value = previewChannel;
  }
}

async function choosePreview(channelId) {
  previewChannel = channelId;
  document.getElementById("preview-channel").value = channelId;
  hlsUrl = null;
  refreshPreview();
  try {
    const status = await api(`/channels/${channelId}/status`);
    hlsUrl = status.hls_url || null;  // only where the status names one
  } catch (_) {
    hlsUrl = null;
  }
  const video = document.getElementById("preview-video");
  const box = document.getElementById("preview-video-box");
  if (hlsUrl && video.canPlayType("application/vnd.apple.mpegurl")) {
    if (video.src !== hlsUrl) video.src = hlsUrl;
    box.hidden = false;
  } else {
    video.removeAttribute("src");
    box.hidden = true;
  }
}

function refreshPreview() {
  if (!previewChannel) return;
  const img = document.getElementById("preview-img");
  img.src = `/api/channels/${previewChannel}/preview.jpg?t=${Date.now()}`;
}

async function refresh() {
  try {
    const overview = await api("/ops/overview");
    renderAlerts(overview.alerts);
    renderQueues(overview);
    renderWorkers(overview.workers);
    renderStreamers(overview.streamers);
    renderChannels(overview.channels);
    fill("ops-out");
    fill("refreshed", `Updated ${new Date().toLocaleTimeString()}.`);
  } catch (err) {
    showProblem("ops-out", err);
  }
  refreshPreview();
  window.opsRefreshes += 1;
}

/** Admins review consents too (reviewers have a page of their own): how many wait, and the way to them. */
async function showReviewSummary() {
  const rows = await api("/consents/pending?limit=200");
  document.getElementById("review-section").hidden = false;
  fill("review-summary", el("p", {}, rows.length ? `${rows.length} consent${rows.length === 1 ? "" : "s"} ` +
    "passed the automated check and air nothing until reviewed. " : "No consent waits for review. ",
  el("a", { href: "/review", class: "button" }, "Open consent review")));
}

(async () => {
  const me = await startPage(["ops", "admin"]);
  if (me.role === "admin") showReviewSummary().catch((err) => showProblem("ops-out", err));
  const img = document.getElementById("preview-img");
  img.addEventListener("load", () => fill("preview-out"));
  img.addEventListener("error", async () => {
    // The still answers 404 with a problem when the channel is not airing: say why.
    try {
      await api(`/channels/${previewChannel}/preview.jpg`);
    } catch (err) {
      if (err instanceof ApiError) showProblem("preview-out", err);
    }
  });
  document.getElementById("preview-channel").addEventListener("change", (ev) => choosePreview(ev.target.value));
  await refresh();
  setInterval(refresh, REFRESH_MS);
  document.body.dataset.ready = "1";
})();
