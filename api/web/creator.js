/* The creator page: my AI avatars, footage upload, consents (grant, approvals, revoke, certificate) and where my
   clone aired. */
"use strict";

let me = null;
let avatarsById = {};

async function loadAvatars() {
  const avatars = await api("/avatars?limit=200");
  avatarsById = Object.fromEntries(avatars.map((a) => [a.id, a]));
  fill("avatars", avatars.length ? avatars.map(avatarCard) :
    el("p", { class: "empty" }, "No AI avatar yet: upload footage below."));
  const select = document.querySelector("#grant-form select[name=avatar_id]");
  select.replaceChildren(...avatars.filter((a) => a.status === "ready")
    .map((a) => el("option", { value: a.id }, a.name)));
}

function avatarCard(a) {
  return el("div", { class: "card avatar", dataset: { avatarId: a.id } },
    el("h3", {}, a.name, aiBadge()),
    el("div", { class: "meta" }, `${a.width}×${a.height}, ${num(a.fps, 0)} fps, ${num(a.duration_s, 0)} s of footage`),
    el("div", { class: "meta" }, "Made ", when(a.created_at), " · ", el("span", { class: `status ${a.status}` }, a.status)),
    a.status === "ready" ? el("div", { class: "actions" },
      el("button", { type: "button", class: "secondary", onclick: () => issuePhrase(a) }, "Get a code phrase")) : null,
    a.status === "deleted" ? null : voiceForm(a));
}

// --- each avatar's one voice: the studio's speech, an espeak-ng voice, or the scripts' recorded voice-overs ------
const VOICE_KINDS = [["tts", "Synthetic speech (the studio's voice)"], ["recorded", "Recorded voice-overs"],
  ["espeak", "An espeak-ng voice"]];

function voiceForm(a) {
  const current = a.voice || "tts";
  const kind = current.startsWith("espeak:") ? "espeak" : current;
  const select = el("select", { name: "kind" }, VOICE_KINDS.map(([value, label]) => el("option", { value }, label)));
  select.value = kind;
  const espeak = el("label", { class: "espeak-voice", hidden: kind !== "espeak" }, "espeak-ng voice ",
    el("input", { type: "text", name: "espeak", value: kind === "espeak" ? current.slice(7) : "",
      placeholder: "en-gb+f3", maxlength: 100 }));
  const note = el("p", { class: "muted note", hidden: kind !== "recorded" },
    "A script without a recorded voice-over of its current text does not air with this avatar.");
  select.addEventListener("change", () => {
    espeak.hidden = select.value !== "espeak";
    note.hidden = select.value !== "recorded";
  });
  const out = `voice-out-${a.id}`;
  const form = el("form", { class: "voice-form" },
    el("div", { class: "row" }, el("label", {}, "Voice ", select), espeak,
      el("button", { type: "submit", class: "secondary" }, "Save voice")), note, el("div", { id: out }));
  onSubmit(form, out, async () => {
    const voice = select.value === "espeak" ? `espeak:${form.espeak.value.trim()}` : select.value;
    const saved = await api(`/avatars/${a.id}/voice`, { method: "PUT", body: { voice } });
    avatarsById[a.id] = saved;
    fill(out, okBox(`Voice saved: ${saved.voice}.`));
  });
  return form;
}

async function issuePhrase(avatar) {
  try {
    const p = await api(`/avatars/${avatar.id}/phrase`, { method: "POST" });
    fill("phrase-out", el("div", { class: "ok" },
      el("p", {}, `Code phrase for ${avatar.name} (read it aloud in your consent video, before `, when(p.expires_at), "):"),
      el("p", { class: "mono" }, el("strong", {}, p.text)), el("p", { class: "muted" }, "Phrase id: ", el("code", {}, p.id))));
    const form = document.getElementById("grant-form");
    form.avatar_id.value = avatar.id;
    form.phrase_id.value = p.id;
  } catch (err) {
    showProblem("phrase-out", err);
  }
}

