"""A synthetic consent video: a synthface creator reading a code phrase with espeak-ng, as a phone would record
it (H.264 + AAC). Used by `studio demo`, whose creator is no real person, and by the consent tests. The
variants (another face, a still, no face, two faces, silence, no audio track) are the refusal cases."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from workers.media.synthface import render_face_frame

W, H, FPS = 360, 640, 25


def espeak(text: str, wav: Path, *, voice: str = "en-us", wpm: int = 160) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav), "--", text], check=True,
                   capture_output=True, timeout=60)
    return wav


def make_consent_video(path: Path, *, text: str | None, seed: int = 7, t0: float = 300.0, voice: str = "en-us",
                       wpm: int = 160, faces: int = 1, still: bool = False, with_audio: bool = True,
                       min_seconds: float = 4.0, width: int = W, height: int = H) -> Path:
    """A synthface "recording": seed `seed`'s face from time `t0` (away from the footage's 0 s, as a new
    recording would be) whose lips follow espeak-ng reading `text` (silence when None), 0.6 s of silence
    before and after; `still` repeats the first frame. H.264 + AAC like a phone recording, `width`x`height`
    (the demo records at its footage's size: the face check compares geometry and colour measured at that
    size, and a 360x640 clip against 720x1280 footage measured 0.42-0.89 apart, where the limit is 0.8)."""
    rate, speech = 22050, np.zeros(0, np.int16)
    if text is not None:
        with wave.open(str(espeak(text, path.with_suffix(".voice.wav"), voice=voice, wpm=wpm))) as w:
            rate, speech = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    pad = np.zeros(int(0.6 * rate), np.int16)
    audio = np.concatenate([pad, speech, pad])
    audio = np.concatenate([audio, np.zeros(max(0, int(min_seconds * rate) - len(audio)), np.int16)])
    frames = int(len(audio) / rate * FPS)
    hop = rate / FPS
    rms = np.array([np.sqrt(np.mean((audio[int(i * hop):int((i + 1) * hop)] / 32768.0) ** 2)) for i in range(frames)])
    mouth = np.clip(rms / max(np.percentile(rms, 95), 1e-6), 0, 1) * (rms > 0.01)
    wav = path.with_suffix(".mix.wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(audio.tobytes())
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(FPS), "-i", "pipe:0"]
    if with_audio:
        cmd += ["-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "96k", "-ar", "48000"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-shortest",
            "-movflags", "+faststart", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    first = render_face_frame(t0, 0.0, width=width, height=height, seed=seed, faces=faces)
    for i in range(frames):
        frame = first if still else render_face_frame(t0 + i / FPS, float(mouth[i]), width=width, height=height,
                                                       seed=seed, faces=faces)
        proc.stdin.write(frame.tobytes())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    return path
