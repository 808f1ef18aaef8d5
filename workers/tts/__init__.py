"""Speech backends, chosen by the config field `tts.type`: `espeak` (espeak-ng) and `piper` (a local Piper voice)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from studio.config import TTSConfig
from workers.tts.base import Speech, SpeechError
from workers.tts.espeak import EspeakTTS

BACKENDS = ("espeak", "piper")
# Piper voices kept loaded in one process, the least recently used closed first: a worker rendering for many
# avatars, each with its own voice (an ONNX session of 20-120 MB), would otherwise keep every voice it ever used.
MAX_LOADED_VOICES = 4
_loaded: OrderedDict[TTSConfig, object] = OrderedDict()
_lock = threading.Lock()


def make_tts(cfg: TTSConfig):
    """The speech backend `cfg.type` names, with `synthesize(text) -> Speech`; a Piper voice is loaded once per
    process and kept while it is among the MAX_LOADED_VOICES used last."""
    if cfg.type == "espeak":
        return EspeakTTS(voice=cfg.voice, words_per_minute=cfg.words_per_minute)
    if cfg.type == "piper":
        from workers.tts.piper import PiperTTS

        with _lock:
            found = _loaded.get(cfg)
            if found is None:
                found = _loaded[cfg] = PiperTTS(voice_path=cfg.voice_path, voice=cfg.voice, speaker=cfg.speaker,
                                                length_scale=cfg.length_scale)
                while len(_loaded) > MAX_LOADED_VOICES:
                    _loaded.popitem(last=False)  # a render still holding it keeps it until it is done
            _loaded.move_to_end(cfg)
            return found
    raise SpeechError(f"unknown tts type {cfg.type!r}; known: {', '.join(BACKENDS)}")


def tts_problems(cfg: TTSConfig) -> list[str]:
    """What keeps the configured speech backend from speaking here (a Piper voice's path, config, inputs,
    language), for `studio config check` and render worker start; empty when nothing."""
    if cfg.type == "piper":
        from workers.tts.piper import model_problems

        return model_problems(cfg.voice_path, cfg.voice)
    return []


def voice_language(voice: str) -> str:
    """The language an espeak-ng voice speaks, as a language tag (`en-us` -> `en`, `cmn` -> `zh`)."""
    primary = voice.split("-")[0].lower()
    return {"cmn": "zh", "yue": "zh"}.get(primary, primary)


__all__ = ["BACKENDS", "Speech", "SpeechError", "make_tts", "tts_problems", "voice_language"]
