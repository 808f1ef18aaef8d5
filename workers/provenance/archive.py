"""What is kept for audit (POLICY M1, M4, C6): every aired segment as a C2PA-signed copy chained to the
previous one of its show, and a show's recording made of those segments with its own AIGC mark and manifest.

Both are idempotent: archiving a segment twice, or asking for a recording of a show that has one covering the
same segments, returns what exists.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sqlmodel import select

from studio import audit
from studio.db import lock_name, session_scope
from studio.keys import load_provenance_keys
from studio.models import Recording, Segment, Show, new_produce_id
from studio.policy import aigc_metadata
from studio.runtime import Runtime
from studio.segments import SegmentState
from studio.storage import sha256_file
from workers.media.ffmpeg_args import concat_args
from workers.media.probe import probe
from workers.media.proc import run_ffmpeg
from workers.media.provenance import sign_media

S = SegmentState


class ArchiveError(RuntimeError):
    pass


class ArchiveNotReady(ArchiveError):
    """The show's previous aired segment is not archived yet; this one is archived after it."""


def _claim(seg: Segment) -> dict:
    return {"produce_id": seg.produce_id, "segment_id": seg.id, "show_id": seg.show_id, "avatar_id": seg.avatar_id,
            "consent_id": seg.consent_id, "channel_id": seg.channel_id, "seq": seg.seq}


def archive_segment_direct(rt: Runtime, segment_id: str) -> Path | None:
    """Sign a copy of an aired segment into the archive, chained to the show's previous aired segment (POLICY M4); None
    when there is nothing to archive. Publish workers may archive one show's segments at once: a lock per show makes
    them take turns, and a segment whose predecessor is not archived yet raises ArchiveNotReady (its task retries), so
    the chain follows air order and never forks. The lock is held while signing (PostgreSQL: an advisory lock on the
    show; SQLite: the database's write lock, a fraction of a second per segment on one host)."""
    with session_scope(rt.engine) as s:
        seg = s.get(Segment, segment_id)
        if seg is None or seg.state != S.AIRED or not seg.path:
            return None
        lock_name(s, f"archive:{seg.show_id}")
        s.refresh(seg)  # another worker may have archived it while this one waited for the lock
        if seg.archive_path and _stored(rt, seg.archive_path):
            return rt.local(seg.archive_path)
        # The chain follows air order: the show's previous aired segment, which must be archived first.
        prev = s.exec(select(Segment).where(Segment.show_id == seg.show_id, Segment.seq < seg.seq,
                                            Segment.state == S.AIRED, Segment.path.is_not(None))
                      .order_by(Segment.seq.desc()).limit(1)).first()
        if prev is not None and not prev.manifest_id:
            raise ArchiveNotReady(f"segment {seg.seq} of show {seg.show_id} waits for segment {prev.seq} "
                                  f"({prev.id}) to be archived first")
        prev_manifest = prev.manifest_id if prev else None
        try:
            src = rt.local(seg.path, sidecars=(".vtt",))
        except FileNotFoundError:
            raise ArchiveError(f"segment {seg.id} aired from {seg.path}, which no longer exists") from None
        if not src.exists():
            raise ArchiveError(f"segment {seg.id} aired from {src}, which no longer exists")
        dest = rt.data.archive_path(seg.show_id, seg.seq, seg.produce_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        manifest_id = sign_media(src, dest, keys=load_provenance_keys(rt.settings),
                                 title=f"segment {seg.seq} of show {seg.show_id}", claim=_claim(seg),
                                 sequence_number=seg.seq, stream_id=seg.show_id, previous_manifest_id=prev_manifest)
        vtt = src.with_suffix(".vtt")
        if vtt.exists():
            shutil.copy2(vtt, dest.with_suffix(".vtt"))
        sha256 = sha256_file(dest)
        key = rt.publish(dest, sidecars=(".vtt",))
        seg.archive_path, seg.manifest_id = key, manifest_id
        audit.record(s, kind="segment.archived", subject_id=seg.id,
                     data={"produce_id": seg.produce_id, "manifest_id": manifest_id, "previous": prev_manifest,
                           "sha256": sha256})
    return rt.local(key)


def _stored(rt: Runtime, stored: str) -> bool:
    """A stored file is still there: a key in the store, or a legacy absolute path on this host."""
    return Path(stored).exists() if stored.startswith("/") else rt.store.exists(stored)


def record_show_direct(rt: Runtime, show_id: str) -> Recording | None:
    """Join the show's archived segments, in air order, into one recording with its own AIGC mark and C2PA
    manifest (POLICY M1, M4); None if none aired."""
    with session_scope(rt.engine) as s:
        show = s.get(Show, show_id)
        if show is None:
            raise LookupError(f"show {show_id} does not exist")
        segs = s.exec(select(Segment).where(Segment.show_id == show_id, Segment.state == S.AIRED)
                      .order_by(Segment.seq)).all()
    for seg in segs:
        if not seg.manifest_id:
            archive_segment_direct(rt, seg.id)
    with session_scope(rt.engine) as s:
        segs = s.exec(select(Segment).where(Segment.show_id == show_id, Segment.state == S.AIRED,
                                            Segment.manifest_id.is_not(None)).order_by(Segment.seq)).all()
        if not segs:
            return None
        ids = [seg.id for seg in segs]
        existing = s.exec(select(Recording).where(Recording.show_id == show_id)
                          .order_by(Recording.created_at.desc())).first()
        if existing is not None and existing.segment_ids == ids and _stored(rt, existing.path):
            return existing
    produce_id = new_produce_id()
    refs = {"recording": produce_id, "show": show_id, "channel": show.channel_id, "avatar": show.avatar_id,
            "consent": show.consent_id, "segments": len(ids)}
    meta = {"AIGC": aigc_metadata(rt.key, producer=rt.settings.producer, produce_id=produce_id,
                                  propagator=show.channel_id, propagate_id=show_id,
                                  reserved2=json.dumps(refs, separators=(",", ":"), sort_keys=True)),
            "comment": "AI avatar: AI-generated content (recording of an AI-avatar show)",
            "title": f"{show.name} (AI avatar)"}
    out = rt.data.recording_path(show_id, produce_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="studio-rec-") as td:
        listing = Path(td) / "segments.txt"
        listing.write_text("".join(f"file '{rt.local(seg.archive_path)}'\n" for seg in segs))
        joined = Path(td) / "joined.mp4"
        run_ffmpeg(concat_args(str(listing), str(joined), metadata=meta), timeout=600)
        manifest_id = sign_media(joined, out, keys=load_provenance_keys(rt.settings),
                                 title=f"recording of show {show.name}",
                                 claim={"recording_produce_id": produce_id, "show_id": show_id,
                                        "channel_id": show.channel_id, "avatar_id": show.avatar_id,
                                        "consent_id": show.consent_id,
                                        "segments": [seg.produce_id for seg in segs]},
                                 ingredient_manifest_ids=[seg.manifest_id for seg in segs])
    duration, sha256 = probe(out).duration, sha256_file(out)
    key = rt.publish(out)
    with session_scope(rt.engine) as s:
        rec = Recording(show_id=show_id, channel_id=show.channel_id, produce_id=produce_id, path=key,
                        manifest_id=manifest_id, segment_ids=ids, duration_s=duration, sha256=sha256)
        s.add(rec)
        audit.record(s, kind="show.recorded", subject_id=show_id,
                     data={"produce_id": produce_id, "manifest_id": manifest_id, "segments": len(ids),
                           "sha256": rec.sha256})
    return rec

