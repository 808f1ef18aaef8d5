"""Stream keys sealed at rest (studio/secrets.py, studio/keys.py): round trip, tampering, wrong key or channel,
legacy plain rows, and the masked form that is all anything ever shows."""

from __future__ import annotations

import base64
import stat
import threading

import pytest

from api.masking import mask_destination, mask_url
from studio.config import Settings
from studio.keys import PolicyKeyError, init_stream_key, load_stream_key, stream_key_file
from studio.models import Destination
from studio.secrets import SEALED_PREFIX, SealError, is_sealed, open_url, seal_url
from workers.streamer.relay import DESTINATION_BACKOFF, SOURCE_BACKOFF

URL = "rtmps://live-api-s.facebook.com:443/rtmp/FB-123456789?s_bl=1&s_sw=0&a=SECRET-abcdef"
KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def test_seal_open_round_trip_and_nothing_readable_at_rest():
    sealed = seal_url(KEY, URL, channel_id="ch1")
    assert is_sealed(sealed) and sealed.startswith(SEALED_PREFIX)
    assert "SECRET" not in sealed and "FB-123456789" not in sealed and "facebook" not in sealed
    assert open_url(KEY, sealed, channel_id="ch1") == URL
    # A fresh nonce each time: equal URLs do not give equal values (nothing to match across rows).
    assert seal_url(KEY, URL, channel_id="ch1") != sealed


@pytest.mark.parametrize("tamper", [
    lambda v: v[:-2] + ("A" if v[-2] != "A" else "B") + v[-1],           # a ciphertext or tag byte
    lambda v: v[: len(SEALED_PREFIX) + 3] + ("x" if v[len(SEALED_PREFIX) + 3] != "x" else "y")
    + v[len(SEALED_PREFIX) + 4:],                                         # a nonce byte
    lambda v: v[:-10],                                                    # truncated
    lambda v: v[: len(SEALED_PREFIX) + 20],                               # cut to almost nothing
    lambda v: SEALED_PREFIX + "!!not base64!!",
])
def test_tampering_is_detected_and_the_error_shows_none_of_the_value(tamper):
    sealed = seal_url(KEY, URL, channel_id="ch1")
    bad = tamper(sealed)
    with pytest.raises(SealError) as err:
        open_url(KEY, bad, channel_id="ch1")
    assert bad[len(SEALED_PREFIX):][:12] not in str(err.value) and "SECRET" not in str(err.value)


def test_wrong_key_or_another_channel_does_not_open():
    sealed = seal_url(KEY, URL, channel_id="ch1")
    with pytest.raises(SealError, match="another key or for another channel"):
        open_url(OTHER, sealed, channel_id="ch1")
    with pytest.raises(SealError):  # the value copied onto another channel's row
        open_url(KEY, sealed, channel_id="ch2")
    with pytest.raises(SealError, match="no stream key"):
        open_url(None, sealed, channel_id="ch1")


def test_bad_keys_and_inputs_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        seal_url(b"short", URL, channel_id="ch1")
    with pytest.raises(ValueError, match="channel_id"):
        seal_url(KEY, URL, channel_id="")
    with pytest.raises(ValueError, match="plain"):
        seal_url(KEY, seal_url(KEY, URL, channel_id="c"), channel_id="c")  # never sealed twice


def test_legacy_plain_rows_still_open():
    plain = "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl"
    assert not is_sealed(plain)
    assert open_url(None, plain, channel_id="ch1") == plain
    assert open_url(KEY, plain, channel_id="ch1") == plain


def test_masking_shows_scheme_and_host_only():
    assert mask_url(URL) == "rtmps://live-api-s.facebook.com:443/rtmp/****"
    assert mask_url("rtmp://u:pw@host/app/KEY") == "rtmp://****@host/app/****"
    sealed = seal_url(KEY, URL, channel_id="ch1")
    row = Destination(channel_id="ch1", url=sealed, url_masked=mask_url(URL))
    assert mask_destination(row) == "rtmps://live-api-s.facebook.com:443/rtmp/****"
    # A legacy plain row has no masked copy: it is masked when shown; a sealed one without it shows nothing.
    assert mask_destination(Destination(channel_id="c", url="rtmp://h/live/KEY9")) == "rtmp://h/live/****"
    assert "KEY" not in mask_destination(Destination(channel_id="c", url=sealed))


# --- the key file -----------------------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path / "data"))


def test_stream_key_is_made_once_with_mode_600(settings):
    with pytest.raises(PolicyKeyError, match="no stream key"):
        load_stream_key(settings)
    key = load_stream_key(settings, create=True)
    path = stream_key_file(settings)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert init_stream_key(settings) == path and load_stream_key(settings) == key  # never replaced
    assert [p.name for p in path.parent.iterdir() if "stream" in p.name] == ["stream.key"]  # no temp left


def test_racing_writers_end_with_one_key(settings):
    keys, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        keys.append(load_stream_key(settings, create=True))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and keys[0] == load_stream_key(settings)


def test_a_damaged_key_file_says_what_to_do(settings):
    path = init_stream_key(settings)
    path.write_text("not hex at all")
    with pytest.raises(PolicyKeyError, match="64 hex digits"):
        load_stream_key(settings)
    path.write_text(base64.b16encode(b"x" * 16).decode())  # hex, but 16 bytes
    with pytest.raises(PolicyKeyError, match="64 hex digits"):
        load_stream_key(settings)


# --- relay backoff (workers/streamer/relay.py) ----------------------------------------------------------
def test_backoff_is_quick_in_a_short_outage_and_patient_in_a_long_one():
    b = DESTINATION_BACKOFF
    # Seconds into an outage: doubling from 0.5 s but capped at 1 s, so an endpoint back is found within ~1 s.
    assert [b.delay(n, outage=5.0) for n in range(1, 6)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    # Never longer than a tenth of the outage so far, and never past 30 s.
    assert b.delay(10, outage=100.0) == 10.0
    assert b.delay(20, outage=3600.0) == 30.0
    assert b.delay(1, outage=3600.0) == 0.5  # the first failure after a healthy run is retried at once
    # The loopback ingest not publishing yet (the feeder starting): quick, steady retries.
    assert [SOURCE_BACKOFF.delay(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
