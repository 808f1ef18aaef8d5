"""Policy as data: the stamp that lets a segment air, AIGC metadata, and caption cues.

Pure functions: the middleware in workers/ calls them; the streamer checks stamps with them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

STAMP_VERSION = 2


@dataclass(frozen=True)
class PolicyStamp:
    """Proof that the policy middleware labelled these exact bytes for this channel.

    `mac` is HMAC-SHA256 with the policy key over every other field; `sha256` is the digest of the
    segment file, so any change to the file or to the channel it is meant for breaks the stamp. `policy` is
    the digest of the effective policy (profiles merged) that labelled it.
    """

    version: int
    segment_id: str
    channel_id: str
    produce_id: str
    sha256: str
    labels: tuple[str, ...]
    policy: str
    mac: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PolicyStamp:
        try:
            return cls(
                version=int(d["version"]), segment_id=str(d["segment_id"]), channel_id=str(d["channel_id"]),
                produce_id=str(d["produce_id"]), sha256=str(d["sha256"]), labels=tuple(d["labels"]),
                policy=str(d["policy"]), mac=str(d["mac"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StampError(f"malformed policy stamp: {exc}") from None


class StampError(ValueError):
    """The stamp is missing, malformed, forged, or for other bytes or another channel."""


# Labels the middleware must have applied before it may stamp (POLICY V1, V3, V4, M1, M3).
REQUIRED_LABELS = ("badge", "captions", "aigc_metadata", "watermark")


def _stamp_message(version: int, segment_id: str, channel_id: str, produce_id: str, sha256: str,
                   labels: tuple[str, ...], policy: str) -> bytes:
    return json.dumps([version, segment_id, channel_id, produce_id, sha256, sorted(labels), policy]).encode()


def make_stamp(key: bytes, *, segment_id: str, channel_id: str, produce_id: str, sha256: str,
               labels: tuple[str, ...], policy: str) -> PolicyStamp:
    missing = [lab for lab in REQUIRED_LABELS if lab not in labels]
    if missing:
        raise StampError(f"refusing to stamp segment {segment_id}: labels missing: {', '.join(missing)}")
    msg = _stamp_message(STAMP_VERSION, segment_id, channel_id, produce_id, sha256, labels, policy)
    mac = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return PolicyStamp(STAMP_VERSION, segment_id, channel_id, produce_id, sha256, tuple(labels), policy, mac)


def check_stamp(key: bytes, stamp: PolicyStamp, *, channel_id: str, sha256: str) -> None:
    """Raise StampError unless the stamp is genuine, for these bytes, and for this channel, and lists every
    required label, so a segment without its badge, captions, AIGC metadata or watermark never airs
    (POLICY V1, V4, M1, M3)."""
    if stamp.version != STAMP_VERSION:
        raise StampError(f"segment {stamp.segment_id}: stamp version {stamp.version}, expected {STAMP_VERSION} "
                         f"(rendered before the current policy middleware; render it again)")
    msg = _stamp_message(stamp.version, stamp.segment_id, stamp.channel_id, stamp.produce_id, stamp.sha256,
                         stamp.labels, stamp.policy)
    expected = hmac.new(key, msg, hashlib.sha256).hexdigest()
    # Compare bytes: compare_digest raises TypeError on non-ASCII str, and a forged stamp must be refused.
    if not hmac.compare_digest(expected.encode(), stamp.mac.encode()):
        raise StampError(f"segment {stamp.segment_id}: stamp MAC does not verify (forged or wrong key)")
    if stamp.sha256 != sha256:
        raise StampError(f"segment {stamp.segment_id}: file bytes changed after stamping "
                         f"(stamped {stamp.sha256[:12]}, now {sha256[:12]})")
    if stamp.channel_id != channel_id:
        raise StampError(f"segment {stamp.segment_id}: stamped for channel {stamp.channel_id}, "
                         f"not for {channel_id}")
    missing = [lab for lab in REQUIRED_LABELS if lab not in stamp.labels]
    if missing:
        raise StampError(f"segment {stamp.segment_id}: labels missing: {', '.join(missing)}")


# --- AIGC metadata (GB 45438 Annex E; POLICY M1, M2) ----------------------------------------------
AIGC_FIELDS = ("Label", "ContentProducer", "ProduceID", "ContentPropagator", "PropagateID")
SIGNED_FIELDS = (*AIGC_FIELDS, "ReservedCode2")


def _aigc_signature(key: bytes, fields: dict) -> str:
    return hmac.new(key, json.dumps(fields, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def aigc_metadata(key: bytes, *, producer: str, produce_id: str, propagator: str, propagate_id: str,
                  reserved2: str = "") -> str:
    """The JSON for the container key `AIGC`, every GB 45438 Annex E field with Label 1 (POLICY M1);
    ReservedCode1 signs every other field with the project's key (POLICY M2), ReservedCode2 included, which
    carries the references a reader needs when no database is at hand."""
    fields = {"Label": "1", "ContentProducer": producer, "ProduceID": produce_id,
              "ContentPropagator": propagator, "PropagateID": propagate_id, "ReservedCode2": reserved2}
    return json.dumps({**fields, "ReservedCode1": _aigc_signature(key, fields)}, separators=(",", ":"))


def verify_aigc_metadata(key: bytes, value: str) -> dict:
    """Parse and check an AIGC value: every Annex E field, Label 1, and a ReservedCode1 signature that verifies,
    so a copied or edited mark is refused (POLICY M1, M2); raise ValueError naming what is wrong."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"AIGC metadata is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"AIGC metadata is not a JSON object, got {type(data).__name__}")
    missing = [f for f in AIGC_FIELDS if f not in data]
    if missing:
        raise ValueError(f"AIGC metadata lacks {', '.join(missing)}")
    if str(data["Label"]) != "1":
        raise ValueError(f"AIGC Label is {data['Label']!r}, expected '1' (AI-generated)")
    fields = {f: data.get(f, "") for f in SIGNED_FIELDS}
    sig = _aigc_signature(key, fields)
    if not hmac.compare_digest(sig.encode(), str(data.get("ReservedCode1", "")).encode()):
        raise ValueError("AIGC ReservedCode1 signature does not verify (copied or forged mark)")
    return data


