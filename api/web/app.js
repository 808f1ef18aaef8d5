/* Shared by the pages: a fetch helper that turns RFC 9457 problems into readable errors, small rendering
   helpers, and the page header (who is signed in, sign out). No build step, no dependencies. */
"use strict";

const PRODUCT = "Ethical Clone Studio";

/** An API answer that was not 2xx: `detail` is the problem's sentence, `problem` the whole body. */
class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.detail) || `the server answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Parse a problem+json (or any JSON) body; null when there is none. */
function parseProblem(text) {
  try { return JSON.parse(text); } catch (_) { return text ? { detail: text } : null; }
}

/** fetch() against /api with the session cookie. `body` may be an object (sent as JSON) or FormData.
    Resolves to the parsed JSON (or null for 204); rejects with ApiError. A 401 sends the browser to /login. */
async function api(path, { method = "GET", body, redirectOn401 = true } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch("/api" + path, init);
  const text = await res.text();
  if (!res.ok) {
    if (res.status === 401 && redirectOn401) {
      location.assign("/login");
      return new Promise(() => {});  // the page is going away: nothing after this runs
    }
    throw new ApiError(res.status, parseProblem(text));
  }
  return text ? JSON.parse(text) : null;
}

/** el("div", {class: "x", onclick: fn}, "text", child, ...): a DOM element. Text is always text, never HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace the children of the element with id `id`. */
function fill(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

/** A problem as a message box: its detail, then each finding, problem or field error on its own line. */
function problemBox(err) {
  const p = err instanceof ApiError ? err.problem : { detail: String(err && err.message ? err.message : err) };
  const items = [];
  for (const f of p.findings || []) {
    items.push(el("li", { class: "finding" },
      el("strong", {}, f.rule || "rule"), f.words ? el("q", {}, f.words) : null, " ", f.message || "",
      f.fix ? el("div", { class: "fix" }, "Fix: ", f.fix) : null));
  }
  for (const q of p.problems || []) items.push(el("li", {}, typeof q === "string" ? q : JSON.stringify(q)));
  for (const e of p.errors || []) {
    items.push(el("li", {}, typeof e === "string" ? e : `${(e.loc || []).join(".")}: ${e.msg || ""}`));
  }
  // A recording that does not say its script: the words that did not match, each as text.
  if ((p.missing || []).length) items.push(el("li", { class: "missing" }, "Not heard: ", wordList(p.missing)));
  if ((p.extra || []).length) items.push(el("li", { class: "extra" }, "Heard but not in the script: ", wordList(p.extra)));
  return el("div", { class: "problem", role: "alert" },
    el("p", { class: "detail" }, p.detail || "the request was refused"),
    items.length ? el("ul", {}, items) : null);
}

function wordList(words) {
  return words.flatMap((w, i) => [i ? ", " : "", el("q", {}, w)]);
}

function okBox(text) {
  return el("div", { class: "ok", role: "status" }, text);
}

/** Show `err` as a problem box in the element with id `id`. */
function showProblem(id, err) {
  fill(id, problemBox(err));
}

/** A date-time from the API (naive UTC or ISO) in the viewer's local time. */
function when(value) {
  if (!value) return "—";
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : value + "Z";
  const d = new Date(iso);
  return isNaN(d) ? value : d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function num(value, digits = 1) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

/** A table: `columns` is [[heading, row => cell], ...]; `empty` what to say when there are no rows. */
function table(rows, columns, empty = "Nothing yet.", rowAttrs = () => ({})) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([h]) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", rowAttrs(r), columns.map(([, f]) => el("td", {}, f(r)))))));
}

/** The "AI avatar" badge: every clone is shown for what it is, as on every frame it airs. */
function aiBadge() {
  return el("span", { class: "ai-badge", title: "A synthetic clone, labelled on every frame it airs" }, "AI avatar");
}

/** Values of a comma-separated input as a list. */
function csv(value) {
  return String(value || "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** Sign in check and header for a page: GET /api/me (401 goes to /login), then "who" and sign out.
    `roles` are the roles the page is for; others are sent to their own page. Resolves to the account. */
async function startPage(roles) {
  const me = await api("/me");
  if (roles && !roles.includes(me.role)) {
    location.assign(homeOf(me.role));
    return new Promise(() => {});
  }
  fill("who", el("span", { class: "name" }, me.name), " ", el("span", { class: "role" }, me.role), " ",
    el("span", { class: "email" }, me.email));
  document.getElementById("signout").addEventListener("click", async (ev) => {
    ev.preventDefault();
    try { await api("/auth/logout", { method: "POST", redirectOn401: false }); } catch (_) { /* signed out anyway */ }
    location.assign("/login");
  });
  return me;
}

function homeOf(role) {
  return { creator: "/creator", agency: "/agency", ops: "/ops", reviewer: "/review", admin: "/ops" }[role] || "/login";
}

/** Wire a <form>: on submit, call `handler(form)`; its errors show in the element with id `out`. */
function onSubmit(form, out, handler) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      await handler(form);
    } catch (err) {
      if (out) showProblem(out, err);
      else console.error(err);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// --- recorded voice-overs (creator and agency pages) -------------------------------------------------------------
const VOICEOVER_MAX_S = 120;

/** The script's recorded voice-over, or null when it has none (the API answers 404). */
async function voiceoverOf(scriptId) {
  try {
    return await api(`/scripts/${encodeURIComponent(scriptId)}/voiceover`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

/** Who speaks a voice-over, in words. `ownCreatorId`: the signed-in creator's; `names`: creator id -> name. */
function speakerText(vo, ownCreatorId, names = {}) {
  if (vo.speaker === "actor") return `voice actor ${vo.actor_name}`;
  if (ownCreatorId && vo.creator_id === ownCreatorId) return "your own voice";
  return `the creator's own voice (${names[vo.creator_id] || vo.creator_id})`;
}

