/* The agency page: the week's shows, AI avatars granted to the agency, channels with masked destinations,
   products, scripts (lint findings inline; their recorded voice-overs; text edits), new shows and what aired. */
"use strict";

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
let state = { channels: [], products: [], scripts: [], avatars: [], consents: [], shows: [], creators: {} };

function option(value, label) {
  return el("option", { value }, label);
}

function setOptions(selector, items) {
  const select = document.querySelector(selector);
  const keep = select.value;
  select.replaceChildren(...items);
  if ([...select.options].some((o) => o.value === keep)) select.value = keep;
}

// --- the week calendar ---------------------------------------------------------------------------------------
/** Where a show airs on `day` (a Date at local midnight): a list of "HH:MM–HH:MM" or ["all day"]; [] if not.
    The list of shows carries no start or end, so a scheduled show without windows fills every day. */
function slotsOn(show, day) {
  if (show.status !== "scheduled") return [];
  const inRange = (value, cmp) => !value || cmp(new Date(/[zZ]$/.test(value) ? value : value + "Z"));
  const dayEnd = new Date(day.getTime() + 86400000);
  if (!inRange(show.starts_at, (s) => s < dayEnd) || !inRange(show.ends_at, (e) => e > day)) return [];
  const windows = (show.schedule && show.schedule.windows) || [];
  if (!windows.length) return ["all day (24/7)"];
  const tz = show.schedule.timezone || "UTC";
  return windows.filter((w) => w.days.map((d) => d.slice(0, 3).toLowerCase()).includes(DAYS[day.getDay()]))
    .map((w) => `${w.start}–${w.end} ${tz}`);
}

function renderCalendar() {
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const channelName = Object.fromEntries(state.channels.map((c) => [c.id, c.name]));
  const days = [...Array(7).keys()].map((i) => new Date(today.getTime() + i * 86400000));
  fill("calendar", el("div", { class: "week" }, days.map((day, i) => el("div", { class: i ? "day" : "day today" },
    el("h4", {}, day.toLocaleDateString([], { weekday: "short", month: "short", day: "numeric" })),
    state.shows.flatMap((show) => slotsOn(show, day).map((slot) => el("div", { class: "slot", dataset: { showId: show.id } },
      el("strong", {}, show.name), el("span", { class: "time" }, slot),
      el("span", { class: "time" }, channelName[show.channel_id] || show.channel_id,
        show.awaiting_approval && show.awaiting_approval.length ? " · awaiting the creator's approval" : ""))))))),
  state.shows.length ? null : el("p", { class: "empty" }, "No show yet."));
}

// --- loaders ---------------------------------------------------------------------------------------------------
async function loadChannels() {
  state.channels = await api("/channels?limit=200");
  fill("channels", table(state.channels, [
    ["Name", (c) => c.name],
    ["Territories", (c) => (c.territories || []).join(", ")],
    ["Policy profiles", (c) => (c.policy_profiles || []).join(", ")],
    ["Destinations", (c) => c.destinations.length ? el("ul", { class: "dests" },
      c.destinations.map((d) => el("li", { class: "mono" }, d))) : el("span", { class: "muted" }, "none")],
    ["Id", (c) => el("code", {}, c.id)],
  ], "No channel yet.", (c) => ({ class: "channel-row", dataset: { channelId: c.id } })));
  const options = state.channels.map((c) => option(c.id, c.name));
  setOptions("#show-form select[name=channel_id]", options);
  setOptions("#aired-form select[name=channel_id]", state.channels.map((c) => option(c.id, c.name)));
}

async function loadProducts() {
  state.products = await api("/products?limit=200");
  fill("products", table(state.products, [
    ["Name", (p) => p.name], ["Brand", (p) => p.brand], ["Category", (p) => p.category],
  ], "No product yet."));
  setOptions("#script-form select[name=product_id]", state.products.map((p) => option(p.id, `${p.name} (${p.brand})`)));
}

async function loadScripts() {
  state.scripts = await api("/scripts?limit=200");
  const productName = Object.fromEntries(state.products.map((p) => [p.id, p.name]));
  fill("scripts", el("h3", {}, "Saved scripts"), state.scripts.length ? el("div", { class: "cards" },
    state.scripts.map((s) => scriptCard(s, productName[s.product_id] || s.product_id))) :
    el("p", { class: "empty" }, "No script yet."));
  setOptions("#show-form select[name=script_ids]", state.scripts.map((s) => option(s.id, s.text.slice(0, 60))));
}

