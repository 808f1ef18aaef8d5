"""Forced alignment of a script to a recording of it (pocketsphinx), and the check that the recording says it.

Alignment: every script word is looked up in pocketsphinx's en-us dictionary; a number is spelled out (`42` ->
forty two), a hyphenated or slashed word is split, and a word the dictionary lacks (a brand name) gets a
pronunciation from espeak-ng's IPA, mapped to ARPAbet: espeak-ng is the project's speech engine anyway, and its
letter-to-sound rules beat any small rule set written here. The decoder then aligns the word sequence to the audio
(first words, then their phones), giving each script word and phoneme its time.

The check: forced alignment fits any audio to the text if it can, so it cannot say by itself whether the text was
said. Three steps decide:
1. the whole script is force-aligned with wide beams: other speech before, between or instead of its words, or
   words missing, make that fail;
2. where it succeeds, each 2-10 s part of the alignment is decoded again on its own audio against a grammar of its
   words in order, each word optional: the decoder keeps the words it hears and drops the others, so a word
   forced onto other speech is not counted; at least MIN_MATCHED of the script's words must be heard;
3. speech outside the aligned words (alignment puts a sentence the script lacks into a long "silence") must not
   last EXTRA_SPEECH_S.
Where the alignment fails, the optional-word grammar over the whole recording names the words that were not heard
(a recording of the first half keeps exactly the first half, a reordered one one run of it, another text a few
short words by chance). A refusal names the words not heard, or where the other speech is.

The audio is levelled to -21 dBFS with a faint seeded noise floor first: pocketsphinx's features take the log of
each frame's energy, and a recording's digital silence (espeak-ng's, a noise gate's) would otherwise derail it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.speech.arpabet import espeak_symbol
from workers.tts.base import Timed

log = logging.getLogger("studio.speech")
RATE = 16000
FRAME_S = 0.01
LANGUAGES = ("en",)
MIN_MATCHED = 0.8          # share of the script's words that must be heard
EXTRA_SPEECH_S = 0.8       # speech outside the aligned words longer than this: the recording says more
PAD_S = 0.3                # a pause of the noise floor added at each end for the decoder (align_script)
PASSES = 3                 # decodes of the whole recording a check takes: words, phones, each part again
WIDE_MAX_WORDS = 80        # a second, wide-beam hearing of an unplaceable recording only for scripts this short


class AlignmentError(ValueError):
    """The aligner cannot work on this (a language it has no model for, a text with no words)."""


class ScriptMismatch(ValueError):
    """The recording does not say the script; `missing` are the script's words not heard (in script order),
    `extra` the words heard that the script does not have (when a run of them was heard)."""

    def __init__(self, message: str, *, missing: list[str], extra: list[str]):
        super().__init__(message)
        self.missing, self.extra = missing, extra


@dataclass(frozen=True)
class Alignment:
    words: list[Timed]       # one per spoken script word, in order, as written (surrounding punctuation stripped)
    phonemes: list[Timed]    # espeak-ng symbols; pauses '_'
    duration: float
    matched: float           # share of script words judged heard


# --- the text ----------------------------------------------------------------------------------------
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
        "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> list[str]:
    """An integer as English words (`2021` -> two thousand twenty one), up to the billions."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (number_words(n % 100) if n % 100 else [])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return number_words(n // size) + [name] + (number_words(n % size) if n % size else [])
    raise ValueError(n)


def script_tokens(text: str) -> list[str]:
    """The script's words as written, surrounding punctuation stripped; tokens with no letter or digit are not
    words (a dash, an ellipsis)."""
    out = []
    for tok in text.split():
        core = re.sub(r"^[^\w]+|[^\w]+$", "", tok)
        if any(ch.isalnum() for ch in core):
            out.append(core)
    return out


def _spoken_parts(token: str) -> list[str]:
    """A token as the lower-case words one would say: numbers spelled out, joined words split."""
    words = []
    for piece in re.split(r"[-/–—]+", token.lower()):
        piece = piece.strip("'’")
        for part in re.findall(r"\d+|[^\W\d_]+(?:['’][^\W\d_]+)*", piece):
            words += number_words(int(part)) if part.isdigit() and len(part) < 10 else [part.replace("’", "'")]
    return words


