"""Settings the twelve-factor way: nested environment keys, the older names, a .env file and a secrets
directory, in the documented order (environment > .env > secrets directory > YAML > defaults), and secret
files that cannot be used named by setting and path, never by value."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from studio.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings
from workers.logs import JsonFormatter, log_context

KEY_A = "k3y-from-environment-0123456789"
KEY_B = "k3y-from-dotenv-file-0123456789"
KEY_C = "k3y-from-secrets-dir-0123456789"


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


# --- nested keys and the older names -------------------------------------------------------------------
def test_nested_keys_reach_every_section():
    s = load_settings(DEFAULT_CONFIG, env={"STUDIO_SERVICES__RENDER_CONCURRENCY": "2", "STUDIO_MEDIA__WIDTH": "480",
                                           "STUDIO_SCHEDULER__MARGIN_SECONDS": "12.5", "STUDIO_PRODUCER": "Acme"})
    assert (s.services.render_concurrency, s.media.width, s.scheduler.margin_seconds) == (2, 480, 12.5)
    assert s.producer == "Acme"
    assert s.media.height == 1280  # the rest of the section stays as the file has it


def test_older_names_keep_working_and_a_nested_key_wins_over_them(tmp_path):
    env = {"STUDIO_API_PORT": "9123", "STUDIO_REDIS_URL": "redis://127.0.0.1:9/1",
           "STUDIO_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "STUDIO_DATA_DIR": str(tmp_path)}
    s = load_settings(DEFAULT_CONFIG, env=env)
    assert (s.services.api_port, s.services.redis_url, s.data_path) == (9123, "redis://127.0.0.1:9/1", tmp_path)
    assert s.db_url == f"sqlite:///{tmp_path}/x.db"
    assert load_settings(DEFAULT_CONFIG, env={**env, "STUDIO_SERVICES__API_PORT": "9124"}).services.api_port == 9124


def test_unknown_nested_key_is_refused_with_its_path():
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SERVICES__API_PROT": "1"})
    assert list(problems(exc)) == ["services.api_prot"]


def test_bad_nested_value_is_reported_at_its_key():
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_MEDIA__WIDTH": "721"})
    assert list(problems(exc)) == ["media.width"]


# --- .env ----------------------------------------------------------------------------------------------
def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("STUDIO_")]:
        monkeypatch.delenv(var)
    (tmp_path / ".env").write_text(f"STUDIO_POLICY_KEY={KEY_B}\nSTUDIO_SERVICES__API_PORT=9200\n")
    s = load_settings(DEFAULT_CONFIG)
    assert (s.policy_key, s.services.api_port) == (KEY_B, 9200)
    monkeypatch.setenv("STUDIO_SERVICES__API_PORT", "9201")
    assert load_settings(DEFAULT_CONFIG).services.api_port == 9201


def test_env_file_named_by_studio_env_file(tmp_path):
    path = tmp_path / "studio.env"
    path.write_text("STUDIO_MEDIA__FPS=30\nSTUDIO_API_PORT=9300\n")
    s = load_settings(DEFAULT_CONFIG, env={"STUDIO_ENV_FILE": str(path)})
    assert (s.media.fps, s.services.api_port) == (30, 9300)


def test_env_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="STUDIO_ENV_FILE"):
        load_settings(DEFAULT_CONFIG, env={"STUDIO_ENV_FILE": str(tmp_path / "nope.env")})


# --- secrets directory ---------------------------------------------------------------------------------
@pytest.fixture
def secrets(tmp_path):
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "policy_key").write_text(KEY_C + "\n")
    (folder / "redis_password").write_text("r3dis-pw\n")
    (folder / "database_password").write_text("db-pw\n")
    (folder / "stream_key").write_text("ab" * 32)
    return folder


def test_secrets_dir_fills_the_secret_settings(secrets):
    env = {"STUDIO_SECRETS_DIR": str(secrets), "STUDIO_DATABASE_URL": "postgresql+psycopg://studio@127.0.0.1/studio"}
    s = load_settings(DEFAULT_CONFIG, env=env)
    assert s.policy_key == KEY_C and s.stream_key == "ab" * 32
    assert s.broker_url == "redis://:r3dis-pw@127.0.0.1:6390/0"
    assert s.db_url == "postgresql+psycopg://studio:db-pw@127.0.0.1/studio"
    assert KEY_C not in repr(s) and "r3dis-pw" not in repr(s)


def test_secrets_dir_named_in_the_yaml_file(secrets, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"secrets_dir: {secrets}\n")
    assert load_settings(config, env={}).policy_key == KEY_C


def test_precedence_environment_then_dotenv_then_secrets(secrets, tmp_path):
    dotenv = tmp_path / "x.env"
    dotenv.write_text(f"STUDIO_POLICY_KEY={KEY_B}\n")
    base = {"STUDIO_SECRETS_DIR": str(secrets)}
    assert load_settings(DEFAULT_CONFIG, env=base).policy_key == KEY_C
    assert load_settings(DEFAULT_CONFIG, env={**base, "STUDIO_ENV_FILE": str(dotenv)}).policy_key == KEY_B
    both = {**base, "STUDIO_ENV_FILE": str(dotenv), "STUDIO_POLICY_KEY": KEY_A}
    assert load_settings(DEFAULT_CONFIG, env=both).policy_key == KEY_A


def test_a_password_in_the_url_wins_over_the_secret(secrets):
    env = {"STUDIO_SECRETS_DIR": str(secrets), "STUDIO_REDIS_URL": "redis://:own@10.0.0.5:6379/0"}
    assert load_settings(DEFAULT_CONFIG, env=env).broker_url == "redis://:own@10.0.0.5:6379/0"


def test_missing_secrets_dir_names_the_setting_and_path(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SECRETS_DIR": str(tmp_path / "gone")})
    assert str(tmp_path / "gone") in problems(exc)["secrets_dir"]


def test_unreadable_secret_file_names_setting_and_path_never_the_value(secrets):
    (secrets / "redis_password").unlink()
    (secrets / "redis_password").mkdir()  # root reads any file, so a directory stands for "cannot be read"
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SECRETS_DIR": str(secrets)})
    msg = problems(exc)["services.redis_password"]
    assert str(secrets / "redis_password") in msg and "cannot be read" in msg


def test_secret_file_that_is_not_text_or_empty_is_refused(secrets):
    (secrets / "policy_key").write_bytes(b"\xff\xfe" + KEY_C.encode())
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SECRETS_DIR": str(secrets)})
    assert "not UTF-8" in problems(exc)["policy_key"] and KEY_C not in str(exc.value)
    (secrets / "policy_key").write_text("\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SECRETS_DIR": str(secrets)})
    assert "is empty" in problems(exc)["policy_key"]


def test_placeholder_secret_from_the_secrets_dir_is_refused(secrets):
    (secrets / "policy_key").write_text("changeme")
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SECRETS_DIR": str(secrets)})
    assert list(problems(exc)) == ["policy_key"]


# --- public URLs --------------------------------------------------------------------------------------
def test_public_urls_default_to_the_bind_address_and_can_be_set_apart_from_it():
    s = Settings()
    assert s.public_url == "http://127.0.0.1:8700"
    assert s.hls_url("c1") == "http://127.0.0.1:8780/hls/c1.m3u8"
    s = load_settings(DEFAULT_CONFIG, env={"STUDIO_SERVICES__PUBLIC_URL": "https://studio.example.com/",
                                           "STUDIO_PUBLIC_HLS_URL": "https://cdn.example.com/hls",
                                           "STUDIO_SERVICES__HOST": "0.0.0.0"})
    assert s.public_url == "https://studio.example.com" and s.services.host == "0.0.0.0"
    assert s.hls_url("c1") == "https://cdn.example.com/hls/c1.m3u8"


# --- log lines ----------------------------------------------------------------------------------------
def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("studio.test", logging.WARNING, __file__, 1, msg, args, None)


def test_log_line_is_json_with_role_host_and_context_and_masks_keys():
    import json

    fmt = JsonFormatter("streamer")
    with log_context(channel="ch1", show="sh1", segment="seg9"):
        line = json.loads(fmt.format(_record("relay to %s failed; broker %s", "rtmp://live.example.com/app/SECRETKEY",
                                             "redis://:hunter2pass@127.0.0.1:6390/0")))
    assert line["role"] == "streamer" and line["host"] and line["level"] == "warning" and line["ts"]
    assert (line["channel"], line["show"], line["segment"]) == ("ch1", "sh1", "seg9")
    assert "SECRETKEY" not in line["message"] and "rtmp://live.example.com/app/****" in line["message"]
    assert "hunter2pass" not in line["message"]
    assert "channel" not in json.loads(fmt.format(_record("outside")))  # the context ends with the block


# --- one config per process ----------------------------------------------------------------------------------
def test_a_command_s_config_file_is_the_whole_process_s_config(tmp_path):
    """`studio demo --config F` queues its ingest, and `studio consent revoke --config F` revokes queued renders,
    through the process's Celery app, which loads the settings on its own when first imported: both must reach
    F's broker, not the default config's. Run as a command runs: a fresh process loads the command's settings
    first, then the app."""
    config = tmp_path / "studio.yaml"
    config.write_text(DEFAULT_CONFIG.read_text().replace("redis_port: 6390", "redis_port: 6499"))
    code = ("import json, sys\nfrom pathlib import Path\nfrom api.cli_base import _settings\n"
            "settings = _settings(Path(sys.argv[1]))\n"
            "from studio.config import load_settings\nfrom workers.app import app\n"
            "print(json.dumps([settings.broker_url, app.conf.broker_url, load_settings().services.redis_port]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_DATA_DIR"] = str(tmp_path / "data")
    res = subprocess.run([sys.executable, "-c", code, str(config)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    wanted, celery, port = json.loads(res.stdout.strip().splitlines()[-1])
    assert wanted == "redis://127.0.0.1:6499/0"
    assert (celery, port) == (wanted, 6499)
