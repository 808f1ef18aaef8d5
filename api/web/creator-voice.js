/* The creator page's voice-overs: under each script of a live consent, its recorded voice-over (who speaks, a
   player, its parts), approving a recording of my own voice that the agency made, and recording the script in my
   own voice here (MediaRecorder, WebM/Opus, at most 120 s) or uploading a file. My own upload is my approval. */
"use strict";

let voiceRecording = null;  // the one recording in progress: { recorder, stream, timer }

/** The "Voice-over" area of script `r` under consent `c`. */
function voiceoverArea(c, r) {
  const id = `vo-${c.id}-${r.script_id}`;
  const ctx = { c, r, out: `${id}-out`, state: el("div", { class: "vo-state" }, el("p", { class: "muted" }, "Loading…")),
    elapsed: el("span", { class: "vo-elapsed muted" }) };
  ctx.record = el("button", { type: "button", class: "vo-record", onclick: () => startVoiceRecording(ctx) }, "Record");
  ctx.stop = el("button", { type: "button", class: "vo-stop secondary", disabled: true, onclick: stopVoiceRecording },
    "Stop");
  const file = el("input", { type: "file", name: "file", accept: "audio/*", required: true });
  const form = el("form", { class: "vo-upload" }, el("label", {}, "or upload a recording ", file),
    el("button", { type: "submit", class: "secondary" }, "Upload file"));
  onSubmit(form, ctx.out, async () => {
    await takeVoiceover(ctx, file.files[0]);
    form.reset();
  });
  showVoiceover(ctx);
  return el("div", { class: "voiceover", id, dataset: { scriptId: r.script_id } },
    el("h4", {}, "Voice-over"), ctx.state,
    el("div", { class: "actions" }, ctx.record, ctx.stop, ctx.elapsed),
    el("p", { class: "muted note" }, `Read the script exactly as written, in your own voice (at most ${VOICEOVER_MAX_S} s).`),
    form, el("div", { id: ctx.out }));
}

async function showVoiceover(ctx) {
  let vo;
  try {
    vo = await voiceoverOf(ctx.r.script_id);
  } catch (err) {
    ctx.state.replaceChildren(problemBox(err));
    return;
  }
  const mine = vo && vo.speaker === "creator" && vo.creator_id === me.creator_id;
  ctx.state.replaceChildren(voiceoverView(vo, me.creator_id));
  if (mine && vo.needs_approval) {
    ctx.state.append(el("button", { type: "button", class: "vo-approve", onclick: () => approveVoiceover(ctx) },
      "Approve recording"));
  }
}

/** Send `file` as my own voice for the script; the outcome (or the refusal, with the words that did not match)
    shows in the area. */
async function takeVoiceover(ctx, file) {
  try {
    const vo = await sendVoiceover(ctx.r.script_id, file, {}, ctx.out);
    fill(ctx.out, voiceoverAccepted(vo, me.creator_id));
  } catch (err) {
    showProblem(ctx.out, err);
  }
  await showVoiceover(ctx);
}

async function approveVoiceover(ctx) {
  const name = prompt("Sign with your name to approve this recording of your own voice for airing:", ctx.c.signed_name);
  if (name === null) return;
  try {
    await api(`/scripts/${ctx.r.script_id}/voiceover/approve`, { method: "POST", body: { signed_name: name.trim() } });
    fill(ctx.out, okBox(`Recording approved for ${ctx.r.product}: it airs under consents granted with voice ticked.`));
  } catch (err) {
    showProblem(ctx.out, err);
  }
  await showVoiceover(ctx);
}

// --- recording in the browser: the microphone only, Opus in WebM where the browser has it -------------------------
async function startVoiceRecording(ctx) {
  if (voiceRecording) {
    showProblem(ctx.out, new Error("Another recording is running: stop it first."));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showProblem(ctx.out, new Error(`No microphone (${err.name}): upload a recording instead.`));
    return;
  }
  const type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"].find((t) => MediaRecorder.isTypeSupported(t));
  const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
  const chunks = [];
  // Counted from when the recorder really starts capturing (onstart), not from the click: on a busy machine the
  // page said "1 s" over 0.96 s of audio, which the server refuses as under its 1 s minimum.
  let started = null;
  const seconds = () => (started === null ? 0 : (Date.now() - started) / 1000);
  const tick = () => {
    ctx.elapsed.textContent = `Recording: ${Math.floor(seconds())} s of ${VOICEOVER_MAX_S} s`;
    if (seconds() >= VOICEOVER_MAX_S) stopVoiceRecording();  // the longest recording the server takes
  };
  voiceRecording = { recorder, stream, timer: setInterval(tick, 250) };
  recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  recorder.onstart = () => { started = Date.now(); tick(); };
  recorder.onstop = async () => {
    clearInterval(voiceRecording.timer);
    stream.getTracks().forEach((t) => t.stop());
    voiceRecording = null;
    ctx.record.disabled = false;
    ctx.stop.disabled = true;
    ctx.elapsed.textContent = `Recorded ${seconds().toFixed(1)} s.`;
    const mime = (recorder.mimeType || "audio/webm").split(";")[0];
    await takeVoiceover(ctx, new File(chunks, `voiceover.${mime.endsWith("ogg") ? "ogg" : "webm"}`, { type: mime }));
  };
  recorder.start();
  ctx.record.disabled = true;
  ctx.stop.disabled = false;
  fill(ctx.out);
  tick();
}

function stopVoiceRecording() {
  if (voiceRecording && voiceRecording.recorder.state !== "inactive") voiceRecording.recorder.stop();
}
