"""Recorded speech: decoding and checking a voice-over, forced alignment of a script to it, and phoneme
recognition for speech without a transcript. Everything runs offline on pocketsphinx (its en-us model ships in
the wheel)."""
