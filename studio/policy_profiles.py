"""Policy profiles: one YAML per jurisdiction under configs/policies/, merged so the strictest rule wins.

A channel names its profiles; `default` always applies too and comes first. The models below are the
only way a profile can say anything, and none of their fields can switch the label off (POLICY V5):
unknown keys such as `enabled: false` are rejected, as are values below the legal minimums.

Merge rules (`effective_policy`), each order-independent except where noted as line order:
- badge lines: "AI avatar" first, then every other line in profile order, deduplicated;
- label cap height, margin, banner seconds, caption cap height: the largest (bigger or longer is stricter);
- caption max chars per line and max lines: the smallest (shorter lines read better, and a CJK line must fit);
- corner: the first of `CORNER_PREFERENCE` that every profile allows; none → ConfigError naming them;
- banner texts and languages: union in profile order, deduplicated;
- spoken disclosure: required if any profile requires it; the text is every requiring profile's templates,
  in profile order, deduplicated, joined by a space (each jurisdiction that asks for it hears its own words);
- producer: the one override if profiles set any; two different overrides → ConfigError (not a strictness
  question, so no silent pick);
- extra tags: union of keys; one key with different values → the distinct values joined with " | ";
- AIGC places: union (each profile must already list segment, stream and archive; POLICY M1).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from studio.config import ConfigError, Strict, parse_yaml_model
from studio.resources import POLICY_DIR

NAME_PATTERN = re.compile(r"^[a-z0-9_-]+$")
BADGE_TEXT = "AI avatar"  # POLICY V1: always the first badge line, whatever the profiles say
CORNER_PREFERENCE = ("top-right", "top-left")  # EU code of practice suggests top-right
AIGC_PLACES = ("segment", "stream", "archive")  # POLICY M1
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"

Corner = Literal["top-right", "top-left"]
Place = Literal["segment", "stream", "archive"]


def _check_template(template: str) -> str:
    """A disclosure template must name the creator and have no other placeholder."""
    if "{creator}" not in template:
        raise ValueError(f"template {template!r} lacks the {{creator}} placeholder (POLICY V3)")
    try:
        template.format(creator="X")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"template {template!r} has a placeholder other than {{creator}}: {exc}") from None
    return template


def _check_languages(templates: dict[str, str], info: ValidationInfo, what: str) -> None:
    languages = info.data.get("languages")
    if languages is None:  # `languages` itself failed; its own error is reported
        return
    stray = [lang for lang in templates if lang not in languages]
    if stray:
        raise ValueError(f"{what} has a text for {', '.join(stray)}, not in languages {languages}")


class LabelRules(Strict):
    """The persistent badge (POLICY V1, V2): its lines, a cap height of at least 5% of the frame's shorter side,
    and the top corners it may sit in, inside the safe-area margin."""

    texts: list[str] = Field(
        ..., min_length=1, description="Badge lines shown on every frame that airs; \"AI avatar\" is always "
        "the first line of the merged badge (POLICY V1)."
    )
    cap_height_fraction: float = Field(
        ..., ge=0.05, le=0.2, description="Cap height of the badge text as a share of the frame's shorter side "
        "(GB 45438-2025 §5.4: at least 5%)."
    )
    corners: list[Corner] = Field(
        ..., min_length=1, description="Corners the badge may sit in; bottom corners belong to captions and "
        "product overlays (POLICY V2)."
    )
    margin_fraction: float = Field(..., ge=0.0, le=0.2, description="Safe-area margin as a share of the width.")

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        for text in v:
            if not text.strip():
                raise ValueError(f"badge line {text!r} is blank")
            if len(text) > 32:
                raise ValueError(f"badge line {text!r} is longer than 32 characters")
        return v

    @field_validator("corners")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"corners repeat a value: {v}")
        return v


class BannerRules(Strict):
    """The disclosure banner at the start of every show and after every break: at least 2.0 s, and a text per
    language that names the creator (POLICY V3)."""

    seconds: float = Field(
        ..., ge=2.0, le=60.0, description="How long the disclosure banner shows at the start of every show and "
        "after every break (GB 45438 §5.4; POLICY V3: at least 2.0 s)."
    )
    templates: dict[str, str] = Field(
        ..., min_length=1, description="Banner text per language; says the presenter is an AI-generated clone "
        "of the named creator, so each must contain {creator}."
    )

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for template in v.values():
            _check_template(template)
        return v


class CaptionRules(Strict):
    burned_in: bool = Field(
        ..., description="Captions are burned into the picture; must be true (POLICY V4: RTMP has no caption "
        "track that carries non-Latin text reliably)."
    )
    webvtt_sidecar: bool = Field(..., description="A WebVTT sidecar for HLS preview and archive; must be true (V4).")
    cap_height_fraction: float = Field(
        ..., ge=0.025, le=0.1, description="Minimum caption cap height as a share of the frame's shorter side."
    )
    max_chars_per_line: int = Field(..., ge=8, le=60, description="Longest caption line, in characters.")
    max_lines: int = Field(..., ge=1, le=4, description="Most caption lines on screen at once.")

    @field_validator("burned_in", "webvtt_sidecar")
    @classmethod
    def _always_on(cls, v: bool, info: ValidationInfo) -> bool:
        """Burned-in captions and the WebVTT sidecar cannot be switched off (POLICY V4, V5)."""
        if not v:
            raise ValueError(f"{info.field_name} cannot be false: captions cannot be turned off (POLICY V4/V5)")
        return v


class SpokenDisclosure(Strict):
    required: bool = Field(..., description="Speak the disclosure at the start of every show (POLICY V6).")
    templates: dict[str, str] = Field(
        default_factory=dict, description="Spoken text per language, each with {creator}; needed when required."
    )

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for template in v.values():
            _check_template(template)
        return v

    @model_validator(mode="after")
    def _text_when_required(self) -> SpokenDisclosure:
        if self.required and not self.templates:
            raise ValueError("required is true but templates is empty: give the words to speak")
        return self


class MetadataRules(Strict):
    """Machine-readable marks: the AIGC key is written on segments, the stream and archives, and no profile can
    set or drop it (POLICY M1)."""

    producer: str | None = Field(
        None, min_length=1, description="ContentProducer for the AIGC key (GB 45438 Annex E), overriding the "
        "settings' producer; null keeps it."
    )
    extra_tags: dict[str, str] = Field(
        default_factory=dict, description="Extra container tags, e.g. `comment`; the `AIGC` key itself is "
        "written by the middleware and cannot be set here."
    )
    aigc_places: list[Place] = Field(
        ..., description="Where the AIGC metadata is written: segment, stream and archive, all three (POLICY M1)."
    )

    @field_validator("extra_tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", key):
                raise ValueError(f"tag key {key!r} must be lower-case letters, digits and _ (at most 32)")
            if key == "aigc":
                raise ValueError("tag key 'aigc' is reserved for the AIGC metadata (POLICY M1)")
            if not value.strip() or len(value) > 256 or "\n" in value:
                raise ValueError(f"tag {key!r} value must be one non-blank line of at most 256 characters")
        return v

    @field_validator("aigc_places")
    @classmethod
    def _all_places(cls, v: list[str]) -> list[str]:
        missing = [p for p in AIGC_PLACES if p not in v]
        if missing:
            raise ValueError(f"must list segment, stream and archive (POLICY M1); missing {', '.join(missing)}")
        return v


class PolicyProfile(Strict):
    """One jurisdiction's or destination's disclosure rules; `effective_policy` merges several. Unknown keys are
    refused and no field can remove or hide the label (POLICY V5)."""

    description: str = Field(..., min_length=1, description="Whom the profile is for and the main sources.")
    languages: list[str] = Field(..., min_length=1, description="Languages of this profile's texts (BCP 47).")
    label: LabelRules = Field(..., description="The persistent badge (POLICY V1, V2).")
    banner: BannerRules = Field(..., description="The start-of-show and after-break banner (POLICY V3).")
    captions: CaptionRules = Field(..., description="Captions of the avatar's speech (POLICY V4).")
    spoken_disclosure: SpokenDisclosure = Field(..., description="The spoken disclosure (POLICY V6).")
    metadata: MetadataRules = Field(..., description="Machine-readable marks (POLICY M1).")

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str]) -> list[str]:
        for lang in v:
            if not re.fullmatch(LANGUAGE_PATTERN, lang):
                raise ValueError(f"language {lang!r} is not a language tag like 'en' or 'zh-Hans'")
        if len(set(v)) != len(v):
            raise ValueError(f"languages repeat a value: {v}")
        return v

    # Field validators run in declaration order, so `languages` is in info.data here.
    @field_validator("banner")
    @classmethod
    def _banner_languages(cls, v: BannerRules, info: ValidationInfo) -> BannerRules:
        _check_languages(v.templates, info, "banner.templates")
        missing = [lang for lang in info.data.get("languages") or [] if lang not in v.templates]
        if missing:
            raise ValueError(f"banner.templates has no text for language {', '.join(missing)}")
        return v

    @field_validator("spoken_disclosure")
    @classmethod
    def _spoken_languages(cls, v: SpokenDisclosure, info: ValidationInfo) -> SpokenDisclosure:
        _check_languages(v.templates, info, "spoken_disclosure.templates")
        return v


# --- loading --------------------------------------------------------------------------------------
def available_profiles(directory: Path = POLICY_DIR) -> list[str]:
    """Profile names: the stems of directory/*.yaml that are valid names."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if NAME_PATTERN.fullmatch(p.stem))




@lru_cache(maxsize=64)
def _parse(source: str, text: str) -> PolicyProfile:
    # Keyed by the file's text, so a file that changed is parsed again.
    return parse_yaml_model(source, text, PolicyProfile, unknown_key="unknown key (value {value!r}); no profile "
                            "setting can switch off, hide or weaken the label (POLICY V5)")


def _path_for(name: str, directory: Path) -> Path:
    directory = Path(directory)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(str(directory), [("profiles", f"invalid profile name {name!r}: must match "
                                            f"{NAME_PATTERN.pattern}; available: {_listing(directory)}")])
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(str(directory), [("profiles", f"unknown profile {name!r}; available: "
                                            f"{_listing(directory)}")])
    return path


def _listing(directory: Path) -> str:
    return ", ".join(available_profiles(directory)) or "(none)"


def load_profile(name: str, *, directory: Path = POLICY_DIR) -> PolicyProfile:
    """Load and validate configs/policies/NAME.yaml; ConfigError names the file and each bad key path."""
    path = _path_for(name, directory)
    return _parse(str(path), path.read_text(encoding="utf-8"))


# --- merging --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EffectivePolicy:
    """The merged rules a channel airs under; `digest` identifies them in policy stamps and the audit."""

    profiles: tuple[str, ...]
    badge_lines: tuple[str, ...]
    cap_height_fraction: float
    corner: str
    margin_fraction: float
    banner_seconds: float
    banner_templates: tuple[str, ...]
    caption_cap_fraction: float
    caption_max_chars: int
    caption_max_lines: int
    spoken_disclosure: str | None
    spoken_templates: tuple[tuple[str, str], ...]   # (language, template) of every profile that requires it
    producer: str | None
    extra_tags: dict[str, str]
    languages: tuple[str, ...]
    aigc_places: tuple[str, ...]

    def banner_lines(self, creator: str) -> list[str]:
        return [template.format(creator=creator) for template in self.banner_templates]

    def spoken_text(self, creator: str, language: str | None = None) -> str | None:
        """The disclosure to say at show start; with `language`, only what a voice of that language can say.

        Raises ValueError when a disclosure is required but none is in `language`: a Chinese notice read by
        an English voice would be no notice at all, so the segment fails rather than airing it."""
        if self.spoken_disclosure is None:
            return None
        if language is None:
            return self.spoken_disclosure.format(creator=creator)
        primary = language.split("-")[0].lower()
        texts = [t for lang, t in self.spoken_templates if lang.split("-")[0].lower() == primary]
        if not texts:
            have = ", ".join(sorted({lang for lang, _ in self.spoken_templates}))
            raise ValueError(f"profiles {', '.join(self.profiles)} require a spoken disclosure, written in {have}, "
                             f"but the speech voice speaks {language!r}: configure a voice for one of those "
                             f"languages (tts.voice) or add a {primary} template to the profile")
        return " ".join(texts).format(creator=creator)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        d["extra_tags"] = dict(sorted(self.extra_tags.items()))
        return d

    def digest(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _union(items) -> tuple:
    return tuple(dict.fromkeys(items))


def _merge_tags(loaded: list[PolicyProfile]) -> dict[str, str]:
    values: dict[str, list[str]] = {}
    for profile in loaded:
        for key, value in profile.metadata.extra_tags.items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return {key: " | ".join(vals) for key, vals in values.items()}


def effective_policy(names: list[str] | tuple[str, ...], *, directory: Path = POLICY_DIR) -> EffectivePolicy:
    """Merge `default` and the named profiles; the strictest value of each rule wins (see module doc), and the
    badge's first line is always "AI avatar" (POLICY V1)."""
    if isinstance(names, str):  # a bare "cn" would otherwise be read as the names "c" and "n"
        raise ConfigError(str(directory), [("profiles", f"expected a list of profile names, got {names!r}")])
    order = _union(["default", *names])
    loaded = [load_profile(name, directory=directory) for name in order]
    sources = [str(Path(directory) / f"{name}.yaml") for name in order]

    allowed = [c for c in CORNER_PREFERENCE if all(c in p.label.corners for p in loaded)]
    if not allowed:
        each = "; ".join(f"{n} allows {', '.join(p.label.corners)}" for n, p in zip(order, loaded, strict=True))
        raise ConfigError(", ".join(sources), [("label.corners", f"no corner is allowed by every profile ({each})")])

    producers = {n: p.metadata.producer for n, p in zip(order, loaded, strict=True) if p.metadata.producer}
    if len(set(producers.values())) > 1:
        each = "; ".join(f"{n}: {v!r}" for n, v in producers.items())
        raise ConfigError(", ".join(sources), [("metadata.producer", f"profiles set different producers ({each}); "
                                                "keep one")])

    spoken_pairs = _union((lang, t) for p in loaded if p.spoken_disclosure.required
                          for lang, t in p.spoken_disclosure.templates.items())
    spoken = _union(t for _, t in spoken_pairs)
    return EffectivePolicy(
        profiles=order,
        badge_lines=_union([BADGE_TEXT, *(t for p in loaded for t in p.label.texts)]),
        cap_height_fraction=max(p.label.cap_height_fraction for p in loaded),
        corner=allowed[0],
        margin_fraction=max(p.label.margin_fraction for p in loaded),
        banner_seconds=max(p.banner.seconds for p in loaded),
        banner_templates=_union(t for p in loaded for t in p.banner.templates.values()),
        caption_cap_fraction=max(p.captions.cap_height_fraction for p in loaded),
        caption_max_chars=min(p.captions.max_chars_per_line for p in loaded),
        caption_max_lines=min(p.captions.max_lines for p in loaded),
        spoken_disclosure=" ".join(spoken) if spoken else None,
        spoken_templates=spoken_pairs,
        producer=next(iter(producers.values()), None),
        extra_tags=_merge_tags(loaded),
        languages=_union(lang for p in loaded for lang in p.languages),
        aigc_places=_union(place for p in loaded for place in p.metadata.aigc_places),
    )
