"""Recorded voice-overs: take one in (decode, check, align to the script, cut, store) and speak it back for a segment.

Taking one in (`take_voiceover`) is all or nothing: the upload is decoded to 16 kHz mono (workers.speech.recording
refuses a silent, clipped, too short or too long file, or one that is not audio), the script's text is force-aligned
to it (workers.speech.align refuses a recording that does not say the script, naming the words that did not match),
the words are cut at their boundaries into 2-10 s parts, and only then is the WAV stored and the row written; a
script's earlier voice-over is replaced, its file deleted. Any refusal leaves nothing behind.

For a segment (`recorded_speech`), the part that says the segment's text is cut out of the stored WAV with its
aligned words and phonemes, so the captions and the lips follow the recording as they follow our own TTS.
"""

from __future__ import annotations

import logging
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlmodel import Session, select

from studio import audit
from studio.db import after_commit
from studio.deletion import safe_id
from studio.models import Script, Voiceover, new_id, utcnow
from studio.runtime import Runtime
from studio.storage import sha256_file
from studio.usage import text_sha256
from studio.voiceover import SPEAKERS, not_theirs, part_of, whose
from workers.tts.base import Speech, Timed
from workers.tts.wav import resample, speech_to_wav

if TYPE_CHECKING:
    from workers.speech.align import Alignment

log = logging.getLogger("studio.voiceover")


class VoiceoverRefused(ValueError):
    """The recording cannot be this script's voice-over; the message says why (and names words that did not
    match). `missing`/`extra`: those words, when the recording does not say the script."""

    def __init__(self, message: str, *, missing: list[str] | None = None, extra: list[str] | None = None):
        super().__init__(message)
        self.missing, self.extra = list(missing or []), list(extra or [])


class VoiceoverTaken(VoiceoverRefused):
    """A creator's upload for a script whose recording is not theirs to replace (another creator's own voice, a
    voice actor's); the message says whose, and that the script's agency can delete it."""


def _tokens(text: str) -> list[str]:
    return [t for t in text.split() if any(ch.isalnum() for ch in t)]


def part_texts(text: str, words: list[Timed], cuts: list[tuple[float, float, int, int]]) -> list[list]:
    """[start, end, text] per part. A part's text is the script's own tokens (with their punctuation, so captions
    read like the script) when the aligned words line up one to one with them, else the aligned words."""
    tokens = _tokens(text)
    said = tokens if len(tokens) == len(words) else [w.text for w in words]
    return [[round(a, 3), round(b, 3), " ".join(said[i:j])] for a, b, i, j in cuts]


def voiceover_key(script_id: str, voiceover_id: str) -> str:
    return f"voiceovers/{safe_id(script_id, 'script')}/{safe_id(voiceover_id, 'voiceover')}.wav"


@dataclass(frozen=True)
class Checked:
    """A recording that says `text`: its 16 kHz samples, the alignment, and the parts it is cut into."""

    text: str
    samples: np.ndarray
    aligned: Alignment
    cuts: list[tuple[float, float, int, int]]


def check_voiceover(upload: Path, text: str, *, language: str, progress=None) -> Checked:
    """Decode `upload` and force-align `text` to it, cut at word boundaries: the slow part of taking a voice-over,
    with nothing kept and no database (so it can run in another process: workers.ingest.voiceover_apart).
    VoiceoverRefused with the reason. `progress(stage, done, total)`: "decode", then "align" (seconds of audio
    decoded of about three passes)."""
    from workers.speech.align import AlignmentError, ScriptMismatch, align_script, voiceover_parts
    from workers.speech.recording import RATE, RecordingError, load_recording

    step = progress or (lambda stage, done, total: None)
    step("decode", 0.0, 1.0)
    try:
        samples = load_recording(upload)
    except RecordingError as exc:
        raise VoiceoverRefused(str(exc)) from None
    step("decode", 1.0, 1.0)
    try:
        aligned = align_script(samples, text, language=language,
                               progress=lambda done, total: step("align", done, total))
    except ScriptMismatch as exc:
        raise VoiceoverRefused(str(exc), missing=exc.missing, extra=exc.extra) from None
    except AlignmentError as exc:
        raise VoiceoverRefused(str(exc)) from None
    return Checked(text, samples, aligned, voiceover_parts(aligned.words, duration=len(samples) / RATE))


