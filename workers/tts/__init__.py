"""Speech backends, chosen by the config field `tts.type`."""

from __future__ import annotations

from studio.config import TTSConfig
from workers.tts.base import SpeechError
from workers.tts.espeak import EspeakTTS

BACKENDS = {"espeak": EspeakTTS}


def make_tts(cfg: TTSConfig) -> EspeakTTS:
    try:
        cls = BACKENDS[cfg.type]
    except KeyError:
        raise SpeechError(f"unknown tts type {cfg.type!r}; known: {', '.join(BACKENDS)}") from None
    return cls(voice=cfg.voice, words_per_minute=cfg.words_per_minute)


def voice_language(voice: str) -> str:
    """The language an espeak-ng voice speaks, as a language tag (`en-us` -> `en`, `cmn` -> `zh`)."""
    primary = voice.split("-")[0].lower()
    return {"cmn": "zh", "yue": "zh"}.get(primary, primary)
