"""Policy profiles: shipped files load, strictest rule wins, nothing can weaken or switch off the label."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from studio.config import ConfigError
from studio.policy_profiles import (
    POLICY_DIR,
    EffectivePolicy,
    PolicyProfile,
    available_profiles,
    effective_policy,
    load_profile,
)

SHIPPED = ["cn", "default", "eu", "us"]


def shipped_default() -> dict:
    return yaml.safe_load((POLICY_DIR / "default.yaml").read_text(encoding="utf-8"))


def patched(data: dict, patch: dict) -> dict:
    """Section by section: the keys a patch names inside a section replace the default's values whole."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def write_profile(directory: Path, name: str, patch: dict | None = None) -> Path:
    """A profile made of the shipped default with `patch` applied, written as directory/NAME.yaml."""
    data = patched(copy.deepcopy(shipped_default()), patch or {})
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def pdir(tmp_path) -> Path:
    write_profile(tmp_path, "default")
    return tmp_path


# --- shipped profiles ---------------------------------------------------------------------------
def test_the_shipped_profiles_are_listed():
    assert available_profiles() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads(name):
    profile = load_profile(name)
    assert isinstance(profile, PolicyProfile)
    assert profile.label.cap_height_fraction >= 0.05
    assert profile.banner.seconds >= 2.0
    assert profile.captions.burned_in is True


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_value_says_where_it_comes_from(name):
    lines = (POLICY_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines()
    bare = [line for line in lines if re.match(r"^\s*[\w-]+:\s*[^\s#]", line) and " #" not in line]
    assert not bare, f"{name}.yaml values without a source comment: {bare}"


def test_default_is_the_baseline():
    policy = effective_policy([])
    assert policy.profiles == ("default",)
    assert policy.badge_lines[0] == "AI avatar"
    assert policy.cap_height_fraction == 0.05
    assert policy.banner_seconds >= 2.0
    assert policy.corner == "top-right"
    assert policy.languages == ("en",)
    assert policy.banner_lines("Mia") == ["AI-generated clone of Mia"]
    assert policy.spoken_disclosure is None and policy.spoken_text("Mia") is None
    assert policy.aigc_places == ("segment", "stream", "archive")
    assert effective_policy(["default"]) == policy


def test_cn_adds_chinese_to_badge_banner_and_languages():
    """POLICY V3: profile cn adds "AI生成" to the badge and a Chinese banner line naming the creator."""
    policy = effective_policy(["cn"])
    assert policy.profiles == ("default", "cn")
    assert policy.badge_lines == ("AI avatar", "AI生成")
    banner = policy.banner_lines("Mia")
    assert banner[0] == "AI-generated clone of Mia"
    assert any("AI生成" in line and "Mia" in line for line in banner[1:])
    assert "zh" in policy.languages and "en" in policy.languages
    assert "Mia" in policy.spoken_text("Mia")
    assert policy.cap_height_fraction >= 0.05


def test_eu_puts_the_badge_top_right():
    assert effective_policy(["eu"]).corner == "top-right"


# --- strictest wins -----------------------------------------------------------------------------
def test_sizes_and_durations_take_the_largest(pdir):
    write_profile(pdir, "a", {"label": {"cap_height_fraction": 0.07, "margin_fraction": 0.02},
                              "banner": {"seconds": 4.0}, "captions": {"cap_height_fraction": 0.03}})
    write_profile(pdir, "b", {"label": {"cap_height_fraction": 0.06, "margin_fraction": 0.06},
                              "banner": {"seconds": 3.0}, "captions": {"cap_height_fraction": 0.05}})
    policy = effective_policy(["a", "b"], directory=pdir)
    assert policy.cap_height_fraction == 0.07
    assert policy.margin_fraction == 0.06
    assert policy.banner_seconds == 4.0
    assert policy.caption_cap_fraction == 0.05


def test_caption_line_limits_take_the_smallest(pdir):
    write_profile(pdir, "a", {"captions": {"max_chars_per_line": 16, "max_lines": 3}})
    write_profile(pdir, "b", {"captions": {"max_chars_per_line": 40, "max_lines": 1}})
    policy = effective_policy(["a", "b"], directory=pdir)
    assert (policy.caption_max_chars, policy.caption_max_lines) == (16, 1)


def test_corner_is_from_the_intersection(pdir):
    write_profile(pdir, "left", {"label": {"corners": ["top-left"]}})
    assert effective_policy(["left"], directory=pdir).corner == "top-left"
    write_profile(pdir, "both", {"label": {"corners": ["top-left", "top-right"]}})
    assert effective_policy(["both"], directory=pdir).corner == "top-right"  # preference order, not file order


def test_empty_corner_intersection_names_the_profiles_and_their_corners(pdir):
    write_profile(pdir, "left", {"label": {"corners": ["top-left"]}})
    write_profile(pdir, "right", {"label": {"corners": ["top-right"]}})
    with pytest.raises(ConfigError) as exc:
        effective_policy(["left", "right"], directory=pdir)
    text = str(exc.value)
    assert "label.corners" in text
    assert "left allows top-left" in text and "right allows top-right" in text


def test_spoken_disclosure_is_required_if_any_profile_requires_it(pdir):
    write_profile(pdir, "quiet", {"spoken_disclosure": {"required": False}})
    write_profile(pdir, "loud", {"spoken_disclosure": {"required": True,
                                                       "templates": {"en": "{creator} here is an AI avatar."}}})
    assert effective_policy(["quiet"], directory=pdir).spoken_text("Mia") is None
    for names in (["quiet", "loud"], ["loud", "quiet"]):
        assert effective_policy(names, directory=pdir).spoken_text("Mia") == "Mia here is an AI avatar."


def test_only_requiring_profiles_bring_spoken_words(pdir):
    write_profile(pdir, "words", {"spoken_disclosure": {"required": False, "templates": {"en": "Unused {creator}."}}})
    write_profile(pdir, "loud", {"spoken_disclosure": {"required": True, "templates": {"en": "AI {creator}."}}})
    assert effective_policy(["words"], directory=pdir).spoken_disclosure is None
    assert effective_policy(["words", "loud"], directory=pdir).spoken_text("Mia") == "AI Mia."


def test_spoken_texts_of_every_requiring_profile_are_joined(pdir):
    write_profile(pdir, "one", {"spoken_disclosure": {"required": True, "templates": {"en": "A {creator}."}}})
    write_profile(pdir, "two", {"spoken_disclosure": {"required": True, "templates": {"en": "B {creator}."}}})
    assert effective_policy(["one", "two"], directory=pdir).spoken_text("Mia") == "A Mia. B Mia."


def test_tags_union_and_conflicting_values_joined(pdir):
    base = shipped_default()["metadata"]["extra_tags"]["comment"]
    write_profile(pdir, "a", {"metadata": {"extra_tags": {"comment": "from a", "copyright": "c"}}})
    write_profile(pdir, "b", {"metadata": {"extra_tags": {"comment": "from b"}}})
    tags = effective_policy(["a", "b"], directory=pdir).extra_tags
    assert tags == {"comment": f"{base} | from a | from b", "copyright": "c"}
    write_profile(pdir, "same", {"metadata": {"extra_tags": {"comment": base}}})
    assert effective_policy(["same"], directory=pdir).extra_tags == {"comment": base}


def test_producer_override_and_conflict(pdir):
    write_profile(pdir, "p1", {"metadata": {"producer": "Studio One"}})
    write_profile(pdir, "p2", {"metadata": {"producer": "Studio Two"}})
    assert effective_policy([], directory=pdir).producer is None
    assert effective_policy(["p1"], directory=pdir).producer == "Studio One"
    with pytest.raises(ConfigError) as exc:
        effective_policy(["p1", "p2"], directory=pdir)
    assert "metadata.producer" in str(exc.value) and "Studio Two" in str(exc.value)


def test_badge_lines_start_with_ai_avatar_and_are_deduplicated(pdir):
    write_profile(pdir, "default", {"label": {"texts": ["KI-Avatar"]}})
    write_profile(pdir, "x", {"label": {"texts": ["AI生成", "KI-Avatar", "AI avatar"]}})
    assert effective_policy(["x"], directory=pdir).badge_lines == ("AI avatar", "KI-Avatar", "AI生成")


def test_order_after_default_changes_lines_not_strictness(pdir):
    write_profile(pdir, "a", {"languages": ["zh"], "label": {"texts": ["AI生成"], "cap_height_fraction": 0.08,
                                                             "corners": ["top-left", "top-right"]},
                              "banner": {"seconds": 3.0, "templates": {"zh": "{creator}的AI分身"}},
                              "captions": {"max_chars_per_line": 16},
                              "metadata": {"extra_tags": {"comment": "a"}}})
    write_profile(pdir, "b", {"label": {"texts": ["Synthetic"], "margin_fraction": 0.1},
                              "banner": {"seconds": 5.0}, "captions": {"max_lines": 1, "cap_height_fraction": 0.05},
                              "spoken_disclosure": {"required": True, "templates": {"en": "AI {creator}."}}})
    ab = effective_policy(["a", "b"], directory=pdir).to_dict()
    ba = effective_policy(["b", "a"], directory=pdir).to_dict()
    ordered = {"profiles", "badge_lines", "banner_templates", "languages", "extra_tags"}
    assert {k: v for k, v in ab.items() if k not in ordered} == {k: v for k, v in ba.items() if k not in ordered}
    for key in ("badge_lines", "banner_templates", "languages"):
        assert set(ab[key]) == set(ba[key])
    assert ab["badge_lines"][0] == ba["badge_lines"][0] == "AI avatar"
    assert ab["badge_lines"] != ba["badge_lines"]


# --- nothing weakens or switches off the label (POLICY V5) --------------------------------------
REJECTED = [
    ({"label": {"enabled": False}}, "label.enabled", "unknown key"),
    ({"label": {"hide": True}}, "label.hide", "unknown key"),
    ({"label": {"cap_height_fraction": 0.03}}, "label.cap_height_fraction", "0.03"),
    ({"label": {"texts": []}}, "label.texts", "at least 1"),
    ({"label": {"texts": ["  "]}}, "label.texts", "blank"),
    ({"label": {"corners": ["bottom-right"]}}, "label.corners.0", "bottom-right"),
    ({"banner": {"seconds": 1.0}}, "banner.seconds", "1.0"),
    ({"banner": {"templates": {"en": "AI-generated clone"}}}, "banner.templates", "{creator}"),
    ({"banner": {"templates": {"en": "Clone of {name}"}}}, "banner.templates", "{creator}"),
    ({"banner": {"templates": {}}}, "banner.templates", "at least 1"),
    ({"captions": {"burned_in": False}}, "captions.burned_in", "cannot be false"),
    ({"captions": {"webvtt_sidecar": False}}, "captions.webvtt_sidecar", "cannot be false"),
    ({"spoken_disclosure": {"required": True}}, "spoken_disclosure", "templates is empty"),
    ({"spoken_disclosure": {"required": True, "templates": {"en": "Hello."}}}, "spoken_disclosure.templates",
     "{creator}"),
    ({"metadata": {"aigc_places": ["segment", "stream"]}}, "metadata.aigc_places", "archive"),
    ({"metadata": {"extra_tags": {"aigc": "{}"}}}, "metadata.extra_tags", "reserved"),
    ({"languages": ["en", "zh"]}, "banner", "zh"),
    ({"label_enabled": False}, "label_enabled", "unknown key"),
    ({"disclosure": "off"}, "disclosure", "unknown key"),
]


@pytest.mark.parametrize("patch, key_path, fragment", REJECTED, ids=[r[1] + ":" + r[2] for r in REJECTED])
def test_weakening_the_label_is_rejected_with_file_and_key_path(pdir, patch, key_path, fragment):
    """POLICY V5: no profile key can switch off, hide or weaken the label; each attempt is refused with its file and key
    path, and no channel can air under it."""
    path = write_profile(pdir, "weak", patch)
    with pytest.raises(ConfigError) as exc:
        load_profile("weak", directory=pdir)
    assert exc.value.source == str(path)
    assert key_path in [p for p, _ in exc.value.problems], exc.value.problems
    message = dict(exc.value.problems)[key_path]
    assert fragment in message, message
    assert str(path) in str(exc.value)
    with pytest.raises(ConfigError):  # and a channel naming it cannot air with it
        effective_policy(["weak"], directory=pdir)


def test_a_weakened_default_is_rejected_too(pdir):
    write_profile(pdir, "default", {"label": {"cap_height_fraction": 0.01}})
    with pytest.raises(ConfigError) as exc:
        effective_policy([], directory=pdir)
    assert "label.cap_height_fraction" in str(exc.value)


def test_not_a_mapping_and_bad_yaml_are_rejected(pdir):
    (pdir / "list.yaml").write_text("- a\n- b\n")
    (pdir / "broken.yaml").write_text("label: [unclosed\n")
    for name in ("list", "broken"):
        with pytest.raises(ConfigError) as exc:
            load_profile(name, directory=pdir)
        assert exc.value.problems[0][0] == "(file)"


# --- names --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../default", "..", "cn/../eu", "/etc/passwd", "CN", "cn.yaml", "", "c n"])
def test_path_traversal_and_malformed_names_are_rejected(pdir, name):
    with pytest.raises(ConfigError) as exc:
        effective_policy([name], directory=pdir)
    assert "available: default" in str(exc.value)


def test_unknown_name_lists_the_available_profiles():
    with pytest.raises(ConfigError) as exc:
        effective_policy(["cn", "mars"])
    assert "'mars'" in str(exc.value)
    assert "available: cn, default, eu, us" in str(exc.value)


def test_a_bare_string_is_not_taken_for_a_list_of_names():
    with pytest.raises(ConfigError):
        effective_policy("cn")


# --- digest and reloading -----------------------------------------------------------------------
def test_digest_is_stable_for_the_same_rules(pdir):
    write_profile(pdir, "x")
    first = effective_policy(["x"], directory=pdir).digest()
    write_profile(pdir, "x")  # rewritten, same content
    assert effective_policy(["x"], directory=pdir).digest() == first
    assert re.fullmatch(r"[0-9a-f]{64}", first)


CHANGES = [
    {"label": {"texts": ["AI avatar", "Synthetic"]}},
    {"label": {"cap_height_fraction": 0.06}},
    {"label": {"corners": ["top-left"]}},
    {"label": {"margin_fraction": 0.05}},
    {"banner": {"seconds": 3.0}},
    {"banner": {"templates": {"en": "AI clone of {creator}"}}},
    {"captions": {"cap_height_fraction": 0.04}},
    {"captions": {"max_chars_per_line": 20}},
    {"captions": {"max_lines": 1}},
    {"spoken_disclosure": {"required": True, "templates": {"en": "AI {creator}."}}},
    {"metadata": {"producer": "Other Studio"}},
    {"metadata": {"extra_tags": {"comment": "changed"}}},
    {"languages": ["en", "de"],
     "banner": {"templates": {"en": "AI-generated clone of {creator}", "de": "KI-Klon von {creator}"}}},
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: ".".join(c))
def test_digest_changes_when_any_rule_changes(pdir, change):
    before = effective_policy([], directory=pdir).digest()
    write_profile(pdir, "default", change)  # the same file, changed: the loader must not serve a stale copy
    after = effective_policy([], directory=pdir)
    assert after.digest() != before


def test_to_dict_round_trips_into_the_same_policy():
    policy = effective_policy(["cn", "eu", "us"])
    d = policy.to_dict()
    rebuilt = EffectivePolicy(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    assert rebuilt == policy and rebuilt.digest() == policy.digest()
