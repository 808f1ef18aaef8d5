"""Ingest: what comes in from people. A creator's reference footage becomes a clone bundle (footage), and a recorded
voice-over is checked, aligned to its script and cut into parts (voiceover)."""
