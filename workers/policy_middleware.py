"""Policy middleware: every frame labelled, speech captioned, AIGC metadata set, result stamped.

Fail closed: any error here fails the segment, and a segment without a stamp never airs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from studio.config import LabelSpec, MediaProfile
from studio.policy import CaptionCue, PolicyStamp, aigc_metadata, make_stamp, wrap_text
from studio.storage import sha256_file
from workers.media.overlay import OverlayError, Patch, blend, font_for_cap_height, text_box


class PolicyMiddleware:
    def __init__(self, *, label: LabelSpec, profile: MediaProfile, key: bytes, producer: str):
        if not key:
            raise OverlayError("no policy key: run `studio keys init` or set STUDIO_POLICY_KEY")
        self.label, self.profile, self.key, self.producer = label, profile, key, producer
        short = min(profile.width, profile.height)
        cap = int(np.ceil(label.height_fraction * short))
        font = font_for_cap_height(label.font_path, cap)
        # Two polarities of one badge: black on white over a light picture, white on black over a dark one.
        # The box always contrasts with the text; matching it to the surroundings is what lets a viewer's
        # eye and OCR-based moderation (which thresholds the whole picture) find it at once.
        self.badges = {
            "light": text_box([label.text], font, pad=max(6, cap // 3), fg=(0, 0, 0), bg=(255, 255, 255),
                              bg_alpha=0.94),
            "dark": text_box([label.text], font, pad=max(6, cap // 3), fg=(255, 255, 255), bg=(0, 0, 0),
                             bg_alpha=0.85),
        }
        self.badge = self.badges["light"]
        self.margin = int(label.margin_fraction * profile.width)
        self._banner_font = font_for_cap_height(label.font_path, max(cap * 3 // 4, 12))
        self._caption_font = font_for_cap_height(label.font_path, max(int(0.036 * short), 12))
        bw, _ = self.badge.size
        if bw + 2 * self.margin > profile.width:
            raise OverlayError(f"badge {label.text!r} is {bw}px wide, wider than the {profile.width}px frame")

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
        x = self.profile.width - self.margin - bw if self.label.corner == "top-right" else self.margin
        return x, self.margin

    def banner_patch(self, creator: str) -> Patch:
        text = self.label.banner_template.format(creator=creator)
        return text_box(wrap_text(text, 22), self._banner_font, pad=18, bg=(20, 20, 60), bg_alpha=0.88)

    def caption_patch(self, text: str) -> Patch:
        return text_box(wrap_text(text, 26)[:3], self._caption_font, pad=12, bg_alpha=0.7)

    def label_frames(self, frames: Iterable[np.ndarray], *, cues: list[CaptionCue],
                     banner_for: str | None) -> Iterator[np.ndarray]:
        """Badge on every frame; banner for the first seconds of a show; the caption of each instant.

        Labels are drawn into the frames given (the middleware owns them from here): a source that reuses
        one array for several frames must hand over copies.
        """
        fps = self.profile.fps
        banner = self.banner_patch(banner_for) if banner_for else None
        captions = [(c, self.caption_patch(c.text)) for c in cues]
        bx, by = self.badge_xy
        badge = None
        for i, frame in enumerate(frames):
            t = i / fps
            if frame.dtype != np.uint8 or not frame.flags.writeable:
                frame = np.array(frame, dtype=np.uint8)
            badge = badge or self.badge_for(frame)
            blend(frame, badge, bx, by)
            if banner is not None and t < self.label.banner_seconds:
                w, _ = banner.size
                blend(frame, banner, (self.profile.width - w) // 2, int(self.profile.height * 0.16))
            for cue, patch in captions:
                if cue.start <= t < cue.end:
                    w, h = patch.size
                    blend(frame, patch, (self.profile.width - w) // 2, int(self.profile.height * 0.84) - h)
                    break
            yield frame

    def metadata(self, *, produce_id: str, propagator: str, propagate_id: str) -> dict[str, str]:
        return {
            "AIGC": aigc_metadata(self.key, producer=self.producer, produce_id=produce_id,
                                  propagator=propagator, propagate_id=propagate_id),
            "comment": f"{self.label.text}: AI-generated content",
        }

    def stamp(self, path: Path, *, segment_id: str, channel_id: str, produce_id: str,
              banner: bool) -> PolicyStamp:
        labels = ("badge", "captions", "aigc_metadata", *(("banner",) if banner else ()))
        return make_stamp(self.key, segment_id=segment_id, channel_id=channel_id, produce_id=produce_id,
                          sha256=sha256_file(path), labels=labels)
