"""`studio demo`'s recorded voice-overs (workers.stack.demo.demo_voiceovers) on real parts (espeak-ng, pocketsphinx,
SQLite): the database stays writable while the creator records, so the streamer's lease renewals never wait behind
them. One transaction over every script held SQLite's write lock from the first recording's write through the
synthesis and alignment of the others: a renewal took 5.5 s of a 5 s lease in a demo beside two busy cores."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from rich.console import Console
from sqlmodel import select

from studio.db import session_scope
from studio.models import Avatar, Creator, Product, Script, Voiceover
from tests.integration.conftest import new_runtime
from workers.stack.demo import demo_voiceovers

pytestmark = pytest.mark.slow

TEXTS = ("Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care.",
         "It absorbs in seconds and layers well under sunscreen, so your morning routine stays short and simple.",
         "Tap the cart below to see today's bundle, with the travel size included while the stock lasts.")


def test_the_creator_s_recordings_leave_the_database_writable_between_them(tmp_path):
    rt = new_runtime(tmp_path)
    settings = rt.settings
    with session_scope(rt.engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
        s.flush()
        avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="avatars/none", footage_sha256="-",
                        width=360, height=640, fps=25.0, duration_s=60.0)
        product = Product(name="Serum", brand="Lumen", category="beauty")
        s.add_all([avatar, product])
        s.flush()
        scripts = [Script(product_id=product.id, text=text) for text in TEXTS]
        s.add_all(scripts)
        s.flush()
        script_ids = [x.id for x in scripts]
        s.expunge(avatar)

    waits: list[float] = []  # how long a writer beside the recordings waited for SQLite's write lock, each try
    done = threading.Event()

    def writer() -> None:  # the lease renewal's part: a short write transaction, again and again
        db = sqlite3.connect(settings.db_url.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
        while not done.is_set():
            began = time.monotonic()
            db.execute("BEGIN IMMEDIATE")
            waits.append(time.monotonic() - began)
            db.execute("ROLLBACK")
            time.sleep(0.02)
        db.close()

    beside = threading.Thread(target=writer, daemon=True)
    beside.start()
    began = time.monotonic()
    try:
        demo_voiceovers(rt, avatar, script_ids, Console(quiet=True))
    finally:
        took = time.monotonic() - began
        done.set()
        beside.join(70)
    with session_scope(rt.engine) as s:
        rows = s.exec(select(Voiceover)).all()
        assert sorted(r.script_id for r in rows) == sorted(script_ids)  # every script recorded, approved
        assert all(r.speaker == "creator" and r.approved_at is not None for r in rows)
        assert s.get(Avatar, avatar.id).voice == "recorded"
    # Each recording writes in one short transaction at its end; the synthesis and alignment (most of `took`)
    # hold no lock. Before, the writer waited through the second and third scripts' (about 2/3 of `took`).
    assert len(waits) > 20 and max(waits) < 0.2 * took, (f"the writer waited {max(waits):.2f} s of the "
                                                        f"recordings' {took:.2f} s")
