"""Recorded voice-overs end to end on real parts (the API, pocketsphinx, espeak-ng voices standing in for people,
the footage renderer, ffmpeg, the revocation): a recording is checked to say its script, cut at word boundaries,
aired in its avatar's voice with captions from the alignment, refused when it says something else (naming the
words), dropped when the script is edited, and deleted with the creator's consent (POLICY C7, C5)."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlmodel import select

from api.app import create_app_from_env
from studio.db import session_scope
from studio.models import Agency, Consent, Creator, Product, Script, Segment, Show, Voiceover, utcnow
from tests.conftest import FULL_SCOPE, api_key
from tests.integration.conftest import agency_script, ingested, segment_row
from workers.render.segment import render_segment_direct

pytestmark = pytest.mark.slow

TEXT = ("Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care. "
        "It absorbs in seconds and layers well under sunscreen. Tap the cart below to see today's bundle.")
OTHER = "The weather in the mountains turned cold overnight, and the hikers waited for the morning train home."


def _say(path: Path, text: str, voice: str = "en-gb+f3", rate: int = 150) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(path), text], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_footage):
    tmp = tmp_path_factory.mktemp("voiceover")
    rt, creator, avatar = ingested(tmp, small_footage())
    now = utcnow()
    with session_scope(rt.engine) as s:
        agency = Agency(name="Lumen Agency")
        s.add(agency)
        s.flush()
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, agency_id=agency.id, signed_name="Ava",
                          statement="x" * 30, statement_sha256="-", starts_at=now - timedelta(hours=1),
                          ends_at=now + timedelta(days=1), scope=FULL_SCOPE, voice=True, voice_explicit=True)
        product = Product(name="Serum", brand="Lumen", category="beauty", agency_id=agency.id)
        s.add_all([consent, product])
        s.flush()
        script = Script(product_id=product.id, text=TEXT)
        s.add(script)
        s.flush()
        from studio.models import Channel

        channel = Channel(name="c", territories=["US"], agency_id=agency.id)
        s.add(channel)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s",
                    script_ids=[script.id])
        s.add(show)
    ids = {"avatar": avatar.id, "consent": consent.id, "script": script.id, "channel": channel.id, "show": show.id,
           "agency": agency.id, "creator": creator.id, "product": product.id}
    app = create_app_from_env(rt.settings)
    with TestClient(app) as client:
        agency_key = api_key(rt.engine, role="agency", agency_id=agency.id)
        creator_key = api_key(rt.engine, role="creator", creator_id=creator.id)
        yield rt, ids, client, {"Authorization": f"Bearer {agency_key}"}, {"Authorization": f"Bearer {creator_key}"}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    d = tmp_path_factory.mktemp("recordings")
    return {"script": _say(d / "script.wav", TEXT), "other": _say(d / "other.wav", OTHER),
            "edited": _say(d / "edited.wav", TEXT.replace("today's bundle", "the bundle"))}


def _upload(client, headers, script_id: str, path: Path, **form):
    with open(path, "rb") as f:
        return client.post(f"/api/scripts/{script_id}/voiceover", headers=headers, data=form,
                           files={"file": (path.name, f, "audio/wav")})


def _kept(rt) -> list[str]:
    root = rt.data.root / "voiceovers"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_voiceover_of_another_text_is_refused_naming_the_words_and_nothing_is_kept(world, recordings):
    rt, ids, client, agency, _ = world
    res = _upload(client, agency, ids["script"], recordings["other"], speaker="actor", actor_name="Sam Reed")
    assert res.status_code == 422, res.text
    body = res.json()  # a problem document: the sentence in `detail`, the words in `missing`
    assert "does not say the script" in body["detail"] and "sunscreen" in body["detail"]
    # the script's own distinctive words are named as not heard
    assert {"serum", "sunscreen", "partnership"} <= {w.lower() for w in body["missing"]}
    assert _kept(rt) == [] and list(rt.data.uploads.iterdir()) == []
    with session_scope(rt.engine) as s:
        assert s.exec(select(Voiceover)).all() == []


def test_an_upload_that_names_a_file_on_the_server_is_refused_and_reads_nothing(world, recordings, tmp_path):
    """An attacker's upload is a playlist naming someone else's recording on the server (here an MP3 of this very
    script, as another agency might hold): ffmpeg would follow it and the API would accept that recording as this
    upload. Refused by its first bytes, and by the demuxer allowlist when a NUL byte hides it from the sniffer."""
    rt, ids, client, agency, _ = world
    theirs = tmp_path / "their-recording.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(recordings["script"]), str(theirs)], check=True)
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:60.0,\n{theirs}\n#EXT-X-ENDLIST\n".encode()
    for name, body, said in [("mine.m3u8", hls, "this is an HLS playlist"),
                             ("mine.wav", hls + b"\x00\n", "ffmpeg reads it as 'hls', which is refused"),
                             ("mine.mp3", f"ffconcat version 1.0\nfile {theirs.name}\n".encode(),
                              "this is a concat list")]:
        upload = tmp_path / name
        upload.write_bytes(body)
        res = _upload(client, agency, ids["script"], upload, speaker="actor", actor_name="Sam Reed")
        assert res.status_code == 422, (name, res.text)
        assert said in res.json()["detail"], res.json()
        assert _kept(rt) == [] and list(rt.data.uploads.iterdir()) == []
    with session_scope(rt.engine) as s:
        assert s.exec(select(Voiceover)).all() == []


def test_voiceover_cli_refuses_another_text_naming_the_words(world, recordings, tmp_path):
    from typer.testing import CliRunner

    from api.cli import app

    rt, ids, *_ = world
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump(rt.settings.model_dump(mode="json", exclude_none=True)))
    res = CliRunner().invoke(app, ["script", "voiceover", ids["script"], str(recordings["other"]),
                                   "--actor", "Sam Reed", "--config", str(config)])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "refused (422)" in out and "does not say the script" in out and "not heard:" in out
    assert "sunscreen" in out.lower() or "serum" in out.lower()
    assert _kept(rt) == []


def test_a_refusal_quotes_what_was_given_as_it_is(world, tmp_path):
    """A refusal quotes the value it refuses: shown as given, not read as rich markup. Before, `studio avatar voice`
    with a voice of '[/]x' crashed with a traceback in place of its refusal."""
    from typer.testing import CliRunner

    from api.cli import app

    rt, ids, *_ = world
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump(rt.settings.model_dump(mode="json", exclude_none=True)))
    res = CliRunner().invoke(app, ["avatar", "voice", ids["avatar"], "[/]x", "--config", str(config)])
    assert res.exit_code == 2, (res.output, res.exception)
    assert "refused (422): voice '[/]x' is not one of" in " ".join(res.output.split()), res.output


def test_own_voice_needs_approval_then_airs_cut_at_word_boundaries_with_captions_from_the_alignment(world,
                                                                                                  recordings):
    rt, ids, client, agency, creator = world
    res = _upload(client, agency, ids["script"], recordings["script"], speaker="creator", creator_id=ids["creator"])
    assert res.status_code == 201, res.text
    vo = res.json()
    assert vo["needs_approval"] and vo["matched"] >= 0.9
    parts = vo["parts"]
    assert len(parts) >= 2 and " ".join(p[2] for p in parts) == TEXT  # every word, the script's punctuation
    assert all(2.0 <= end - start <= 10.0 for start, end, _ in parts)
    assert parts[0][0] == 0.0 and parts[-1][1] == pytest.approx(vo["duration_s"], abs=0.01)

    # the creator's avatar speaks with the recordings: not before the creator approves this one
    assert client.put(f"/api/avatars/{ids['avatar']}/voice", headers=creator, json={"voice": "recorded"}
                      ).status_code == 200
    assert client.put(f"/api/avatars/{ids['avatar']}/voice", headers=creator, json={"voice": "piper"}
                      ).status_code == 422
    seg_id = _plan(rt, ids, parts[1][2], seq=1)
    assert render_segment_direct(rt, seg_id) == "cancelled"
    assert "has not approved the voice-over" in segment_row(rt, seg_id).error
    assert client.post(f"/api/scripts/{ids['script']}/voiceover/approve", headers=agency,
                       json={"signed_name": "Ava"}).status_code == 403  # only the creator approves their voice
    ok = client.post(f"/api/scripts/{ids['script']}/voiceover/approve", headers=creator, json={"signed_name": "Ava"})
    assert ok.status_code == 200 and not ok.json()["needs_approval"]

    seg_id = _plan(rt, ids, parts[1][2], seq=2)
    assert render_segment_direct(rt, seg_id) == "ready", segment_row(rt, seg_id).error
    row = segment_row(rt, seg_id)
    start, end, said = parts[1]
    assert row.duration_s == pytest.approx(end - start, abs=0.08)  # the part's own audio, to a frame or two
    path = rt.local(row.path)
    vtt = path.with_suffix(".vtt").read_text()
    assert " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line) == said
    # the first caption starts where the alignment heard the part's first word
    first = vtt.split("\n\n")[1].split(" --> ")[0]
    h, m, sec = first.split(":")
    word0 = next(w for w in vo["words"] if w[1] >= start - 1e-3)
    assert float(sec) + 60 * int(m) == pytest.approx(word0[1] - start, abs=0.05)
    # the aired sound is the recording's part (not the TTS): its loudness envelope follows the stored WAV's
    from workers.ingest.voiceover import read_wav
    from workers.media.probe import read_audio

    aired = read_audio(path, rate=16000)
    stored, rate = read_wav(rt.local(_voiceover(rt).audio_path))
    piece = stored[int(start * rate):int(end * rate)]
    n = min(len(aired), len(piece)) // 320
    env_a = np.abs(aired[:n * 320]).reshape(n, 320).mean(1)
    env_b = np.abs(piece[:n * 320]).reshape(n, 320).mean(1)
    assert np.corrcoef(env_a, env_b)[0, 1] > 0.8


def test_the_spoken_disclosure_still_airs_before_a_recording_where_a_profile_asks(world):
    """POLICY V6 with a recorded voice: the speech backend says the disclosure, then the creator's recording of the
    part; both are captioned."""
    from studio.models import Channel

    rt, ids, *_ = world
    vo = _voiceover(rt)
    assert vo is not None and vo.approved_at is not None
    with session_scope(rt.engine) as s:
        s.get(Channel, ids["channel"]).policy_profiles = ["default", "eu"]  # eu requires the spoken disclosure
    try:
        start, end, said = vo.parts[0]
        seg_id = _plan(rt, ids, said, seq=3, show_start=True)
        assert render_segment_direct(rt, seg_id) == "ready", segment_row(rt, seg_id).error
        row = segment_row(rt, seg_id)
        vtt = rt.local(row.path).with_suffix(".vtt").read_text()
        captions = " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line)
        assert captions == f"This presenter is an AI avatar of Ava. {said}"
        assert row.duration_s > (end - start) + 1.0  # the disclosure is said first, then the whole part
        assert set(row.stamp["labels"]) >= {"badge", "banner", "captions"}
    finally:
        with session_scope(rt.engine) as s:
            s.get(Channel, ids["channel"]).policy_profiles = ["default"]


def test_an_edited_script_drops_its_recording(world, recordings):
    rt, ids, client, agency, _ = world
    if _voiceover(rt) is None:
        assert _upload(client, agency, ids["script"], recordings["script"], speaker="actor",
                       actor_name="Sam Reed").status_code == 201
    assert _kept(rt)
    res = client.patch(f"/api/scripts/{ids['script']}", headers=agency,
                       json={"text": TEXT.replace("today's bundle", "the bundle")})
    assert res.status_code == 200, res.text
    assert _voiceover(rt) is None and _kept(rt) == []
    assert client.get(f"/api/scripts/{ids['script']}/voiceover", headers=agency).status_code == 404
    # the edited text, recorded again, is accepted
    res = _upload(client, agency, ids["script"], recordings["edited"], speaker="creator", creator_id=ids["creator"])
    assert res.status_code == 201, res.text


def test_revocation_deletes_the_creators_recordings_and_the_certificate_lists_them(world):
    from workers.consent.revocation import revoke_consent_direct

    rt, ids, *_ = world
    vo = _voiceover(rt)
    assert vo is not None and vo.speaker == "creator" and _kept(rt)
    done = revoke_consent_direct(rt, ids["consent"])
    deleted = [f["path"] for f in done.certificate["certificate"]["deleted"]]
    assert vo.audio_path in deleted
    assert _kept(rt) == [] and _voiceover(rt) is None


def _plan(rt, ids, text: str, *, seq: int, show_start: bool = False) -> str:
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=text, seq=seq, show_start=show_start)
        s.add(seg)
    return seg.id


def _voiceover(rt) -> Voiceover | None:
    with session_scope(rt.engine) as s:
        return s.exec(select(Voiceover)).first()


def test_creator_uploads_own_voice_only_for_scripts_their_consents_reach(world, recordings):
    rt, ids, client, agency, creator = world
    elsewhere = agency_script(rt, TEXT, agency="Elsewhere", product=("Lamp", "Brightly", "home"))["script"]
    with session_scope(rt.engine) as s:
        ben = Creator(name="Ben")
        s.add(ben)
    # another agency's script: as if it did not exist, for the creator and for this agency
    assert _upload(client, creator, elsewhere, recordings["script"]).status_code == 404
    assert _upload(client, agency, elsewhere, recordings["script"], speaker="actor",
                   actor_name="X").status_code == 404
    # an agency may not name a creator who has no consent with it
    res = _upload(client, agency, ids["script"], recordings["script"], speaker="creator", creator_id=ben.id)
    assert res.status_code == 422 and "creator_id" in json.dumps(res.json())
