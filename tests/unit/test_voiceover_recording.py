"""workers.speech.recording: a voice-over upload decoded by the real ffmpeg, and every kind of bad file refused with
its reason (not audio, empty, silent, clipped, too short, too long), whatever its name says it is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers.speech.recording import RATE, RecordingError, load_recording

pytestmark = pytest.mark.skipif(subprocess.run(["which", "sox"], capture_output=True).returncode != 0,
                                reason="sox is installed by `make setup`")
SAID = "Paid partnership with Lumen Labs. Meet the Glow Serum."


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("recordings")
    wav = d / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb+f3", "-w", str(wav), SAID], check=True, capture_output=True)
    out = {"wav": wav}
    codecs = {"mp3": [], "m4a": ["-c:a", "aac"], "ogg": ["-c:a", "libopus"], "webm": ["-c:a", "libopus"]}
    for name, args in codecs.items():
        out[name] = d / f"speech.{name}"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), *args, str(out[name])], check=True)
    # a video file's sound is a recording too (a phone's screen recording)
    out["mp4"] = d / "speech.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=4", "-i", str(wav),
                    "-shortest", "-c:v", "libx264", "-c:a", "aac", str(out["mp4"])], check=True)
    sox = {"clipped": [str(wav), str(d / "clipped.wav"), "gain", "30"],
           "silent": ["-n", "-r", str(RATE), str(d / "silent.wav"), "trim", "0", "3"],
           "long": [str(wav), str(d / "long.wav"), "repeat", "40"],
           "short": [str(wav), str(d / "short.wav"), "trim", "0", "0.5"]}
    for name, args in sox.items():
        subprocess.run(["sox", *args], check=True, capture_output=True)
        out[name] = d / f"{name}.wav"
    (d / "text.wav").write_text("RIFF not really a wave file\n")
    out["text"] = d / "text.wav"
    (d / "empty.wav").write_bytes(b"")
    out["empty"] = d / "empty.wav"
    out["png"] = d / "image.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1",
                    "-f", "image2", "-c:v", "png", str(out["png"])], check=True)
    out["video only"] = d / "video.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=blue:s=64x64:d=2", "-c:v", "libx264",
                    str(out["video only"])], check=True)
    # Files that name other files on the server, as an attacker would upload them to hear another creator's
    # recording back as their own: ffmpeg follows an HLS playlist to an MP3 (the WAV above its extension check
    # refuses) and a concat list to a file beside it.
    out["flac"] = d / "speech.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), str(out["flac"])], check=True)
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{out['mp3']}\n#EXT-X-ENDLIST\n"
    out["playlist"] = d / "list.wav"
    out["playlist"].write_text(hls)
    out["concat"] = d / "concat.mp3"
    out["concat"].write_text("ffconcat version 1.0\nfile speech.mp3\n")
    # a NUL byte after the playlist: no longer text to a sniffer, still a playlist to ffmpeg's hls demuxer
    out["binary playlist"] = d / "binary.m4a"
    out["binary playlist"].write_bytes(hls.encode() + b"\x00\n")
    return out


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "ogg", "webm", "mp4", "flac"])
def test_voiceover_formats_decode_to_16k_mono(files, kind):
    samples = load_recording(files[kind])
    reference = load_recording(files["wav"])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(reference)) / RATE < 0.1  # the same speech, give or take a codec's padding


@pytest.mark.parametrize(("kind", "reason"), [
    ("clipped", r"clipped: \d+\.\d% of its samples"),
    ("silent", r"silent: its speech level is -\d+ dBFS"),
    ("long", r"is \d+\.\d s long; at most 120 s"),
    ("short", r"0\.50 s long; at least 1 s"),
    ("text", r"not an audio file: ffmpeg cannot read it"),
    ("empty", r"empty file \(0 bytes\)"),
    ("png", r"in a format taken here .*: ffmpeg reads it as 'png_pipe', which is refused"),
    ("video only", r"not an audio file: ffmpeg found no audio stream in it \(video\)"),
    ("playlist", r"this is an HLS playlist \(\.m3u8\), which names other files or URLs; upload the audio file"),
    ("concat", r"this is a concat list, which names other files; upload the audio file itself"),
    ("binary playlist", r"not an audio file in a format taken here \(WAV, MP3, M4A/MP4, WebM, Ogg or FLAC\): ffmpeg "
                        r"reads it as 'hls', which is refused"),
])
def test_voiceover_bad_recordings_are_refused_with_the_reason(files, kind, reason):
    with pytest.raises(RecordingError, match=reason):
        load_recording(files[kind])


def test_voiceover_decoding_is_bounded_by_the_limit(files):
    """A stream with no duration in its header (a browser's WebM) is cut at the limit while decoding: refused."""
    with pytest.raises(RecordingError, match="longer than 2 s|is 3.* s long; at most 2 s"):
        load_recording(files["webm"], max_seconds=2.0)
