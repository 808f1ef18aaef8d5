"""Policy stamps (invariant 1, 4), AIGC metadata (POLICY M1, M2) and captions (POLICY V4)."""

import hashlib
import hmac
import json
import re
from dataclasses import replace

import pytest

from studio.policy import (
    REQUIRED_LABELS,
    STAMP_VERSION,
    CaptionCue,
    PolicyStamp,
    StampError,
    _stamp_message,
    aigc_metadata,
    caption_cues,
    check_stamp,
    make_stamp,
    verify_aigc_metadata,
    webvtt,
    wrap_text,
)

KEY = b"0123456789abcdef0123456789abcdef"
OTHER_KEY = b"fedcba9876543210fedcba9876543210"
SEGMENT_BYTES = b"\x00\x00\x00\x18ftypisom pretend segment"
SHA = hashlib.sha256(SEGMENT_BYTES).hexdigest()
LABELS = ("badge", "captions", "aigc_metadata", "watermark", "banner")
POLICY = "a" * 64


def stamp(**overrides) -> PolicyStamp:
    args = {"segment_id": "seg-1", "channel_id": "chan-a", "produce_id": "prod-1", "sha256": SHA,
            "labels": LABELS, "policy": POLICY}
    return make_stamp(KEY, **{**args, **overrides})


# --- policy stamp -------------------------------------------------------------------------------
def test_stamp_round_trip_verifies():
    s = stamp()
    check_stamp(KEY, s, channel_id="chan-a", sha256=SHA)
    again = PolicyStamp.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    check_stamp(KEY, again, channel_id="chan-a", sha256=SHA)


def test_stamp_mac_depends_on_the_key_and_the_fields():
    assert stamp().mac != make_stamp(OTHER_KEY, segment_id="seg-1", channel_id="chan-a", produce_id="prod-1",
                                     sha256=SHA, labels=LABELS, policy=POLICY).mac
    assert stamp().mac != stamp(produce_id="prod-2").mac
    assert stamp().mac != stamp(policy="b" * 64).mac  # which policy labelled it is part of what is signed
    assert stamp().mac == stamp(labels=tuple(reversed(LABELS))).mac  # label order carries no meaning


def test_changed_file_bytes_are_refused():
    edited = hashlib.sha256(SEGMENT_BYTES + b"\x00").hexdigest()
    with pytest.raises(StampError, match="file bytes changed"):
        check_stamp(KEY, stamp(), channel_id="chan-a", sha256=edited)


def test_stamp_for_another_channel_is_refused():
    with pytest.raises(StampError, match="stamped for channel chan-a, not for chan-b"):
        check_stamp(KEY, stamp(), channel_id="chan-b", sha256=SHA)


def test_wrong_key_is_refused():
    with pytest.raises(StampError, match="MAC does not verify"):
        check_stamp(OTHER_KEY, stamp(), channel_id="chan-a", sha256=SHA)


@pytest.mark.parametrize("field, value", [
    ("labels", ("badge", "captions", "aigc_metadata", "watermark")),      # a label quietly dropped
    ("labels", ("badge", "captions", "aigc_metadata", "watermark", "banner", "extra")),
    ("policy", "b" * 64),                                     # claims another (stricter) policy
    ("produce_id", "prod-2"),
    ("segment_id", "seg-2"),
    ("channel_id", "chan-b"),                                 # re-addressed to another channel
    ("sha256", hashlib.sha256(b"other bytes").hexdigest()),    # re-pointed at other bytes
])
def test_tampered_field_with_the_old_mac_is_refused(field, value):
    tampered = replace(stamp(), **{field: value})
    # Check against what the tampered stamp claims, so only the MAC can catch it.
    with pytest.raises(StampError, match="MAC does not verify"):
        check_stamp(KEY, tampered, channel_id=tampered.channel_id, sha256=tampered.sha256)


