"""Policy middleware: every frame labelled and watermarked, speech captioned, AIGC metadata set, the
encoded file checked, and only then stamped.

Fail closed: any error here fails the segment, and a segment without a stamp never airs. What the
labels say, how big and where comes from the channel's policy profiles (`EffectivePolicy`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from studio.config import LabelStyle, MediaProfile
from studio.policy import CaptionCue, PolicyStamp, aigc_metadata, make_stamp, wrap_text
from studio.policy_profiles import EffectivePolicy
from studio.storage import sha256_file
from workers.media.overlay import OverlayError, Patch, blend, font_for_cap_height, needs_cjk, text_box
from workers.media.watermark import Mark, WatermarkEmbedder
from workers.render.faults import NO_FAULTS, FaultPlan


class PolicyMiddleware:
    def __init__(self, *, policy: EffectivePolicy, style: LabelStyle, profile: MediaProfile, key: bytes,
                 producer: str, faults: FaultPlan = NO_FAULTS):
        if not key:
            raise OverlayError("no policy key: run `studio keys init` or set STUDIO_POLICY_KEY")
        self.policy, self.style, self.profile, self.key, self.faults = policy, style, profile, key, faults
        self.producer = policy.producer or producer
        short = min(profile.width, profile.height)
        cap = int(np.ceil(policy.cap_height_fraction * short))
        fonts = self._fonts(policy.badge_lines, cap)
        # Two polarities of one badge: black on white over a light picture, white on black over a dark one.
        # The box always contrasts with the text; matching it to the surroundings is what lets a viewer's
        # eye and OCR-based moderation (which thresholds the whole picture) find it at once.
        lines = list(policy.badge_lines)
        self.badges = {
            "light": text_box(lines, fonts, pad=max(6, cap // 3), fg=(0, 0, 0), bg=(255, 255, 255), bg_alpha=0.94),
            "dark": text_box(lines, fonts, pad=max(6, cap // 3), fg=(255, 255, 255), bg=(0, 0, 0), bg_alpha=0.85),
        }
        self.badge = self.badges["light"]
        self.margin = int(policy.margin_fraction * profile.width)
        self._banner_cap = max(cap * 3 // 4, 12)
        self._caption_cap = max(int(np.ceil(policy.caption_cap_fraction * short)), 12)
        bw, _ = self.badge.size
        if bw + 2 * self.margin > profile.width:
            raise OverlayError(f"badge {' / '.join(lines)!r} is {bw}px wide, wider than the {profile.width}px frame")

    def _fonts(self, lines, cap: int) -> list:
        return [font_for_cap_height(self.style.cjk_font_path, cap, probe="生") if needs_cjk(line)
                else font_for_cap_height(self.style.font_path, cap) for line in lines]

    def badge_for(self, frame: np.ndarray) -> Patch:
        """The badge whose box matches the picture around its corner (chosen once per segment)."""
        x, y = self.badge_xy
        w, h = self.badge.size
        around = frame[max(0, y - self.margin):y + h + self.margin, max(0, x - self.margin):x + w + self.margin]
        luma = float(np.mean(around @ np.array([0.299, 0.587, 0.114]))) if around.size else 255.0
        return self.badges["light" if luma >= 110 else "dark"]

    @property
    def badge_xy(self) -> tuple[int, int]:
        bw, _ = self.badge.size
        x = self.profile.width - self.margin - bw if self.policy.corner == "top-right" else self.margin
        return x, self.margin

    def banner_patch(self, creator: str) -> Patch:
        lines = [part for line in self.policy.banner_lines(creator)
                 for part in (wrap_text(line, 22) if not needs_cjk(line) else [line])]
        return text_box(lines, self._fonts(lines, self._banner_cap), pad=18, bg=(20, 20, 60), bg_alpha=0.88)

    def caption_patch(self, text: str) -> Patch:
        lines = wrap_text(text, self.policy.caption_max_chars)[:self.policy.caption_max_lines]
        return text_box(lines, self._fonts(lines, self._caption_cap), pad=12, bg_alpha=0.7)

    def cues(self, words: list[tuple[str, float, float]]) -> list[CaptionCue]:
        from studio.policy import caption_cues

        return caption_cues(words, max_chars=self.policy.caption_max_chars, max_lines=self.policy.caption_max_lines)

    def label_frames(self, frames: Iterable[np.ndarray], *, cues: list[CaptionCue], banner_for: str | None,
                     mark: Mark) -> Iterator[np.ndarray]:
        """Badge on every frame; the banner for the first seconds of a show; the caption of each instant; then
        the invisible watermark over all of it, so the marked picture is exactly the one that airs (POLICY V1,
        V3, V4, M3).

        Labels are drawn into the frames given (the middleware owns them from here): a source that reuses
        one array for several frames must hand over copies.
        """
        fps = self.profile.fps
        faults = self.faults
        faults.check("badge")
        if banner_for:
            faults.check("banner")
        banner = self.banner_patch(banner_for) if banner_for else None
        faults.check("captions")
        captions = [(c, self.caption_patch(c.text)) for c in cues]
        faults.check("watermark")
        marker = WatermarkEmbedder(self.key, mark, width=self.profile.width, height=self.profile.height)
        bx, by = self.badge_xy
        badge = None
        for i, frame in enumerate(frames):
            t = i / fps
            if frame.dtype != np.uint8 or not frame.flags.writeable or not frame.flags.c_contiguous:
                frame = np.array(frame, dtype=np.uint8, order="C")
            badge = badge or self.badge_for(frame)
            blend(frame, badge, bx, by)
            if banner is not None and t < self.policy.banner_seconds:
                w, _ = banner.size
                blend(frame, banner, (self.profile.width - w) // 2, int(self.profile.height * 0.16))
            for cue, patch in captions:
                if cue.start <= t < cue.end:
                    w, h = patch.size
                    blend(frame, patch, (self.profile.width - w) // 2, int(self.profile.height * 0.84) - h)
                    break
            yield marker.embed(frame)

    def metadata(self, *, produce_id: str, propagator: str, propagate_id: str, refs: dict[str, str]) -> dict[str, str]:
        """Container tags: the signed AIGC key (POLICY M1, M2), with the segment's references in ReservedCode2 so a
        clip names its avatar, show and consent even where the database cannot be reached."""
        self.faults.check("metadata")
        tags = {
            "AIGC": aigc_metadata(self.key, producer=self.producer, produce_id=produce_id, propagator=propagator,
                                  propagate_id=propagate_id, reserved2=json.dumps(refs, separators=(",", ":"),
                                                                                sort_keys=True)),
            "comment": f"{self.policy.badge_lines[0]}: AI-generated content",
        }
        for k, v in self.policy.extra_tags.items():
            tags[k] = f"{tags[k]} | {v}" if k in tags else v
        return tags

    def stamp(self, path: Path, *, segment_id: str, channel_id: str, produce_id: str, banner: bool,
              spoken: bool) -> PolicyStamp:
        self.faults.check("stamp")
        labels = ("badge", "captions", "aigc_metadata", "watermark", *(("banner",) if banner else ()),
                  *(("spoken_disclosure",) if spoken else ()))
        return make_stamp(self.key, segment_id=segment_id, channel_id=channel_id, produce_id=produce_id,
                          sha256=sha256_file(path), labels=labels, policy=self.policy.digest())
