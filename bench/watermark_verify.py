"""Issue 20's acceptance, as `studio verify` runs it: on a 10 s cut of a segment after each edit re-posters make
(workers/media/watermark_attacks.py, re-encoded CRF 28), does verify name the segment's ProduceID and its avatar
from the database; and on unmarked clips given the same edits, does it find nothing. The peer, in the same run on
the same clips: the mark read as the frames are, without the edit search (what verify did before version 2).

The segment is a row in a fresh SQLite database (creator, avatar, channel, consent, show, segment) and the clip
carries the mark a render of it carries (its ProduceID's token and its avatar's reference), on the bench's
labelled talking-head frames. verify runs in process (`workers.provenance.verify.verify_file`, what `studio
verify FILE --json` prints), without OCR.

`python -m bench watermark_verify`; BENCH_VERIFY_CLIPS (cuts per edit, default 1), BENCH_VERIFY_UNMARKED
(default 64) and BENCH_VERIFY_KINDS (comma-separated, default all) size it.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlmodel import Session

from bench.common import Figure, report
from bench.watermark import FPS, FRAMES, KEY, SEED, H, W, _encode, _labelled, _unmarked_source, read_as_is
from studio.db import make_engine, upgrade
from studio.models import Avatar, Channel, Consent, Creator, Segment, Show, utcnow
from workers.media import watermark_attacks as attacks
from workers.media.watermark import (
    VERSION,
    Mark,
    WatermarkEmbedder,
    avatar_ref_from_id,
    produce_token_from_id,
)
from workers.provenance.verify import verify_file

SCOPE = {"brands": [], "categories": ["beauty"], "excluded_categories": [], "platforms": ["custom"],
         "territories": ["US"], "languages": ["en"], "max_hours_per_day": 24}


def _segment_rows(url: str) -> tuple[str, str, str]:
    """One aired segment's rows; returns its id, ProduceID and avatar id."""
    upgrade(url)
    engine = make_engine(url)
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        creator = Creator(name="Ava")
        s.add(creator)
        s.flush()
        avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=W, height=H,
                        fps=FPS, duration_s=60)
        channel = Channel(name="bench", territories=["US"])
        s.add_all([avatar, channel])
        s.flush()
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          statement_sha256="-", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1),
                          scope=SCOPE)
        s.add(consent)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="bench", script_ids=[])
        s.add(show)
        s.flush()
        seg = Segment(channel_id=channel.id, show_id=show.id, avatar_id=avatar.id, consent_id=consent.id,
                      text="Glow Serum, nineteen dollars.", seq=0, state="aired", aired_at=now)
        s.add(seg)
        s.commit()
    engine.dispose()
    return seg.id, seg.produce_id, avatar.id


def _plain_found(path: Path, mark: Mark) -> bool:
    """The peer: the mark's version read on the frames as they are, no edit search."""
    res = read_as_is(path, version=VERSION)
    return bool(res.found and res.mark == mark)


def main() -> None:
    t0 = time.perf_counter()
    clips = int(os.environ.get("BENCH_VERIFY_CLIPS", "1"))
    unmarked_n = int(os.environ.get("BENCH_VERIFY_UNMARKED", "64"))
    rng = np.random.default_rng(SEED + 1)
    rows: dict[str, list[tuple[bool, bool]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as td:
        root = Path(td)
        url = f"sqlite:///{root / 'studio.db'}"
        seg_id, produce_id, avatar_id = _segment_rows(url)
        engine = make_engine(url)
        mark = Mark(produce_token_from_id(produce_id), avatar_ref_from_id(avatar_id))
        embedder = WatermarkEmbedder(KEY, mark, width=W, height=H)
        marked = [_encode((embedder.embed(_labelled(i, seed=c)) for i in range(FRAMES)), root / f"segment-{c}.mp4")
                  for c in range(clips)]
        kinds = [k for k in os.environ.get("BENCH_VERIFY_KINDS", ",".join(attacks.KINDS)).split(",") if k]
        for kind in kinds:
            for c, clip in enumerate(marked):
                attack = attacks.draw(kind, rng, width=W, height=H)
                edited = attacks.apply(attack, clip, root / f"{kind}-{c}.mp4")
                r = verify_file(edited, key=KEY, engine=engine, ocr=False)
                named = (r["produce_id"], r["avatar_id"], r["segment_id"]) == (produce_id, avatar_id, seg_id)
                plain = _plain_found(edited, mark)
                rows.setdefault(kind, []).append((named, plain))
                print(f"  {attack.describe()}: verify {'names the segment and avatar' if named else 'MISSED'} "
                      f"(verdict {r['verdict']}, watermark version {r['watermark'].get('version')}); "
                      f"without the search {'found' if plain else 'missed'}", flush=True)
        found = found_plain = 0
        for i in range(unmarked_n):
            src = _unmarked_source(i, rng, root / f"unmarked-{i}.mp4")
            attack = attacks.draw(attacks.KINDS[i % len(attacks.KINDS)], rng, width=W, height=H)
            edited = attacks.apply(attack, src, root / f"unmarked-{i}-e.mp4")
            r = verify_file(edited, key=KEY, engine=engine, ocr=False)
            found += bool(r["watermark"]["found"] or r["produce_id"])
            found_plain += _plain_found(edited, mark)
        engine.dispose()
    figures = []
    for kind, got in rows.items():
        figures.append(Figure(f"{kind}: verify names segment + avatar", 100 * float(np.mean([g[0] for g in got])),
                              "%", "read without the edit search", 100 * float(np.mean([g[1] for g in got]))))
    every = [g for got in rows.values() for g in got]
    figures += [
        Figure("all edits: verify names segment + avatar", 100 * float(np.mean([g[0] for g in every])), "%",
               "read without the edit search", 100 * float(np.mean([g[1] for g in every]))),
        Figure(f"unmarked edited clips: verify finds nothing (of {unmarked_n})",
               100 * (1 - found / max(unmarked_n, 1)), "%", "read without the edit search",
               100 * (1 - found_plain / max(unmarked_n, 1))),
    ]
    report("watermark_verify", figures, notes=(
        f"{clips} cut(s) of {FRAMES // FPS} s per edit at {W}x{H}, marked as a render of one segment row marks it, "
        f"each edit drawn with random parameters and re-encoded CRF {attacks.CRF}; verify_file (what `studio "
        f"verify --json` runs) with the database, no OCR; named = its produce_id, avatar_id and segment_id are the "
        f"segment's. Unmarked: {unmarked_n} clips (other presenters and ffmpeg test sources), each given one edit "
        f"in turn: verify found a mark on {found}. Shared 2-core machine; {time.perf_counter() - t0:.0f} s."))


if __name__ == "__main__":
    main()