# IPA (as espeak-ng writes it for English) to ARPAbet, longest symbols first.
_IPA = [("aɪ", "AY"), ("aʊ", "AW"), ("eɪ", "EY"), ("oʊ", "OW"), ("əʊ", "OW"), ("ɔɪ", "OY"), ("tʃ", "CH"), ("dʒ", "JH"),
        ("iə", "IH R"), ("eə", "EH R"), ("ʊə", "UH R"), ("ɑː", "AA"), ("ɔː", "AO"), ("uː", "UW"), ("iː", "IY"),
        ("ɜː", "ER"), ("ɚ", "ER"), ("ɝ", "ER"), ("ə", "AH"), ("ʌ", "AH"), ("æ", "AE"), ("a", "AE"), ("ɛ", "EH"),
        ("e", "EH"), ("ɪ", "IH"), ("i", "IY"), ("ɒ", "AA"), ("ɑ", "AA"), ("ɔ", "AO"), ("ʊ", "UH"), ("u", "UW"),
        ("o", "OW"), ("ᵻ", "IH"), ("ɐ", "AH"), ("θ", "TH"), ("ð", "DH"), ("ʃ", "SH"), ("ʒ", "ZH"), ("ŋ", "NG"),
        ("ɹ", "R"), ("r", "R"), ("ɾ", "T"), ("ʔ", "T"), ("j", "Y"), ("w", "W"), ("h", "HH"), ("b", "B"), ("d", "D"),
        ("f", "F"), ("ɡ", "G"), ("g", "G"), ("k", "K"), ("l", "L"), ("ɫ", "L"), ("m", "M"), ("n", "N"), ("p", "P"),
        ("s", "S"), ("t", "T"), ("v", "V"), ("z", "Z"), ("x", "K")]


@functools.lru_cache(maxsize=4096)
def guess_pronunciation(word: str) -> str:
    """ARPAbet for a word the dictionary lacks, from espeak-ng's IPA (its English letter-to-sound rules)."""
    try:
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", word], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        ipa = ""
    ipa = re.sub(r"[ˈˌː\s.‿-]", lambda m: "ː" if m.group() == "ː" else "", ipa)
    phones, i = [], 0
    while i < len(ipa):
        for sym, arpa in _IPA:
            if ipa.startswith(sym, i):
                phones += arpa.split()
                i += len(sym)
                break
        else:
            i += 1  # a mark with no English phone (a length sign on its own, a syllabic tick)
    return " ".join(phones) or " ".join("AH" for _ in word[:1])


# --- the decoders ----------------------------------------------------------------------------------------
class _Decoders:
    """pocketsphinx decoders, made once per process and used under one lock (a decoder is not thread-safe); a
    decoder that raised is rebuilt before its next use."""

    def __init__(self):
        self.lock = threading.Lock()
        self._align = self._optional = None

    def _model(self, *parts: str) -> str:
        from pocketsphinx import get_model_path

        return os.path.join(get_model_path(), *parts)

    def align(self):
        from pocketsphinx import Decoder

        if self._align is None:
            # bestpath off: its lattice pass ends the word hypothesis on a one-frame </s>, to which the phone pass
            # (set_alignment) cannot align a phone, so that pass failed on all but the shortest scripts and every
            # word's phones shared its time evenly (pocketsphinx issue 339).
            self._align = Decoder(samprate=RATE, loglevel="FATAL", lm=None, beam=1e-80, wbeam=1e-60, pbeam=1e-80,
                                  bestpath=False)
        return self._align

    def optional(self, words: list[str], *, wide: bool = False):
        """The decoder with a grammar of `words` in order, each optional (built again for each new script)."""
        from pocketsphinx import Decoder

        if self._optional is None:
            # Two searches: default beams first (every word is optional, so the path to the end is never lost, and
            # a wide beam over a hundred optional words costs ten times as much); wide beams where the first heard
            # too little, before anything is refused (a slow speaker can fall off the narrow beam).
            self._optional = (Decoder(samprate=RATE, loglevel="FATAL", lm=None, bestpath=False),
                              Decoder(samprate=RATE, loglevel="FATAL", lm=None, bestpath=False, beam=1e-80,
                                      wbeam=1e-60, pbeam=1e-80))
        dec = self._optional[1 if wide else 0]
        for w in dict.fromkeys(words):
            if not dec.lookup_word(w):
                dec.add_word(w, guess_pronunciation(w), True)
        dec.add_jsgf_string("script", "#JSGF V1.0;\ngrammar script;\npublic <s> = "
                            + " ".join(f"[{w}]" for w in words) + ";\n")
        dec.activate_search("script")
        return dec

    def reset(self):
        self._align = self._optional = None


