"""mediapipe's native start-up notes stay off the screen and out of the logs, and nothing else written to stderr
is lost: `studio demo` printed "Created TensorFlow Lite XNNPACK delegate", "All log messages before
absl::InitializeLog()", three "inference_feedback_manager.cc" warnings and protobuf's GetPrototype notice in the
middle of its consent check (and every ingest worker's log held them)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from workers.media.face import NATIVE_NOISE, native_notes_held_back

NOTE = b"W0000 00:00:1796671124.649588   30660 inference_feedback_manager.cc:114] Feedback manager requires a model\n"


def test_only_the_start_up_notes_are_held_back_and_the_rest_passes_in_order(capfd):
    os.write(2, b"before\n")
    with native_notes_held_back():
        os.write(2, b"a real problem\n")
        os.write(2, NOTE)
        with native_notes_held_back():  # nested: the inner one's lines reach the outer one, then stderr
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nanother problem\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err.splitlines() == ["before", "a real problem", "another problem", "after"]


def test_a_held_back_stderr_is_given_back_when_the_block_fails(capfd):
    with pytest.raises(ZeroDivisionError), native_notes_held_back():
        os.write(2, b"what went wrong\n")
        1 / 0  # noqa: B018
    os.write(2, b"after\n")
    assert capfd.readouterr().err.splitlines() == ["what went wrong", "after"]


@pytest.mark.slow
def test_face_analysis_and_the_consent_mesh_print_no_start_up_notes(small_footage):
    """In a fresh process (the notes come once per graph and process): a face analyser and the consent check's
    mesh on frames with a face write nothing to stderr."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from workers.media.face import FaceAnalyzer, face_mesh\n"
        "from workers.media.probe import iter_frames\n"
        "a = FaceAnalyzer()\n"
        "with face_mesh(static_image_mode=True, max_num_faces=2, refine_landmarks=True) as mesh:\n"
        "    for i, frame in iter_frames(Path(sys.argv[1])):\n"
        "        assert a.mouth(frame) is not None and a.detect(frame)\n"
        "        assert mesh.process(frame).multi_face_landmarks\n"
        "        if i == 3:\n"
        "            break\n"
        "print('faces found')\n")
    run = subprocess.run([sys.executable, "-c", code, str(small_footage(seconds=8.0))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "faces found", run.stderr
    assert not [n for n in (*NATIVE_NOISE, "GetPrototype") if n in run.stderr], run.stderr
    assert run.stderr.strip() == "", run.stderr