def take_voiceover(rt: Runtime, s: Session, script: Script, upload: Path, *, speaker: str,
                   creator_id: str | None, actor_name: str | None, uploaded_by: str | None,
                   approved_name: str | None = None, progress=None, checked: Checked | None = None,
                   by_creator: str | None = None) -> Voiceover:
    """Check and align `upload` against the script, store it and record it as the script's voice-over (replacing
    any earlier one). `approved_name`: the creator uploads their own voice themself, which approves it. Raises
    VoiceoverRefused with the reason; nothing is kept then. The caller commits `s`. `progress(stage, done,
    total)`: stage "decode", "align" (seconds of audio decoded of about three passes) or "store". `checked`: the
    upload's check_voiceover, done already (elsewhere); it must be of the script's text as it is now. `by_creator`:
    the creator uploading it themself, who replaces only a recording of their own voice (VoiceoverTaken)."""
    from workers.speech.recording import RATE

    if speaker not in SPEAKERS:
        raise VoiceoverRefused(f"speaker {speaker!r} is not one of {', '.join(SPEAKERS)}")
    if speaker == "creator" and not creator_id:
        raise VoiceoverRefused("a recording of the creator's own voice must name the creator")
    if speaker == "actor" and not (actor_name or "").strip():
        raise VoiceoverRefused("a voice actor's recording must name the actor")
    step = progress or (lambda stage, done, total: None)
    if checked is None:
        checked = check_voiceover(upload, script.text, language=script.language, progress=step)
    elif checked.text != script.text:
        raise VoiceoverRefused("the script was edited while its recording was checked; send the recording again "
                               "if it says the new text")
    samples, aligned, cuts = checked.samples, checked.aligned, checked.cuts
    duration = len(samples) / RATE
    row = Voiceover(id=new_id(), script_id=script.id, text_sha256=text_sha256(script.text), speaker=speaker,
                    creator_id=creator_id if speaker == "creator" else None,
                    actor_name=actor_name.strip() if speaker == "actor" and actor_name else None,
                    uploaded_by=uploaded_by, audio_path="", upload_sha256=sha256_file(upload), audio_sha256="",
                    duration_s=round(duration, 3), matched=round(aligned.matched, 3),
                    words=[[w.text, round(w.start, 3), round(w.end, 3)] for w in aligned.words],
                    phonemes=[[p.text, round(p.start, 3), round(p.end, 3)] for p in aligned.phonemes],
                    parts=part_texts(script.text, aligned.words, cuts))
    if approved_name:
        row.approved_at, row.approved_name = utcnow(), approved_name
    step("store", 0.0, 1.0)
    key = voiceover_key(script.id, row.id)
    local = rt.data.root / key
    local.parent.mkdir(parents=True, exist_ok=True)
    speech_to_wav(Speech(samples=samples, sample_rate=RATE), local)
    row.audio_sha256, row.audio_path = sha256_file(local), key
    try:
        if by_creator and (earlier := not_theirs(s, script.id, by_creator)) is not None:
            raise VoiceoverTaken(f"script {script.id!r} has a recording by {whose(earlier)} already; a creator "
                                 "replaces only their own recording (the script's agency can delete that one)")
        rt.publish(local)
        after_commit(s, rollback=lambda: delete_voiceover_files(rt, [key]))
        drop_voiceover(rt, s, script.id, reason="replaced")
        s.add(row)
        audit.record(s, kind="voiceover.added", subject_id=script.id,
                     data={"voiceover_id": row.id, "speaker": speaker, "creator_id": row.creator_id,
                           "sha256": row.upload_sha256, "seconds": row.duration_s, "parts": len(row.parts),
                           "matched": row.matched, "approved": row.approved_at is not None})
        s.flush()
    except BaseException:
        local.unlink(missing_ok=True)
        if not rt.store_is_data_dir:
            rt.store.delete(key)
        raise
    return row


def drop_voiceover(rt: Runtime, s: Session, script_id: str, *, reason: str) -> Voiceover | None:
    """Delete the script's voice-over: its row now, its file once `s` commits (after_commit). Replaced, the script
    edited, or asked for."""
    row = s.exec(select(Voiceover).where(Voiceover.script_id == script_id)).first()
    if row is None:
        return None
    after_commit(s, commit=lambda key=row.audio_path: delete_voiceover_files(rt, [key]))
    s.delete(row)
    audit.record(s, kind="voiceover.dropped", subject_id=script_id,
                 data={"voiceover_id": row.id, "reason": reason, "sha256": row.audio_sha256})
    s.flush()
    return row


def delete_voiceover_files(rt: Runtime, keys: list[str]) -> None:
    for key in keys:
        if not key.startswith("voiceovers/"):
            continue  # a key is only ever derived by voiceover_key; anything else is not ours to delete
        (rt.data.root / key).unlink(missing_ok=True)
        if not rt.store_is_data_dir:
            rt.store.delete(key)


# --- speaking it back ------------------------------------------------------------------------------------
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path.name}: expected mono 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def recorded_speech(rt: Runtime, vo: Voiceover, text: str) -> Speech:
    """The part of the voice-over that says `text`, with its aligned words and phonemes, times from the part's
    start."""
    start, end = part_of(vo, text)
    samples, rate = read_wav(rt.local(vo.audio_path))
    a, b = int(round(start * rate)), min(len(samples), int(round(end * rate)))

    def within(rows: list) -> list[Timed]:
        return [Timed(str(t), max(0.0, float(s0) - start), min(end, float(s1)) - start)
                for t, s0, s1 in rows if float(s0) >= start - 1e-3 and float(s1) <= end + 1e-3]

    return Speech(samples=np.ascontiguousarray(samples[a:b]), sample_rate=rate, words=within(vo.words),
                  phonemes=within(vo.phonemes))


def joined(first: Speech, then: Speech, *, gap: float = 0.25) -> Speech:
    """`first` (the spoken disclosure, V6), a short pause, then `then`: one Speech at `then`'s rate."""
    rate = then.sample_rate
    head = resample(first.samples, first.sample_rate, rate).astype(np.float32)
    pause = np.zeros(int(gap * rate), np.float32)
    shift = len(head) / rate + gap

    def moved(rows: list[Timed]) -> list[Timed]:
        return [Timed(t.text, t.start + shift, t.end + shift) for t in rows]

    return Speech(samples=np.concatenate([head, pause, then.samples]).astype(np.float32), sample_rate=rate,
                  words=[*first.words, *moved(then.words)], phonemes=[*first.phonemes, *moved(then.phonemes)])
