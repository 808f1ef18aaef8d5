"""Who may hear and replace a script's recorded voice-over (POLICY C7), and what a burst of uploads may hold, on
the real API with pocketsphinx checking real recordings (espeak-ng voices standing in for people).

Two creators whose consents both reach one agency's script: before, either one read, downloaded and (by uploading
their own) destroyed the other's recording of their own voice, and replaced the agency's voice actor."""

from __future__ import annotations

import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlmodel import select

from api.app import create_app_from_env
from api.routers.voiceovers import ChecksInFlight
from studio.db import session_scope
from studio.models import Consent, Creator, Voiceover, utcnow
from tests.conftest import FULL_SCOPE, api_key
from tests.integration.conftest import agency_script, new_runtime

pytestmark = pytest.mark.slow

TEXT = ("Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care. "
        "Tap the cart below to see today's bundle.")


def _say(path: Path, voice: str) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), TEXT], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voiceover-access")
    rt = new_runtime(tmp)
    ids = agency_script(rt, TEXT)
    now = utcnow()
    with session_scope(rt.engine) as s:
        ava, ben = Creator(name="Ava"), Creator(name="Ben")
        s.add_all([ava, ben])
        s.flush()
        for c in (ava, ben):
            s.add(Consent(creator_id=c.id, agency_id=ids["agency"], signed_name=c.name, statement="x" * 30,
                          statement_sha256="-", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                          scope=FULL_SCOPE, voice=True, voice_explicit=True))
        ids |= {"ava": ava.id, "ben": ben.id}
    keys = {"agency": api_key(rt.engine, role="agency", agency_id=ids["agency"]),
            "ava": api_key(rt.engine, role="creator", creator_id=ids["ava"]),
            "ben": api_key(rt.engine, role="creator", creator_id=ids["ben"])}
    voices = {"ava": _say(tmp / "ava.wav", "en-gb+f3"), "ben": _say(tmp / "ben.wav", "en-us+m3"),
              "actor": _say(tmp / "actor.wav", "en-us")}
    with TestClient(create_app_from_env(rt.settings)) as client:
        yield rt, ids, client, {k: {"Authorization": f"Bearer {v}"} for k, v in keys.items()}, voices


def _upload(client, headers, script_id: str, path: Path, **form):
    with open(path, "rb") as f:
        return client.post(f"/api/scripts/{script_id}/voiceover", headers=headers, data=form,
                           files={"file": (path.name, f, "audio/wav")})


def _stored(rt) -> list[Voiceover]:
    with session_scope(rt.engine) as s:
        return s.exec(select(Voiceover)).all()


def _files(rt) -> list[str]:
    return sorted(p.name for p in (rt.data.root / "voiceovers").rglob("*.wav"))


def test_a_creators_own_voice_is_theirs_alone_to_hear_and_replace(world):
    rt, ids, client, key, voices = world
    script = ids["script"]
    res = _upload(client, key["ava"], script, voices["ava"])
    assert res.status_code == 201, res.text
    ava_row = res.json()
    # Ben's consents reach the same script: he sees that no recording of his exists, not Ava's voice
    for path in ("", "/audio"):
        res = client.get(f"/api/scripts/{script}/voiceover{path}", headers=key["ben"])
        assert res.status_code == 404, (path, res.status_code, res.content[:80])
        assert res.json()["detail"] == f"the voice-over of script {script!r} does not exist"
        assert client.get(f"/api/scripts/{script}/voiceover{path}", headers=key["ava"]).status_code == 200
        assert client.get(f"/api/scripts/{script}/voiceover{path}", headers=key["agency"]).status_code == 200
    # nor may he delete or approve it: the same 404, which does not say there is one
    for res in (client.delete(f"/api/scripts/{script}/voiceover", headers=key["ben"]),
                client.post(f"/api/scripts/{script}/voiceover/approve", headers=key["ben"],
                            json={"signed_name": "Ben"})):
        assert res.status_code == 404 and res.json()["detail"].endswith("does not exist"), res.text
    # nor does uploading his own voice replace hers: refused before the check, hers kept with its file
    res = _upload(client, key["ben"], script, voices["ben"])
    assert res.status_code == 409, res.text
    assert "a creator replaces only their own recording" in res.json()["detail"]
    assert [(v.id, v.creator_id) for v in _stored(rt)] == [(ava_row["id"], ids["ava"])]
    assert len(_files(rt)) == 1
    # Ava replaces her own; the agency replaces anyone's, here with a voice actor's
    res = _upload(client, key["ava"], script, voices["ava"])
    assert res.status_code == 201, res.text
    res = _upload(client, key["agency"], script, voices["actor"], speaker="actor", actor_name="Sam Reed")
    assert res.status_code == 201, res.text
    # a voice actor's recording may air with either clone: both creators hear it, neither replaces it
    assert client.get(f"/api/scripts/{script}/voiceover/audio", headers=key["ben"]).status_code == 200
    res = _upload(client, key["ben"], script, voices["ben"])
    assert res.status_code == 409 and "voice actor" not in res.json()["detail"]  # the early refusal names no one
    assert [v.speaker for v in _stored(rt)] == ["actor"] and len(_files(rt)) == 1


