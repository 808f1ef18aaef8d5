"""C2PA Content Credentials on real MP4 segments: sign, read back, chain live segments, detect tampering."""

import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest

from studio.config import MediaProfile, Settings
from studio.keys import ProvenanceKeys, init_provenance_keys
from tests.conftest import ROOT, require
from tests.media_helpers import make_test_segment
from workers.media.proc import run_ffmpeg
from workers.media.provenance import (
    TRAINED_ALGORITHMIC_MEDIA,
    ProvenanceError,
    build_manifest,
    read_media,
    sign_media,
)

pytestmark = pytest.mark.integration

PROFILE = MediaProfile(width=360, height=640, fps=25)
CLAIM = {"produce_id": "prod-1", "segment_id": "seg-1", "show_id": "show-1", "avatar_id": "av-1",
         "consent_id": "consent-1", "channel_id": "ch-1"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> ProvenanceKeys:
    return init_provenance_keys(Settings(data_dir=str(tmp_path_factory.mktemp("ours"))))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> ProvenanceKeys:
    return init_provenance_keys(Settings(data_dir=str(tmp_path_factory.mktemp("theirs"))))


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> Path:
    require("ffmpeg")
    return make_test_segment(tmp_path_factory.mktemp("media") / "seg.mp4", seconds=2, profile=PROFILE)


@pytest.fixture(scope="module")
def signed(segment, keys, tmp_path_factory) -> tuple[Path, str]:
    dst = tmp_path_factory.mktemp("signed") / "seg.mp4"
    return dst, sign_media(segment, dst, keys=keys, title="seg.mp4", claim=CLAIM)


def top_level_boxes(path: Path) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level ISO BMFF box."""
    data, boxes, offset = path.read_bytes(), [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append((kind.decode("latin-1"), offset, size))
        offset += size
    return boxes


def video_frames_and_duration(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = sum(1 for _ in c.decode(stream))
        return frames, float(stream.duration * stream.time_base)


def codes(errors) -> list[str]:
    return [e.split(":", 1)[0] for e in errors]


def test_signed_segment_reads_back_valid_trusted_and_ai_generated(signed, keys):
    """POLICY M4: a signed segment reads back valid, trusted under the project's root, and declared
    trainedAlgorithmicMedia."""
    path, manifest_id = signed
    assert manifest_id.startswith("urn:c2pa:")
    report = read_media(path, trust_anchors_pem=keys.root_pem)
    assert report.present and report.valid and report.trusted
    assert report.manifest_id == manifest_id
    assert report.digital_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.claim == CLAIM
    assert report.errors == ()
    assert report.sequence_number is None and report.previous_manifest_id is None
    assert json.loads(json.dumps(report.to_dict()))["claim"] == CLAIM


def test_the_manifest_names_the_studio_and_a_created_action(signed):
    import c2pa

    with open(signed[0], "rb") as f, c2pa.Reader("video/mp4", f) as reader:
        manifest = reader.get_active_manifest()
    assert manifest["claim_generator_info"][0]["name"] == "Ethical Clone Studio"
    assert manifest["title"] == "seg.mp4"
    actions = next(a["data"]["actions"] for a in manifest["assertions"] if a["label"] == "c2pa.actions.v2")
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert "time" not in manifest["signature_info"]  # no timestamp authority was asked


def test_three_live_segments_chain_by_manifest_id(segment, keys, tmp_path):
    """POLICY M4: live segments of one stream chain by sequence number and the previous segment's manifest id."""
    previous, reports = None, []
    for seq in range(3):
        dst = tmp_path / f"{seq:08d}.mp4"
        manifest_id = sign_media(segment, dst, keys=keys, title=dst.name, claim={**CLAIM, "segment_id": f"s{seq}"},
                                 sequence_number=seq, stream_id="ch-1/show-1", previous_manifest_id=previous)
        report = read_media(dst, trust_anchors_pem=keys.root_pem)
        assert report.trusted and report.manifest_id == manifest_id
        reports.append(report)
        previous = manifest_id
    assert [r.sequence_number for r in reports] == [0, 1, 2]
    assert {r.stream_id for r in reports} == {"ch-1/show-1"}
    assert reports[0].previous_manifest_id is None
    assert [r.previous_manifest_id for r in reports[1:]] == [r.manifest_id for r in reports[:-1]]
    assert len({r.manifest_id for r in reports}) == 3
    assert [r.claim["segment_id"] for r in reports] == ["s0", "s1", "s2"]


def test_the_segment_assertion_follows_the_live_video_section():
    manifest = build_manifest(title="t", mime_type="video/mp4", claim={}, sequence_number=7, stream_id="st",
                              previous_manifest_id="urn:c2pa:prev")
    segment = next(a["data"] for a in manifest["assertions"] if a["label"] == "c2pa.livevideo.segment")
    assert segment == {"sequenceNumber": 7, "streamId": "st", "continuityMethod": "c2pa.manifestId",
                       "previousManifestId": "urn:c2pa:prev"}


def test_a_byte_flipped_in_mdat_breaks_the_hash(signed, keys, tmp_path):
    tampered = tmp_path / "tampered.mp4"
    shutil.copyfile(signed[0], tampered)
    _, offset, size = next(b for b in top_level_boxes(tampered) if b[0] == "mdat")
    data = bytearray(tampered.read_bytes())
    data[offset + size // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    report = read_media(tampered, trust_anchors_pem=keys.root_pem)
    assert report.present and not report.valid and not report.trusted
    assert "assertion.bmffHash.mismatch" in codes(report.errors)


def test_an_unsigned_file_has_no_credentials(segment, keys):
    report = read_media(segment, trust_anchors_pem=keys.root_pem)
    assert (report.present, report.valid, report.trusted, report.manifest_id) == (False, False, False, None)


def test_another_root_is_valid_but_not_trusted(segment, keys, other_keys, tmp_path):
    dst = tmp_path / "theirs.mp4"
    sign_media(segment, dst, keys=other_keys, title="theirs", claim=CLAIM)
    report = read_media(dst, trust_anchors_pem=keys.root_pem)
    assert report.present and report.valid and not report.trusted
    assert "signingCredential.untrusted" in codes(report.errors)
    assert read_media(dst, trust_anchors_pem=other_keys.root_pem).trusted


def test_trust_settings_do_not_leak_between_reads(signed, keys, other_keys):
    path, _ = signed
    verdicts = [read_media(path, trust_anchors_pem=pem).trusted
                for pem in (other_keys.root_pem, keys.root_pem, None, other_keys.root_pem, keys.root_pem)]
    assert verdicts == [False, True, False, False, True]
    unanchored = read_media(path, trust_anchors_pem=None)
    assert unanchored.valid and not unanchored.trusted and unanchored.errors == ()


def test_reencoding_drops_the_credentials(signed, keys, tmp_path):
    out = tmp_path / "reencoded.mp4"
    run_ffmpeg(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i", str(signed[0]),
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(out)], timeout=120)
    assert read_media(out, trust_anchors_pem=keys.root_pem).present is False


def test_the_signed_file_still_plays_the_same(segment, signed):
    assert video_frames_and_duration(signed[0]) == video_frames_and_duration(segment)
    assert video_frames_and_duration(signed[0])[0] == 2 * PROFILE.fps
    assert "uuid" in [b[0] for b in top_level_boxes(signed[0])]  # the manifest rides in a top-level uuid box


def test_a_show_recording_lists_its_segments(segment, keys, tmp_path):
    ids = ["urn:c2pa:aaaaaaaa-0000-0000-0000-000000000001", "urn:c2pa:aaaaaaaa-0000-0000-0000-000000000002"]
    dst = tmp_path / "show.mp4"
    sign_media(segment, dst, keys=keys, title="show", claim=CLAIM, ingredient_manifest_ids=ids)
    report = read_media(dst, trust_anchors_pem=keys.root_pem)
    assert report.trusted and report.ingredient_manifest_ids == tuple(ids)


def test_signing_replaces_an_existing_destination(segment, keys, tmp_path):
    dst = tmp_path / "seg.mp4"
    dst.write_bytes(b"old")
    sign_media(segment, dst, keys=keys, title="seg", claim=CLAIM)
    assert read_media(dst, trust_anchors_pem=keys.root_pem).trusted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.mp4"]


def test_a_failed_signing_leaves_nothing_behind(keys, tmp_path):
    src = tmp_path / "src" / "fake.mp4"
    src.parent.mkdir()
    src.write_text("not an mp4 at all\n" * 20)
    out = tmp_path / "out"
    with pytest.raises(ProvenanceError, match="c2pa could not sign .*fake.mp4"):
        sign_media(src, out / "fake.mp4", keys=keys, title="x", claim=CLAIM)
    assert list(out.iterdir()) == []


def test_keys_whose_root_did_not_issue_the_signer_are_refused(segment, keys, other_keys, tmp_path):
    mixed = ProvenanceKeys(chain_pem=keys.chain_pem, private_key_pem=keys.private_key_pem,
                           root_pem=other_keys.root_pem)
    with pytest.raises(ProvenanceError, match="does not verify under its own root"):
        sign_media(segment, tmp_path / "seg.mp4", keys=mixed, title="x", claim=CLAIM)
    assert list(tmp_path.iterdir()) == []


def test_missing_keys_and_bad_arguments_are_named(segment, keys, tmp_path):
    with pytest.raises(ProvenanceError, match="studio keys init"):
        sign_media(segment, tmp_path / "a.mp4", keys=None, title="x", claim=CLAIM)
    avi = tmp_path / "in.avi"
    shutil.copyfile(segment, avi)
    with pytest.raises(ProvenanceError, match=r"in\.avi: unsupported format '\.avi'"):
        sign_media(avi, tmp_path / "a.avi", keys=keys, title="x", claim=CLAIM)
    with pytest.raises(ValueError, match="needs a stream_id"):
        sign_media(segment, tmp_path / "a.mp4", keys=keys, title="x", claim=CLAIM, sequence_number=1)
    with pytest.raises(ValueError, match="sequence_number must be an int >= 0, got -1"):
        sign_media(segment, tmp_path / "a.mp4", keys=keys, title="x", claim=CLAIM, sequence_number=-1,
                   stream_id="s")
    with pytest.raises(ValueError, match="need a sequence_number"):
        sign_media(segment, tmp_path / "a.mp4", keys=keys, title="x", claim=CLAIM, previous_manifest_id="urn:x")
    with pytest.raises(ProvenanceError, match="no such file"):
        sign_media(tmp_path / "missing.mp4", tmp_path / "a.mp4", keys=keys, title="x", claim=CLAIM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]


@pytest.mark.parametrize("content", [b"hello, not a video\n" * 20, b""], ids=["text", "empty"])
def test_a_file_that_is_not_media_is_an_error_naming_it(tmp_path, keys, content):
    path = tmp_path / "notes.mp4"
    path.write_bytes(content)
    with pytest.raises(ProvenanceError, match=re.escape(str(path))):
        read_media(path, trust_anchors_pem=keys.root_pem)
    with pytest.raises(ProvenanceError, match="no such file"):
        read_media(tmp_path / "absent.mp4", trust_anchors_pem=None)


def test_signing_and_reading_work_without_a_network(segment, keys, tmp_path):
    # A fresh network namespace has no route anywhere: a TSA, OCSP or remote-manifest fetch would fail.
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rn (network namespace) is not permitted on this machine")
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for name, data in (("chain", keys.chain_pem), ("key", keys.private_key_pem), ("root", keys.root_pem)):
        (keys_dir / name).write_bytes(data)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from studio.keys import ProvenanceKeys
        from workers.media.provenance import read_media, sign_media
        d = Path({str(keys_dir)!r})
        keys = ProvenanceKeys((d / "chain").read_bytes(), (d / "key").read_bytes(), (d / "root").read_bytes())
        out = Path({str(tmp_path / "offline.mp4")!r})
        sign_media(Path({str(segment)!r}), out, keys=keys, title="offline", claim={{"k": 1}})
        assert read_media(out, trust_anchors_pem=keys.root_pem).trusted
    """)
    done = subprocess.run(["unshare", "-rn", sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