// --- a script: its text, its recorded voice-over (upload, replace, delete) and editing its text -----------------
function scriptCard(s, product) {
  const out = `script-out-${s.id}`;
  const voice = el("div", { class: "vo-state" }, el("p", { class: "muted" }, "Loading the voice-over…"));
  showScriptVoiceover(s, voice, out);
  return el("div", { class: "card script-row", dataset: { scriptId: s.id } },
    el("div", { class: "meta" }, product, " · ", s.language, " · ", el("code", {}, s.id)),
    el("p", { class: "script-text" }, s.text),
    el("div", { class: "voiceover" }, el("h4", {}, "Voice-over"), voice),
    el("details", { class: "vo-tools" }, el("summary", {}, "Upload a recording or edit the text"),
      voiceoverForm(s, voice, out), scriptEditForm(s, out)),
    el("div", { id: out }));
}

async function showScriptVoiceover(s, voice, out) {
  let vo;
  try {
    vo = await voiceoverOf(s.id);
  } catch (err) {
    voice.replaceChildren(problemBox(err));
    return;
  }
  voice.replaceChildren(voiceoverView(vo, null, state.creators));
  if (vo) {
    voice.append(el("button", { type: "button", class: "danger vo-delete", onclick: () => deleteVoiceover(s, voice, out) },
      "Delete recording"));
  }
}

function voiceoverForm(s, voice, out) {
  const speaker = el("select", { name: "speaker" }, option("actor", "A voice actor"),
    option("creator", "The creator's own voice"));
  const actor = el("label", {}, "Actor's name ", el("input", { type: "text", name: "actor_name", maxlength: 200 }));
  const creator = el("label", { hidden: true }, "Creator id ",
    el("input", { type: "text", name: "creator_id", list: "creator-ids", autocomplete: "off" }));
  speaker.addEventListener("change", () => {
    actor.hidden = speaker.value !== "actor";
    creator.hidden = speaker.value !== "creator";
  });
  const form = el("form", { class: "stack vo-upload" },
    el("div", { class: "row" }, el("label", {}, "Speaker ", speaker), actor, creator),
    el("label", {}, "Recording (WAV, MP3, M4A, Ogg or WebM; 1–120 s) ",
      el("input", { type: "file", name: "file", accept: "audio/*", required: true })),
    el("p", { class: "muted note" }, "It must say the script word for word. The creator's own voice airs once the " +
      "creator approves the recording, and only under a consent granted with voice ticked."),
    el("button", { type: "submit" }, "Upload recording"));
  onSubmit(form, out, async () => {
    const fields = speaker.value === "actor" ? { speaker: "actor", actor_name: form.actor_name.value.trim() } :
      { speaker: "creator", creator_id: form.creator_id.value.trim() };
    try {
      const vo = await sendVoiceover(s.id, form.file.files[0], fields, out);
      fill(out, voiceoverAccepted(vo, null, state.creators));
      form.file.value = "";
    } finally {
      await showScriptVoiceover(s, voice, out);
    }
  });
  return form;
}

async function deleteVoiceover(s, voice, out) {
  if (!confirm("Delete this script's recorded voice-over? Its file is deleted; the script speaks with a synthetic " +
    "voice, or not at all with an avatar that speaks only recordings.")) return;
  try {
    await api(`/scripts/${s.id}/voiceover`, { method: "DELETE" });
    fill(out, okBox("Voice-over deleted."));
  } catch (err) {
    showProblem(out, err);
  }
  await showScriptVoiceover(s, voice, out);
}

function scriptEditForm(s, out) {
  const form = el("form", { class: "stack script-edit" },
    el("label", {}, "Text ", el("textarea", { name: "text", required: true, maxlength: 5000 }, s.text)),
    el("p", { class: "muted note" }, "Saving a new text drops the script's recorded voice-over (it says the old " +
      "text) and the creators' approvals of it: record it again and ask for approval again."),
    el("button", { type: "submit", class: "secondary" }, "Save text"));
  onSubmit(form, out, async () => {
    const saved = await api(`/scripts/${s.id}`, { method: "PATCH", body: { text: form.text.value } });
    await loadScripts();
    fill("script-out", okBox(saved.text === s.text ? "The script is unchanged." :
      "Script text saved: it passed the script rules; a recorded voice-over of the old text was dropped."));
  });
  return form;
}