/** A voice-over's state: who speaks, its length, whether it waits for approval, a player and its parts. */
function voiceoverView(vo, ownCreatorId, names) {
  if (!vo) return el("p", { class: "empty vo-none" }, "No recorded voice-over: it speaks with a synthetic voice.");
  const approval = vo.speaker === "actor" ? el("span", { class: "status vo-ok" }, "no approval needed")
    : vo.needs_approval ? el("span", { class: "status vo-wait" }, "needs the creator's approval")
      : el("span", { class: "status vo-ok" }, "approved");
  return el("div", { class: "vo-view", dataset: { voiceoverId: vo.id } },
    el("div", { class: "meta" }, "Recorded in ", el("strong", { class: "vo-speaker" }, speakerText(vo, ownCreatorId, names)),
      `, ${num(vo.duration_s)} s, ${Math.round(100 * vo.matched)}% of the words heard, `,
      `${vo.parts.length} part${vo.parts.length === 1 ? "" : "s"} `, approval),
    el("audio", { controls: true, preload: "none", class: "vo-audio",
      src: `/api/scripts/${encodeURIComponent(vo.script_id)}/voiceover/audio?v=${encodeURIComponent(vo.id)}` }),
    el("ol", { class: "vo-parts" }, vo.parts.map(([start, end, text]) =>
      el("li", {}, el("span", { class: "time" }, `${num(start)}–${num(end)} s`), " ", text))));
}

/** Send a recording as the script's voice-over; `fields` are the form fields (speaker, creator_id, actor_name).
    While the server checks and aligns it, the element with id `out` shows a bar that follows the server's progress
    (polled under a random progress id); resolves to the voice-over or rejects with the refusal (ApiError: its
    `missing`/`extra` words show in problemBox). */
async function sendVoiceover(scriptId, file, fields, out) {
  const name = file.name || "the recording";
  const progressId = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  const data = new FormData();
  data.append("file", file, file.name || "recording.webm");
  data.append("progress_id", progressId);
  for (const [key, value] of Object.entries(fields || {})) if (value) data.append(key, value);
  const note = el("p", { class: "muted vo-progress" }, `Sending ${name}…`);
  const bar = el("progress", { class: "vo-bar", max: 1 });  // no value yet: indeterminate until the server reports
  fill(out, note, bar);
  const path = `/scripts/${encodeURIComponent(scriptId)}/voiceover`;
  let polling = false;
  const poll = async () => {
    if (polling) return;
    polling = true;
    try {
      const p = await api(`${path}/progress/${progressId}`);
      if (p && p.state === "running" && bar.isConnected) {
        bar.value = p.fraction;
        const doing = (VOICEOVER_STAGES[p.stage] || VOICEOVER_STAGES.align)(name);
        note.textContent = `${doing}: ${Math.round(100 * p.fraction)}%`;
      }
    } catch (err) {
      // 404 until the server has the upload; any other trouble only stops the bar from moving
    } finally {
      polling = false;
    }
  };
  poll();
  const timer = setInterval(poll, 400);
  try {
    return await api(path, { method: "POST", body: data });
  } finally {
    clearInterval(timer);
  }
}

const VOICEOVER_STAGES = {
  decode: (name) => `Decoding ${name}`,
  align: (name) => `Checking that ${name} says the script`,
  store: (name) => `Storing ${name}`,
};

function voiceoverAccepted(vo, ownCreatorId, names) {
  return okBox(`Voice-over accepted: ${speakerText(vo, ownCreatorId, names)}, ${num(vo.duration_s)} s in ` +
    `${vo.parts.length} part${vo.parts.length === 1 ? "" : "s"}` +
    (vo.needs_approval ? "; it airs once the creator approves it." : "."));
}
