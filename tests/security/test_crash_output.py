"""A command that crashes shows where, never what its variables hold: the traceback of `studio up` failing after
it built its runtime printed the policy key whole (`key=b'...'` among the frame's locals), to the terminal and,
under systemd, to the journal. Anyone holding that key can stamp, sign and watermark a clip as genuine."""

from __future__ import annotations

import os
import subprocess
import sys

from studio.config import Settings
from studio.keys import init_all_keys, load_key
from studio.runtime import build_runtime

# `studio up` as its console script runs it, with the stack's start failing on something no one foresaw.
CRASH = """
import sys
import workers.stack.embedded as embedded
from api.cli import main

def start(self):
    raise ZeroDivisionError("a bug no one foresaw")

embedded.Stack.start = start
sys.argv = ["studio", "up"]
main()
"""


def test_a_crash_names_the_frame_and_never_the_policy_key(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(data), COLUMNS="200")
    res = subprocess.run([sys.executable, "-c", CRASH], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert "ZeroDivisionError" in out and "a bug no one foresaw" in out and "stack.start()" in out
    key = load_key(Settings(data_dir=str(data))).decode()
    assert len(key) >= 32
    assert key[:16] not in out  # not even the part a truncated repr would show


def test_the_runtime_s_repr_leaves_the_key_out(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    init_all_keys(settings)
    rt = build_runtime(settings)
    try:
        assert rt.key and rt.key.decode()[:16] not in repr(rt)
    finally:
        rt.engine.dispose()
