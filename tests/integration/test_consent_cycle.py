"""Acceptance of the consent lifecycle from the CLI (`make cycle`): on a real `studio up` stack, a synthetic
creator's avatar is built, consent granted with a consent video and approved by review, a show scheduled and aired,
and the consent revoked; the clone is off air within 2 s, its files are gone and the audit log verifies."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_grant_schedule_air_revoke_from_the_cli(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "infra" / "consent_cycle.py"), "--data", str(tmp_path),
                          "--air", "6"], capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for step in ("consent phrase", "consent grant", "consent review approve", "show create", "consent revoke",
                 "audit verify"):
        assert f"$ studio {step}" in out
    off = float(re.search(r"off air (\d+\.\d+) s after `studio consent revoke`", out).group(1))
    assert 0 < off <= 2.0
    assert "files of the clone left on disk: 0" in out and "audit log: intact" in out
    granted = re.search(r'"phrase_score": ([\d.]+), "phrase_heard": "([a-z ]+)"', out)
    assert float(granted.group(1)) >= 0.5
