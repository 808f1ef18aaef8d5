"""Schema owned by Alembic, the hash-chained audit log (POLICY C6), and the segment order constraint."""

from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, select

from studio import audit
from studio.db import make_engine, session_scope, upgrade
from studio.models import AuditEvent, Avatar, Channel, Consent, Creator, Product, Script, Segment, Show
from tests.conftest import bind_audit_keys


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database on each backend, brought to the newest schema by the migrations themselves."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'studio.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(template=None)
    upgrade(url)
    return url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    bind_audit_keys(engine)
    yield engine
    engine.dispose()


# --- migrations ---------------------------------------------------------------------------------
def test_upgrade_creates_every_table_of_the_models(engine):
    tables = set(inspect(engine).get_table_names())
    assert tables - {"alembic_version"} == set(SQLModel.metadata.tables)


def test_upgrade_is_idempotent(db_url, engine):
    with engine.connect() as conn:
        before = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    upgrade(db_url)
    with engine.connect() as conn:
        after = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert before == after and len(after) == 1


def test_upgrade_keeps_existing_rows(db_url, engine):
    with session_scope(engine) as s:
        s.add(Channel(id="ch-keep", name="Keep me"))
    upgrade(db_url)
    with Session(engine) as s:
        assert s.get(Channel, "ch-keep").name == "Keep me"


def test_migrations_match_the_models(engine):
    # What `alembic check` does: autogenerate against the migrated database finds nothing to add.
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "render_as_batch": True})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == []


# --- audit chain --------------------------------------------------------------------------------
def record_events(engine, n: int = 5) -> list[int]:
    ids = []
    for i in range(n):
        with session_scope(engine) as s:
            ev = audit.record(s, kind="consent.granted" if i % 2 else "segment.aired", subject_id=f"sub-{i}",
                              data={"i": i, "note": "ünïcode ok"})
            ids.append(ev.id)
    return ids


def read_chain(engine) -> list[AuditEvent]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEvent).order_by(AuditEvent.id)).all())