async function loadAvatars() {
  [state.avatars, state.consents] = await Promise.all([api("/avatars?limit=200"), api("/consents?status=granted&limit=200")]);
  fill("avatars", state.avatars.length ? state.avatars.map((a) => {
    const grants = state.consents.filter((c) => c.avatar_id === a.id);
    return el("div", { class: "card avatar", dataset: { avatarId: a.id } },
      el("h3", {}, a.name, aiBadge()),
      el("div", { class: "meta" }, `${a.width}×${a.height}, ${num(a.fps, 0)} fps`),
      grants.map((c) => el("div", { class: "meta" }, `Consent until `, when(c.ends_at),
        c.scope && c.scope.categories ? ` · ${c.scope.categories.join(", ")}` : "",
        c.require_script_approval ? " · scripts need the creator's approval" : "")));
  }) : el("p", { class: "empty" }, "No creator has granted you an AI avatar yet."));
  setOptions("#show-form select[name=avatar_id]", state.avatars.map((a) => option(a.id, a.name)));
  // The creators who granted the agency a consent: whose own voice a recording may be.
  state.creators = Object.fromEntries(state.consents.map((c) => [c.creator_id, c.signed_name]));
  fill("creator-ids", Object.entries(state.creators).map(([id, name]) => option(id, name)));
  updateConsentOptions();
}

function updateConsentOptions() {
  const avatarId = document.querySelector("#show-form select[name=avatar_id]").value;
  setOptions("#show-form select[name=consent_id]", state.consents.filter((c) => c.avatar_id === avatarId)
    .map((c) => option(c.id, `${c.signed_name}, until ${when(c.ends_at)}`)));
}

async function loadShows() {
  state.shows = await api("/shows?limit=200");
  renderCalendar();
}

async function loadAired() {
  const channelId = document.querySelector("#aired-form select[name=channel_id]").value;
  if (!channelId) return fill("aired", el("p", { class: "empty" }, "No channel yet."));
  const rows = await api(`/channels/${channelId}/segments?state=aired&newest_first=true&limit=200`);
  fill("aired", table(rows, [
    ["Aired", (s) => when(s.aired_at)], ["Seq", (s) => s.seq], ["Seconds", (s) => num(s.duration_s)],
    ["What the AI avatar said", (s) => s.text], ["ProduceID", (s) => el("code", {}, s.produce_id)],
  ], "Nothing aired on this channel yet."));
}

// --- forms -------------------------------------------------------------------------------------------------------
async function createChannel(form) {
  const body = { name: form.name.value.trim(), territories: csv(form.territories.value),
    policy_profiles: csv(form.policy_profiles.value), destinations: [] };
  if (form.url.value.trim()) body.destinations.push({ url: form.url.value.trim(), platform: form.platform.value.trim() || "custom" });
  const ch = await api("/channels", { method: "POST", body });
  form.url.value = "";  // the key is not kept on the page
  await loadChannels();
  renderCalendar();
  fill("channel-out", okBox(`Channel ${ch.name} created` + (ch.destinations.length ? `: ${ch.destinations.join(", ")}` : ".")));
}

async function createProduct(form) {
  const p = await api("/products", { method: "POST",
    body: { name: form.name.value.trim(), brand: form.brand.value.trim(), category: form.category.value.trim() } });
  form.reset();
  await loadProducts();
  document.querySelector("#script-form select[name=product_id]").value = p.id;
  fill("product-out", okBox(`Product ${p.name} added.`));
}

async function createScript(form) {
  const s = await api("/scripts", { method: "POST",
    body: { product_id: form.product_id.value, text: form.text.value, language: form.language.value.trim() } });
  form.text.value = "";
  await loadScripts();
  fill("script-out", okBox("Script saved: it passed the script rules."));
  return s;
}

async function createShow(form) {
  const local = (v) => (v ? new Date(v).toISOString() : undefined);
  const show = await api("/shows", { method: "POST", body: {
    name: form.name.value.trim(), channel_id: form.channel_id.value, avatar_id: form.avatar_id.value,
    consent_id: form.consent_id.value, script_ids: [...form.script_ids.selectedOptions].map((o) => o.value),
    starts_at: local(form.starts_at.value), ends_at: local(form.ends_at.value) } });
  fill("show-out", okBox(`Show ${show.name} scheduled.` + (show.awaiting_approval.length ?
    ` ${show.awaiting_approval.length} script(s) wait for the creator's approval before they air.` : "")));
  await loadShows();
}

(async () => {
  await startPage(["agency"]);
  onSubmit(document.getElementById("channel-form"), "channel-out", createChannel);
  onSubmit(document.getElementById("product-form"), "product-out", createProduct);
  onSubmit(document.getElementById("script-form"), "script-out", createScript);
  onSubmit(document.getElementById("show-form"), "show-out", createShow);
  document.querySelector("#show-form select[name=avatar_id]").addEventListener("change", updateConsentOptions);
  document.querySelector("#aired-form select[name=channel_id]").addEventListener("change",
    () => loadAired().catch((err) => showProblem("aired", err)));
  await Promise.all([loadChannels(), loadProducts(), loadAvatars()]);
  await Promise.all([loadScripts(), loadShows(), loadAired().catch((err) => showProblem("aired", err))]);
  document.body.dataset.ready = "1";
})();
