"""A voice-over's check in a process of its own (workers.ingest.voiceover_apart) gives what the check gives in this
process (the same alignment, cuts and refusals, with the words named) and says so when its process dies. Real
espeak-ng, ffmpeg and pocketsphinx."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from workers.ingest.voiceover import VoiceoverRefused, check_voiceover
from workers.ingest.voiceover_apart import CheckFailed, check_voiceover_apart

pytestmark = pytest.mark.slow

TEXT = ("Meet the Glow Serum, a light serum for everyday skin care. It absorbs in seconds and layers well under "
        "sunscreen. Tap the cart below to see today's bundle.")
OTHER = "The weather in the mountains turned cold overnight, and the hikers waited for the morning train home."


def _checks() -> list:
    return [p for p in multiprocessing.active_children() if p.name == "voiceover-check"]


@pytest.fixture(scope="module")
def said(tmp_path_factory):
    d = tmp_path_factory.mktemp("apart")
    out = {}
    for name, text in (("script", TEXT), ("other", OTHER)):
        out[name] = d / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "150", "-w", str(out[name]), text], check=True,
                       capture_output=True)
    (d / "notes.wav").write_text("not audio at all\n" * 100)
    out["not_audio"] = d / "notes.wav"
    return out


def test_apart_gives_the_same_check_as_here_with_its_progress(said):
    steps = []
    apart = check_voiceover_apart(said["script"], TEXT, language="en", progress=lambda *a: steps.append(a))
    here = check_voiceover(said["script"], TEXT, language="en")
    assert apart.text == here.text and apart.aligned == here.aligned and apart.cuts == here.cuts
    assert np.array_equal(apart.samples, here.samples)
    assert steps[0] == ("decode", 0.0, 1.0) and steps[-1][0] == "align" and steps[-1][1] == steps[-1][2]
    assert not _checks()  # the child was waited for


@pytest.mark.parametrize("case", ["other", "not_audio"])
def test_apart_refuses_as_here_naming_the_words(said, case):
    with pytest.raises(VoiceoverRefused) as here:
        check_voiceover(said[case], TEXT, language="en")
    with pytest.raises(VoiceoverRefused) as apart:
        check_voiceover_apart(said[case], TEXT, language="en")
    assert str(apart.value) == str(here.value)
    assert (apart.value.missing, apart.value.extra) == (here.value.missing, here.value.extra)
    if case == "other":
        assert "sunscreen" in [w.lower() for w in apart.value.missing]


def test_a_check_whose_process_dies_says_so_and_leaves_no_process(said):
    """Killed from outside (the OOM killer, an operator): the API answers with what happened instead of waiting."""
    started = threading.Event()
    failure: list[BaseException] = []

    def check():
        try:
            check_voiceover_apart(said["script"], TEXT, language="en", progress=lambda *a: started.set())
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    worker = threading.Thread(target=check)
    worker.start()
    assert started.wait(30), "the check never reported progress"
    children = _checks()
    assert len(children) == 1, children
    os.kill(children[0].pid, signal.SIGKILL)
    worker.join(30)
    assert not worker.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], CheckFailed), failure
    assert "exit code -9" in str(failure[0])
    deadline = time.monotonic() + 5
    while _checks() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _checks()


def test_apart_refuses_text_in_a_language_it_has_no_model_for(said):
    with pytest.raises(VoiceoverRefused, match="de"):
        check_voiceover_apart(said["script"], "Guten Tag, das ist ein Serum.", language="de")


def test_a_recording_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(VoiceoverRefused, match="cannot read the recording: No such file"):
        check_voiceover_apart(Path(tmp_path / "gone.wav"), TEXT, language="en")


def test_a_check_of_the_scripts_older_text_is_not_stored(said, tmp_path):
    """The API checks before it opens its transaction: a script edited meanwhile must not get a recording of its
    old text (an edit drops the script's recording, POLICY C7)."""
    from studio.db import session_scope
    from studio.models import Script, Voiceover
    from tests.integration.conftest import agency_script, new_runtime
    from workers.ingest.voiceover import take_voiceover

    rt = new_runtime(tmp_path)
    checked = check_voiceover_apart(said["script"], TEXT, language="en")
    ids = agency_script(rt, TEXT.replace("today's bundle", "the bundle"))
    with session_scope(rt.engine) as s:
        script = s.get(Script, ids["script"])
        with pytest.raises(VoiceoverRefused, match="edited while its recording was checked"):
            take_voiceover(rt, s, script, said["script"], speaker="actor", creator_id=None, actor_name="Sam",
                           uploaded_by="x", checked=checked)
        assert s.exec(select(Voiceover)).all() == []
    assert not (rt.data.root / "voiceovers").exists()


def test_checks_at_once_are_bounded(said, monkeypatch):
    """Uploads that arrive together take turns past one check per core, leaving the API its cores."""
    import workers.ingest.voiceover_apart as apart

    monkeypatch.setattr(apart, "_running", threading.BoundedSemaphore(1))
    most, done = [0], []
    workers = [threading.Thread(target=lambda: done.append(check_voiceover_apart(said["script"], TEXT,
                                                                                   language="en")))
               for _ in range(2)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        most[0] = max(most[0], len(_checks()))
        time.sleep(0.005)
    assert len(done) == 2 and most[0] == 1, (len(done), most)
