"""Which stored media belong to a revoked clone, by store key, for the caches of every host (POLICY C5).

A revocation deletes the clone's media from the store on the host that revokes (workers.consent.revocation) and
announces it on Redis; every other process with a local cache of the store then removes its copies under the
same keys. The keys are derived from validated ids, never taken from a stored path, as the revocation derives
them: the avatar's bundle (`bundles/<avatar>/`), the consent's files (`consents/<consent>/`), every attempt of
the clone's segments (`segments/<channel>/<seq>-<produce_id>-a<n>.mp4` and its captions) and the idle-loop
slates of its channels. Only a consent that is revoked or expired has keys: a push about any other change of a
consent purges nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import or_
from sqlmodel import Session, select

from studio.deletion import safe_id
from studio.models import Consent, Segment, Show
from studio.storage import filled_name

ENDED = ("revoked", "expired")
SLATES = ("slate.mp4", "slate.mp4.stamp.json")
# A segment file in a cache: segments/<channel>/<seq 8 digits>-<produce_id>-a<attempt>.<ext>
SEGMENT_FILE = re.compile(r"(?P<seq>\d{8})-(?P<produce_id>[0-9A-Za-z_-]+?)-a(?P<attempt>\d+)\.[0-9A-Za-z.]+")


@dataclass(frozen=True)
class CloneMedia:
    """The keys of one ended consent's media: `keys` (files, and prefixes ending in /), and per channel the
    stems `<seq>-<produce_id>-a` that each attempt of the clone's segments starts with."""

    consent_id: str
    avatar_ids: tuple[str, ...]
    keys: tuple[str, ...]
    stems: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def segment_keys(self, channel_id: str, names: Iterable[str]) -> list[str]:
        """Of the file `names` found under `segments/<channel_id>/`, the keys of this clone's segments, and of the
        fills of them (and of the channel's idle-loop slate) that a killed process left in flight."""
        stems = tuple(self.stems.get(channel_id, ()))
        slates = f"segments/{channel_id}/{SLATES[0]}" in self.keys
        out = []
        for n in sorted(names):
            final = filled_name(n) or n
            if (stems and final.startswith(stems) and SEGMENT_FILE.fullmatch(final)) or \
                    (final != n and slates and final in SLATES):
                out.append(f"segments/{channel_id}/{n}")
        return out

    @property
    def channels(self) -> list[str]:
        """The channels whose folders may hold this clone's segments or slates."""
        slated = {k.split("/")[1] for k in self.keys if k.startswith("segments/")}
        return sorted(set(self.stems) | slated)


def clone_media(session: Session, consent_id: str) -> CloneMedia | None:
    """The media keys of `consent_id`'s clone; None unless the consent is revoked or expired."""
    consent = session.get(Consent, consent_id)
    if consent is None or consent.status not in ENDED:
        return None
    avatar_ids = (consent.avatar_id,) if consent.avatar_id else ()
    keys = [f"bundles/{safe_id(a, 'avatar')}/" for a in avatar_ids]
    keys.append(f"consents/{safe_id(consent_id, 'consent')}/")
    channels: set[str] = set()
    stems: dict[str, set[str]] = {}
    if avatar_ids:
        for seg in session.exec(select(Segment).where(Segment.avatar_id.in_(avatar_ids))).all():
            channel = safe_id(seg.channel_id, "channel")
            channels.add(channel)
            stems.setdefault(channel, set()).add(f"{seg.seq:08d}-{safe_id(seg.produce_id, 'produce_id')}-a")
        channels.update(safe_id(c, "channel") for c in session.exec(
            select(Show.channel_id).where(Show.avatar_id.in_(avatar_ids))).all())
    keys += [f"segments/{ch}/{name}" for ch in sorted(channels) for name in SLATES]
    return CloneMedia(consent_id, avatar_ids, tuple(keys), {ch: frozenset(s) for ch, s in stems.items()})


def ended_consents_among(session: Session, *, avatar_ids: Iterable[str] = (), consent_ids: Iterable[str] = (),
                         produce_ids: Iterable[str] = ()) -> list[str]:
    """The revoked or expired consents behind what a cache holds (its bundles' avatars, consent folders and
    segments' produce ids), in one query; [] when the cache holds none of these."""
    avatar_ids, consent_ids, produce_ids = sorted(set(avatar_ids)), sorted(set(consent_ids)), sorted(set(produce_ids))
    behind = []
    if avatar_ids:
        behind.append(Consent.avatar_id.in_(avatar_ids))
    if consent_ids:
        behind.append(Consent.id.in_(consent_ids))
    if produce_ids:
        behind.append(Consent.id.in_(select(Segment.consent_id).where(Segment.produce_id.in_(produce_ids))))
    if not behind:
        return []
    return sorted(set(session.exec(select(Consent.id).where(Consent.status.in_(ENDED), or_(*behind))).all()))
