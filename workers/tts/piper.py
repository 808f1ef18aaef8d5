"""Speech from a Piper voice: a VITS model in ONNX (piper-tts runs it with onnxruntime), read from a local path.

`tts.type: piper` and `tts.voice_path: /srv/voices/en_US-lessac-medium.onnx` (its config beside it, `.onnx.json`,
as Piper's releases ship them). Nothing is downloaded: the model and its config are read from the path, and the
phonemizer is the espeak-ng data inside the piper-tts wheel.

Timings: a Piper model predicts each phoneme's duration before it makes the audio; piper-tts exposes those
durations (it patches a released model in memory to output them, `include_alignments`), so every phoneme's start
and end come from the model itself, not from a second guess. Piper's phonemes are IPA; the lips read them through
the same openness and spread tables as espeak-ng's (workers/renderers/footage.py), mapped here. Words are the
phoneme groups between spaces, in the text's order, for captions.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np

from workers.tts.base import Speech, SpeechError, Timed

# IPA vowels (and the glides that shape the lips) as the espeak-ng mnemonics the mouth tables read.
IPA_TO_ESPEAK = {
    "a": "a", "ɑ": "A", "æ": "a", "ɐ": "a", "ɒ": "0", "ʌ": "V", "ɔ": "O", "aɪ": "aI", "aʊ": "aU", "ɔɪ": "OI",
    "e": "e", "ɛ": "E", "ə": "@", "ɚ": "3", "ɜ": "3", "ɝ": "3", "o": "o", "eɪ": "eI", "oʊ": "oU",
    "i": "i", "ɪ": "I", "ᵻ": "I", "ɨ": "I", "u": "u", "ʊ": "U", "ʉ": "u", "j": "j", "w": "w",
}
_MARKS = {"ˈ", "ˌ", "ː", "ˑ", "̃", "̩", "̯", "̪", "ʰ", "ʲ", "ʷ"}  # stress, length, diacritics: part of a neighbour
_PAUSES = {",", ".", "!", "?", ";", ":", "-", "—", "…", "\"", "(", ")"}
_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
_LOCK = threading.Lock()  # the phonemizer (espeak-ng) keeps global state: one synthesis at a time per process


class PiperTTS:
    """One Piper voice, loaded once; `synthesize` gives audio with the model's own phoneme timings."""

    def __init__(self, *, voice_path: str | None, voice: str = "en-us", speaker: int | None = None,
                 length_scale: float | None = None):
        problems = model_problems(voice_path, voice)
        if problems:
            raise SpeechError("; ".join(problems))
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        self.voice_path = Path(voice_path)
        self.voice = PiperVoice.load(self.voice_path, include_alignments=True)
        self.sample_rate = int(self.voice.config.sample_rate)
        self.syn = SynthesisConfig(speaker_id=speaker, length_scale=length_scale)

    def synthesize(self, text: str) -> Speech:
        if not text.strip():
            raise SpeechError("nothing to say: the text is empty")
        with _LOCK:
            chunks = list(self.voice.synthesize(text, syn_config=self.syn, include_alignments=True))
        if not chunks:
            raise SpeechError(f"the Piper voice {self.voice_path.name} said nothing for {text[:40]!r}")
        samples, phonemes, at = [], [], 0
        for chunk in chunks:
            if chunk.phoneme_alignments is None:
                raise SpeechError(f"the Piper voice {self.voice_path.name} gives no phoneme durations, so the lips "
                                  "and captions cannot follow it; use a Piper voice exported with its duration "
                                  "output (every released Piper voice has one)")
            phonemes += _timed(chunk.phoneme_alignments, at, self.sample_rate)
            samples.append(np.asarray(chunk.audio_float_array, np.float32))
            at += len(samples[-1])
        words = _words(text, phonemes)
        return Speech(samples=np.concatenate(samples), sample_rate=self.sample_rate, words=words,
                      phonemes=[p for p in phonemes if p.text != " "])


def _timed(alignments, offset: int, rate: int) -> list[Timed]:
    """The model's phoneme durations as timed phonemes (espeak mnemonics for vowels), stress and length marks
    folded into the phoneme they belong to, sentence edges and punctuation as pauses ("_")."""
    out: list[Timed] = []
    at = offset
    for a in alignments:
        start, at = at, at + int(a.num_samples)
        sym = a.phoneme
        if sym in ("^", "$", "_") or sym in _PAUSES:
            out.append(Timed("_", start / rate, at / rate))
        elif sym in _MARKS and out and out[-1].text not in ("_", " "):
            out[-1] = Timed(out[-1].text, out[-1].start, at / rate)  # length or stress: the phoneme goes on
        elif sym in _MARKS:
            continue
        else:
            out.append(Timed(IPA_TO_ESPEAK.get(sym, sym), start / rate, at / rate))
    return out


def _words(text: str, phonemes: list[Timed]) -> list[Timed]:
    """Each word of `text` timed by its phoneme group (the groups between spaces); when the phonemizer made more or
    fewer groups than the text has words (a number read out, a contraction), the words share the groups' span."""
    words = _WORD.findall(text)
    groups: list[list[Timed]] = [[]]
    for p in phonemes:
        if p.text in (" ", "_"):  # a space, or a pause between sentences or at a comma
            groups.append([])
        else:
            groups[-1].append(p)
    groups = [g for g in groups if g]
    if not words or not groups:
        return []
    if len(groups) == len(words):
        return [Timed(w, g[0].start, g[-1].end) for w, g in zip(words, groups, strict=True)]
    start, end = groups[0][0].start, groups[-1][-1].end
    step = (end - start) / len(words)
    return [Timed(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(words)]


def model_problems(voice_path: str | None, voice: str = "en-us") -> list[str]:
    """What keeps a Piper voice at `voice_path` from speaking here: the path, its config, the model's inputs, and
    the language `tts.voice` names (the spoken disclosure's language); for config check and worker start."""
    from workers.tts import voice_language

    if not voice_path:
        return ["tts.voice_path is not set: the piper backend needs a local Piper voice (.onnx with its .onnx.json)"]
    path = Path(voice_path).expanduser()
    if not path.is_file():
        return [f"tts.voice_path {voice_path} does not exist or is not a file"]
    config = Path(f"{path}.json")
    try:
        data = json.loads(config.read_text())
        spoken = str(data["espeak"]["voice"])
        data["phoneme_id_map"], data["audio"]["sample_rate"]  # noqa: B018 - present, or KeyError below
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{config}: not a Piper voice config ({type(exc).__name__}: {exc}); a voice's .onnx.json goes "
                "beside its .onnx"]
    problems = []
    if voice_language(spoken) != voice_language(voice):
        problems.append(f"tts.voice {voice!r} speaks {voice_language(voice)!r}, the Piper voice {path.name} speaks "
                        f"{voice_language(spoken)!r}; set tts.voice to the voice's language ({spoken})")
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime says of the file, named
        return [*problems, f"tts.voice_path {voice_path}: onnxruntime cannot open it: {exc}"]
    inputs = {i.name for i in session.get_inputs()}
    missing = {"input", "input_lengths", "scales"} - inputs
    if missing:
        problems.append(f"tts.voice_path {voice_path} is not a Piper voice: it lacks the inputs "
                        f"{', '.join(sorted(missing))}")
    return problems
