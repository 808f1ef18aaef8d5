"""Bind settings (issue 15, Streaming): the API, Redis, the RTMP ingest and the HLS server each bind their own
address (services.api_host, redis_host, rtmp_host, http_host), each falling back to services.host; every place
that binds or connects uses the right one, a bad address is refused naming the setting, and a Redis on another
host without a password is warned about."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from studio.binds import exposure_warnings
from studio.config import DEFAULT_CONFIG, ConfigError, ServiceConfig, Settings, load_settings
from tests.conftest import STUDIO, served, studio_env
from tests.media_helpers import free_port
from workers.stack.embedded import Stack
from workers.streamer.nginx import accepts, render_nginx_conf
from workers.streamer.supervisor import local_ingest_url

BINDS = ("api_host", "redis_host", "rtmp_host", "http_host")


def binds(svc: ServiceConfig) -> dict[str, str]:
    return {name: getattr(svc, name) for name in BINDS}


# --- resolution -------------------------------------------------------------------------------------------------
def test_each_bind_falls_back_to_services_host(tmp_path):
    assert binds(Settings().services) == dict.fromkeys(BINDS, "127.0.0.1")
    assert binds(ServiceConfig(host="0.0.0.0")) == dict.fromkeys(BINDS, "0.0.0.0")
    svc = ServiceConfig(host="0.0.0.0", rtmp_host="127.0.0.2", api_host=None)  # null is unset
    assert binds(svc) == {"api_host": "0.0.0.0", "redis_host": "0.0.0.0", "rtmp_host": "127.0.0.2",
                          "http_host": "0.0.0.0"}
    # An existing config with only `host` binds everything there, as before.
    old = tmp_path / "old.yaml"
    old.write_text("services:\n  host: 10.0.0.5\n  api_port: 8700\n")
    assert binds(load_settings(old, env={}).services) == dict.fromkeys(BINDS, "10.0.0.5")
    new = tmp_path / "new.yaml"
    new.write_text("services:\n  host: 10.0.0.5\n  http_host: 0.0.0.0\n  redis_host:\n")
    assert binds(load_settings(new, env={}).services) == {"api_host": "10.0.0.5", "redis_host": "10.0.0.5",
                                                          "rtmp_host": "10.0.0.5", "http_host": "0.0.0.0"}


def test_binds_are_set_by_the_environment(tmp_path):
    s = load_settings(DEFAULT_CONFIG, env={"STUDIO_SERVICES__HOST": "10.1.2.3",
                                           "STUDIO_SERVICES__RTMP_HOST": "127.0.0.2",
                                           "STUDIO_SERVICES__REDIS_HOST": "localhost"})
    assert binds(s.services) == {"api_host": "10.1.2.3", "redis_host": "localhost", "rtmp_host": "127.0.0.2",
                                 "http_host": "10.1.2.3"}
    conf = tmp_path / "c.yaml"
    conf.write_text("services:\n  api_host: 127.0.0.5\n")
    assert load_settings(conf, env={"STUDIO_SERVICES__API_HOST": "::1"}).services.api_host == "::1"


@pytest.mark.parametrize("setting", ["host", *BINDS])
@pytest.mark.parametrize("value", ["127.0.0.1; evil", "bad host", "999.0.0.1", "[::1]", "-x.example.com",
                                   "fe80::1%eth0;x"])
def test_a_bad_address_is_refused_naming_the_setting_and_the_value(setting, value):
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={f"STUDIO_SERVICES__{setting.upper()}": value})
    problems = dict(exc.value.problems)
    assert list(problems) == [f"services.{setting}"]  # a bad `host` is one error, not one per bind
    assert f"services.{setting}" in problems[f"services.{setting}"] and repr(value) in problems[f"services.{setting}"]
    assert "Value error" not in str(exc.value)


# --- who binds and connects where -------------------------------------------------------------------------------
def _split() -> Settings:
    return Settings(services={"host": "0.0.0.0", "api_host": "127.0.0.1", "redis_host": "127.0.0.4",
                              "rtmp_host": "127.0.0.2", "http_host": "::1"})


def test_urls_that_clients_and_users_get_follow_each_bind():
    s = _split()
    assert s.broker_url == "redis://127.0.0.4:6390/0"
    assert s.public_url == "http://127.0.0.1:8700"
    assert s.hls_url("c1") == "http://[::1]:8780/hls/c1.m3u8"
    assert s.ingest_url == "rtmp://127.0.0.2:1936/live"
    assert local_ingest_url(SimpleNamespace(settings=s), "c1") == "rtmp://127.0.0.2:1936/live/c1"  # feeders, relays
    # A wildcard bind is reached on loopback.
    wild = Settings(services={"host": "0.0.0.0", "http_host": "::"})
    assert (wild.broker_url, wild.ingest_url) == ("redis://127.0.0.1:6390/0", "rtmp://127.0.0.1:1936/live")
    assert wild.hls_url("c1") == "http://[::1]:8780/hls/c1.m3u8"


def test_nginx_listens_on_the_rtmp_and_http_binds_apart(tmp_path):
    conf = render_nginx_conf(workdir=tmp_path, rtmp_host="127.0.0.2", rtmp_port=1936, http_host="::1",
                             http_port=8780)
    listens = [line.strip() for line in conf.splitlines() if line.strip().startswith("listen ")]
    assert listens == ["listen 127.0.0.2:1936;", "listen [::1]:8780;"]
    with pytest.raises(ValueError, match=r"http_host must be .*got '1.2.3.4 x'"):
        render_nginx_conf(workdir=tmp_path, rtmp_host="127.0.0.2", rtmp_port=1, http_host="1.2.3.4 x", http_port=2)


def test_the_stack_binds_redis_nginx_and_the_api_where_configured(tmp_path):
    settings = _split().model_copy(update={"data_dir": str(tmp_path / "data")})
    stack = Stack(settings, config_path=DEFAULT_CONFIG, log_dir=tmp_path / "logs")
    kids = {c.name: c for c in stack.plan()}
    args = kids["redis"].args
    assert args[args.index("--bind") + 1] == "127.0.0.4" and args.count("--bind") == 1
    assert (kids["redis"].ready, kids["nginx"].ready, kids["api"].ready) == (
        ("127.0.0.4", 6390), ("127.0.0.2", 1936), ("127.0.0.1", 8700))
    assert stack.redis_url.endswith("@127.0.0.4:6390/0") and stack.env()["STUDIO_REDIS_URL"] == stack.redis_url
    conf = (settings.data_path / "nginx" / "nginx.conf").read_text()
    assert "listen 127.0.0.2:1936;" in conf and "listen [::1]:8780;" in conf and "0.0.0.0" not in conf


def test_the_api_role_serves_on_api_host(monkeypatch):
    import uvicorn

    from api import cli_roles

    seen = {}
    monkeypatch.setattr(cli_roles, "role_settings", lambda config, role, audit_roles: _split())
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.update(kw))
    cli_roles.api_role(config=None, host=None, port=None)
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8700)


# --- exposure ---------------------------------------------------------------------------------------------------
def test_a_redis_on_another_host_without_a_password_is_warned_about():
    def warned(**svc) -> list[str]:
        return exposure_warnings(ServiceConfig(**svc))

    assert warned() == [] and warned(host="0.0.0.0") == []  # the embedded redis-server always has a password
    assert warned(redis_url="redis://127.0.0.1:6379/0") == []
    assert warned(redis_url="redis://:pw@redis.internal:6379/0") == []
    assert warned(redis_url="redis://redis.internal:6379/0", redis_password="a-redis-password") == []
    (warning,) = warned(redis_url="redis://redis.internal:6379/0")
    assert warning.startswith("services.redis_url: Redis at redis.internal is used without a password")


def test_config_check_prints_each_bind_and_the_warnings(tmp_path):
    from api.cli import app

    conf = tmp_path / "c.yaml"
    conf.write_text("services:\n  host: 0.0.0.0\n  api_host: 127.0.0.1\n  rtmp_host: 127.0.0.2\n"
                    "  redis_url: redis://redis.internal:6379/0\n")
    res = CliRunner().invoke(app, ["config", "check", str(conf)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert ("binds: api 127.0.0.1:8700, redis external (services.redis_url), rtmp 127.0.0.2:1936, "
            "http (HLS) 0.0.0.0:8780") in out
    assert "warning: services.redis_url: Redis at redis.internal is used without a password" in out
    conf.write_text("services:\n  rtmp_host: 'rtmp host'\n")
    res = CliRunner().invoke(app, ["config", "check", str(conf)], env={"COLUMNS": "300"})
    assert res.exit_code == 1 and "services.rtmp_host must be an IP address" in " ".join(res.output.split())
    assert "'rtmp host'" in res.output


# --- the real stack ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_up_listens_on_each_service_s_own_address_only(tmp_path):
    """`studio up` with the API on 127.0.0.1, the RTMP ingest on 127.0.0.2, HLS on 127.0.0.3 and redis on
    127.0.0.4 (Linux routes all of 127/8 to loopback): each port answers where it is bound and nowhere else."""
    ports = {"api": free_port(), "redis": free_port(), "rtmp": free_port(), "http": free_port()}
    where = {"api": "127.0.0.1", "rtmp": "127.0.0.2", "http": "127.0.0.3", "redis": "127.0.0.4"}
    env = {**studio_env(tmp_path / "data", **ports), "COLUMNS": "300",
           **{f"STUDIO_SERVICES__{name.upper()}_HOST": host for name, host in where.items()}}
    proc = subprocess.Popen([STUDIO, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = served(proc, f"http://127.0.0.1:{ports['api']}/healthz", timeout=90)
        health = body and json.loads(body)
        # The API reaches the embedded redis on its own address (the broker URL follows redis_host).
        assert health and health["redis"] == "ok", proc.stderr.read() if proc.poll() is not None else health
        for name, port in ports.items():
            for host in where.values():
                assert accepts(host, port) == (host == where[name]), f"{name} on {host}:{port}"
        with urllib.request.urlopen(f"http://127.0.0.3:{ports['http']}/healthz", timeout=2) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, errs = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, errs
    printed = " ".join(out.split())
    assert f"RTMP rtmp://127.0.0.2:{ports['rtmp']}/live" in printed
    assert f"HLS http://127.0.0.3:{ports['http']}/hls/" in printed and f"API http://127.0.0.1:{ports['api']}" in printed
    for name, port in ports.items():
        assert not accepts(where[name], port), f"{name} still listening after SIGTERM"
