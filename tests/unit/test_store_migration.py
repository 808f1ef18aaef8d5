"""0007_store_keys on a database at revision 0006 with absolute paths, as an existing install has them. The rows
are written at the newest schema (the models' own), then the database is taken down to 0006 (every later
migration's downgrade runs too) and up again."""

from __future__ import annotations

import logging

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import Session

from studio.db import alembic_config, make_engine, upgrade
from studio.models import Avatar, Consent, Recording, Segment
from tests.conftest import db_show


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_absolute_paths_under_the_data_dir_become_keys(tmp_path, caplog, engine_kind, request):
    data = tmp_path / "data"
    data.mkdir()
    if engine_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'elsewhere.db'}"  # not in the data dir: the option names it
    else:  # an empty database, taken from 0 to 0006 and on, as an existing PostgreSQL install would be
        url = request.getfixturevalue("pg_server").create_database(template=None)
    upgrade(url, data_dir=data)
    engine = make_engine(url)
    ids = db_show(engine)
    outside = "/mnt/old-disk/segments/x.mp4"
    with Session(engine) as s:
        avatar = s.get(Avatar, ids["avatar"])
        avatar.bundle_path = f"{data}/bundles/{avatar.id}"
        consent = s.get(Consent, ids["consent"])
        consent.video_path = f"{data}/consents/{consent.id}/video.mp4"
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=avatar.id, consent_id=consent.id,
                      text="hi", seq=1, path=f"{data}/segments/{ids['channel']}/00000001-p-a1.mp4",
                      archive_path=f"{data}/archive/{ids['show']}/00000001-p.mp4")
        seg2 = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=avatar.id, consent_id=consent.id,
                       text="hi", seq=2, path=outside, archive_path=f"{data}/../escape/x.mp4")
        rec = Recording(show_id=ids["show"], channel_id=ids["channel"], path=f"{data}/archive/{ids['show']}/r.mp4",
                        manifest_id="m", duration_s=1.0, sha256="-")
        s.add_all([avatar, consent, seg, seg2, rec])
        s.commit()
        seg_ids, rec_id = (seg.id, seg2.id), rec.id
    engine.dispose()
    command.downgrade(_with_dir(url, data), "0006")  # an install at 0006, its paths absolute

    with caplog.at_level(logging.WARNING, logger="studio.migrations"):
        upgrade(url, data_dir=data)
    engine = make_engine(url)
    with Session(engine) as s:
        assert s.get(Avatar, ids["avatar"]).bundle_path == f"bundles/{ids['avatar']}"
        assert s.get(Consent, ids["consent"]).video_path == f"consents/{ids['consent']}/video.mp4"
        seg, seg2 = (s.get(Segment, i) for i in seg_ids)
        assert seg.path == f"segments/{ids['channel']}/00000001-p-a1.mp4"
        assert seg.archive_path == f"archive/{ids['show']}/00000001-p.mp4"
        assert s.get(Recording, rec_id).path == f"archive/{ids['show']}/r.mp4"
        assert seg2.path == outside, "a path outside the data dir is left"
        assert seg2.archive_path == f"{data}/../escape/x.mp4", "'..' out of the data dir is outside too"
    reported = [r.getMessage() for r in caplog.records]
    assert any(outside in m and "outside the data directory" in m for m in reported)
    assert any("escape/x.mp4" in m for m in reported)

    command.downgrade(_with_dir(url, data), "0006")
    with engine.connect() as c:  # the models are the newest schema's: read 0006's columns as they are
        path = c.execute(text("SELECT id, path FROM segment")).all()
        bundle = c.execute(text("SELECT bundle_path FROM avatar WHERE id = :i"), {"i": ids["avatar"]}).scalar_one()
    assert dict(path) == {seg_ids[0]: f"{data}/segments/{ids['channel']}/00000001-p-a1.mp4", seg_ids[1]: outside}
    assert bundle == f"{data}/bundles/{ids['avatar']}"
    engine.dispose()


def test_sqlite_default_data_dir_is_the_database_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    upgrade(url)
    engine = make_engine(url)
    ids = db_show(engine)
    with Session(engine) as s:
        avatar = s.get(Avatar, ids["avatar"])
        avatar.bundle_path = str(tmp_path / "bundles" / avatar.id)
        s.add(avatar)
        s.commit()
    command.downgrade(alembic_config(url), "0006")
    upgrade(url)
    with Session(engine) as s:
        assert s.get(Avatar, ids["avatar"]).bundle_path == f"bundles/{ids['avatar']}"
    engine.dispose()


def _with_dir(url, data):
    cfg = alembic_config(url)
    cfg.set_main_option("studio.data_dir", str(data))
    return cfg
