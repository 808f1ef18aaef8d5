"""What the `studio` command line prints that is not its own words (paths, ids typed by the operator, names and
reasons from the database, which creators and reviewers typed) is shown as it is, never read as rich markup: a
'[a]' in a path is not swallowed as a style, a '[/x]' does not crash the command with a MarkupError (possibly after
it did its work), and a '[link=...]' in a creator's signed name gives no clickable terminal hyperlink (OSC 8) in an
operator's terminal. Runs in process on SQLite in a temporary data directory; no services."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import api.cli
import api.cli_base
import api.cli_catalog
from api.cli import app
from tests.conftest import FULL_SCOPE

LINK = "[link=https://evil.example]Open[/link]"
EVIL = f"{LINK} [/]"
OSC8 = "\x1b]8;"
SGR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def terminal(monkeypatch):
    """The commands' consoles as on an operator's colour terminal (where rich writes hyperlinks), wide enough that
    nothing wraps. Each writes to whatever sys.stdout / sys.stderr is when it prints (the runner's capture)."""
    out = Console(force_terminal=True, color_system="truecolor", width=400)
    err = Console(stderr=True, soft_wrap=True, force_terminal=True, color_system="truecolor", width=400)
    for module in (api.cli_base, api.cli, api.cli_catalog):
        monkeypatch.setattr(module, "console", out)
        monkeypatch.setattr(module, "err", err)


def run(*argv: str):
    res = CliRunner().invoke(app, list(argv))
    # A MarkupError is an exception, not an exit: name it so a failure says what happened.
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.exception, res.output)
    return res


def text(res) -> str:
    """The output without colours (the hyperlinks, if any, stay)."""
    return SGR.sub("", res.output)


@pytest.fixture
def studio(tmp_path) -> Path:
    """A config on its own data directory (SQLite) with its keys and schema made, as `studio keys init` and
    `studio db upgrade` make them."""
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    for argv in (["keys", "init"], ["db", "upgrade"]):
        res = run(*argv, "--config", str(config))
        assert res.exit_code == 0, res.output
    return config


@pytest.mark.parametrize("name", ["take[a].wav", "take[/x].wav", "take[bold].wav"])
def test_a_missing_recording_is_named_as_it_is(tmp_path, terminal, name):
    missing = tmp_path / "rec" / name
    res = run("script", "voiceover", "some-script", str(missing), "--actor", "Sam Reed")
    assert res.exit_code == 2, res.output
    assert f"refused: recording {missing} does not exist" in text(res)


def test_keys_init_names_a_data_directory_with_brackets_as_it_is(tmp_path, terminal):
    data = tmp_path / "data[/x][a]"
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data)}))
    res = run("keys", "init", "--config", str(config))
    assert res.exit_code == 0, res.output
    assert f"policy key: {data}" in text(res)


@pytest.mark.parametrize("name", [EVIL, LINK])
def test_a_creators_name_is_printed_as_it_is(studio, terminal, name):
    res = run("creator", "add", name, "--config", str(studio))
    assert res.exit_code == 0, res.output
    assert OSC8 not in res.output and f": {name}" in text(res)


def test_the_review_list_and_a_rejection_show_what_people_typed_as_it_is(studio, terminal):
    """The signed name is the creator's (the consent form), the reason the reviewer's: neither styles the operator's
    terminal, links out of it, or crashes the listing."""
    from studio.config import load_settings
    from studio.db import make_engine, session_scope
    from studio.models import Avatar, Consent, Creator, utcnow

    engine = make_engine(load_settings(studio).db_url)
    try:
        now = utcnow()
        with session_scope(engine) as s:
            creator = Creator(name="Ava")
            s.add(creator)
            s.flush()
            avatar = Avatar(creator_id=creator.id, name="ava", bundle_path="-", footage_sha256="-", width=720,
                            height=1280, fps=25.0, duration_s=45.0)
            s.add(avatar)
            s.flush()
            consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name=EVIL, statement="x" * 30,
                              statement_sha256="-", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                              scope=FULL_SCOPE, status="pending_review",
                              verification={"phrase_score": 0.9, "face_distance": 0.3})
            s.add(consent)
            consent_id = consent.id
    finally:
        engine.dispose()

    listed = run("consent", "review", "list", "--config", str(studio))
    assert listed.exit_code == 0, listed.output
    assert f"{consent_id}  {EVIL}  avatar" in text(listed) and OSC8 not in listed.output

    reason = f"the name {EVIL} is not the creator's"
    rejected = run("consent", "review", "reject", consent_id, "--reason", reason, "--config", str(studio))
    assert rejected.exit_code == 0, rejected.output
    assert f"consent {consent_id} rejected: {reason}" in text(rejected) and OSC8 not in rejected.output
