"""Uploads and media (issue 15, High): untrusted media is opened only as a file, only as MP4/MOV or Matroska/WebM
decided by its content, and refused before decode when it declares more than its duration allows. The attack
corpus (playlists, concat lists, URL lists, images, decompression bombs) is generated here with ffmpeg and text."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.app import create_app_from_env
from studio.config import IngestLimits, Settings
from studio.consent_phrase import CodePhrase
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import Creator, UploadJob, utcnow
from tests.conftest import api_key
from workers.consent.video import verify_consent_video
from workers.media.probe import FootageError, probe


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True,
                   timeout=120)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    victim = root / "victim.mp4"  # stands for another tenant's consent video
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=2", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
           str(victim))
    out = {"victim": victim}
    out["m3u8"] = root / "playlist.m3u8"
    out["m3u8"].write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                           + "".join(f"#EXTINF:2.0,\nfile:{victim}\n" for _ in range(50)) + "#EXT-X-ENDLIST\n")
    out["concat"] = root / "list.txt"
    out["concat"].write_text(f"ffconcat version 1.0\nfile '{victim}'\nfile '{victim}'\n")
    out["url"] = root / "url.mp4"
    out["url"].write_text("http://127.0.0.1:9/stream.flv\n")
    out["png"] = root / "still.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x64", "-frames:v", "1", str(out["png"]))
    # A tiny file declaring a huge resolution: a few KB that would decode to 69 MB a frame.
    out["huge"] = root / "huge.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:size=4800x4800:rate=25:duration=1", "-c:v", "libx264", "-preset",
           "ultrafast", str(out["huge"]))
    # Far more frames than its duration allows at any sane rate: 2000 frames in 2 s.
    out["frames"] = root / "frames.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:size=32x32:rate=1000:duration=2", "-c:v", "libx264", "-preset",
           "ultrafast", str(out["frames"]))
    return out


@pytest.fixture
def client(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), ingest=IngestLimits(max_upload_mb=1))
    init_all_keys(settings)
    upgrade(settings.db_url, data_dir=settings.data_path)
    app = create_app_from_env(settings)
    with TestClient(app) as c:
        c.rt = app.state.runtime
        with Session(c.rt.engine, expire_on_commit=False) as s:
            creator = Creator(name="Ava")
            s.add(creator)
            s.commit()
        c.creator_id = creator.id
        c.headers["Authorization"] = f"Bearer {api_key(c.rt.engine, role='creator', creator_id=creator.id)}"
        yield c


def _upload(client, path: Path, name: str):
    return client.post(f"/api/creators/{client.creator_id}/avatars?name=x",
                       files={"file": (name, path.read_bytes(), "video/mp4")})


def _nothing_kept(client) -> None:
    assert list(client.rt.data.uploads.iterdir()) == []
    with Session(client.rt.engine) as s:
        assert s.exec(select(UploadJob)).all() == []


@pytest.mark.parametrize("name", ["clip.m3u8", "clip.mp4"])
def test_a_playlist_uploaded_as_footage_is_refused_and_queues_nothing(client, corpus, name):
    res = _upload(client, corpus["m3u8"], name)
    assert res.status_code == 422, res.text
    assert "HLS playlist" in res.json()["detail"] and name in res.json()["detail"]
    assert str(client.rt.data.root) not in res.text
    _nothing_kept(client)


@pytest.mark.parametrize("kind, words", [("concat", "concat list"), ("url", "URL"),
                                         ("png", "images, image sequences, playlists")])
def test_concat_lists_urls_and_images_are_refused_as_footage(client, corpus, kind, words):
    res = _upload(client, corpus[kind], f"upload.{kind}")
    assert res.status_code == 422 and words in res.json()["detail"], res.text
    _nothing_kept(client)


@pytest.mark.parametrize("kind, words", [("huge", "declared resolution 4800x4800"),
                                         ("frames", "declared frame rate 1000 fps")])
def test_a_decompression_bomb_is_refused_before_decode(client, corpus, kind, words):
    res = _upload(client, corpus[kind], "bomb.mp4")
    assert res.status_code == 422 and words in res.json()["detail"], res.text
    _nothing_kept(client)
    with pytest.raises(FootageError, match="refused"):
        probe(corpus[kind])


def test_a_playlist_as_consent_video_is_refused(corpus):
    now = utcnow()
    phrase = CodePhrase(id="p1", text="amber river seven", words=("amber", "river", "seven"), issued_at=now,
                        expires_at=now + timedelta(minutes=10))
    report = verify_consent_video(corpus["m3u8"], phrase=phrase, now=now, reference=object())
    assert not report.ok
    assert any("HLS playlist" in p for p in report.problems), report.problems


def test_a_real_video_is_read_whatever_its_name_and_stored_under_its_probed_suffix(corpus, tmp_path):
    renamed = tmp_path / "footage.m3u8"
    renamed.write_bytes(corpus["victim"].read_bytes())
    info = probe(renamed)
    assert (info.width, info.height, info.suffix) == (64, 64, ".mp4")