def test_recorded_chain_verifies_after_reading_back(engine):
    ids = record_events(engine)
    events = read_chain(engine)
    assert [e.id for e in events] == ids
    assert events[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert audit.verify_chain(events) == []


def test_events_recorded_in_one_transaction_chain_too(engine):
    with session_scope(engine) as s:
        for i in range(3):
            audit.record(s, kind="segment.rendered", subject_id=f"seg-{i}")
    events = read_chain(engine)
    assert len(events) == 3
    assert audit.verify_chain(events) == []


def test_record_hash_covers_the_content():
    at = datetime(2026, 1, 1, 12, 0)
    h = audit.event_hash(audit.GENESIS, at, "k", "s", {"a": 1})
    assert h != audit.event_hash(audit.GENESIS, at, "k", "s", {"a": 2})
    assert h != audit.event_hash(audit.GENESIS, at + timedelta(microseconds=1), "k", "s", {"a": 1})
    assert h != audit.event_hash("1" * 64, at, "k", "s", {"a": 1})
    assert h == audit.event_hash(audit.GENESIS, at, "k", "s", {"a": 1})


def test_edited_event_data_is_detected(engine):
    """POLICY C6: editing an event's data breaks its hash in the chain."""
    ids = record_events(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET data = :d WHERE id = :id"), {"d": '{"i": 99}', "id": ids[2]})
    problems = audit.verify_chain(read_chain(engine))
    assert problems == [f"event {ids[2]}: content does not match its hash (edited)"]


def test_edited_event_kind_is_detected(engine):
    ids = record_events(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET kind = 'nothing.happened' WHERE id = :id"), {"id": ids[1]})
    problems = audit.verify_chain(read_chain(engine))
    assert any(p.startswith(f"event {ids[1]}:") for p in problems)


def test_deleted_middle_event_is_detected(engine):
    """POLICY C6: deleting an event from the append-only chain breaks the next event's link."""
    ids = record_events(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auditevent WHERE id = :id"), {"id": ids[2]})
    problems = audit.verify_chain(read_chain(engine))
    assert problems == [f"event {ids[3]}: previous hash does not match (edited, deleted or reordered)"]


def test_swapped_events_are_detected(engine):
    ids = record_events(engine)
    a, b = ids[1], ids[2]
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET id = -1 WHERE id = :a"), {"a": a})
        conn.execute(text("UPDATE auditevent SET id = :a WHERE id = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE auditevent SET id = :b WHERE id = -1"), {"b": b})
    events = read_chain(engine)
    assert [e.subject_id for e in events][1:3] == ["sub-2", "sub-1"]  # the swap took effect
    problems = audit.verify_chain(events)
    assert problems
    assert all("previous hash does not match" in p for p in problems)


def test_rewritten_chain_with_recomputed_hash_breaks_the_next_link(engine):
    # Someone edits an event and fixes its own hash: the following event still points at the old one.
    ids = record_events(engine)
    events = read_chain(engine)
    target = events[2]
    new_hash = audit.event_hash(target.prev_hash, target.at, target.kind, target.subject_id, {"i": 42})
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET data = :d, hash = :h WHERE id = :id"),
                     {"d": '{"i": 42}', "h": new_hash, "id": ids[2]})
    problems = audit.verify_chain(read_chain(engine))
    assert problems == [f"event {ids[3]}: previous hash does not match (edited, deleted or reordered)"]


# --- segment order ------------------------------------------------------------------------------
@pytest.fixture
def show_rows(engine):
    """Two channels, each with a show of one consented avatar; returns {channel_id: show_id}."""
    with session_scope(engine) as s:
        creator = Creator(name="Mia Chen")
        avatar = Avatar(creator_id=creator.id, name="Mia", bundle_path="/b", footage_sha256="0" * 64,
                        width=720, height=1280, fps=25.0, duration_s=60.0)
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Mia Chen",
                          statement="I consent to a clone of my face.", statement_sha256="1" * 64,
                          starts_at=datetime(2026, 1, 1), ends_at=datetime(2027, 1, 1))
        product = Product(name="Jacket", brand="TrailLite", category="outdoor")
        script = Script(product_id=product.id, text="Meet the jacket.")
        channels = [Channel(id="ch-a", name="A"), Channel(id="ch-b", name="B")]
        shows = [Show(channel_id=c.id, avatar_id=avatar.id, consent_id=consent.id, name=f"show {c.name}")
                 for c in channels]
        # The models declare no relationships, so parents are flushed before the rows that point at them.
        for row in [creator, avatar, consent, product, script, *channels, *shows]:
            s.add(row)
            s.flush()
        return {sh.channel_id: (sh, script.id) for sh in shows}


def segment(show: Show, script_id: str, seq: int) -> Segment:
    return Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=show.avatar_id,
                   consent_id=show.consent_id, script_id=script_id, text="Meet the jacket.", seq=seq)


def test_duplicate_seq_on_one_channel_is_rejected(engine, show_rows):
    show, script_id = show_rows["ch-a"]
    with session_scope(engine) as s:
        s.add(segment(show, script_id, 0))
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(segment(show, script_id, 0))
    with Session(engine) as s:
        assert len(s.exec(select(Segment).where(Segment.channel_id == "ch-a")).all()) == 1


def test_same_seq_on_another_channel_is_allowed(engine, show_rows):
    (show_a, script_id), (show_b, _) = show_rows["ch-a"], show_rows["ch-b"]
    with session_scope(engine) as s:
        s.add(segment(show_a, script_id, 0))
        s.add(segment(show_a, script_id, 1))
        s.add(segment(show_b, script_id, 0))
    with Session(engine) as s:
        rows = s.exec(select(Segment.channel_id, Segment.seq).order_by(Segment.channel_id, Segment.seq)).all()
    assert [tuple(r) for r in rows] == [("ch-a", 0), ("ch-a", 1), ("ch-b", 0)]


def test_segment_for_an_unknown_channel_is_rejected(engine, show_rows):
    # make_engine turns SQLite foreign keys on, so a dangling reference cannot be written.
    show, script_id = show_rows["ch-a"]
    orphan = segment(show, script_id, 5)
    orphan.channel_id = "ch-missing"
    with pytest.raises(IntegrityError):
        with session_scope(engine) as s:
            s.add(orphan)


def test_concurrent_appends_from_many_processes_keep_one_chain(db_url):
    """Writers in separate processes (the streamer's feeder threads, workers, the API) append at once: the
    chain must stay linear, each event linking to the one before it (SQLite: its write lock; PostgreSQL: the
    advisory lock `audit.record` takes)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(db_url, f"w{i}", 25)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        events = s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
        assert len(events) == 100
        assert audit.verify_chain(events) == []
        assert len({e.prev_hash for e in events}) == 100, "two events link to the same predecessor: a fork"
        assert {e.subject_id for e in events} == {"w0", "w1", "w2", "w3"}
    engine.dispose()


def _append_many(db_url: str, who: str, n: int) -> None:
    engine = make_engine(db_url)
    bind_audit_keys(engine)  # each process has keys of its own; the chain alone is checked here
    for i in range(n):
        with session_scope(engine) as s:  # a fresh session each time, as the feeder threads do
            audit.record(s, kind="segment.aired", subject_id=who, data={"i": i})
    engine.dispose()
