/* The consent review page (admins and reviewers): every consent waiting for review with the avatar's footage and
   the consent video side by side, the check's figures against their limits, and approve / reject buttons. */
"use strict";

function figureRows(figures) {
  return table(figures, [
    ["Figure", (f) => f.label],
    ["Value", (f) => (f.value === null ? "—" : num(f.value, 3))],
    ["Limit", (f) => `${f.rule} ${num(f.limit, 3)}`],
    ["", (f) => (f.ok === null ? el("span", { class: "status idle" }, "not measured") :
      f.ok ? el("span", { class: "status up" }, "within") : el("span", { class: "status down" }, "outside"))],
  ], "No figures recorded.", (f) => ({ class: "figure-row", dataset: { figure: f.name } }));
}

function scopeLine(s) {
  const parts = [];
  if ((s.brands || []).length) parts.push(`brands ${s.brands.join(", ")}`);
  if ((s.categories || []).length) parts.push(`categories ${s.categories.join(", ")}`);
  if ((s.excluded_categories || []).length) parts.push(`never ${s.excluded_categories.join(", ")}`);
  if ((s.platforms || []).length) parts.push(`on ${s.platforms.join(", ")}`);
  if ((s.territories || []).length) parts.push(`in ${s.territories.join(", ")}`);
  if ((s.languages || []).length) parts.push(`languages ${s.languages.join(", ")}`);
  if (s.max_hours_per_day) parts.push(`at most ${s.max_hours_per_day} h a day`);
  return parts.join("; ");
}

function reviewCard(c) {
  const out = `decision-${c.id}`;
  const v = c.verification || {};
  const reason = el("textarea", { name: "reason", rows: 2, maxlength: 2000, required: true,
    placeholder: "Why, in words the creator reads (e.g. the person in the video is not the person in the footage)" });
  return el("div", { class: "card review", dataset: { consentId: c.id } },
    el("h3", {}, c.creator_name, " · ", c.avatar_name || c.avatar_id, aiBadge(),
      el("span", { class: "status pending_review" }, "pending review")),
    el("div", { class: "meta" }, "Submitted ", when(c.created_at), " · consent ", el("code", {}, c.id)),
    el("div", { class: "side-by-side" },
      el("figure", {}, el("video", { src: c.footage_url, controls: true, muted: true, playsinline: true,
        preload: "metadata", class: "footage" }),
      el("figcaption", { class: "muted" }, "The avatar's reference footage")),
      el("figure", {}, el("video", { src: c.video_url, controls: true, playsinline: true, preload: "metadata",
        class: "consent-video" }),
      el("figcaption", { class: "muted" }, "The consent video"))),
    el("div", { class: "meta" }, "Code phrase: ", el("strong", { class: "mono" }, c.phrase_text || "—"),
      " · heard: ", el("span", { class: "mono" }, v.phrase_heard || "—")),
    figureRows(c.figures || []),
    el("div", { class: "meta" }, `Signed by ${c.signed_name}: `,
      [c.face && "face", c.voice && "voice"].filter(Boolean).join(" and "), " · from ", when(c.starts_at), " to ",
      when(c.ends_at), " · ", c.agency_id ? `grants agency ${c.agency_id}` : "no agency"),
    el("div", { class: "meta" }, "Scope: ", scopeLine(c.scope || {})),
    el("blockquote", { class: "statement" }, c.statement),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "approve", onclick: () => decide(c, "approve", null, out) }, "Approve"),
      reason,
      el("button", { type: "button", class: "danger reject", onclick: () => decide(c, "reject", reason.value, out) },
        "Reject")),
    el("div", { id: out }));
}

async function decide(c, verdict, reason, out) {
  try {
    const row = verdict === "approve" ? await api(`/consents/${c.id}/approve`, { method: "POST" }) :
      await api(`/consents/${c.id}/reject`, { method: "POST", body: { reason: (reason || "").trim() } });
    fill("review-out", okBox(row.status === "granted" ? `Consent ${c.id} approved: it may air from now on.` :
      `Consent ${c.id} rejected: ${row.review_reason}. Its consent video is deleted.`));
    await load();
  } catch (err) {
    showProblem(out, err);
  }
}

async function load() {
  const rows = await api("/consents/pending?limit=200");
  fill("pending-count", `(${rows.length})`);
  fill("pending", rows.length ? rows.map(reviewCard) : el("p", { class: "empty" }, "No consent waits for review."));
}

(async () => {
  await startPage(["reviewer", "admin"]);
  try {
    await load();
  } catch (err) {
    showProblem("review-out", err);
  }
  document.body.dataset.ready = "1";
})();
