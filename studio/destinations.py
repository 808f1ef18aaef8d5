"""Destination profiles (POLICY D1): what each platform allows, and whether a show may go to it.

One YAML per platform under configs/destinations/, named like `Destination.platform`. Every rule is a
`Sourced` value: the value, the platform page or statement it comes from, and `conservative: true` where
the platform's rule is not clear and the stricter reading was chosen (the finding then says so, so that an
operator who learns otherwise knows the profile, not the platform, refused the show).

`check_show` refuses (severity "error"):
- `D1.<platform>.real_person`: a fully automated show where the platform wants a person driving it live;
- `D1.<platform>.ai_voice`: an AI-generated voice where the platform bans one;
- `D1.<platform>.url` / `.scheme` / `.host`: a URL that is not RTMP(S), a scheme the platform does not
  take (Facebook takes only RTMPS), a host that is not the platform's, or a host of another platform's
  profile (so that a Douyin address cannot be scheduled as `custom` to escape Douyin's rules);
and warns (severity "warning") with `D1.<platform>.max_stream_hours` when a show runs longer per day than
the platform keeps one broadcast going. Messages show the URL's scheme and host only, never the stream key.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from studio.config import ConfigError, Strict, parse_yaml_model
from studio.resources import DESTINATION_DIR

NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)+$")
# The whole URL must match (fullmatch: with `$` a trailing newline would pass). The host part is judged apart.
URL_PATTERN = re.compile(r"rtmps?://[^/\s]+/\S+/\S+")
RELAY_SCHEMES = ("rtmp", "rtmps")
INTERNAL_NAMES = ("localhost",)
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local")
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not public, not flagged private
_KNOWN_SCHEMES = {"http", "https", "rtmp", "rtmps", "rtmpt", "rtmpe", "rtsp", "srt", "udp", "rist", "file"}

T = TypeVar("T")
Scheme = Literal["rtmp", "rtmps"]
Severity = Literal["error", "warning"]


class Sourced(Strict, Generic[T]):
    value: T = Field(..., description="The platform's rule.")
    source: str = Field(..., min_length=1, description="The platform policy page or statement it comes from, "
                        "and what it says; quoted in findings.")
    conservative: bool = Field(False, description="True where the platform's rule is unclear and the stricter "
                               "reading was chosen; findings say so.")


class ChecklistStep(Strict):
    step: str = Field(..., min_length=1, description="What the operator does on the platform before going live.")
    source: str = Field(..., min_length=1, description="The platform page that asks for it.")


class DestinationProfile(Strict):
    """One platform's rules for an AI-avatar show (POLICY D1)."""

    platform: str = Field(..., description="Platform name, the file's stem and `Destination.platform`.")
    display_name: str = Field(..., min_length=1, description="The platform's name as people write it.")
    allows_fully_automated_avatar: Sourced[bool] = Field(
        ..., description="Whether an avatar may present with no person driving it in real time.")
    allows_ai_voice: Sourced[bool] = Field(..., description="Whether the presenter may speak with an AI voice.")
    requires_ai_label: Sourced[bool] = Field(
        ..., description="Whether the platform asks for AI content to be labelled; always true here, and our "
        "label is on every frame whatever it says (POLICY V1, V5).")
    max_stream_hours: Sourced[float | None] = Field(
        ..., description="Longest single broadcast the platform keeps going, in hours; null when it sets none.")
    rtmp_schemes: Sourced[list[Scheme]] = Field(..., description="URL schemes the platform's ingest accepts.")
    url_hosts: Sourced[list[str]] = Field(
        ..., description="Ingest host patterns (`*.example.com` covers its subdomains); empty: any host.")
    operator_checklist: list[ChecklistStep] = Field(
        default_factory=list, description="What the operator must set on the platform itself, such as its own "
        "AI-content or paid-promotion disclosure, which no stream can carry.")

    @field_validator("platform")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.fullmatch(v):
            raise ValueError(f"platform {v!r} must match {NAME_PATTERN.pattern}")
        return v

    @field_validator("requires_ai_label")
    @classmethod
    def _label_always(cls, v: Sourced[bool]) -> Sourced[bool]:
        """No destination profile can switch the AI label off (POLICY V1, V5)."""
        if not v.value:
            raise ValueError("cannot be false: no destination can switch off the AI label (POLICY V1, V5)")
        return v

    @field_validator("max_stream_hours")
    @classmethod
    def _hours(cls, v: Sourced[float | None]) -> Sourced[float | None]:
        if v.value is not None and not 0 < v.value <= 24 * 7:
            raise ValueError(f"max_stream_hours.value must be between 0 and 168 hours or null, got {v.value}")
        return v

    @field_validator("rtmp_schemes")
    @classmethod
    def _schemes(cls, v: Sourced[list[str]]) -> Sourced[list[str]]:
        if not v.value:
            raise ValueError("rtmp_schemes.value must list rtmp, rtmps or both")
        return v

    @field_validator("url_hosts")
    @classmethod
    def _hosts(cls, v: Sourced[list[str]]) -> Sourced[list[str]]:
        bad = [h for h in v.value if not HOST_PATTERN.fullmatch(h)]
        if bad:
            raise ValueError(f"url_hosts {bad} must be lower-case host names, optionally starting with '*.'")
        return v