// --- footage upload: XMLHttpRequest for its upload progress, then the ingest job ---------------------------
function uploadFootage(form) {
  const file = form.file.files[0];
  const bar = document.getElementById("upload-progress");
  bar.value = 0;
  bar.max = 100;
  fill("upload-out", el("p", { class: "muted" }, `Uploading ${file.name}…`));
  const data = new FormData();
  data.append("file", file);
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/creators/${me.creator_id}/avatars?name=${encodeURIComponent(form.name.value)}`);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) bar.value = Math.round((100 * ev.loaded) / ev.total);
    };
    xhr.upload.onload = () => { bar.value = bar.max; };
    xhr.onload = () => {
      bar.value = bar.max;
      const body = parseProblem(xhr.responseText) || {};
      if (xhr.status === 401) location.assign("/login");
      if (xhr.status === 202) {
        fill("upload-out", okBox(`${file.name} passed the first checks; analysing the face (job ${body.job_id})…`));
        followJob(body.job_id);
      } else {
        showProblem("upload-out", new ApiError(xhr.status, body));
      }
      resolve();
    };
    xhr.onerror = () => {
      showProblem("upload-out", new Error("the upload did not reach the server (network error)"));
      resolve();
    };
    xhr.send(data);
  });
}

/** Poll a job on the ingest queue (footage ingest or consent check) once a second, showing its stage in the
    element with id `out` under `title`, until it ends; resolves to the finished job (SUCCESS or FAILURE). */
async function waitForJob(jobId, out, title) {
  for (;;) {
    const job = await api(`/jobs/${jobId}`);
    if (job.state === "SUCCESS" || job.state === "FAILURE") return job;
    const p = job.progress || {};
    const stage = p.stage ? `${p.stage}` : job.state === "PENDING" ? "waiting for a worker" : job.state.toLowerCase();
    const fraction = typeof p.fraction === "number" ? p.fraction : null;
    fill(out, el("p", { class: "muted" }, `${title}: ${stage}`),
      fraction === null ? el("progress", {}) : el("progress", { value: Math.round(fraction * 100), max: 100 }));
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function followJob(jobId) {
  let job;
  try {
    job = await waitForJob(jobId, "upload-out", "Ingest");
  } catch (err) {
    showProblem("upload-out", err);
    return;
  }
  if (job.state === "FAILURE") {
    fill("upload-out", problemBox(new ApiError(422, { detail: job.error || "the ingest failed" })));
    return;
  }
  fill("upload-out", okBox("Your AI avatar is ready."));
  await loadAvatars();
}

// --- consents ------------------------------------------------------------------------------------------------
async function loadConsents() {
  const consents = await api("/consents?limit=200");
  fill("consents", consents.length ? consents.map(consentCard) :
    el("p", { class: "empty" }, "No consent yet: your AI avatar airs nowhere."));
  const select = document.querySelector("#approve-form select[name=consent_id]");
  select.replaceChildren(...consents.filter((c) => c.status === "granted" && c.require_script_approval)
    .map((c) => el("option", { value: c.id }, `${avatarName(c.avatar_id)} · ${c.id}`)));
  for (const c of consents) loadScripts(c);
}

function avatarName(id) {
  return avatarsById[id] ? avatarsById[id].name : id || "(no avatar)";
}

function scopeText(s) {
  const parts = [];
  if (s.brands && s.brands.length) parts.push(`brands ${s.brands.join(", ")}`);
  if (s.categories && s.categories.length) parts.push(`categories ${s.categories.join(", ")}`);
  if (s.excluded_categories && s.excluded_categories.length) parts.push(`never ${s.excluded_categories.join(", ")}`);
  if (s.platforms) parts.push(`on ${s.platforms.join(", ")}`);
  if (s.territories) parts.push(`in ${s.territories.join(", ")}`);
  if (s.languages) parts.push(`speaking ${s.languages.join(", ")}`);
  if (s.max_hours_per_day) parts.push(`at most ${s.max_hours_per_day} h a day`);
  return parts.join("; ");
}

/** Where the consent stands with the review (pending, approved, rejected and why); null when it had none. */
function reviewText(c) {
  if (c.status === "pending_review") {
    return el("div", { class: "meta review" }, "Waiting for a reviewer's approval: your AI avatar airs nothing under ",
      "this consent until then.");
  }
  if (c.status === "rejected") {
    return el("div", { class: "meta review" }, "Rejected by review ", when(c.reviewed_at), ": ",
      el("strong", {}, c.review_reason || "no reason given"), ". Nothing airs under it; you may grant a new consent.");
  }
  return c.reviewed_at ? el("div", { class: "meta review" }, "Approved by review ", when(c.reviewed_at)) : null;
}

const STATUS_TEXT = { pending_review: "pending review" };

function consentCard(c) {
  const ended = c.status === "revoked" || c.status === "expired";
  return el("div", { class: "card consent", dataset: { consentId: c.id } },
    el("h3", {}, avatarName(c.avatar_id), aiBadge(),
      el("span", { class: `status ${c.status}` }, STATUS_TEXT[c.status] || c.status)),
    reviewText(c),
    el("div", { class: "meta" }, `Signed by ${c.signed_name}: `, [c.face && "face",
      c.voice && (c.voice_explicit ? "voice (recordings of your own voice may air)" : "voice")].filter(Boolean).join(" and ")),
    el("div", { class: "meta" }, "From ", when(c.starts_at), " to ", when(c.ends_at)),
    el("div", { class: "meta" }, c.agency_id ? `Granted to agency ${c.agency_id}` : "No agency (the platform's own shows)"),
    el("div", { class: "meta" }, "Scope: ", scopeText(c.scope || {})),
    c.revoked_at ? el("div", { class: "meta" }, "Revoked ", when(c.revoked_at)) : null,
    el("div", { class: "meta approvals", id: `approvals-${c.id}` }),
    el("div", { class: "actions" },
      ended ? el("a", { class: "button certificate", href: `/api/consents/${c.id}/certificate`,
        download: `deletion-certificate-${c.id}.json` }, "Download the deletion certificate") :
        el("button", { type: "button", class: "danger revoke", onclick: () => revoke(c) }, "Revoke consent")));
}

/** The scripts this consent's shows would have the clone say: each with its approval (where the consent needs
    one) and, while the consent is live, its recorded voice-over. */
async function loadScripts(c) {
  const live = c.status === "granted" || c.status === "pending_review";
  if (!c.require_script_approval && !live) return;
  try {
    // What shows under this consent would have the clone say: read it, then approve that exact text.
    const rows = await api(`/consents/${c.id}/scripts?limit=200`);
    if (!rows.length && !c.require_script_approval) return;
    fill(`approvals-${c.id}`, `Scripts for this consent: ${rows.length}`,
      rows.length ? el("ul", { class: "scripts" }, rows.map((r) => el("li", {},
        el("strong", {}, `${r.brand} ${r.product}: `), `“${r.text}” `,
        !c.require_script_approval ? null : r.approved ? el("span", { class: "status granted" }, "approved") :
          c.status === "granted" ? el("button", { type: "button", class: "approve", onclick: () => approveScript(c, r) },
            "Approve") : el("span", { class: "status" }, "not approved"),
        live ? voiceoverArea(c, r) : null))) : null);
  } catch (err) {
    fill(`approvals-${c.id}`, problemBox(err));
  }
}

async function approveScript(c, r) {
  try {
    await api(`/consents/${c.id}/approvals`, { method: "POST", body: { script_id: r.script_id, signed_name: c.signed_name } });
    fill("approve-out", okBox(`Script for ${r.product} approved.`));
    await loadConsents();
  } catch (err) {
    fill("approve-out", problemBox(err));
  }
}

async function revoke(c) {
  if (!confirm(`Revoke the consent for ${avatarName(c.avatar_id)}? It goes off air at once and its files are deleted.`)) return;
  try {
    await api(`/consents/${c.id}/revoke`, { method: "POST" });
    fill("consents-out", okBox(`Consent revoked: ${avatarName(c.avatar_id)} is off air and its files are deleted.`));
  } catch (err) {
    showProblem("consents-out", err);
  }
  await loadAvatars();
  await loadConsents();
}

// --- grant -----------------------------------------------------------------------------------------------------
function isoOf(local) {
  return new Date(local).toISOString();
}

// --- consent video: recorded here (camera and microphone) or uploaded ------------------------------------------
let recorded = null;  // a File from the camera, used instead of the file input when present
let recorder = null;

async function startRecording() {
  const preview = document.getElementById("record-preview");
  const state = document.getElementById("record-state");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (err) {
    state.textContent = `No camera or microphone (${err.name}): upload a recording instead.`;
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    recorded = new File(chunks, "consent.webm", { type: recorder.mimeType || "video/webm" });
    preview.srcObject = null;
    preview.src = URL.createObjectURL(recorded);
    preview.controls = true;
    state.textContent = `Recorded ${(recorded.size / 1e6).toFixed(1)} MB: it is sent with the grant.`;
    document.getElementById("record-start").disabled = false;
    document.getElementById("record-stop").disabled = true;
  };
  preview.hidden = false;
  preview.srcObject = stream;
  preview.play();
  recorder.start();
  state.textContent = "Recording: read the code phrase aloud, then stop.";
  document.getElementById("record-start").disabled = true;
  document.getElementById("record-stop").disabled = false;
}

async function grant(form) {
  const statement = {
    avatar_id: form.avatar_id.value, phrase_id: form.phrase_id.value.trim(), signed_name: form.signed_name.value.trim(),
    statement: form.statement.value.trim(), face: form.face.checked, voice: form.voice.checked,
    starts_at: isoOf(form.starts_at.value), ends_at: isoOf(form.ends_at.value),
    require_script_approval: form.require_script_approval.checked,
    scope: {
      brands: csv(form.brands.value), categories: csv(form.categories.value),
      excluded_categories: csv(form.excluded_categories.value), platforms: csv(form.platforms.value),
      territories: csv(form.territories.value), languages: csv(form.languages.value),
      max_hours_per_day: Number(form.max_hours_per_day.value),
    },
  };
  if (form.agency_id.value.trim()) statement.agency_id = form.agency_id.value.trim();
  const data = new FormData();
  data.append("grant", JSON.stringify(statement));
  const video = recorded || form.video.files[0];
  if (!video) throw new Error("Record the consent video with your camera, or choose a recording to upload.");
  data.append("video", video, video.name || "consent.webm");
  fill("grant-out", el("p", { class: "muted" }, "Sending the consent video…"));
  const queued = await api("/consents", { method: "POST", body: data });
  const job = await waitForJob(queued.job_id, "grant-out", "Checking the consent video");
  const result = job.result || {};
  if (job.state === "FAILURE" || result.status === "refused") {
    fill("grant-out", problemBox(new ApiError(422, { detail: result.status === "refused" ? "consent refused" :
      job.error || "the consent check failed", problems: result.problems || [] })));
    return;
  }
  fill("grant-out", okBox(result.status === "pending_review" ?
    `Your consent video passed the check for ${avatarName(statement.avatar_id)}. A reviewer approves it before ` +
    "anything airs: its state shows under My consents." :
    `Consent granted for ${avatarName(statement.avatar_id)} until ${when(isoOf(form.ends_at.value))}.`));
  await loadConsents();
}

async function approve(form) {
  const row = await api(`/consents/${form.consent_id.value}/approvals`, { method: "POST",
    body: { script_id: form.script_id.value.trim(), signed_name: form.signed_name.value.trim() } });
  fill("approve-out", okBox(`Script ${row.script_id} approved.`));
  await loadConsents();
}

// --- aired history -----------------------------------------------------------------------------------------------
async function loadAired() {
  const rows = await api(`/creators/${me.creator_id}/aired?limit=100`);
  fill("aired", table(rows, [
    ["Aired", (r) => when(r.aired_at)],
    ["Channel", (r) => r.channel_name],
    ["Seq", (r) => r.seq],
    ["Seconds", (r) => num(r.duration_s)],
    ["What it said", (r) => r.text],
    ["ProduceID", (r) => el("code", {}, r.produce_id)],
  ], "Your AI avatar has not aired yet.", () => ({ class: "aired-row" })));
}

function defaultTerm() {
  const form = document.getElementById("grant-form");
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  const now = new Date();
  form.starts_at.value = local(now);
  form.ends_at.value = local(new Date(now.getTime() + 90 * 86400000));
  form.signed_name.value = me.name;
  document.querySelector("#approve-form input[name=signed_name]").value = me.name;
}

(async () => {
  me = await startPage(["creator"]);
  defaultTerm();
  onSubmit(document.getElementById("upload-form"), "upload-out", uploadFootage);
  onSubmit(document.getElementById("grant-form"), "grant-out", grant);
  document.getElementById("record-start").addEventListener("click", startRecording);
  document.getElementById("record-stop").addEventListener("click", () => recorder && recorder.stop());
  onSubmit(document.getElementById("approve-form"), "approve-out", approve);
  await loadAvatars();
  await Promise.all([loadConsents(), loadAired().catch((err) => showProblem("aired", err))]);
  document.body.dataset.ready = "1";
})();
