"""infra/: every systemd unit and every compose service runs a real `studio` command with flags it accepts, the
compose file is valid for a compose tool, and the example environment holds only settings that exist."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import typer
import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"
UNITS = sorted((INFRA / "systemd").glob("*.service"))
# What a templated unit's %i is instantiated with in the README and in the unit's own comment.
INSTANCES = {"studio-worker@.service": ["render", "render.cpu", "render.gpu", "ingest,publish",
                                        "ingest,render,publish"]}


def studio_command(argv: list[str]) -> click.Command:
    """The click command that `studio ARGV...` runs, after parsing ARGV with it: raises click's UsageError for
    an unknown command, an unknown flag or a bad value, as the real command line would."""
    from api.cli import app

    command: click.Command = typer.main.get_command(app)
    args = list(argv)
    path = ["studio"]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.get_command(click.Context(command), name)
        if sub is None:
            raise click.UsageError(f"no such command: {' '.join([*path, name])}")
        command, path = sub, [*path, name]
    if isinstance(command, click.Group):
        raise click.UsageError(f"{' '.join(path)} needs a subcommand")
    command.make_context(" ".join(path), args)
    return command


def unit_exec(unit: Path) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    return shlex.split(parser["Service"]["ExecStart"])


def test_every_role_has_a_unit():
    names = {u.name for u in UNITS}
    assert {"studio-api.service", "studio-scheduler.service", "studio-streamer.service",
            "studio-worker@.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_runs_a_real_studio_command(unit):
    argv = unit_exec(unit)
    assert Path(argv[0]).name == "studio", argv
    for instance in INSTANCES.get(unit.name, [None]):
        args = [a.replace("%i", instance) if instance else a for a in argv[1:]]
        assert not [a for a in args if "%" in a], f"{unit.name}: unexpanded specifier in {args}"
        studio_command(args)


def test_the_checker_refuses_what_studio_would_refuse():
    with pytest.raises(click.UsageError):
        studio_command(["wrker", "--queues", "render"])
    with pytest.raises(click.UsageError):
        studio_command(["db"])
    with pytest.raises(click.UsageError):
        studio_command(["config", "check", "--no-such-flag"])


def test_units_hand_secrets_over_as_credentials_not_environment():
    for unit in UNITS:
        text = unit.read_text()
        assert "Environment=STUDIO_SECRETS_DIR=%d" in text, unit.name
        assert "LoadCredential=policy_key:" in text, unit.name
        assert "UMask=0077" in text, unit.name
        assert "PASSWORD=" not in text.upper().replace("_PASSWORD:", ""), unit.name


def _audit_keys(text: str) -> set[str]:
    return set(re.findall(r"^LoadCredential=audit-(\w+)\.key:", text, re.M))


def test_each_role_gets_its_own_audit_key_only():
    """The control key (consents, accounts, shows) goes to the API and scheduler units and no other; a worker gets
    the keys of its queues (publish: archive) from its instance's drop-in."""
    from workers.app import QUEUE_AUDIT_ROLES

    units = {u.name: _audit_keys(u.read_text()) for u in UNITS}
    assert units == {"studio-api.service": {"control"}, "studio-scheduler.service": {"control"},
                     "studio-streamer.service": {"stream"}, "studio-worker@.service": set()}
    drop_ins = {d.name.removeprefix("studio-worker@").removesuffix(".service.d"): _audit_keys(
        (d / "audit-keys.conf").read_text()) for d in (INFRA / "systemd").glob("studio-worker@*.service.d")}
    assert set(drop_ins) == {"render.cpu", "render.gpu", "ingest,publish"}
    for instance, keys in drop_ins.items():
        assert keys == {role for q in instance.split(",") for role in QUEUE_AUDIT_ROLES[q].split(",")}, instance
    services = _compose()["services"]
    audit = {name: {s.removeprefix("audit-").removesuffix(".key") for s in svc.get("secrets", [])
                    if s.startswith("audit-")} for name, svc in services.items()}
    assert audit == {"postgres": set(), "redis": set(), "minio": set(), "migrate": set(), "api": {"control"},
                     "scheduler": {"control"}, "worker-ingest-publish": {"ingest", "archive"},
                     "worker-render-cpu": {"render"}, "streamer": {"stream"}}


def _compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def test_compose_services_run_real_studio_commands():
    services = _compose()["services"]
    assert {"api", "scheduler", "streamer", "postgres", "redis", "minio", "migrate"} <= set(services)
    assert [n for n in services if n.startswith("worker")], "no worker service"
    studio_services = [n for n, s in services.items() if s.get("image", "").startswith("ethical-clone-studio")]
    assert len(studio_services) >= 5
    for name in studio_services:
        studio_command(list(services[name]["command"]))


def test_compose_file_is_valid_for_docker_compose(tmp_path):
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: run `make setup` (Debian package docker-compose)"
    infra = tmp_path / "infra"
    shutil.copytree(INFRA, infra, ignore=shutil.ignore_patterns("__pycache__"))
    secrets = infra / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in _compose()["secrets"]:
        (secrets / name).write_text("not-a-real-secret\n")
    res = subprocess.run([tool, "-f", str(infra / "compose.yaml"), "config", "-q"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # A broken file is refused, so the check above means something.
    (infra / "compose.yaml").write_text((infra / "compose.yaml").read_text().replace("services:", "servics:", 1))
    bad = subprocess.run([tool, "-f", str(infra / "compose.yaml"), "config", "-q"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0


def test_example_environment_names_only_real_settings(tmp_path):
    from studio.config import load_settings

    env = {}
    for line in (INFRA / "systemd" / "studio.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    # The fleet's data dir and database need not exist to be valid settings.
    settings = load_settings(env=env)
    assert settings.data_dir == "/var/lib/studio"
    assert settings.services.render_concurrency == 1