# --- loading --------------------------------------------------------------------------------------
def available_destinations(directory: Path = DESTINATION_DIR) -> list[str]:
    """Platform names: the stems of directory/*.yaml that are valid names."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if NAME_PATTERN.fullmatch(p.stem))


def _listing(directory: Path) -> str:
    return ", ".join(available_destinations(directory)) or "(none)"




@lru_cache(maxsize=64)
def _parse(source: str, stem: str, text: str) -> DestinationProfile:
    # Keyed by the file's text, so a file that changed is parsed again.
    profile = parse_yaml_model(source, text, DestinationProfile, unknown_key="unknown key; remove it or correct "
                               "its spelling (studio/destinations.py describes the fields)")
    if profile.platform != stem:
        raise ConfigError(source, [("platform", f"is {profile.platform!r} but the file is {stem}.yaml; make them "
                                                "the same")])
    return profile


def load_destination(platform: str, *, directory: Path = DESTINATION_DIR) -> DestinationProfile:
    """Load and validate configs/destinations/PLATFORM.yaml; ConfigError lists the available platforms."""
    directory = Path(directory)
    if not isinstance(platform, str) or not NAME_PATTERN.fullmatch(platform):
        raise ConfigError(str(directory), [("platform", f"invalid platform name {platform!r}: must match "
                                            f"{NAME_PATTERN.pattern}; available: {_listing(directory)}")])
    path = directory / f"{platform}.yaml"
    if not path.is_file():
        raise ConfigError(str(directory), [("platform", f"unknown platform {platform!r}; available: "
                                            f"{_listing(directory)} (use `custom` for any other RTMP server)")])
    return _parse(str(path), platform, path.read_text(encoding="utf-8"))


# --- internal destinations ---------------------------------------------------------------------------
def internal_address_problem(host: str) -> str | None:
    """Why `host` (a URL's host, a name or an IP literal) is this machine or a private network, or None.

    Names are not resolved here (the domain does no I/O, and a check at save time would be stale anyway): only IP
    literals and the names reserved for local use are judged. DNS rebinding (a public name that later resolves to
    an internal address) is handled by the relay, which resolves the host itself and checks every address with
    this function before each connection (workers.streamer.relay.check_destination)."""
    h = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    if h in INTERNAL_NAMES or h.endswith(INTERNAL_SUFFIXES):
        return f"{h} is a local or internal host name"
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        # 2130706433, 0x7f000001, 127.1 or 0177.0.0.1 all reach 127.0.0.1: no TLD is a number.
        if re.fullmatch(r"0x[0-9a-f]*|[0-9]+", h.rsplit(".", 1)[-1]):
            return f"{h} is an IP address written in a non-standard form; write it as a.b.c.d"
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, hit in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("private", ip.is_private or (ip.version == 4 and ip in _SHARED_SPACE)),
                      ("reserved", ip.is_reserved)):
        if hit:
            return f"{ip} is a {kind} address"
    return None


def destination_url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why `url` cannot be a destination, or None. The whole URL must match; the value is never echoed (it holds
    the stream key). `allow_private` is the admin's setting `streamer.allow_private_destinations`."""
    if not isinstance(url, str) or not URL_PATTERN.fullmatch(url):
        scheme = url.split("://", 1)[0].lower() if isinstance(url, str) and "://" in url else "none"
        shown = scheme if scheme in _KNOWN_SCHEMES or scheme == "none" else "other"  # may be part of a key
        return f"not an RTMP(S) URL of the form rtmp[s]://host/app/KEY (scheme {shown!r})"
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return "the URL's host cannot be read (an unbalanced [ ?)"
    if not allow_private and (problem := internal_address_problem(host)) is not None:
        return (f"{problem}: destinations on this host or a private network are refused unless an admin sets "
                f"streamer.allow_private_destinations")
    return None


def error_category(detail: str | None) -> str | None:
    """A short category for a relay's error, what an agency sees instead of the socket error's text (which can
    describe hosts on our network); ops and admins see the masked detail."""
    if not detail:
        return None
    d = detail.lower()
    for category, words in (
            ("refused: internal address", ("internal address", "private network", "local or internal")),
            ("refused: scheme", ("only rtmp",)),
            ("waiting for the channel's stream", ("local ingest",)),
            ("dns", ("resolve", "name or service not known", "name resolution", "nodename", "no address associated")),
            ("tls", ("tls", "ssl", "certificate", "handshake")),
            ("connection refused", ("connection refused", "refused")),
            ("timeout", ("timed out", "timeout", "stuck")),
            ("unreachable", ("unreachable", "no route to host")),
            ("rejected by server", ("forbidden", "unauthorized", "rejected", "access denied", "403", "401", "404")),
            ("connection lost", ("reset", "broken pipe", "end of file", "input/output error", "i/o error"))):
        if any(w in d for w in words):
            return category
    return "error"


# --- checking a show ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DestinationFinding:
    rule: str          # "D1.douyin.real_person"
    message: str       # names the rule, the platform and what to do
    severity: Severity = "error"


def refused(findings: list[DestinationFinding]) -> bool:
    """Whether any finding is an error, i.e. the show may not be scheduled to this destination."""
    return any(f.severity == "error" for f in findings)


def _host_matches(host: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(host, p) or (p.startswith("*.") and host == p[2:]) for p in patterns)


def _source(value: Sourced) -> str:
    caveat = ("; a conservative reading where the platform is unclear: confirm with the platform and, if it "
              "allows this, change the profile") if value.conservative else ""
    return f"(source: {value.source}{caveat})"


def _url_findings(profile: DestinationProfile, url: str, directory: Path) -> list[DestinationFinding]:
    p, name = profile.platform, profile.display_name
    try:
        parts = urlsplit(url.strip())
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    except ValueError:  # e.g. an unbalanced [ in an IPv6 host
        scheme, host = "", ""
    if scheme not in ("rtmp", "rtmps") or not host:
        # Only a well-known scheme is echoed: text before a colon may be part of a pasted stream key.
        shown = f"{scheme}://{host}" if scheme in _KNOWN_SCHEMES else "a URL with no RTMP scheme"
        return [DestinationFinding(f"D1.{p}.url", f"D1.{p}.url: {shown} is not an RTMP or RTMPS address for {name}; "
                                   "paste the server URL and stream key the platform gives, e.g. rtmps://host/app/KEY")]
    findings = []
    schemes = profile.rtmp_schemes
    if scheme not in schemes.value:
        findings.append(DestinationFinding(
            f"D1.{p}.scheme", f"D1.{p}.scheme: {name} does not take {scheme}:// streams, only "
            f"{', '.join(s + '://' for s in schemes.value)} {_source(schemes)}; use the platform's "
            f"{schemes.value[-1]}:// server URL"))
    hosts = profile.url_hosts
    own = bool(hosts.value) and _host_matches(host, hosts.value)
    owners = [] if own else [o for o in available_destinations(directory) if o != p and
                             _host_matches(host, load_destination(o, directory=directory).url_hosts.value)]
    if owners:
        findings.append(DestinationFinding(
            f"D1.{p}.host", f"D1.{p}.host: {host} is an ingest host of {', '.join(owners)}, not of {name}; set the "
            f"destination's platform to {owners[0]} so that its rules apply"))
    elif hosts.value and not own:
        findings.append(DestinationFinding(
            f"D1.{p}.host", f"D1.{p}.host: {host} is not a {name} ingest host ({', '.join(hosts.value)}) "
            f"{_source(hosts)}; check the URL, or set the destination's platform to the one it belongs to"))
    return findings


def check_show(*, platform: str, url: str, automated: bool, ai_voice: bool, hours_per_day: float | None = None,
               directory: Path = DESTINATION_DIR) -> list[DestinationFinding]:
    """Every D1 finding for a show of an avatar sent to `url` on `platform`; `refused` says if any refuses it.

    `automated`: no person drives the avatar in real time. `ai_voice`: the avatar speaks with an AI voice.
    `hours_per_day`: planned air time per day, None for unknown. ConfigError for an unknown platform."""
    profile = load_destination(platform, directory=directory)
    p, name = profile.platform, profile.display_name
    findings: list[DestinationFinding] = []
    rule = profile.allows_fully_automated_avatar
    if automated and not rule.value:
        findings.append(DestinationFinding(
            f"D1.{p}.real_person", f"D1.{p}.real_person: {name} does not allow a fully automated avatar show "
            f"{_source(rule)}; schedule it with a person driving the avatar in real time, or choose another "
            f"destination"))
    rule = profile.allows_ai_voice
    if ai_voice and not rule.value:
        findings.append(DestinationFinding(
            f"D1.{p}.ai_voice", f"D1.{p}.ai_voice: {name} does not allow an AI-generated voice {_source(rule)}; "
            f"have a person speak live, or choose another destination"))
    findings += _url_findings(profile, url, directory)
    hours = profile.max_stream_hours
    if hours_per_day is not None and hours.value is not None and hours_per_day > hours.value:
        findings.append(DestinationFinding(
            f"D1.{p}.max_stream_hours", f"D1.{p}.max_stream_hours: {name} ends a broadcast after {hours.value:g} h "
            f"{_source(hours)}, and the show airs {hours_per_day:g} h a day; plan breaks at most {hours.value:g} h "
            f"apart and a new stream URL for each broadcast if the platform issues one", severity="warning"))
    return findings
