"""Config loading: unknown keys refused with their key path, env overrides, POLICY V2/V4/V5 rules."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from studio.config import DEFAULT_CONFIG, ConfigError, load_settings

STUDIO_CLI = Path(sys.executable).parent / "studio"
GOOD_KEY = "k3y-for-tests-0123456789abcdef"


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def default_data() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def with_override(section: str, key: str, value) -> dict:
    data = default_data()
    data[section][key] = value
    return data


def problem_paths(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [path for path, _ in exc.value.problems]


# --- the default file ---------------------------------------------------------------------------
def test_default_config_loads_with_the_values_in_the_file():
    data = default_data()
    settings = load_settings(DEFAULT_CONFIG, env={})
    assert (settings.media.width, settings.media.height) == (data["media"]["width"], data["media"]["height"])
    assert settings.media.fps == data["media"]["fps"]
    assert settings.services.api_port == data["services"]["api_port"]
    assert settings.label.font_path.endswith(".ttf")
    assert settings.policy_path.name == "policies"
    assert settings.policy_key is None  # secrets never come from the shipped file


def test_empty_file_gives_the_built_in_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    settings = load_settings(path, env={})
    assert settings.media.width % 2 == 0
    assert settings.label.cjk_font_path


# --- unknown keys -----------------------------------------------------------------------------
def test_unknown_top_level_key_is_refused_with_its_name(tmp_path):
    data = default_data()
    data["hide_label"] = True
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, data), env={})
    assert problem_paths(exc) == ["hide_label"]
    assert "hide_label" in str(exc.value)


def test_unknown_nested_key_is_refused_with_its_dotted_path(tmp_path):
    data = default_data()
    data["media"]["widht"] = 720
    data["services"]["api_prot"] = 1
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, data), env={})
    assert sorted(problem_paths(exc)) == ["media.widht", "services.api_prot"]
    assert "media.widht" in str(exc.value)


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    data = default_data()
    data["media"]["width"] = 721
    data["services"]["api_port"] = 0
    data["bogus"] = 1
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, data), env={})
    assert {"media.width", "services.api_port", "bogus"} <= set(problem_paths(exc))


# --- environment overrides ----------------------------------------------------------------------
def test_env_overrides_apply(tmp_path):
    env = {"STUDIO_API_PORT": "9123", "STUDIO_POLICY_KEY": GOOD_KEY, "STUDIO_DATA_DIR": str(tmp_path / "d")}
    settings = load_settings(DEFAULT_CONFIG, env=env)
    assert settings.services.api_port == 9123
    assert settings.policy_key == GOOD_KEY
    assert settings.data_path == (tmp_path / "d").resolve()
    assert settings.db_url == f"sqlite:///{(tmp_path / 'd').resolve() / 'studio.db'}"


def test_env_override_fills_a_section_left_empty_in_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("services:\n")  # every key commented out leaves `services: null`
    settings = load_settings(path, env={"STUDIO_API_PORT": "9124"})
    assert settings.services.api_port == 9124


def test_env_override_into_a_section_that_is_not_a_mapping_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("services: 5\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={"STUDIO_API_PORT": "9124"})
    assert problem_paths(exc) == ["services"]


def test_empty_env_value_is_no_override():
    settings = load_settings(DEFAULT_CONFIG, env={"STUDIO_API_PORT": ""})
    assert settings.services.api_port == default_data()["services"]["api_port"]


def test_bad_env_value_is_reported_at_the_key_it_overrides():
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_API_PORT": "not-a-port"})
    assert problem_paths(exc) == ["services.api_port"]


def test_env_argument_isolates_from_the_process_environment(monkeypatch):
    monkeypatch.setenv("STUDIO_API_PORT", "9125")
    assert load_settings(DEFAULT_CONFIG, env={}).services.api_port != 9125
    assert load_settings(DEFAULT_CONFIG).services.api_port == 9125


# --- policy key ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["changeme", "CHANGEME", " secret ", "change-me", "changethis"])
def test_placeholder_policy_key_is_refused(key):
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_POLICY_KEY": key})
    assert problem_paths(exc) == ["policy_key"]
    assert "placeholder" in str(exc.value)


def test_short_policy_key_is_refused(tmp_path):
    data = default_data()
    data["policy_key"] = "x7Q!short"
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, data), env={})
    assert problem_paths(exc) == ["policy_key"]
    assert "16" in str(exc.value)


def test_long_enough_policy_key_is_accepted(tmp_path):
    data = default_data()
    data["policy_key"] = GOOD_KEY
    assert load_settings(write_config(tmp_path, data), env={}).policy_key == GOOD_KEY


# --- media and label rules ------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["width", "height"])
def test_odd_frame_size_is_refused(tmp_path, key):
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, with_override("media", key, 721)), env={})
    assert problem_paths(exc) == [f"media.{key}"]
    assert "721" in str(exc.value)


@pytest.mark.parametrize("key, value", [("height_fraction", 0.01), ("captions", False), ("text", ""),
                                        ("banner_seconds", 0.5), ("corner", "bottom-left")])
def test_disclosure_rules_cannot_be_set_in_the_config(tmp_path, key, value):
    # They live in policy profiles, where the strictest wins; the config may only choose fonts.
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, with_override("label", key, value)), env={})
    assert problem_paths(exc) == ["label"]
    assert f"label.{key}" in str(exc.value) and "policy profiles" in str(exc.value)


@pytest.mark.parametrize("switch", ["enabled", "visible", "hide", "show_badge"])
def test_there_is_no_key_that_hides_the_label(tmp_path, switch):
    """POLICY V5: whatever a switch would be called, the label section refuses it."""
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, with_override("label", switch, False)), env={})
    assert problem_paths(exc) == [f"label.{switch}"]


def test_min_segment_longer_than_max_is_refused(tmp_path):
    data = default_data()
    data["media"]["min_segment_seconds"] = 8.0
    data["media"]["max_segment_seconds"] = 4.0
    with pytest.raises(ConfigError) as exc:
        load_settings(write_config(tmp_path, data), env={})
    assert "min_segment_seconds" in str(exc.value)


# --- unusable files -------------------------------------------------------------------------------
def test_malformed_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("media: [720,\n  label: {\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert problem_paths(exc) == ["(file)"]
    assert "YAML" in str(exc.value)
    assert str(path) in str(exc.value)


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert problem_paths(exc) == ["(file)"]
    assert "does not exist" in str(exc.value)


def test_top_level_list_is_a_config_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- media\n- label\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    assert "mapping" in str(exc.value)


# --- `studio config check` ------------------------------------------------------------------------
def run_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(STUDIO_CLI), "config", "check", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_cli_check_accepts_the_default_config():
    result = run_check(DEFAULT_CONFIG)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_cli_check_without_a_file_checks_the_defaults_and_the_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    ok = subprocess.run([str(STUDIO_CLI), "config", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0 and "defaults and environment" in ok.stdout, ok.stderr
    bad = subprocess.run([str(STUDIO_CLI), "config", "check"], cwd=tmp_path, env={**env, "STUDIO_MEDIA__WIDTH": "33"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "media.width" in bad.stdout + bad.stderr


def test_cli_check_rejects_a_bad_file_and_names_the_key_path(tmp_path):
    data = default_data()
    data["streamer"]["lead_secs"] = 2
    result = run_check(write_config(tmp_path, data))
    assert result.returncode != 0
    assert "streamer.lead_secs" in result.stdout + result.stderr


def test_cli_check_rejects_a_missing_file(tmp_path):
    result = run_check(tmp_path / "absent.yaml")
    assert result.returncode != 0
    assert "does not exist" in result.stdout + result.stderr