_DECODERS = _Decoders()


def levelled_pcm(samples: np.ndarray) -> bytes:
    """16-bit PCM at -21 dBFS RMS with a seeded -60 dBFS noise floor (see the module docstring)."""
    x = np.asarray(samples, np.float64)
    rms = float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0
    x = x * (10 ** (-21 / 20) / rms if rms > 1e-6 else 1.0)
    x = x + np.random.default_rng(len(x)).normal(0.0, 10 ** (-60 / 20), len(x))
    return (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _run(dec, pcm: bytes) -> None:
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()


def _base(word: str) -> str:
    return re.sub(r"\(\d+\)$", "", word)


def align_script(samples: np.ndarray, text: str, *, language: str = "en",
                 progress: Callable[[float, float], None] | None = None) -> Alignment:
    """Align `text` to `samples` (mono float32, 16 kHz) and check the recording says it; ScriptMismatch when it
    does not, AlignmentError when the aligner cannot work on it. `progress(done, total)`: seconds of audio
    decoded of about three passes over it (words, phones, then each part again against its own words)."""
    lang = (language or "").split("-")[0].lower()
    if lang not in LANGUAGES:
        raise AlignmentError(f"the aligner has no model for language {language!r}; it aligns: {', '.join(LANGUAGES)}")
    tokens = script_tokens(text)
    spoken = [_spoken_parts(t) for t in tokens]
    owner = [k for k, parts in enumerate(spoken) for _ in parts]  # dictionary word -> its script token
    words = [w for parts in spoken for w in parts]
    if not words:
        raise AlignmentError("the script has no words to align")
    # A word that ends the file without a pause (a recording cut right after its last sound) cannot be placed:
    # the decoder gets a pause of the noise floor at each end, and the times are shifted back.
    pad = np.zeros(int(PAD_S * RATE), np.float32)
    pcm = levelled_pcm(np.concatenate([pad, np.asarray(samples, np.float32), pad]))
    duration = len(samples) / RATE
    total = PASSES * duration
    told = progress or (lambda done, total: None)
    told(0.0, total)
    with _DECODERS.lock:
        try:
            aligned = _forced(pcm, words, progress=lambda passes: told(passes * duration, total))
            if aligned is not None:
                heard = _heard_by_part(samples, aligned, words,
                                       progress=lambda seconds: told(min(total, 2 * duration + seconds), total))
                spans = []
            else:  # the words cannot be placed: which were said, in order, over the whole recording
                heard, spans = _in_order(pcm, words)
                if len(heard) < MIN_MATCHED * len(words) and len(words) <= WIDE_MAX_WORDS:
                    heard, spans = _in_order(pcm, words, wide=True)
        except Exception:
            _DECODERS.reset()
            raise
    told(total, total)
    spans = [(a - PAD_S, b - PAD_S) for a, b in spans]
    if aligned is not None:
        shift = int(round(PAD_S / FRAME_S))
        aligned = [(w, max(0, start - shift), n, score, [(p, max(0, p0 - shift), pn) for p, p0, pn in phones])
                   for w, start, n, score, phones in aligned]
    heard_tokens = {owner[i] for i in heard} - {owner[i] for i in range(len(words)) if i not in heard}
    matched = len(heard_tokens) / len(tokens)
    missing = [tokens[k] for k in range(len(tokens)) if k not in heard_tokens]
    if aligned is not None and matched >= MIN_MATCHED:
        # Forced alignment puts speech the script does not have into a long "silence": find it there.
        extra = _untranscribed(samples, [(s0 * FRAME_S, (s0 + n) * FRAME_S) for _, s0, n, _, _ in aligned])
        if not extra:
            return _timings(aligned, tokens, owner, duration, matched)
        why = [f"it says more than the script: {extra}"]
    else:
        why = [f"{len(missing)} of {len(tokens)} words not heard in the script's order"] if missing else []
    if not why:  # every word heard in order, yet the words cannot be placed: more was said than the script
        where = _untranscribed(samples, spans)
        why.append("it says more than the script" + (f": {where}" if where else ""))
    shown = ", ".join(missing[:20]) + (", ..." if len(missing) > 20 else "")
    raise ScriptMismatch("the recording does not say the script: " + "; ".join(why) + (f": {shown}" if missing else ""),
                         missing=missing, extra=[])


def _in_order(pcm: bytes, words: list[str], *, wide: bool = False) -> tuple[set[int], list[tuple[float, float]]]:
    """Which script words the recording says in the script's order, and where: a grammar of the script with every
    word optional, so the decoder keeps the words it hears and drops the rest (a recording of the first half keeps
    exactly the first half; another text keeps a few short words by chance)."""
    dec = _DECODERS.optional(words, wide=wide)
    _run(dec, pcm)
    heard: set[int] = set()
    spans = []
    if dec.hyp() is None:
        return heard, spans
    i = 0
    for seg in dec.seg():
        word = _base(seg.word)
        if seg.word.startswith(("<", "(", "[", "+")):
            continue
        while i < len(words) and words[i] != word:
            i += 1
        if i < len(words):
            heard.add(i)
            spans.append((seg.start_frame * FRAME_S, (seg.end_frame + 1) * FRAME_S))
            i += 1
    return heard, spans


def _heard_by_part(samples: np.ndarray, aligned, words: list[str],
                   progress: Callable[[float], None] = lambda seconds: None) -> set[int]:
    """Which of the force-aligned words were really said: each 2-10 s part of the alignment is decoded again on its
    own audio against its words, each optional (small grammars: linear in the recording's length, where one grammar
    of a long script costs far more). A word forced onto other speech is dropped there."""
    shift = int(round(PAD_S / FRAME_S))
    timed = [Timed(w, max(0, a - shift) * FRAME_S, max(0, a - shift + n) * FRAME_S) for w, a, n, _, _ in aligned]
    heard: set[int] = set()
    pad = np.zeros(int(PAD_S * RATE), np.float32)
    for start, end, i, j in voiceover_parts(timed, duration=len(samples) / RATE):
        a, b = max(0, int((start - 0.1) * RATE)), min(len(samples), int((end + 0.1) * RATE))
        pcm = levelled_pcm(np.concatenate([pad, np.asarray(samples[a:b], np.float32), pad]))
        got, _ = _in_order(pcm, words[i:j])
        if len(got) < MIN_MATCHED * (j - i):  # a slow speaker can fall off the narrow beam: a small grammar, cheap
            got, _ = _in_order(pcm, words[i:j], wide=True)
        heard |= {i + k for k in got}
        progress(end)
    return heard


def _forced(pcm: bytes, words: list[str], progress: Callable[[int], None] = lambda passes: None):
    """[(word, start frame, frames, score, phones)] of the whole script forced onto the audio, or None when the
    words cannot all be placed (other speech the script does not have, words missing). `progress(passes)` after
    the word pass (1) and the phone pass (2)."""
    dec = _DECODERS.align()
    for w in dict.fromkeys(words):
        if not dec.lookup_word(w):
            dec.add_word(w, guess_pronunciation(w), True)
    dec.set_align_text(" ".join(words))
    try:
        _run(dec, pcm)
    except RuntimeError:  # the search could not reach the end of the text
        return None
    if dec.hyp() is None:
        return None
    placed = [(_base(sg.word), sg.start_frame, sg.end_frame - sg.start_frame + 1, sg.ascore)
              for sg in dec.seg() if not sg.word.startswith(("<", "(", "+", "["))]
    if [p[0] for p in placed] != words:  # a partial path: the words could not all be placed
        return None
    progress(1)
    dec.set_alignment()
    try:
        _run(dec, pcm)
        progress(2)
        # Read each entry (and its phones) while the iterator is on it: pocketsphinx reuses the entry objects.
        entries = [(_base(e.name), e.start, e.duration, e.score, [(p.name, p.start, p.duration) for p in e])
                   for e in dec.get_alignment() if not e.name.startswith(("<", "+", "["))]
        if [e[0] for e in entries] == words:
            return entries
    except RuntimeError:
        pass
    # The phone pass failed where the word pass did not (it happens on some words): the words keep their places,
    # and each word's phones (its dictionary pronunciation) share its time evenly.
    out = []
    for word, start, n, score in placed:
        phones = (dec.lookup_word(word) or "AH").split()
        edges = np.linspace(start, start + n, len(phones) + 1).round().astype(int)
        out.append((word, start, n, score, [(ph, int(a), int(max(1, b - a)))
                                            for ph, a, b in zip(phones, edges[:-1], edges[1:], strict=True)]))
    return out


def _untranscribed(samples: np.ndarray, spans: list[tuple[float, float]]) -> str:
    """Where the longest stretch of speech outside the words' `spans` lies ('3.8 s of speech at 11.1 s, after the
    last word'), or '' when none lasts EXTRA_SPEECH_S. Speech: 20 ms windows 12 dB over the recording's noise floor
    (its quietest tenth) and within 20 dB of its speech level, so room noise and an echo's tail do not count."""
    win = RATE // 50
    n = len(samples) // win
    if n == 0 or not spans:
        return ""
    rms = np.sqrt(np.mean(samples[:n * win].astype(np.float64).reshape(n, win) ** 2, axis=1))
    floor, level = float(np.percentile(rms, 10)), float(np.percentile(rms, 90))
    loud = rms > max(floor * 10 ** (12 / 20), level * 0.1, 1e-4)
    # The speech inside each stretch between words (and before the first, after the last), pauses within it
    # included: other sentences have pauses of their own.
    edges = [0.0] + [x for span in spans for x in span] + [n / 50]
    best, at = 0, 0.0
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        k0, k1 = int(np.ceil(a * 50)), int(b * 50)
        said = int(loud[k0:k1].sum()) if k1 > k0 else 0
        if said > best:
            best, at = said, float(k0 + np.argmax(loud[k0:k1])) / 50
    if best < EXTRA_SPEECH_S * 50:
        return ""
    place = ("after the last word" if at >= spans[-1][1] else "before the first word" if at < spans[0][0]
             else "between the script's words")
    return f"{best / 50:.1f} s of speech at {at:.1f} s, {place}"


def _timings(aligned, tokens: list[str], owner: list[int], duration: float, matched: float) -> Alignment:
    words, phonemes = [], []
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for i, (_, start, dur, _, phones) in enumerate(aligned):
        k = owner[i]
        first.setdefault(k, start * FRAME_S)
        last[k] = (start + dur) * FRAME_S
        for name, p0, pdur in phones:
            phonemes.append(Timed(espeak_symbol(name), p0 * FRAME_S, min(duration, (p0 + pdur) * FRAME_S)))
    for k, tok in enumerate(tokens):
        if k in first:
            words.append(Timed(tok, first[k], min(duration, last[k])))
    return Alignment(words=words, phonemes=phonemes, duration=duration, matched=matched)


def voiceover_parts(words: list[Timed], *, duration: float, min_seconds: float = 2.0,
                    max_seconds: float = 10.0) -> list[tuple[float, float, int, int]]:
    """(start, end, first word, end word exclusive) per part: cut only in the pauses between words (in the middle of
    each pause), each part between min and max seconds where the speech allows (one word longer than max is a part
    of its own), preferring sentence ends and long pauses; the first part starts at 0, the last ends at
    `duration`. Dynamic programming over the word gaps: the cost of a cut is how short its pause is; a part under
    the minimum only where nothing else fits (a 1.5 s recording, a short word next to an overlong one)."""
    n = len(words)
    if n == 0:
        return [(0.0, duration, 0, 0)]
    cut_at = [0.0] + [(words[i - 1].end + words[i].start) / 2 for i in range(1, n)] + [duration]
    gap = [0.0] + [max(0.0, words[i].start - words[i - 1].end) for i in range(1, n)] + [1.0]

    def penalty(i: int, j: int) -> float | None:  # words i..j-1 as one part: None when not allowed
        length = cut_at[j] - cut_at[i]
        if length > max_seconds:
            return 0.0 if j == i + 1 else None  # one word longer than the maximum is a part of its own
        return 0.0 if length >= min_seconds else 1000.0  # too short only where nothing else fits

    inf = float("inf")
    best = [inf] * (n + 1)
    prev = [-1] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            if cut_at[j] - cut_at[i] > max_seconds and j > i + 1:
                break
            extra = penalty(i, j)
            if best[i] < inf and extra is not None:
                cost = best[i] + extra + (0.0 if j == n else 1.0 / (0.02 + gap[j])) + 0.01 * (cut_at[j] - cut_at[i])
                if cost < best[j]:
                    best[j], prev[j] = cost, i
    cuts, j = [], n
    while j > 0:
        cuts.append(j)
        j = prev[j]
    bounds = [0, *reversed(cuts)]
    return [(round(cut_at[a], 3), round(cut_at[b], 3), a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