def test_control_characters_in_the_form_are_refused_before_any_work(world):
    rt, ids, client, key, voices = world
    before = [v.id for v in _stored(rt)]
    for field, value in (("actor_name", "Sam\x00Reed"), ("creator_id", "x\x00y"), ("actor_name", "Sam\x1b[2JReed")):
        form = {"speaker": "actor" if field == "actor_name" else "creator", field: value}
        res = _upload(client, key["agency"], ids["script"], voices["actor"], **form)
        assert res.status_code == 422, (field, res.text)
        assert res.json()["detail"].startswith(f"{field} holds a control character (U+00")
    assert [v.id for v in _stored(rt)] == before


def test_the_check_holds_no_database_connection(world):
    """The check runs for seconds to minutes: the request gives its connection back first. Before, each upload
    held one through its check, and 16 at once took the pool (5 + 10) from every other request for 30 s."""
    rt, ids, client, key, voices = world
    engine = client.app.state.runtime.engine
    seen: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(engine.pool.checkedout())
            stop.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        res = _upload(client, key["agency"], ids["script"], voices["actor"], speaker="actor", actor_name="Sam Reed")
    finally:
        stop.set()
        watcher.join()
    assert res.status_code == 201, res.text
    assert len(seen) > 20 and seen.count(0) / len(seen) > 0.8, (len(seen), sorted(set(seen)))


def test_uploads_in_flight_are_bounded_per_script_per_account_and_in_all():
    checks = ChecksInFlight(per_account=2, most=3)
    a = checks.enter("acct-1", "script-1")
    with pytest.raises(HTTPException) as same:
        checks.enter("acct-2", "script-1")
    assert same.value.status_code == 409 and "being checked already" in same.value.detail
    b = checks.enter("acct-1", "script-2")
    with pytest.raises(HTTPException) as mine:
        checks.enter("acct-1", "script-3")
    assert mine.value.status_code == 429 and mine.value.headers == {"Retry-After": "10"}
    c = checks.enter("acct-2", "script-3")
    with pytest.raises(HTTPException) as full:
        checks.enter("acct-3", "script-4")
    assert full.value.status_code == 503 and "checking 3 voice-over uploads" in full.value.detail
    for slot in (a, b, c):
        checks.leave(slot)
    assert checks.enter("acct-1", "script-1") == ("acct-1", "script-1")
    assert not checks.accounts.keys() - {"acct-1"} and checks.scripts == {"script-1"}


def test_files_go_with_their_rows_commit_or_rollback(world):
    """A dropped recording's file is deleted once the drop commits, never before: deleted first, a failed commit
    (SQLite's lock timeout under load) left the row without its file. A file stored for a row that is rolled back
    is removed."""
    from studio.models import Script
    from workers.ingest.voiceover import VoiceoverTaken, check_voiceover, drop_voiceover, take_voiceover

    rt, ids, client, key, voices = world
    checked = check_voiceover(voices["ava"], TEXT, language="en")

    def take(s, **kw):
        return take_voiceover(rt, s, s.get(Script, ids["script"]), voices["ava"], speaker="creator",
                              creator_id=ids["ava"], actor_name=None, uploaded_by=None, checked=checked, **kw)

    with session_scope(rt.engine) as s:
        kept = take(s).id
    assert len(_files(rt)) == 1
    with pytest.raises(RuntimeError), session_scope(rt.engine) as s:
        drop_voiceover(rt, s, ids["script"], reason="asked for")
        raise RuntimeError("the commit fails")
    assert [v.id for v in _stored(rt)] == [kept] and len(_files(rt)) == 1  # row and file both kept
    with pytest.raises(RuntimeError), session_scope(rt.engine) as s:
        take(s)
        assert len(_files(rt)) == 2
        raise RuntimeError("the commit fails")
    assert [v.id for v in _stored(rt)] == [kept] and len(_files(rt)) == 1  # the new file went with its row
    with pytest.raises(VoiceoverTaken, match=r"has a recording by creator \w+'s own voice already"), \
            session_scope(rt.engine) as s:
        take(s, by_creator=ids["ben"])
    assert [v.id for v in _stored(rt)] == [kept] and len(_files(rt)) == 1
    with session_scope(rt.engine) as s:
        drop_voiceover(rt, s, ids["script"], reason="asked for")
    assert _stored(rt) == [] and _files(rt) == []
