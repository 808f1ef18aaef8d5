"""`studio verify FILE`: every mark a clip carries, whether each is intact, and where the clip came from
(POLICY M5).

The marks are read independently: the AIGC container key and its signature (M1, M2), the invisible
watermark (M3), the C2PA manifest (M4), and the visible badge (V1, by OCR when tesseract is installed).
A clip downloaded from a platform has usually lost its container metadata and its manifest; the watermark
survives re-encoding and scaling and still names the segment. Where no mark reads as the frames are, the
edits a re-poster makes (mirror, crop, pad, an aspect cut, a picture-in-picture, contrast, gamma) are searched for
in the first SEARCH_FRAMES frames (workers.media.watermark_search), and the clip is read again under the edit
found. Origin comes from the
database when it can be reached, else from the signed metadata, else from the watermark payload alone.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from sqlalchemy.engine import Engine

from studio.policy import verify_aigc_metadata
from workers.media.probe import ALLOWED_FORMATS, sniff
from workers.media.provenance import ProvenanceError, read_media
from workers.media.watermark import NO_EDIT, VERSIONS, Edit, WatermarkDetector, WatermarkResult, produce_id_from_token
from workers.media.watermark_search import read_frames, small_gray

WINDOW_FRAMES = 25        # the watermark is read one second at a time, so a recording of many segments
MAX_FRAMES = 25 * 120     # (each with its own mark) names every one of them; at most two minutes are read
SEARCH_FRAMES = 25 * 10   # frames kept (small, gray) for the edit search
# A clip to verify is anybody's file (a re-post someone reported): opened as that file only, with the demuxers of
# what platforms serve and the platform itself writes (MP4/MOV, Matroska/WebM, MPEG-TS, and FLV recordings: see
# _open_clip). A playlist naming a genuine segment on this host was verified as genuine, and with any protocol
# allowed it could have made the verifying host fetch URLs.
CLIP_FORMATS = (*ALLOWED_FORMATS, "mpegts")
OPEN_CLIP = {"protocol_whitelist": "file", "format_whitelist": ",".join(CLIP_FORMATS)}
FLV_MAGIC = b"FLV\x01"


def _open_clip(path: Path):
    """The clip opened by an allowed demuxer only. An FLV file (a show's recording) is opened by the FLV demuxer
    named outright, which probes nothing and reads no other file: PyAV 13 crashes the process (SIGSEGV) opening
    FLV with any open options at all."""
    with open(path, "rb") as f:
        if f.read(len(FLV_MAGIC)) == FLV_MAGIC:
            return av.open(str(path), format="flv")
    return av.open(str(path), options=dict(OPEN_CLIP))


class VerifyError(ValueError):
    """The file cannot be examined at all (missing, not a video)."""


@dataclass
class _Scan:
    windows: list[tuple[float, WatermarkResult]] = field(default_factory=list)
    whole: WatermarkResult | None = None
    frames: int = 0
    fps: float = 25.0
    badge_frames: list[np.ndarray] = field(default_factory=list)
    grays: list[np.ndarray] = field(default_factory=list)


class _Reader:
    """The whole-clip and the current one-second detector of one mark version under one edit."""

    def __init__(self, key: bytes, version: int, edit: Edit):
        self.key, self.version, self.edit = key, version, edit
        self.whole, self.window = self._new(), self._new()
        self.windows: list[tuple[float, WatermarkResult]] = []

    def _new(self) -> WatermarkDetector:
        return WatermarkDetector(self.key, version=self.version, edit=self.edit)

    def add(self, rgb: np.ndarray) -> None:
        self.whole.add_frame(rgb)
        self.window.add_frame(rgb)

    def close_window(self, start: float) -> None:
        self.windows.append((start, self.window.result()))
        self.window = self._new()

    def found(self) -> bool:
        return self.whole.result().found or any(r.found for _, r in self.windows)


def _scan(path: Path, key: bytes, readings: list[tuple[int, Edit]], *, keep: bool) -> _Scan:
    """Decode up to MAX_FRAMES frames once, reading the mark under each (version, edit); the first reading that
    finds a mark names the clip. With `keep`, the first SEARCH_FRAMES frames are kept for the edit search."""
    scan = _Scan()
    try:
        container = _open_clip(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise VerifyError(f"{path}: not a readable video in a format verified here (MP4/MOV, Matroska/WebM, FLV, "
                          f"MPEG-TS; playlists and lists of other files are refused) ({exc})") from None
    with container:
        if not container.streams.video:
            raise VerifyError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        scan.fps = float(stream.average_rate or 25)
        readers = [_Reader(key, v, e) for v, e in readings]
        start = 0.0
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i >= MAX_FRAMES:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                for reader in readers:
                    reader.add(rgb)
                scan.frames = i + 1
                if keep and i < SEARCH_FRAMES:
                    scan.grays.append(small_gray(rgb))
                if i in (0, 2 * WINDOW_FRAMES, 8 * WINDOW_FRAMES):
                    scan.badge_frames.append(rgb)
                if (i + 1) % WINDOW_FRAMES == 0:
                    for reader in readers:
                        reader.close_window(start)
                    start = (i + 1) / scan.fps
        except av.error.FFmpegError as exc:
            if scan.frames == 0:
                raise VerifyError(f"{path}: video cannot be decoded ({exc})") from None
        if scan.frames % WINDOW_FRAMES:
            for reader in readers:
                reader.close_window(start)
    if scan.frames == 0:
        raise VerifyError(f"{path}: no video frames could be decoded")
    best = next((r for r in readers if r.found()), readers[0])
    scan.windows, scan.whole = best.windows, best.whole.result()
    return scan


def _read_marks(path: Path, key: bytes) -> _Scan:
    """Every mark version as the frames are; if none is found, the edit the search finds in the first frames,
    and the clip read again under it."""
    scan = _scan(path, key, [(v, NO_EDIT) for v in VERSIONS], keep=True)
    if scan.whole.found or any(r.found for _, r in scan.windows):
        return scan
    hit = read_frames(scan.grays, key)
    if not hit.found:
        return scan
    again = _scan(path, key, [(hit.version, hit.edit)], keep=False)
    return again if again.whole.found or any(r.found for _, r in again.windows) else scan


def _watermark_report(scan: _Scan) -> dict:
    """One entry per run of consecutive seconds with the same mark; the main mark is the one seen longest."""
    runs: list[dict] = []
    for start, res in scan.windows:
        if not res.found:
            continue
        pid = produce_id_from_token(res.mark.produce_token)
        if runs and runs[-1]["produce_id"] == pid:
            runs[-1]["end_s"] = round(start + WINDOW_FRAMES / scan.fps, 2)
            runs[-1]["bit_errors"] = max(runs[-1]["bit_errors"], res.bit_errors)
        else:
            runs.append({"produce_id": pid, "avatar_ref": f"{res.mark.avatar_ref:08x}", "start_s": round(start, 2),
                         "end_s": round(start + WINDOW_FRAMES / scan.fps, 2), "bit_errors": res.bit_errors})
    best = scan.whole
    if best.found:  # one mark throughout: the evidence of every frame together is the strongest reading
        main = {"produce_id": produce_id_from_token(best.mark.produce_token),
                "avatar_ref": f"{best.mark.avatar_ref:08x}", "bit_errors": best.bit_errors}
    elif runs:
        seconds = Counter()
        for r in runs:
            seconds[r["produce_id"]] += r["end_s"] - r["start_s"]
        top = seconds.most_common(1)[0][0]
        main = next(r for r in runs if r["produce_id"] == top)
    else:
        main = None
    return {"found": main is not None, "status": "intact" if main else "missing",
            "produce_id": main["produce_id"] if main else None, "avatar_ref": main["avatar_ref"] if main else None,
            "bit_errors": main["bit_errors"] if main else best.bit_errors, "coded_bits": best.coded_bits,
            "frames": scan.frames, "score": round(best.score, 3), "marks": runs,
            "version": best.version if main else None,
            "edit": best.edit.to_dict() if main and best.edit != NO_EDIT else None}


def _aigc_report(path: Path, key: bytes) -> tuple[dict, dict | None]:
    with av.open(str(path)) as c:
        meta = {k.lower(): v for k, v in c.metadata.items()}
    value = meta.get("aigc")
    report = {"present": value is not None, "signature_valid": False, "status": "missing", "produce_id": None,
              "error": None if value is not None else "no AIGC key in the container metadata"}
    if value is None:
        return report, None
    try:
        data = verify_aigc_metadata(key, value)
    except ValueError as exc:
        report.update(status="forged", error=str(exc))
        try:
            report["produce_id"] = json.loads(value).get("ProduceID")
        except (json.JSONDecodeError, AttributeError):
            pass
        return report, None
    report.update(signature_valid=True, status="intact", produce_id=data["ProduceID"])
    try:
        refs = json.loads(data.get("ReservedCode2") or "{}")
    except json.JSONDecodeError:
        refs = {}
    return report, refs if isinstance(refs, dict) else {}


def _c2pa_report(path: Path, trust_anchors_pem: bytes | None) -> dict:
    try:
        rep = read_media(path, trust_anchors_pem=trust_anchors_pem).to_dict()
    except ProvenanceError as exc:
        return {"present": False, "valid": False, "trusted": False, "status": "missing", "error": str(exc)}
    status = "missing" if not rep["present"] else "intact" if rep["valid"] and rep["trusted"] else "forged"
    return {**rep, "status": status}


def _ocr_badge(frames: list[np.ndarray]) -> dict:
    """Whether plain tesseract reads "AI avatar" in the top corners of the sampled frames, as they are or
    mirrored back (a mirrored clip shows the badge in the other corner, its text reading backwards)."""
    if not shutil.which("tesseract") or not frames:
        return {"checked": False, "found": None, "frames": 0}
    import cv2

    hits, mirrored = 0, 0
    with tempfile.TemporaryDirectory(prefix="studio-verify-") as td:
        for i, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            seen = None
            for flip, crop in itertools.product((False, True), (rgb[: h // 6, w // 3:], rgb[: h // 6, : 2 * w // 3])):
                crop = crop[:, ::-1] if flip else crop
                big = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC) if w < 600 else crop
                png = Path(td) / f"{i}.png"
                cv2.imwrite(str(png), cv2.cvtColor(np.ascontiguousarray(big), cv2.COLOR_RGB2BGR))
                out = subprocess.run(["tesseract", str(png), "stdout"], capture_output=True, text=True, timeout=30)
                if "ai avatar" in " ".join(out.stdout.lower().split()):
                    seen = flip
                    break
            hits += seen is not None
            mirrored += bool(seen)
    return {"checked": True, "found": hits == len(frames), "frames": len(frames), "frames_with_badge": hits,
            "mirrored": bool(hits) and mirrored == hits}


def _lookup(engine: Engine | None, produce_ids: list[str], avatar_ref: str | None) -> dict | None:
    """Origin from the database: a segment, a show recording, a channel's stream or its slate."""
    if engine is None:
        return None
    from sqlmodel import select

    from studio.db import session_scope
    from studio.models import AuditEvent, Recording, Segment, Show

    with session_scope(engine) as s:
        for pid in produce_ids:
            seg = s.exec(select(Segment).where(Segment.produce_id == pid)).first()
            if seg is not None:
                return {"kind": "segment", "produce_id": pid, "segment_id": seg.id, "avatar_id": seg.avatar_id,
                        "show_id": seg.show_id, "consent_id": seg.consent_id, "channel_id": seg.channel_id,
                        "aired_at": seg.aired_at.isoformat() if seg.aired_at else None}
            rec = s.exec(select(Recording).where(Recording.produce_id == pid)).first()
            if rec is not None:
                show = s.get(Show, rec.show_id)
                return {"kind": "recording", "produce_id": pid, "segment_id": None, "avatar_id": show.avatar_id,
                        "show_id": show.id, "consent_id": show.consent_id, "channel_id": show.channel_id,
                        "segments": len(rec.segment_ids)}
            for ev in s.exec(select(AuditEvent).where(AuditEvent.kind.in_(("slate.rendered", "stream.started"))))\
                    .all():
                if ev.data.get("produce_id") != pid:
                    continue
                if ev.kind == "slate.rendered":
                    return {"kind": "slate", "produce_id": pid, "segment_id": None,
                            "avatar_id": ev.data.get("avatar_id"), "show_id": None, "consent_id": None,
                            "channel_id": ev.subject_id}
                show = s.get(Show, ev.data.get("show_id"))
                return {"kind": "stream", "produce_id": pid, "segment_id": None, "channel_id": ev.subject_id,
                        "show_id": show.id if show else None, "avatar_id": show.avatar_id if show else None,
                        "consent_id": show.consent_id if show else None}
    return None


def verify_file(path: Path, *, key: bytes, engine: Engine | None = None, trust_anchors_pem: bytes | None = None,
                ocr: bool = True) -> dict:
    """`studio verify FILE` (POLICY M5): read the AIGC metadata and its signature, the watermark, the C2PA manifest
    and (with `ocr`) the visible badge; say whether each is intact, the verdict (genuine, tampered or unmarked), and
    which segment, avatar, show and consent the clip came from (from the database, else the signed metadata, else
    the watermark alone)."""
    path = Path(path)
    if not path.is_file():
        raise VerifyError(f"{path}: no such file")
    if (what := sniff(path)) is not None:
        raise VerifyError(f"{path}: not a clip: this is {what.split(';')[0]}; give the video file itself")
    scan = _read_marks(path, key)
    wm = _watermark_report(scan)
    aigc, refs = _aigc_report(path, key)
    c2pa = _c2pa_report(path, trust_anchors_pem)
    label = _ocr_badge(scan.badge_frames) if ocr else {"checked": False, "found": None, "frames": 0}
    # Metadata that verifies but names another clip than the watermark does was copied from that clip. A show
    # recording or a stream carries its own ProduceID over pictures that carry their segments' marks.
    container = bool(refs and ("recording" in refs or "stream" in refs))
    if aigc["signature_valid"] and wm["found"] and not container and aigc["produce_id"] != wm["produce_id"]:
        aigc.update(status="mismatch", error=f"AIGC ProduceID {aigc['produce_id']} does not match the watermark's "
                    f"{wm['produce_id']}: metadata copied from another clip")
    # Metadata that says the clip is ours while the picture carries no watermark: the mark was stripped, or the
    # metadata was copied onto a clip that never came from the platform.
    if aigc["status"] == "intact" and not wm["found"]:
        wm.update(status="stripped", error="the AIGC metadata verifies but the picture carries no watermark: "
                  "watermark removed, or metadata copied onto another clip")
    # The picture's own mark names the clip first, metadata only when it verifies and agrees; a recording is
    # named by its metadata, since its pictures carry the marks of the segments it is made of.
    meta_id = aigc["produce_id"] if aigc["status"] == "intact" else None
    candidates = [p for p in ((meta_id, wm["produce_id"]) if container else (wm["produce_id"], meta_id)) if p]
    origin = _lookup(engine, candidates, wm["avatar_ref"])
    report = {"file": str(path), "produce_id": None, "segment_id": None, "avatar_id": None, "avatar_ref": None,
              "show_id": None, "consent_id": None, "channel_id": None, "kind": None, "source": None}
    if origin is not None:
        report.update(origin, source="database")
    elif refs is not None and aigc["status"] == "intact":
        report.update(produce_id=aigc["produce_id"], segment_id=refs.get("segment"), avatar_id=refs.get("avatar"),
                      show_id=refs.get("show"), consent_id=refs.get("consent"), channel_id=refs.get("channel"),
                      kind=next((k for k in ("recording", "stream", "slate") if k in refs), "segment"),
                      source="aigc_metadata")
    elif wm["found"]:
        report.update(produce_id=wm["produce_id"], kind="segment", source="watermark")
    report["avatar_ref"] = wm["avatar_ref"] or (report["avatar_id"][:8] if report["avatar_id"] else None)
    statuses = {"aigc_metadata": aigc["status"], "watermark": wm["status"], "c2pa": c2pa["status"]}
    if label["checked"]:
        statuses["visible_label"] = "intact" if label["found"] else "missing"
    tampered = [k for k, v in statuses.items() if v in ("forged", "mismatch", "stripped")]
    verdict = "tampered" if tampered else "genuine" if wm["found"] or aigc["status"] == "intact" else "unmarked"
    report.update(verdict=verdict, marks=statuses, watermark=wm, aigc_metadata=aigc, c2pa=c2pa, visible_label=label)
    return report
