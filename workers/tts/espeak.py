"""Speech from eSpeak NG through ctypes: audio plus word and phoneme timings from its event stream.

libespeak-ng keeps all of its state in globals and is not thread-safe, so there is one engine per
process, every call goes through one lock, and voice and rate are set again on each call.
Repeated calls give the same words and phonemes, but not the same samples, and sentence pauses can
differ by up to ~50 ms: the library carries state from one call to the next (a static pitch-flutter
index in its wave generator, and more) that its API cannot reset. Each result is self-consistent.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import re
import threading
import unicodedata

import numpy as np

from workers.tts.base import Speech, SpeechError, Timed

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data directory calls exit() on our process
_EVENT_WORD, _EVENT_PHONEME = 1, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_RATE_MIN, _RATE_MAX = 80, 450

_TRAILING_SILENCE_S = 0.2
_AUDIBLE = 0.02  # fraction of the utterance's peak: espeak's pauses are near zero, quiet fricatives are not


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class _Engine:
    """The process's one libespeak-ng: loads it, and collects audio and events during a synth."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
        except OSError:
            raise SpeechError("libespeak-ng not found: install espeak-ng (apt package espeak-ng)") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                     _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise SpeechError("espeak-ng failed to initialise: reinstall espeak-ng (apt package espeak-ng)")
        self.lib, self.sample_rate = lib, rate
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, float, str]] = []  # (type, text index, seconds, phoneme)
        self._callback = _Callback(self._collect)  # held here so ctypes does not free it
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n, events) -> int:
        if n > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != 0:  # the list ends with espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type in (_EVENT_WORD, _EVENT_PHONEME):
                name = e.id.string.decode("ascii", "replace") if e.type == _EVENT_PHONEME else ""
                # text_position counts characters from 1; 0 marks events espeak could not place.
                self.events.append((e.type, e.text_position - 1, e.audio_position / 1000, name))
            i += 1
        return 0  # 0 = keep synthesising

    def set_voice(self, voice: str, words_per_minute: int) -> None:
        # Names match voice files ('en-us', 'en-us+f3'); like the espeak-ng CLI, fall back to a
        # language match, without which 'en-gb' (file 'gmw/en') is not found.
        if not voice or (self.lib.espeak_SetVoiceByName(voice.encode()) != 0
                         and self.lib.espeak_SetVoiceByProperties(_Voice(languages=voice.encode())) != 0):
            raise SpeechError(f"espeak-ng has no voice {voice!r} (list them with `espeak-ng --voices`)")
        self.lib.espeak_SetParameter(_RATE, words_per_minute, 0)

    def synth(self, text: str) -> tuple[np.ndarray, list[tuple[int, int, float, str]]]:
        self.chunks, self.events = [], []
        data = text.encode("utf-8", "replace")  # '?' for a lone surrogate keeps character positions
        if self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
            raise SpeechError(f"espeak-ng failed to synthesise {_short(text)}")
        pcm = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0, self.events


_lock = threading.Lock()
_engine: _Engine | None = None


