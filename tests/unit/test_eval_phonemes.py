"""The footage's own phonemes for `studio eval lipsync --phonemes`: the file is read with clear errors, the held-out
part's phonemes are cut out in its own time, and synthetic footage writes them only where they are known."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import STUDIO
from workers.eval.lipsync import _held_out, read_phonemes
from workers.media.probe import FootageError
from workers.media.synthface import make_demo_footage
from workers.tts.base import SpeechError, Timed


def _file(tmp_path, body) -> object:
    path = tmp_path / "phonemes.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def test_a_phonemes_file_is_read_as_timed_symbols(tmp_path):
    got = read_phonemes(_file(tmp_path, {"phonemes": [["h", 0.3, 0.38], ["aI", 0.38, 0.53]]}))
    assert got == [Timed("h", 0.3, 0.38), Timed("aI", 0.38, 0.53)]


@pytest.mark.parametrize(("body", "says"), [
    ("not json", "is not"),
    ({"words": []}, "is not"),
    ({"phonemes": [["h", 0.3]]}, "is not"),
    ({"phonemes": [["h", "soon", 1]]}, "is not"),
    ({"phonemes": []}, "lists no phonemes"),
    ({"phonemes": [["a", 1.0, 0.5]]}, r"'a' has times 1\.0-0\.5 s"),
    ({"phonemes": [["a", -1, 0.5]]}, r"'a' has times -1\.0-0\.5 s"),
    ({"phonemes": [["a", 0, "nan"]]}, r"'a' has times 0\.0-nan s"),
])
def test_a_bad_phonemes_file_is_a_clear_error_naming_it(tmp_path, body, says):
    path = _file(tmp_path, body)
    with pytest.raises(FootageError, match=says) as raised:
        read_phonemes(path)
    assert str(path) in str(raised.value)


def test_a_missing_phonemes_file_is_named(tmp_path):
    with pytest.raises(FootageError, match="nope.json: No such file"):
        read_phonemes(tmp_path / "nope.json")


def test_the_held_out_phonemes_are_in_its_own_time_and_cut_at_its_ends():
    said = [Timed("a", 0.0, 1.0), Timed("b", 13.9, 14.2), Timed("c", 15.0, 15.5), Timed("d", 19.8, 20.4),
            Timed("e", 20.5, 21.0)]
    got = _held_out(said, 14.0, 6.0)
    assert [p.text for p in got] == ["b", "c", "d"]
    assert got[0] == Timed("b", 0.0, pytest.approx(0.2))
    assert got[1] == Timed("c", pytest.approx(1.0), pytest.approx(1.5))
    assert got[2] == Timed("d", pytest.approx(5.8), 6.0)


def test_only_articulated_footage_writes_its_phonemes(tmp_path):
    with pytest.raises(ValueError, match="only for mouth='articulation' footage, not 'loudness'"):
        make_demo_footage(tmp_path / "f.mp4", seconds=1, width=64, height=64, phonemes_out=tmp_path / "p.json")
    with pytest.raises(SpeechError, match="no voice 'zz-nope'"):
        make_demo_footage(tmp_path / "f.mp4", seconds=1, width=64, height=64, voice="zz-nope")
    assert list(tmp_path.iterdir()) == []  # nothing made
    done = subprocess.run([STUDIO, "synth", "footage", str(tmp_path / "f.mp4"), "--seconds", "1", "--phonemes-out",
                           str(tmp_path / "p.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "only for mouth='articulation' footage" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_articulated_footage_writes_the_phonemes_that_shaped_its_mouth(tmp_path):
    out = make_demo_footage(tmp_path / "f.mp4", seconds=3, width=96, height=160, mouth="articulation",
                            phonemes_out=tmp_path / "p.json")
    phones = read_phonemes(tmp_path / "p.json")
    assert out.is_file() and len(phones) > 10
    assert phones[0].start >= 0.3 - 1e-6  # the footage opens on 0.3 s of silence
    assert all(a.end <= b.start + 1e-6 for a, b in zip(phones, phones[1:], strict=False))
    assert phones[-1].start < 3.0