# --- captions (POLICY V4) -------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionCue:
    start: float
    end: float
    text: str


def caption_cues(words: list[tuple[str, float, float]], *, max_chars: int = 26, max_lines: int = 2,
                 min_gap: float = 0.6) -> list[CaptionCue]:
    """Group timed words into cues of at most `max_lines` lines of `max_chars`.

    A cue ends at a full stop, when it is full, or at a pause longer than `min_gap`; it stays on screen
    until the next cue starts or 0.5 s after its last word, so captions never flicker between words. The cues
    are timed to the speech, for the burned-in captions and the WebVTT sidecar (POLICY V4).
    """
    cues: list[CaptionCue] = []
    cur: list[tuple[str, float, float]] = []

    def flush() -> None:
        if cur:
            cues.append(CaptionCue(cur[0][1], cur[-1][2], " ".join(w for w, _, _ in cur)))
            cur.clear()

    for word, start, end in words:
        if cur and (start - cur[-1][2] > min_gap or len(wrap_text(" ".join([*(w for w, _, _ in cur), word]),
                                                                   max_chars)) > max_lines):
            flush()
        cur.append((word, start, end))
        if word.endswith((".", "!", "?")):
            flush()
    flush()
    held = []
    for i, cue in enumerate(cues):
        nxt = cues[i + 1].start if i + 1 < len(cues) else cue.end + 0.5
        held.append(CaptionCue(cue.start, max(cue.end, min(nxt, cue.end + 0.5)), cue.text))
    return held


def with_punctuation(words: list[str], text: str) -> list[str]:
    """The script's own tokens (with their punctuation) for the spoken words, when they line up one to one;
    captions then read like the script, and sentence ends can close a cue."""
    tokens = [t for t in text.split() if any(ch.isalnum() for ch in t)]
    if len(tokens) != len(words):
        return words
    return [tok if word.lower() in tok.lower() else word for word, tok in zip(words, tokens, strict=True)]


def wrap_text(text: str, max_chars: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= max_chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def webvtt(cues: list[CaptionCue]) -> str:
    """The cues as a WebVTT file: the caption sidecar of every segment, for HLS preview and archive (POLICY V4)."""
    def ts(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    body = "\n\n".join(f"{ts(c.start)} --> {ts(c.end)}\n{c.text}" for c in cues)
    return f"WEBVTT\n\n{body}\n"