def test_non_ascii_mac_is_a_stamp_error_not_a_crash():
    forged = replace(stamp(), mac="é" * 64)
    with pytest.raises(StampError):
        check_stamp(KEY, forged, channel_id="chan-a", sha256=SHA)


@pytest.mark.parametrize("missing", REQUIRED_LABELS)
def test_make_stamp_refuses_when_a_required_label_is_missing(missing):
    labels = tuple(lab for lab in LABELS if lab != missing)
    with pytest.raises(StampError, match=f"labels missing: {missing}"):
        stamp(labels=labels)


def test_stamp_made_without_required_labels_is_refused_at_air_time():
    # A stamp whose MAC is genuine but which lacks a label (e.g. made by an older middleware) still fails.
    labels = ("badge",)
    msg = _stamp_message(STAMP_VERSION, "seg-1", "chan-a", "prod-1", SHA, labels, POLICY)
    mac = hmac.new(KEY, msg, hashlib.sha256).hexdigest()
    bare = PolicyStamp(STAMP_VERSION, "seg-1", "chan-a", "prod-1", SHA, labels, POLICY, mac)
    with pytest.raises(StampError, match="labels missing: captions, aigc_metadata, watermark"):
        check_stamp(KEY, bare, channel_id="chan-a", sha256=SHA)


def test_stamp_of_an_older_version_is_refused_with_a_reason():
    old = replace(stamp(), version=STAMP_VERSION - 1)
    with pytest.raises(StampError, match="render it again"):
        check_stamp(KEY, old, channel_id="chan-a", sha256=SHA)


def _without(key: str) -> dict:
    d = stamp().to_dict()
    del d[key]
    return d


@pytest.mark.parametrize("bad", [
    None,
    [],
    "stamp",
    {},
    _without("mac"),
    _without("labels"),
    _without("sha256"),
    {**stamp().to_dict(), "version": "one"},
    {**stamp().to_dict(), "labels": 7},
])
def test_from_dict_on_malformed_input_raises_stamp_error(bad):
    with pytest.raises(StampError, match="malformed policy stamp"):
        PolicyStamp.from_dict(bad)


# --- AIGC metadata ------------------------------------------------------------------------------
ANNEX_E = {"Label", "ContentProducer", "ProduceID", "ContentPropagator", "PropagateID", "ReservedCode1",
           "ReservedCode2"}


def metadata(key: bytes = KEY, **overrides) -> str:
    args = {"producer": "Ethical Clone Studio", "produce_id": "prod-1", "propagator": "Channel A",
            "propagate_id": "show-9"}
    return aigc_metadata(key, **{**args, **overrides})


def test_aigc_metadata_has_every_annex_e_field():
    """POLICY M1: the AIGC value holds every GB 45438 Annex E field, with Label 1 and a ReservedCode1."""
    data = json.loads(metadata())
    assert set(data) == ANNEX_E
    assert data["Label"] == "1"
    assert data["ContentProducer"] == "Ethical Clone Studio"
    assert data["ProduceID"] == "prod-1"
    assert data["ContentPropagator"] == "Channel A"
    assert data["PropagateID"] == "show-9"
    assert re.fullmatch(r"[0-9a-f]{64}", data["ReservedCode1"])


def test_genuine_metadata_verifies():
    assert verify_aigc_metadata(KEY, metadata())["ProduceID"] == "prod-1"


def test_references_in_reserved_code_2_are_signed_and_read_back():
    value = metadata(reserved2='{"avatar":"a1","show":"s1"}')
    assert json.loads(verify_aigc_metadata(KEY, value)["ReservedCode2"]) == {"avatar": "a1", "show": "s1"}


def test_non_ascii_fields_survive_signing():
    value = metadata(producer="伦理克隆工作室", propagator="直播间 A")
    assert verify_aigc_metadata(KEY, value)["ContentProducer"] == "伦理克隆工作室"


