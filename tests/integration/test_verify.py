"""`studio verify` (POLICY M5) on real segments: it names the segment and avatar from the clip as rendered,
after a platform-style re-encode (50% scale, CRF 28) that drops the container metadata, and with no
database at all; it reports forged metadata, metadata copied from another clip, and a clip whose
watermark is missing while its metadata claims it is ours."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from studio.models import Avatar, Recording, Segment
from tests.conftest import STUDIO, studio_env
from tests.integration.conftest import new_show, plan_segment, segment_row
from workers.provenance.archive import archive_segment_direct, record_show_direct
from workers.render.segment import render_segment_direct

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _verify(path: Path, data_dir: Path, *extra: str) -> tuple[int, dict]:
    res = subprocess.run([STUDIO, "verify", str(path), "--json", *extra], env=studio_env(data_dir),
                         capture_output=True, text=True, timeout=180)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def rendered(avatar_world):
    rt, ids = avatar_world
    seg_ids = [plan_segment(rt, ids, 200 + i) for i in range(2)]
    for seg_id in seg_ids:
        assert render_segment_direct(rt, seg_id) == "ready"
    return rt, ids, [segment_row(rt, seg_id) for seg_id in seg_ids]


def test_verify_names_segment_and_avatar_of_a_rendered_segment(rendered):
    """POLICY M5: on a rendered segment, verify names its segment, avatar, show and consent and reports each mark
    intact."""
    rt, ids, (seg, _) = rendered
    code, r = _verify(rt.local(seg.path), rt.settings.data_path)
    assert code == 0 and r["verdict"] == "genuine"
    assert (r["produce_id"], r["avatar_id"], r["segment_id"]) == (seg.produce_id, ids["avatar"], seg.id)
    assert (r["show_id"], r["consent_id"], r["source"]) == (ids["show"], ids["consent"], "database")
    assert r["watermark"]["found"] and r["watermark"]["bit_errors"] == 0
    assert r["aigc_metadata"] == {**r["aigc_metadata"], "present": True, "signature_valid": True}
    assert r["c2pa"]["present"] is False  # segments get their manifest when archived


def test_verify_after_platform_reencode_at_half_size_and_crf_28(rendered, tmp_path):
    rt, ids, (seg, _) = rendered
    small = tmp_path / "downloaded.mp4"
    src = str(rt.local(seg.path))
    _ffmpeg("-i", src, "-vf", "scale=iw/2:ih/2", "-c:v", "libx264", "-crf", "28", "-c:a", "aac", str(small))
    with av.open(str(small)) as c:
        assert c.streams.video[0].width == 180 and "AIGC" not in c.metadata  # the re-encode dropped the key
    code, r = _verify(small, rt.settings.data_path)
    assert code == 0 and r["verdict"] == "genuine"
    assert (r["produce_id"], r["avatar_id"]) == (seg.produce_id, ids["avatar"])
    assert r["watermark"]["found"] and r["aigc_metadata"]["present"] is False
    assert r["watermark"]["bit_errors"] < r["watermark"]["coded_bits"] // 10


def test_verify_without_a_database_reads_the_payload_alone(rendered, tmp_path):
    rt, ids, (seg, _) = rendered
    keys_only = tmp_path / "elsewhere"
    shutil.copytree(rt.data.keys, keys_only / "keys")
    small = tmp_path / "small.mp4"
    src = str(rt.local(seg.path))
    _ffmpeg("-i", src, "-vf", "scale=iw/2:ih/2", "-crf", "28", str(small))
    code, r = _verify(small, keys_only, "--no-ocr")
    assert code == 0 and r["source"] == "watermark"
    assert r["produce_id"] == seg.produce_id and r["avatar_ref"] == ids["avatar"][:8]
    assert not (keys_only / "studio.db").exists()  # verify never creates a database
    # With the metadata intact it names everything, from the signed references.
    code, r = _verify(rt.local(seg.path), keys_only, "--no-ocr")
    assert r["source"] == "aigc_metadata"
    assert (r["avatar_id"], r["show_id"], r["consent_id"]) == (ids["avatar"], ids["show"], ids["consent"])


def test_forged_and_copied_metadata_are_reported(rendered, tmp_path):
    """POLICY M5: edited AIGC metadata is reported forged, and metadata copied from another clip a mismatch."""
    rt, _, (seg, other) = rendered
    with av.open(rt.local(seg.path)) as c:
        genuine = c.metadata["AIGC"]
    with av.open(rt.local(other.path)) as c:
        others = c.metadata["AIGC"]
    edited = json.loads(genuine)
    edited["ContentProducer"] = "Someone Else"
    forged = tmp_path / "forged.mp4"
    src = str(rt.local(seg.path))
    _ffmpeg("-i", src, "-c", "copy", "-movflags", "use_metadata_tags", "-metadata",
            f"AIGC={json.dumps(edited)}", str(forged))
    code, r = _verify(forged, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["verdict"] == "tampered"
    assert r["marks"]["aigc_metadata"] == "forged" and r["aigc_metadata"]["signature_valid"] is False
    assert r["marks"]["watermark"] == "intact" and r["produce_id"] == seg.produce_id

    copied = tmp_path / "copied.mp4"
    src = str(rt.local(seg.path))
    _ffmpeg("-i", src, "-c", "copy", "-movflags", "use_metadata_tags", "-metadata", f"AIGC={others}",
            str(copied))
    code, r = _verify(copied, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["marks"]["aigc_metadata"] == "mismatch"
    assert other.produce_id in r["aigc_metadata"]["error"] and r["produce_id"] == seg.produce_id


def test_the_report_shows_what_the_clip_says_as_it_is(rendered, tmp_path):
    """The clip is untrusted, and so is its name: square brackets in a forged AIGC Label (quoted in the report's
    error) or in the file's name are shown as they are, not read as rich markup. Before, a Label of '[/]' crashed
    the verifier with a traceback after its whole search, and a name with '[red]' in it was printed without it."""
    rt, _, (seg, _) = rendered
    with av.open(rt.local(seg.path)) as c:
        edited = json.loads(c.metadata["AIGC"])
    edited["Label"] = "[/]"
    folder = tmp_path / ("[b]draft " + "a" * 60)
    folder.mkdir()
    forged = folder / "clip [red]v2.mp4"
    _ffmpeg("-i", str(rt.local(seg.path)), "-c", "copy", "-movflags", "use_metadata_tags", "-metadata",
            f"AIGC={json.dumps(edited)}", str(forged))
    res = subprocess.run([STUDIO, "verify", str(forged), "--no-ocr"],
                         env={**studio_env(rt.settings.data_path), "COLUMNS": "80"}, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"tampered  {forged}", lines[0]  # whole, on one line, brackets and all
    assert "  AIGC metadata: forged - AIGC Label is '[/]', expected '1' (AI-generated)" in lines, res.stdout
    assert f"  origin (database): segment {seg.produce_id}" in lines  # the watermark still names the segment


def test_a_clip_without_the_watermark_carrying_our_metadata_is_reported_stripped(rendered, tmp_path):
    rt, _, (seg, _) = rendered
    with av.open(rt.local(seg.path)) as c:
        genuine = c.metadata["AIGC"]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    # The same pictures with the watermark washed out by a strong blur, and the genuine metadata copied on.
    raw = np.stack([np.asarray(f) for f in frames]).tobytes()
    stripped = tmp_path / "stripped.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{frames[0].shape[1]}x{frames[0].shape[0]}", "-r", "25", "-i", "-", "-vf",
                    "gblur=sigma=12", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "use_metadata_tags",
                    "-metadata", f"AIGC={genuine}", str(stripped)], input=raw, check=True)
    code, r = _verify(stripped, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["verdict"] == "tampered"
    assert r["marks"]["watermark"] == "stripped" and r["marks"]["aigc_metadata"] == "intact"


def test_unmarked_video_is_reported_unmarked(tmp_path, avatar_world):
    rt, _ = avatar_world
    plain = tmp_path / "plain.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=360x640:rate=25", "-t", "3", "-pix_fmt", "yuv420p", str(plain))
    code, r = _verify(plain, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["verdict"] == "unmarked"
    assert set(r["marks"].values()) == {"missing"} and r["produce_id"] is None


def test_not_a_video_is_a_clear_error(tmp_path, avatar_world):
    """The error names the file whole, on one line: a long path is not wrapped at the terminal's width, and square
    brackets in it are not read as markup."""
    rt, _ = avatar_world
    folder = tmp_path / ("[draft] " + "a" * 70)
    folder.mkdir()
    bogus = folder / "notes [v2].mp4"
    bogus.write_text("not a video")
    res = subprocess.run([STUDIO, "verify", str(bogus)], env={**studio_env(rt.settings.data_path), "COLUMNS": "80"},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and any(str(bogus) in line for line in res.stderr.splitlines()), res.stderr


def test_archive_chains_segments_and_the_show_recording_verifies(rendered, tmp_path):
    """POLICY M1, M4: archived segments carry C2PA manifests chained in air order; the show's recording carries its
    own AIGC mark and manifest, and every second of it still names its segment by watermark."""
    from sqlmodel import select

    from studio.db import session_scope

    rt, ids, _ = rendered
    channel, show = new_show(rt, ids, "archive")
    seg_ids = [plan_segment(rt, ids, seq, channel=channel.id, show=show.id) for seq in range(3)]
    for seg_id in seg_ids:
        render_segment_direct(rt, seg_id)
        with session_scope(rt.engine) as s:
            s.get(Segment, seg_id).state = "aired"
    archived = [archive_segment_direct(rt, seg_id) for seg_id in seg_ids]
    assert archive_segment_direct(rt, seg_ids[0]) == archived[0]  # idempotent
    reports = [_verify(p, rt.settings.data_path, "--no-ocr")[1] for p in archived]
    for i, r in enumerate(reports):
        assert r["verdict"] == "genuine" and r["marks"]["c2pa"] == "intact"
        assert r["c2pa"]["sequence_number"] == i and r["c2pa"]["stream_id"] == show.id
        assert r["c2pa"]["claim"]["produce_id"] == r["produce_id"] == segment_row(rt, seg_ids[i]).produce_id
        assert r["c2pa"]["digital_source_type"].endswith("trainedAlgorithmicMedia")
    assert reports[0]["c2pa"]["previous_manifest_id"] is None
    assert [r["c2pa"]["previous_manifest_id"] for r in reports[1:]] == [r["c2pa"]["manifest_id"] for r in reports[:2]]

    rec = record_show_direct(rt, show.id)
    assert record_show_direct(rt, show.id).id == rec.id  # the same segments: the same recording
    code, r = _verify(rt.local(rec.path), rt.settings.data_path, "--no-ocr")
    assert code == 0 and r["kind"] == "recording" and r["show_id"] == show.id
    assert r["marks"] == {"aigc_metadata": "intact", "watermark": "intact", "c2pa": "intact"}
    assert r["c2pa"]["ingredient_manifest_ids"] == [x["c2pa"]["manifest_id"] for x in reports]
    named = [run["produce_id"] for run in r["watermark"]["marks"]]
    assert named == [segment_row(rt, i).produce_id for i in seg_ids]
    with session_scope(rt.engine) as s:
        assert s.exec(select(Recording).where(Recording.show_id == show.id)).one().path == rec.path
        assert s.get(Avatar, ids["avatar"]) is not None

    tampered = tmp_path / "tampered.mp4"
    data = bytearray(Path(archived[1]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    code, r = _verify(tampered, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["marks"]["c2pa"] == "forged"


def test_verify_after_a_repost_mirror_crop_and_contrast_at_crf_28(rendered, tmp_path):
    """Issue 20: a re-poster mirrors the clip, crops 8 % off one side and 5 % off the bottom, scales it back,
    raises the contrast by 15 %, and re-encodes at CRF 28; verify still names the segment and avatar, says the
    mark version and the edit it found, and reads the badge on the mirrored frames."""
    rt, ids, (seg, _) = rendered
    edited = tmp_path / "reposted.mp4"
    # Cut from the right and the bottom, so the badge (top-left once mirrored) stays in the picture.
    _ffmpeg("-i", str(rt.local(seg.path)), "-vf", "hflip,crop=iw*0.92:ih*0.95:0:0,scale=360:640,"
            "eq=contrast=1.15", "-c:v", "libx264", "-crf", "28", str(edited))
    code, r = _verify(edited, rt.settings.data_path)
    assert code == 0 and r["verdict"] == "genuine"
    assert (r["produce_id"], r["avatar_id"], r["segment_id"]) == (seg.produce_id, ids["avatar"], seg.id)
    wm = r["watermark"]
    assert wm["found"] and wm["version"] == 3 and wm["edit"]["mirrored"] is True
    _, _, x1, y1 = wm["edit"]["rect"]
    assert x1 > 1.02 and y1 > 1.02  # the picture reaches past the frame's right and bottom: it was cropped there
    if r["visible_label"]["checked"]:
        assert r["visible_label"]["found"] and r["visible_label"]["mirrored"] is True


def test_verify_finds_nothing_in_unmarked_video_given_the_same_edits(tmp_path, avatar_world):
    rt, _ = avatar_world
    plain = tmp_path / "plain.mp4"
    _ffmpeg("-f", "lavfi", "-i", "mandelbrot=size=360x640:rate=25", "-t", "3", "-vf",
            "hflip,crop=iw*0.92:ih*0.95:iw*0.08:ih*0.05,scale=360:640,eq=contrast=1.15", "-crf", "28",
            "-pix_fmt", "yuv420p", str(plain))
    code, r = _verify(plain, rt.settings.data_path, "--no-ocr")
    assert code == 1 and r["verdict"] == "unmarked"
    assert r["watermark"]["found"] is False and r["watermark"]["version"] is None and r["produce_id"] is None


def test_a_list_naming_a_genuine_segment_is_not_verified(rendered, tmp_path):
    """A clip to verify is anybody's file. A playlist (or concat list) naming a genuine segment on this host was
    followed, and the five-line text file verified as that segment, genuine. Refused by its first bytes, and by the
    demuxer allowlist when a NUL byte hides it from the sniffer."""
    rt, _, (seg, _) = rendered
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{rt.local(seg.path)}\n#EXT-X-ENDLIST\n"
    cases = {"clip.m3u8": (playlist.encode(), "not a clip: this is an HLS playlist (.m3u8)"),
             "hidden.m3u8": (playlist.encode() + b"\x00\n", "not a readable video in a format verified here"),
             "list.ffconcat": (f"ffconcat version 1.0\nfile {rt.local(seg.path)}\n".encode(), "this is a concat list")}
    for name, (body, said) in cases.items():
        clip = tmp_path / name
        clip.write_bytes(body)
        res = subprocess.run([STUDIO, "verify", str(clip), "--json", "--no-ocr"],
                             env=studio_env(rt.settings.data_path), capture_output=True, text=True, timeout=180)
        assert res.returncode == 2 and said in " ".join(res.stderr.split()), (name, res.stdout[-300:], res.stderr)
