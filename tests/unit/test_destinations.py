"""Destination profiles (POLICY D1): each platform's rules load with their sources, and check_show applies them."""

import copy
from pathlib import Path

import pytest
import yaml

from studio.config import ConfigError
from studio.destinations import (
    DESTINATION_DIR,
    DestinationProfile,
    available_destinations,
    check_show,
    load_destination,
    refused,
)

SHIPPED = ["custom", "douyin", "facebook", "tiktok_live", "tiktok_shop_live", "twitch", "youtube"]
KEY = "live_123456_SeCrEtStReAmKeY"
URLS = {
    "youtube": f"rtmps://a.rtmps.youtube.com/live2/{KEY}",
    "twitch": f"rtmps://fra02.contribute.live-video.net/app/{KEY}",
    "facebook": f"rtmps://live-api-s.facebook.com:443/rtmp/{KEY}",
    "tiktok_live": f"rtmp://push.example-tiktok.test/live/{KEY}",
    "tiktok_shop_live": f"rtmp://push.example-tiktok.test/live/{KEY}",
    "douyin": f"rtmp://push.example-douyin.test/third/{KEY}",
    "custom": f"rtmp://127.0.0.1:1936/live/{KEY}",
}


def check(platform: str, *, url: str | None = None, automated: bool = True, ai_voice: bool = True,
          hours: float | None = None, directory: Path = DESTINATION_DIR):
    return check_show(platform=platform, url=URLS.get(platform, "") if url is None else url, automated=automated,
                      ai_voice=ai_voice, hours_per_day=hours, directory=directory)


def rules_of(findings) -> list[str]:
    return [f.rule for f in findings]


# --- shipped profiles ---------------------------------------------------------------------------
def test_the_shipped_platforms_are_listed():
    assert available_destinations() == SHIPPED


@pytest.mark.parametrize("platform", SHIPPED)
def test_every_shipped_profile_loads_with_a_source_for_every_rule(platform):
    profile = load_destination(platform)
    assert isinstance(profile, DestinationProfile) and profile.platform == platform
    assert profile.requires_ai_label.value is True
    for name in ("allows_fully_automated_avatar", "allows_ai_voice", "requires_ai_label", "max_stream_hours",
                 "rtmp_schemes", "url_hosts"):
        assert getattr(profile, name).source.strip()
    assert profile.operator_checklist and all(step.source for step in profile.operator_checklist)


def test_the_platforms_allow_what_policy_d1_says():
    douyin, shop = load_destination("douyin"), load_destination("tiktok_shop_live")
    assert douyin.allows_fully_automated_avatar.value is False
    assert shop.allows_ai_voice.value is False
    assert load_destination("facebook").rtmp_schemes.value == ["rtmps"]
    assert load_destination("youtube").operator_checklist[0].step.startswith("In YouTube Studio set \"Altered")


# --- check_show ---------------------------------------------------------------------------------
def test_douyin_refuses_a_fully_automated_show_naming_the_rule():
    findings = check("douyin", automated=True, ai_voice=False)
    assert rules_of(findings) == ["D1.douyin.real_person"] and refused(findings)
    message = findings[0].message
    assert message.startswith("D1.douyin.real_person:") and "Douyin" in message
    assert "真人驱动" in message and "person driving the avatar in real time" in message


def test_douyin_accepts_a_show_driven_by_a_person():
    assert check("douyin", automated=False, ai_voice=True) == []


def test_tiktok_shop_live_refuses_an_ai_voice():
    findings = check("tiktok_shop_live", automated=False, ai_voice=True)
    assert rules_of(findings) == ["D1.tiktok_shop_live.ai_voice"]
    assert "TikTok Shop LIVE" in findings[0].message and "AI-generated voice" in findings[0].message
    assert "conservative" not in findings[0].message  # this rule is the platform's own words
    assert rules_of(check("tiktok_shop_live")) == ["D1.tiktok_shop_live.real_person", "D1.tiktok_shop_live.ai_voice"]


def test_a_conservative_reading_says_so():
    (f, _) = check("tiktok_live")
    assert f.rule == "D1.tiktok_live.real_person" and "conservative reading" in f.message


@pytest.mark.parametrize("platform", ["youtube", "twitch", "custom"])
def test_youtube_twitch_and_custom_allow_an_automated_ai_voiced_show(platform):
    assert check(platform, automated=True, ai_voice=True) == []


def test_facebook_refuses_plain_rtmp():
    findings = check("facebook", url=f"rtmp://live-api-s.facebook.com:80/rtmp/{KEY}")
    assert rules_of(findings) == ["D1.facebook.scheme"] and refused(findings)
    assert "rtmps://" in findings[0].message and "Facebook" in findings[0].message
    assert check("facebook") == []


@pytest.mark.parametrize("url", [f"http://a.rtmp.youtube.com/live2/{KEY}", f"a.rtmp.youtube.com/live2/{KEY}",
                                 "", "rtmp:///live2", "rtmp://[::1/live"])
def test_urls_that_are_not_rtmp_are_refused(url):
    assert rules_of(check("youtube", url=url)) == ["D1.youtube.url"]