def _get_engine() -> _Engine:
    """Call with _lock held."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _speakable(s: str) -> bool:
    """Has a letter or digit. Symbols alone are not enough: espeak reads '$' or '♥' but not '<' or '|'."""
    return any(unicodedata.category(c)[0] in "LN" for c in s)


def _word_text(token: str) -> str:
    """The token without surrounding punctuation ('world,' -> 'world'), unless it is all punctuation
    ('&', which espeak reads as 'and')."""
    return token.strip("".join(c for c in token if unicodedata.category(c)[0] == "P")) or token


class EspeakTTS:
    def __init__(self, voice: str = "en-us", words_per_minute: int = 165) -> None:
        if not _RATE_MIN <= words_per_minute <= _RATE_MAX:
            raise ValueError(f"words_per_minute must be {_RATE_MIN}..{_RATE_MAX}, got {words_per_minute}")
        self.voice, self.words_per_minute = voice, words_per_minute
        with _lock:
            _get_engine().set_voice(voice, words_per_minute)  # fail here, not at the first line of a show

    def synthesize(self, text: str) -> Speech:
        if not text.strip():
            raise SpeechError(f"text is empty or whitespace-only: {_short(text)}")
        if not _speakable(text):
            raise SpeechError(f"text has no speakable characters (letters or digits): {_short(text)}")
        with _lock:
            engine = _get_engine()
            engine.set_voice(self.voice, self.words_per_minute)
            samples, events = engine.synth(text)
            rate = engine.sample_rate
        threshold = _AUDIBLE * float(np.abs(samples).max(initial=0.0))
        loud = np.flatnonzero(np.abs(samples) > threshold)
        if not loud.size:
            raise SpeechError(f"espeak-ng produced no audible speech for {_short(text)}")
        samples = samples[: min(len(samples), loud[-1] + 1 + int(_TRAILING_SILENCE_S * rate))]
        duration = len(samples) / rate
        phonemes = _phonemes(events, duration)
        words = _words(text, events, phonemes, samples, rate, threshold)
        if not words:
            raise SpeechError(f"espeak-ng reported no words for {_short(text)}")
        return Speech(samples=samples, sample_rate=rate, words=words, phonemes=phonemes)


def _phonemes(events: list[tuple[int, int, float, str]], duration: float) -> list[Timed]:
    """Each phoneme lasts until the next phoneme event. Pauses ('_', '_:') only end the one before;
    phonemes that espeak reports at the same ms as the next one (a merged transition) are dropped."""
    marks = [(t, name) for kind, _, t, name in events if kind == _EVENT_PHONEME]
    ends = [t for t, _ in marks[1:]] + [duration]
    return [Timed(name, t, min(end, duration)) for (t, name), end in zip(marks, ends, strict=True)
            if not name.startswith("_") and min(end, duration) > t]


def _words(text: str, events: list[tuple[int, int, float, str]], phonemes: list[Timed],
           samples: np.ndarray, rate: int, threshold: float) -> list[Timed]:
    # espeak's word events do not match the text's words one to one: '42' or '3/4/2021' give one
    # event per spoken word, 'well-known' or 'of the' only one, the word after a joined pair such
    # as 'a while' comes with the position of the pair plus one, and some events have no position.
    # An event that points exactly at the first character of a whitespace-separated token starts
    # that token; every other event continues the current one. Tokens without an event of their
    # own were spoken inside the one before, and share its time in proportion to their length.
    tokens = list(re.finditer(r"\S+", text))
    head = {m.start() + next((k for k, c in enumerate(m[0]) if unicodedata.category(c)[0] != "P"), 0): i
            for i, m in enumerate(tokens)}
    anchors: list[tuple[int, float]] = []  # (token index, start)
    for kind, pos, t, _ in events:
        i = head.get(pos) if kind == _EVENT_WORD else None
        if i is not None and set(tokens[i][0]) == {"-"} and i + 1 < len(tokens):
            i += 1  # in 'now - really' espeak places the event for 'really' on the '-'
        if i is not None and (not anchors or i > anchors[-1][0]):
            anchors.append((i, t))
    phoneme_starts = [p.start for p in phonemes]
    duration = len(samples) / rate
    words = []
    for k, (i, start) in enumerate(anchors):
        end = min(anchors[k + 1][1] if k + 1 < len(anchors) else duration, duration)
        # The word ends with its last phoneme, not at the next word, which may be a sentence pause later.
        last = bisect.bisect_left(phoneme_starts, end) - 1
        if last >= 0 and phoneme_starts[last] >= start:
            end = min(end, phonemes[last].end)
        first_sample = int(start * rate)
        loud = np.flatnonzero(np.abs(samples[first_sample: int(end * rate)]) > threshold)
        if loud.size:
            end = min(end, (first_sample + loud[-1] + 1) / rate)
        members = range(0 if k == 0 else i, anchors[k + 1][0] if k + 1 < len(anchors) else len(tokens))
        texts = [_word_text(tokens[j][0]) for j in members if j == i or _speakable(tokens[j][0])]
        edges = start + (end - start) * np.cumsum([0] + [len(w) for w in texts]) / sum(len(w) for w in texts)
        words += [Timed(w, float(a), float(b)) for w, a, b in zip(texts, edges, edges[1:], strict=False)]
    return words
