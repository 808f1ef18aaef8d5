"""Consent (issue 15, High): a public clip of the creator dubbed with a synthetic voice reading the code phrase.
The phrase is heard, the face is the creator's and the mouth moves, so every earlier check passed; the lips do
not say the phrase, and the audio-visual sync check refuses it. Fails on commit 0761e4c."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from studio.consent_phrase import issue_phrase
from tests.conftest import require
from workers.consent.video import SYNC_MIN_CORR, SYNC_NEAR_S, verify_consent_video
from workers.media.consent_clip import H, W, make_consent_video
from workers.media.proc import run_ffmpeg
from workers.media.synthface import make_demo_footage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime(2026, 5, 1, 12, 0)
SEED = 11


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    require("ffmpeg", "espeak-ng")
    media = tmp_path_factory.mktemp("dub")
    footage = make_demo_footage(media / "footage.mp4", seconds=8.0, width=W, height=H, seed=SEED)
    phrase = issue_phrase(now=NOW, rng=random.Random(7))

    def verify(video: Path):
        return verify_consent_video(video, footage=footage, phrase=phrase, now=NOW + timedelta(minutes=1),
                                    workdir=media / "work")

    return media, phrase, verify


def test_a_public_clip_dubbed_with_the_phrase_is_refused(case):
    media, phrase, verify = case
    # The creator on camera saying something else (a clip from their channel), at another time than the footage.
    public = make_consent_video(media / "public.mp4", text="hello everyone and welcome back to my channel today",
                                seed=SEED, t0=900.0, min_seconds=5.0)
    # The phrase read by a synthetic voice, laid over the same stretch of the clip.
    voice = make_consent_video(media / "voice.mp4", text=phrase.text, seed=SEED, voice="en-gb", wpm=150,
                               min_seconds=5.0)
    dub = media / "dubbed.mp4"
    run_ffmpeg(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(public), "-i", str(voice),
                "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(dub)], timeout=60)
    report = verify(dub)
    assert not report.ok
    assert len(report.problems) == 1, report.problems  # phrase heard, face matched, mouth moving: only the sync
    assert report.problems[0].startswith("the lips do not follow the speech"), report.problems
    assert report.liveness["lip_sync"] < SYNC_MIN_CORR


def test_a_genuine_reading_follows_its_speech_at_zero_lag(case):
    media, phrase, verify = case
    genuine = make_consent_video(media / "genuine.mp4", text=phrase.text, seed=SEED)
    report = verify(genuine)
    assert report.ok, report.problems
    assert report.liveness["lip_sync"] >= SYNC_MIN_CORR
    assert abs(report.liveness["lip_sync_best_lag_s"]) <= SYNC_NEAR_S