def test_a_host_of_another_platform_is_refused():
    findings = check("youtube", url=f"rtmps://live-api-s.facebook.com:443/rtmp/{KEY}")
    assert rules_of(findings) == ["D1.youtube.host"]
    assert "is an ingest host of facebook" in findings[0].message


def test_custom_cannot_carry_a_known_platform_past_its_rules():
    findings = check("custom", url=f"rtmps://a.rtmps.youtube.com/live2/{KEY}")
    assert rules_of(findings) == ["D1.custom.host"] and "set the destination's platform to youtube" in \
        findings[0].message


def test_hosts_match_subdomains_and_case():
    assert check("youtube", url=f"rtmp://A.RTMP.YouTube.com/live2/{KEY}") == []
    assert rules_of(check("youtube", url=f"rtmp://youtube.com.evil.test/live2/{KEY}")) == ["D1.youtube.host"]


def test_no_message_shows_the_stream_key():
    cases = [check(p, url=u) for p, u in URLS.items()]
    cases += [check("facebook", url=f"rtmp://user:pw@live-api-s.facebook.com/rtmp/{KEY}", hours=24),
              check("custom", url=f"rtmps://a.rtmps.youtube.com/live2/{KEY}?k={KEY}"),
              check("youtube", url=f"{KEY}:{KEY}@a.rtmp.youtube.com/live2")]
    messages = [f.message for findings in cases for f in findings]
    assert messages and not any(KEY in m or "pw" in m for m in messages)


def test_longer_days_than_one_broadcast_are_a_warning():
    findings = check("facebook", hours=10)
    assert rules_of(findings) == ["D1.facebook.max_stream_hours"]
    assert findings[0].severity == "warning" and not refused(findings) and "8 h" in findings[0].message
    assert check("facebook", hours=8) == [] and check("facebook", hours=None) == []
    assert check("youtube", hours=24) == []


# --- loading ------------------------------------------------------------------------------------
def test_unknown_platform_lists_the_available_ones():
    with pytest.raises(ConfigError) as exc:
        check("kick")
    assert "unknown platform 'kick'" in str(exc.value) and ", ".join(SHIPPED) in str(exc.value)


@pytest.mark.parametrize("name", ["YouTube", "tiktok-live", "../youtube", "", None])
def test_invalid_platform_names_are_refused_with_the_list(name):
    with pytest.raises(ConfigError, match="invalid platform name") as exc:
        load_destination(name)
    assert "douyin" in str(exc.value)


def shipped(name: str) -> dict:
    return yaml.safe_load((DESTINATION_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def write(directory: Path, name: str, data: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("patch, path", [
    (lambda d: d.update(allows_avatar=True), "allows_avatar"),
    (lambda d: d["allows_ai_voice"].update(note="x"), "allows_ai_voice.note"),
    (lambda d: d["operator_checklist"][0].update(optional=True), "operator_checklist.0.optional"),
])
def test_unknown_keys_are_rejected_with_file_and_key_path(tmp_path, patch, path):
    data = copy.deepcopy(shipped("douyin"))
    patch(data)
    source = write(tmp_path, "douyin", data)
    with pytest.raises(ConfigError) as exc:
        load_destination("douyin", directory=tmp_path)
    assert exc.value.source == str(source)
    assert any(p == path and "unknown key" in msg for p, msg in exc.value.problems), exc.value.problems


@pytest.mark.parametrize("patch, path, text", [
    (lambda d: d["requires_ai_label"].update(value=False), "requires_ai_label", "cannot be false"),
    (lambda d: d["rtmp_schemes"].update(value=["srt"]), "rtmp_schemes.value.0", "'rtmp' or 'rtmps'"),
    (lambda d: d["rtmp_schemes"].update(value=[]), "rtmp_schemes", "must list"),
    (lambda d: d["url_hosts"].update(value=["https://x.com"]), "url_hosts", "host names"),
    (lambda d: d["allows_ai_voice"].pop("source"), "allows_ai_voice.source", "Field required"),
    (lambda d: d["max_stream_hours"].update(value=0), "max_stream_hours", "between 0 and 168"),
    (lambda d: d.update(platform="other"), "platform", "the file is douyin.yaml"),
])
def test_invalid_profiles_are_rejected_with_their_key_path(tmp_path, patch, path, text):
    data = copy.deepcopy(shipped("douyin"))
    patch(data)
    write(tmp_path, "douyin", data)
    with pytest.raises(ConfigError) as exc:
        load_destination("douyin", directory=tmp_path)
    assert any(p == path and text in msg for p, msg in exc.value.problems), exc.value.problems


def test_a_changed_file_is_read_again(tmp_path):
    data = copy.deepcopy(shipped("custom"))
    write(tmp_path, "custom", data)
    assert check("custom", directory=tmp_path) == []
    data["allows_ai_voice"] = {"value": False, "source": "test: this server bans AI voices"}
    write(tmp_path, "custom", data)
    assert rules_of(check("custom", directory=tmp_path)) == ["D1.custom.ai_voice"]