@pytest.mark.parametrize("field, value", [
    ("ContentProducer", "Someone Else"),
    ("ProduceID", "prod-2"),
    ("ContentPropagator", "Channel B"),
    ("PropagateID", "show-10"),
    ("ReservedCode2", '{"avatar":"someone-else"}'),
])
def test_edited_field_is_rejected(field, value):
    """POLICY M2: editing any signed field breaks the ReservedCode1 signature."""
    data = json.loads(metadata())
    data[field] = value
    with pytest.raises(ValueError, match="does not verify"):
        verify_aigc_metadata(KEY, json.dumps(data))


def test_label_other_than_ai_generated_is_rejected():
    data = json.loads(metadata())
    data["Label"] = "0"
    with pytest.raises(ValueError, match="Label"):
        verify_aigc_metadata(KEY, json.dumps(data))


def test_signature_copied_onto_another_produce_id_is_rejected():
    """POLICY M2: a ReservedCode1 copied from a genuine mark onto another ProduceID is refused as copied or forged."""
    genuine = json.loads(metadata(produce_id="prod-1"))
    other = json.loads(metadata(produce_id="prod-2"))
    other["ReservedCode1"] = genuine["ReservedCode1"]
    with pytest.raises(ValueError, match="copied or forged"):
        verify_aigc_metadata(KEY, json.dumps(other))


def test_metadata_signed_with_another_key_is_rejected():
    with pytest.raises(ValueError, match="does not verify"):
        verify_aigc_metadata(KEY, metadata(OTHER_KEY))


@pytest.mark.parametrize("value", ["", "not json", "{'Label': '1'}", "{\"Label\": "])
def test_non_json_is_rejected(value):
    with pytest.raises(ValueError, match="not JSON"):
        verify_aigc_metadata(KEY, value)


@pytest.mark.parametrize("value", ["null", "[1, 2]", "7",
                                   '"LabelContentProducerProduceIDContentPropagatorPropagateID"'])
def test_json_that_is_not_an_object_is_rejected_with_value_error(value):
    with pytest.raises(ValueError, match="object"):
        verify_aigc_metadata(KEY, value)


@pytest.mark.parametrize("field", sorted(ANNEX_E - {"ReservedCode1", "ReservedCode2"}))
def test_missing_field_is_rejected_by_name(field):
    data = json.loads(metadata())
    del data[field]
    with pytest.raises(ValueError, match=f"lacks {field}"):
        verify_aigc_metadata(KEY, json.dumps(data))


def test_missing_signature_is_rejected():
    data = json.loads(metadata())
    del data["ReservedCode1"]
    with pytest.raises(ValueError, match="ReservedCode1"):
        verify_aigc_metadata(KEY, json.dumps(data))


def test_non_ascii_signature_is_a_value_error_not_a_crash():
    data = json.loads(metadata())
    data["ReservedCode1"] = "签名" * 32
    with pytest.raises(ValueError, match="does not verify"):
        verify_aigc_metadata(KEY, json.dumps(data))


# --- captions -----------------------------------------------------------------------------------
SPEECH = ("Welcome back to the show everyone. Today I want to show you a lightweight rain jacket "
          "that packs into its own pocket and weighs almost nothing at all! It comes in four colours, "
          "and every order this hour ships free of charge worldwide.")


