"""The whole path on the S3 backend (moto's S3 server on loopback): ingest -> render -> air through a real
nginx-rtmp -> archive -> revoke. Segments reach the streamer only through the bucket and the host cache; after
the revocation nothing of the clone is left in the bucket or the cache but what POLICY C6 keeps (archived
aired segments) and the certificate."""

from __future__ import annotations

import json

import av
import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.deletion import verify_certificate
from studio.keys import load_provenance_keys
from studio.models import Avatar, Segment
from studio.stores import S3Store
from tests.integration.conftest import air_and_record, ingested, plan_segment, segment_row, world_rows
from workers.consent.revocation import revoke_consent_direct
from workers.provenance.archive import archive_segment_direct
from workers.render.segment import render_segment_direct, render_slate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ingest_render_air_archive_revoke_on_s3(s3_server, s3_bucket, small_footage, tmp_path):
    store = {"url": f"s3://{s3_bucket}/studio", "endpoint_url": s3_server["endpoint_url"], "path_style": True,
             "access_key_id": s3_server["access_key_id"], "secret_access_key": s3_server["secret_access_key"],
             "cache_dir": str(tmp_path / "cache"), "cache_max_mb": 64}
    rt, ids = world_rows(*ingested(tmp_path, small_footage(), store=store))
    assert isinstance(rt.store, S3Store) and not rt.store_is_data_dir
    with session_scope(rt.engine) as s:
        bundle_key = s.get(Avatar, ids["avatar"]).bundle_path
    assert bundle_key == f"bundles/{ids['avatar']}"
    assert "bundles/{}/manifest.json".format(ids["avatar"]) in rt.store.list(f"{bundle_key}/")

    seg_ids = [plan_segment(rt, ids, seq, show_start=seq == 0) for seq in range(3)]
    for seg_id in seg_ids:
        assert render_segment_direct(rt, seg_id) == "ready"
    keys = [segment_row(rt, i).path for i in seg_ids]
    assert all(k.startswith(f"segments/{ids['channel']}/") and rt.store.exists(k) for k in keys)
    assert all(rt.store.exists(k.removesuffix(".mp4") + ".vtt") for k in keys), "captions travel with a segment"
    assert not any((rt.data.root / k).exists() for k in keys), "the render host keeps no copy: the bucket is it"
    rt.store.cache.purge(keys)  # the streamer's host starts cold: air must fetch from the bucket

    slate = rt.data.segments / ids["channel"] / "slate.mp4"
    render_slate(rt, channel=_channel(rt, ids), out=slate, bundle=rt.local_dir(bundle_key), avatar_id=ids["avatar"])
    recording = air_and_record(rt, ids["channel"], slate, tmp_path, seconds=14.0)
    with av.open(str(recording)) as c:
        assert c.duration and c.duration / 1e6 > 8, "the channel aired"
    with session_scope(rt.engine) as s:
        aired = [seg.id for seg in s.exec(select(Segment).where(Segment.show_id == ids["show"])).all()
                 if seg.state == "aired"]
    assert len(aired) >= 2, f"only {len(aired)} segments aired from the bucket"
    assert all(rt.store.cache.lookup(k) for k in keys[:len(aired)]), "aired through the host cache"

    archived = [archive_segment_direct(rt, i) for i in aired]
    archive_keys = [segment_row(rt, i).archive_path for i in aired]
    assert all(k.startswith("archive/") and rt.store.exists(k) for k in archive_keys) and all(archived)

    rev = revoke_consent_direct(rt, ids["consent"])
    left = rt.store.list()
    assert not [k for k in left if not k.startswith(("archive/", "certificates/"))], f"left in the bucket: {left}"
    assert f"certificates/{ids['consent']}.json" in left
    cached = sorted(p.relative_to(rt.store.cache.root).as_posix() for p in rt.store.cache.root.rglob("*")
                    if p.is_file() and p.name != ".lock")
    assert not [k for k in cached if k.startswith(("bundles/", "segments/", "consents/"))], cached
    assert not slate.exists() and not (rt.data.root / bundle_key).exists()

    signed = json.loads(rev.certificate_path.read_text())
    verify_certificate(signed, root_pem=load_provenance_keys(rt.settings).root_pem)
    cert = signed["certificate"]
    deleted = {d["path"] for d in cert["deleted"]}
    assert f"{bundle_key}/manifest.json" in deleted and set(keys) <= deleted
    assert all(len(d["sha256"]) == 64 for d in cert["deleted"] if d["path"].endswith(".mp4"))
    assert not deleted & set(cert["missing"]), "a key is either deleted or missing, never both"
    assert f"consents/{ids['consent']}/" in cert["missing"], "the consent video was never kept: reported missing"
    assert {r["path"] for r in cert["retained"] if r["kind"] == "archived segment"} == set(archive_keys)


def _channel(rt, ids):
    from studio.models import Channel

    with session_scope(rt.engine) as s:
        return s.get(Channel, ids["channel"])
