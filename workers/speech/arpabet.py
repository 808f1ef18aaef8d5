"""pocketsphinx's phones (CMU ARPAbet) as the espeak-ng symbols the renderers' phoneme path reads
(workers.renderers.footage.phoneme_openness / phoneme_spread), so recorded and recognised speech drive the lips
exactly as our own TTS does."""

from __future__ import annotations

ARPABET_TO_ESPEAK = {
    # vowels: open, mid, close, diphthongs
    "AA": "A:", "AE": "a", "AH": "V", "AO": "O:", "AW": "aU", "AY": "aI", "EH": "E", "ER": "3:",
    "EY": "eI", "IH": "I", "IY": "i:", "OW": "oU", "OY": "OI", "UH": "U", "UW": "u:",
    # consonants
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t",
    "TH": "T", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "Z",
}
SILENCE = "_"


def espeak_symbol(phone: str) -> str:
    """The espeak-ng symbol for one pocketsphinx phone; silence and noise phones (SIL, +NSN+, +SPN+ ...) and
    anything unknown are a pause, '_', which keeps the mouth closed."""
    return ARPABET_TO_ESPEAK.get(phone.upper().rstrip("012"), SILENCE)
