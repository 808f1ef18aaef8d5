"""The package installs anywhere: a wheel built from the repository's tracked files, installed into a fresh
virtual environment outside it, runs from any directory with its configs, policy profiles, destination and
script rules, migrations and web pages as package data, and without torch (the `gpu` extra)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, served
from tests.media_helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of someone who never saw the repository: no PYTHONPATH, no STUDIO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with only the wheel (and its dependencies) installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is not part of it
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheels = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(src)], check=True, timeout=300)
    (wheel,) = wheels.glob("ethical_clone_studio-*.whl")
    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-c",
                          str(ROOT / "constraints.txt"), str(wheel)], capture_output=True, text=True, timeout=900,
                         env=_clean_env())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return venv / "bin"


def test_wheel_runs_version_and_config_check_from_any_directory_without_torch(installed, tmp_path):
    env = _clean_env()
    version = subprocess.run([str(installed / "studio"), "--version"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().endswith("0.1.0"), version.stdout
    check = subprocess.run([str(installed / "studio"), "config", "check"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    torch = subprocess.run([str(installed / "python"), "-c", "import torch"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr
    listed = subprocess.run([str(installed / "pip"), "list", "--format=freeze"], env=env, capture_output=True,
                            text=True, timeout=120).stdout.lower()
    assert not [line for line in listed.splitlines() if line.startswith(("torch", "nvidia-", "ffmpeg-python"))]
    # The packaged defaults are what config check read: nothing of the repository is on the path.
    where = subprocess.run([str(installed / "python"), "-c", "import configs, studio; print(configs.__file__, "
                            "studio.__file__)"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout


def test_wheel_runs_studio_up_from_any_directory(installed, tmp_path):
    """`studio up` from an unrelated directory: migrations, nginx, redis, workers and the web pages all come
    from the installed package."""
    ports = {"API": free_port(), "REDIS": free_port(), "RTMP": free_port(), "HTTP": free_port()}
    data = tmp_path / "data"
    env = _clean_env(STUDIO_DATA_DIR=str(data), **{f"STUDIO_{k}_PORT": str(v) for k, v in ports.items()})
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.Popen([str(installed / "studio"), "up"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        page = served(proc, f"http://127.0.0.1:{ports['API']}/login", timeout=120)
        assert page is not None and b"<html" in page.lower(), proc.stdout.read() if proc.poll() is not None else ""
        tables = {row[0] for row in sqlite3.connect(data / "studio.db").execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"alembic_version", "segment", "consent"} <= tables
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0
