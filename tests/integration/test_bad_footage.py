"""Bad footage is refused by `studio avatar create` with a message naming the problem, and leaves no
avatar row and no files behind. Uses the real CLI, ffmpeg and mediapipe; no services needed."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import STUDIO, studio_env

pytestmark = pytest.mark.slow


def _create(tmp: Path, footage: Path) -> subprocess.CompletedProcess:
    env = studio_env(tmp / "data")
    env["COLUMNS"] = "200"  # rich wraps at the terminal width; keep messages on one line for the asserts
    subprocess.run([STUDIO, "keys", "init"], env=env, capture_output=True, timeout=120, check=True)
    return subprocess.run([STUDIO, "avatar", "create", "--name", "Ava", "--footage", str(footage)],
                          env=env, capture_output=True, text=True, timeout=300)


def _assert_nothing_left(tmp: Path) -> None:
    data = tmp / "data"
    db = sqlite3.connect(data / "studio.db")
    assert db.execute("SELECT count(*) FROM avatar").fetchone()[0] == 0
    leftovers = [p for p in (data / "bundles").rglob("*")] if (data / "bundles").exists() else []
    assert leftovers == [], f"files left behind: {leftovers}"


def _silent_copy(src: Path, dest: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-f", "lavfi", "-i",
                    "anullsrc=r=48000:cl=stereo", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                    "-shortest", str(dest)], check=True, timeout=120)
    return dest


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not_video", "not a readable video"),
        ("truncated", "truncated"),
        ("no_audio", "no audio track"),
        ("silent", "audio track is silent"),
        ("no_face", "no face found"),
        ("two_faces", "two or more faces"),
        ("too_short", "must be 30–300 s"),
    ],
)
def test_refused_with_reason_and_nothing_left(case, expected, tmp_path, small_footage):
    if case == "not_video":
        footage = tmp_path / "footage.mp4"
        footage.write_text("this is a shopping list, not a video\n" * 50)
    elif case == "truncated":
        good = small_footage().read_bytes()
        footage = tmp_path / "cut.mp4"
        footage.write_bytes(good[: len(good) * 2 // 5])
    elif case == "no_audio":
        footage = small_footage(with_audio=False)
    elif case == "silent":
        footage = _silent_copy(small_footage(with_audio=False), tmp_path / "silent.mp4")
    elif case == "no_face":
        footage = small_footage(faces=0)
    elif case == "two_faces":
        footage = small_footage(faces=2)
    else:
        footage = small_footage(seconds=10.0)
    res = _create(tmp_path, footage)
    assert res.returncode == 2, f"expected refusal, got {res.returncode}:\n{res.stdout}\n{res.stderr}"
    message = " ".join(res.stderr.split())
    assert "refused" in message and expected in message, message
    assert footage.name in message  # the message names the file it is about
    _assert_nothing_left(tmp_path)


def test_good_footage_builds_a_complete_bundle(tmp_path, small_footage):
    import json

    from studio.storage import sha256_file

    res = _create(tmp_path, small_footage())
    # The small footage is 360x640; the default profile is 720x1280, so the bundle is upscaled to it.
    assert res.returncode == 0, res.stdout + res.stderr
    db = sqlite3.connect(tmp_path / "data" / "studio.db")
    (avatar_id, bundle), = db.execute("SELECT id, bundle_path FROM avatar").fetchall()
    bundle = tmp_path / "data" / bundle  # a store key, under the data directory
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    assert manifest["avatar_id"] == avatar_id
    for name, digest in manifest["files"].items():
        assert sha256_file(Path(bundle) / name) == digest, f"{name} does not match its manifest hash"
    assert {"base.mp4", "mouths.npy", "units.json", "base_track.json"} <= set(manifest["files"])
    kinds = [k for (k,) in db.execute("SELECT kind FROM auditevent")]
    assert kinds == ["avatar.created"]