def timed(text: str, *, word_s: float = 0.32, gap_s: float = 0.04, pause_after: dict | None = None):
    """(word, start, end) with steady timing; `pause_after` maps a word index to an extra silence."""
    out, t = [], 0.5
    for i, word in enumerate(text.split()):
        out.append((word, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s + (pause_after or {}).get(i, 0.0)
    return out


def test_every_word_appears_once_in_order():
    words = timed(SPEECH)
    cues = caption_cues(words)
    assert " ".join(c.text for c in cues).split() == [w for w, _, _ in words]


@pytest.mark.parametrize("max_chars, max_lines", [(26, 2), (16, 1), (40, 3)])
def test_each_cue_fits_the_line_limits(max_chars, max_lines):
    cues = caption_cues(timed(SPEECH), max_chars=max_chars, max_lines=max_lines)
    assert len(cues) > 2
    for cue in cues:
        lines = wrap_text(cue.text, max_chars)
        assert len(lines) <= max_lines, cue.text
        assert all(len(line) <= max_chars for line in lines), cue.text


def test_cues_do_not_overlap_and_move_forward():
    cues = caption_cues(timed(SPEECH))
    for cue in cues:
        assert cue.end > cue.start
    for a, b in zip(cues, cues[1:], strict=False):
        assert a.end <= b.start


def test_cue_starts_with_its_first_word_and_lasts_at_least_to_its_last():
    words = timed(SPEECH)
    cues = caption_cues(words)
    i = 0
    for cue in cues:
        n = len(cue.text.split())
        first, last = words[i], words[i + n - 1]
        assert cue.start == first[1]
        assert last[2] <= cue.end <= last[2] + 0.5
        i += n


def test_sentence_end_closes_a_cue():
    cues = caption_cues(timed("Big news. Small price"))
    assert [c.text for c in cues] == ["Big news.", "Small price"]


def test_pause_longer_than_min_gap_splits_a_cue():
    text = "one two three four"
    together = caption_cues(timed(text, pause_after={1: 0.3}), min_gap=0.6)
    split = caption_cues(timed(text, pause_after={1: 0.8}), min_gap=0.6)
    assert [c.text for c in together] == ["one two three four"]
    assert [c.text for c in split] == ["one two", "three four"]


def test_cue_is_held_until_the_next_one_but_not_beyond_half_a_second():
    words = timed("one two three four", pause_after={1: 0.8})
    first, second = caption_cues(words, min_gap=0.6)
    assert first.end == pytest.approx(words[1][2] + 0.5)  # the pause is longer than the hold
    assert second.end == pytest.approx(words[3][2] + 0.5)  # the last cue stays 0.5 s
    close = caption_cues(timed("Hello there. Next one"))
    assert close[0].end == close[1].start  # a short gap is bridged, no flicker


def test_no_words_no_cues():
    assert caption_cues([]) == []


def test_wrap_text_keeps_words_whole():
    lines = wrap_text("a bb ccc dddd eeeee", 7)
    assert lines == ["a bb", "ccc", "dddd", "eeeee"]
    assert " ".join(lines) == "a bb ccc dddd eeeee"


VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def test_webvtt_parses_back_to_the_cues():
    """POLICY V4: the WebVTT sidecar parses back to the cues, with their times and their text."""
    cues = caption_cues(timed(SPEECH))
    text = webvtt(cues)
    assert text.startswith("WEBVTT\n\n")
    blocks = text.split("\n\n")[1:]
    assert len(blocks) == len(cues)
    for block, cue in zip(blocks, cues, strict=True):
        timing, *body = block.strip("\n").split("\n")
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing)
        assert m, timing
        assert _seconds(m.groups()[:4]) == pytest.approx(cue.start, abs=0.0005)
        assert _seconds(m.groups()[4:]) == pytest.approx(cue.end, abs=0.0005)
        assert " ".join(body) == cue.text


def test_webvtt_timestamps_past_an_hour():
    text = webvtt([CaptionCue(3725.008, 3727.5, "late")])
    assert "01:02:05.008 --> 01:02:07.500" in text


def test_with_punctuation_restores_the_script_tokens():
    from studio.policy import with_punctuation

    text = "Paid partnership with Lumen Labs. Meet the Glow Serum: it's light!"
    words = ["Paid", "partnership", "with", "Lumen", "Labs", "Meet", "the", "Glow", "Serum", "it's", "light"]
    shown = with_punctuation(words, text)
    assert shown[4] == "Labs." and shown[8] == "Serum:" and shown[-1] == "light!"
    assert " ".join(shown) == text
    # When recognition and script disagree in count, the spoken words are kept as they are.
    assert with_punctuation(words[:-1], text) == words[:-1]
