"""`studio eval lipsync`: measure the lip-sync renderer against held-out real frames.

The footage is cut frame-exactly into the first 70 % (an avatar is built from it, as `avatar create`
would) and the last 30 % (held out). The held-out audio, without any text or phoneme timings, drives
four candidates that are compared with the held-out frames by `workers.eval.metrics`:
  renderer     the renderer's own mouth choice for audio without phonemes: the avatar's learned audio map, or
               loudness where the map lost to loudness at ingest (`drives` in the result says which)
  recognition  phonemes recognised in the audio (`workers.speech.recognize`) through the renderer's phoneme path,
               as for our own TTS; the audio map where recognition heard too little speech
  loudness     baseline: mouth opened by loudness alone (`loudness_target`)
  plain_loop   baseline: the idle base loop with no lip-sync at all
and, when the footage's phonemes are known (`phonemes`: the project's own footage, `make_demo_footage(...,
phonemes_out=)`, was spoken by our TTS, which reports them), a fifth:
  phonemes     the held-out part's own phonemes through the same phoneme path: the lips as our TTS drives them,
               and the most any phoneme recognition could give, since recognition can only get these wrong
The key "renderer" is kept for the result's readers; `compare` says how the renderer and the phoneme paths
fare against the baselines and against each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from studio import audit_keys
from studio.audit_keys import INGEST, AuditKeyring
from studio.config import Settings
from studio.db import make_engine, session_scope, upgrade
from studio.models import Creator
from studio.storage import DataDir
from workers.eval.metrics import (
    CLOSED_RULE,
    SILENCE_RULE,
    BlendGeometry,
    Stream,
    reference_levels,
    silent_frames,
    summarise,
)
from workers.ingest.footage import ingest_direct
from workers.media.face import FaceAnalyzer
from workers.media.probe import FootageError, frame_rms, iter_frames, probe, read_audio
from workers.media.proc import FFmpegProcess, MediaError, run_ffmpeg
from workers.renderers.footage import FootageRenderer, base_path, feather_mask, loudness_target
from workers.speech.recognize import MIN_VOICED_SHARE, voiced_share, with_recognised_phonemes
from workers.tts.base import Speech, Timed

MIN_SECONDS = 5.0
TRAIN_SHARE = 0.7
CANDIDATES = ("renderer", "recognition", "loudness", "plain_loop")
BASELINES = ("loudness", "plain_loop")
Progress = Callable[[str, int, int], None]


def read_phonemes(path: Path) -> list[Timed]:
    """Phonemes with their times in seconds from a JSON file (`{"phonemes": [[symbol, start, end], ...]}`, as
    make_demo_footage writes). FootageError naming the file and what is wrong with it."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())["phonemes"]
        phones = [Timed(str(sym), float(a), float(b)) for sym, a, b in rows]
    except OSError as exc:
        raise FootageError(f"phonemes file {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FootageError(f"phonemes file {path} is not {{\"phonemes\": [[symbol, start s, end s], ...]}}: "
                           f"{type(exc).__name__}: {exc}") from None
    for p in phones:
        if not (np.isfinite(p.start) and np.isfinite(p.end) and 0 <= p.start <= p.end):
            raise FootageError(f"phonemes file {path}: phoneme {p.text!r} has times {p.start}-{p.end} s; each needs "
                               f"0 <= start <= end")
    if not phones:
        raise FootageError(f"phonemes file {path} lists no phonemes")
    return phones


def _held_out(phones: list[Timed], start: float, duration: float) -> list[Timed]:
    """The phonemes said in [start, start + duration), in the held-out part's own time."""
    return [Timed(p.text, max(0.0, p.start - start), min(duration, p.end - start)) for p in phones
            if p.end > start and p.start < start + duration]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def split_footage(footage: Path, workdir: Path, *, fps: int) -> tuple[Path, Path, int, float]:
    """Cut at a frame boundary into train (first 70 %) and held-out (the rest), re-encoded at `fps` so that
    held-out frame i shows the same instant as rendered frame i. Returns the two files, the cut frame and
    the held-out length in seconds."""
    info = probe(footage)
    if not info.has_audio:
        raise FootageError(f"{footage.name}: no audio track; the eval drives the renderer with the footage's voice")
    if info.duration < MIN_SECONDS:
        raise FootageError(f"{footage.name}: {info.duration:.1f} s long, the lip-sync eval needs at least "
                           f"{MIN_SECONDS:.0f} s (70% builds the avatar, 30% is held out)")
    if info.fps <= 0:
        raise FootageError(f"{footage.name}: frame rate unknown ({info.fps} fps)")
    total = int(round(info.duration * info.fps))
    cut = int(round(total * TRAIN_SHARE))
    t_cut = cut / info.fps
    resample = [] if abs(info.fps - fps) < 0.01 else [f"fps={fps}"]
    parts = {"train": (f"trim=end_frame={cut}", f"atrim=end={t_cut:.6f}"),
             "heldout": (f"trim=start_frame={cut}", f"atrim=start={t_cut:.6f}")}
    out = {}
    for name, (vtrim, atrim) in parts.items():
        out[name] = workdir / f"{name}.mp4"
        run_ffmpeg(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
                    "-protocol_whitelist", "file", "-i", str(footage),
                    "-map", "0:v:0", "-map", "0:a:0",
                    "-vf", ",".join([vtrim, "setpts=PTS-STARTPTS", *resample]),
                    "-af", f"{atrim},asetpts=PTS-STARTPTS",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-pix_fmt", "yuv420p", "-bf", "0",
                    "-c:a", "aac", "-b:a", "128k", "-f", "mp4", str(out[name])], timeout=600)
    return out["train"], out["heldout"], cut, (total - cut) / info.fps


def build_avatar(train: Path, settings: Settings, workdir: Path, progress: Progress) -> Path:
    """Bundle built from `train` in a throwaway database and data dir under `workdir`."""
    url = f"sqlite:///{(workdir / 'eval.db').resolve()}"
    upgrade(url)
    engine = make_engine(url)
    audit_keys.bind(engine, AuditKeyring.generate([INGEST]))  # a throwaway log: its avatar.created is never verified
    try:
        with session_scope(engine) as s:
            creator = Creator(name="lip-sync eval")
            s.add(creator)
        limits = settings.ingest.model_copy(update={"min_seconds": 3.0, "min_speech_share": 0.2})
        avatar = ingest_direct(engine=engine, data=DataDir(workdir / "data").ensure(), profile=settings.media,
                               limits=limits, creator_id=creator.id, name="eval", footage=train,
                               renderer=settings.renderer.type, progress=progress)
    finally:
        engine.dispose()
    return workdir / "data" / avatar.bundle_path


def reference_frames(heldout: Path, crop: list[int], size: tuple[int, int], n: int) -> Iterator[np.ndarray]:
    """Held-out frames cropped and scaled exactly as ingest does; `n` of them, the last repeated if short."""
    x0, y0, cw, ch = crop
    last = None
    count = 0
    for _, rgb in iter_frames(heldout):
        if count == n:
            return
        last = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], size, interpolation=cv2.INTER_AREA)
        count += 1
        yield last
    if last is None:
        raise FootageError(f"{heldout.name}: no held-out frame decodes")
    for _ in range(n - count):
        yield last


class _Writer:
    """Frames piped to ffmpeg with the held-out audio: H.264 crf 18 + AAC, exactly `n` frames. The file
    appears under its name only when complete."""

    def __init__(self, out: Path, audio_from: Path, *, width: int, height: int, fps: int, n: int):
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.part, self.n, self.count = out, out.with_name(f".{out.name}.part"), n, 0
        self.proc = FFmpegProcess([
            "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-protocol_whitelist", "file", "-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "128k", "-af", "apad", "-t", f"{n / fps:.6f}",
            "-movflags", "+faststart", "-f", "mp4", str(self.part)], stdin=True, name=f"ffmpeg ({out.name})")

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
        except BrokenPipeError:
            raise MediaError(f"ffmpeg writing {self.out} died: {self.proc.stderr_tail(20)}") from None
        self.count += 1

    def close(self, ok: bool) -> None:
        rc = self.proc.stop(timeout=120)
        try:
            if ok and (rc != 0 or self.count != self.n):
                raise MediaError(f"ffmpeg writing {self.out} exited {rc} after {self.count}/{self.n} frames: "
                                 f"{self.proc.stderr_tail(20)}")
            if ok:
                self.part.replace(self.out)
        finally:
            self.part.unlink(missing_ok=True)


def eval_lipsync(footage: Path, *, settings: Settings, workdir: Path, out_dir: Path | None = None,
                 progress: Progress | None = None, phonemes: list[Timed] | None = None) -> dict:
    """Build an avatar from the first 70 % of `footage`, render the last 30 % from its audio four ways (five with
    the footage's own `phonemes`, times in seconds of the whole footage), and measure each against the real frames.
    FootageError: the footage cannot be used, or the phonemes do not cover its held-out part (message says why)."""
    footage, workdir, progress = Path(footage), Path(workdir), progress or _no_progress
    prof = settings.media
    fps, size = prof.fps, (prof.width, prof.height)
    workdir.mkdir(parents=True, exist_ok=True)
    progress("split", 0, 2)
    train, heldout, cut, held_s = split_footage(footage, workdir, fps=fps)
    held_phones = None
    if phonemes is not None:  # checked before the avatar is built: a wrong file fails in seconds
        held_phones = _held_out(phonemes, cut / fps, held_s)
        if voiced_share([p for p in held_phones if not p.text.startswith("_")], held_s) < MIN_VOICED_SHARE:
            raise FootageError(f"{footage.name}: the phonemes given say next to nothing in the held-out part "
                               f"({cut / fps:.2f}-{cut / fps + held_s:.2f} s); are they this footage's?")
    progress("split", 2, 2)
    bundle = build_avatar(train, settings, workdir, progress)
    manifest = json.loads((bundle / "manifest.json").read_text())
    track = json.loads((bundle / "base_track.json").read_text())
    units = json.loads((bundle / "units.json").read_text())

    # Cut to the held-out video's length: AAC padding would otherwise add a frame of audio.
    samples = read_audio(heldout, rate=16000)[:max(1, round(held_s * 16000))]
    speech = Speech(samples=samples, sample_rate=16000, words=[], phonemes=[])
    n = speech.frame_count(fps)
    names = CANDIDATES + (("phonemes",) if phonemes is not None else ())
    given = Speech(samples=samples, sample_rate=16000, words=[], phonemes=held_phones) if held_phones else None
    renderers = {c: FootageRenderer(bundle, prof) for c in names}  # one each: the streams run at once
    lo, hi = renderers["loudness"].open_range
    progress("recognise", 0, 1)
    started = time.perf_counter()
    recognised = with_recognised_phonemes(speech)
    recognition = {"seconds": round(time.perf_counter() - started, 3), "phonemes": len(recognised.phonemes),
                   "voiced_share": round(voiced_share(recognised.phonemes, speech.duration), 3)}
    progress("recognise", 1, 1)
    drives = {"renderer": "audio map" if renderers["renderer"].audio_drive == "map" else
              "loudness (the audio map lost to loudness at ingest)"}
    drives["recognition"] = "recognised phonemes" if recognised.phonemes else \
        f"{drives['renderer']} (recognition heard too little speech)"
    streams = {
        "renderer": renderers["renderer"].render(speech),
        "recognition": renderers["recognition"].render(recognised),
        "loudness": renderers["loudness"].render(speech, target=loudness_target(speech, fps, lo, hi)),
        "plain_loop": renderers["plain_loop"].idle(n, closed=False),
        **({"phonemes": renderers["phonemes"].render(given)} if given is not None else {}),
        "reference": reference_frames(heldout, manifest["crop"], size, n),
    }
    loop = np.array([track["cx"], track["cy"], track["scale"]], np.float64).T
    geo = BlendGeometry(loop, ref_scale=float(units["ref_scale"]), patch=int(units["patch"]),
                        frame_hw=(prof.height, prof.width), mask_fn=feather_mask)
    # The loop frame under output frame i: renders walk the idle loop out and back (base_path).
    loop_at = base_path(n) % renderers["renderer"].loop_frames
    stats = {k: Stream() for k in streams}
    writers: dict[str, _Writer] = {}
    analysers: dict[str, FaceAnalyzer] = {}
    ok = False
    try:
        for k in streams:
            analysers[k] = FaceAnalyzer()
        for k in ("renderer", "recognition", "reference") if out_dir is not None else ():
            writers[k] = _Writer(Path(out_dir) / f"{'rendered' if k == 'renderer' else k}.mp4", heldout,
                                 width=prof.width, height=prof.height, fps=fps, n=n)
        for i in range(n):
            frames = {}
            for k, it in streams.items():
                frame = next(it, None)
                if frame is None:
                    raise RuntimeError(f"candidate {k} yielded {i} frames, expected {n}")
                if frame.shape[:2] != (prof.height, prof.width):
                    raise RuntimeError(f"candidate {k} frame {i} is {frame.shape[1]}x{frame.shape[0]}, "
                                       f"expected {prof.width}x{prof.height}")
                frames[k] = frame
                stats[k].add(analysers[k].lip_landmarks(frame), geo.ring_jump(frame, int(loop_at[i])))
                if k in writers:
                    writers[k].write(frame)
            keep = geo.outside(int(loop_at[i]))
            for k in names:
                stats[k].add_error(frames[k], frames["reference"], keep)
            progress("measure", i + 1, n)
        ok = True
    finally:
        for it in streams.values():
            it.close()
        for a in analysers.values():
            a.close()
        for w in writers.values():
            w.close(ok)

    rms = frame_rms(speech.samples, rate=16000, fps=fps, frames=n)
    silent = silent_frames(rms)
    try:
        levels = reference_levels(stats["reference"])
    except ValueError as exc:
        raise FootageError(f"{footage.name}: {exc}") from None
    ref_self = summarise(stats["reference"], stats["reference"], silent, levels["closed_level"])
    cands = {k: summarise(stats[k], stats["reference"], silent, levels["closed_level"]) for k in names}
    return {
        "footage": str(footage), "fps": fps, "size": list(size), "frames": n,
        "train_frames": cut, "heldout_seconds": round(speech.duration, 3),
        "candidates": cands, "drives": drives, "recognition_run": recognition,
        "reference": {"mesh_missing": sum(x is None for x in stats["reference"].lips),
                      "silent_frames": int(silent.sum()), "silent_closed": ref_self["silent_closed"],
                      "closed_level": levels["closed_level"], "closed_rule": CLOSED_RULE,
                      "silence_rule": SILENCE_RULE},
        **compare(cands),
        "outputs": {k: str(Path(out_dir) / f"{k}.mp4") for k in ("rendered", "recognition", "reference")}
        if out_dir else {},
    }


def margins(cand: dict, base: dict) -> dict:
    """How much better `cand` is than `base`: positive = higher correlation, lower LMD. An undefined baseline
    correlation (a constant mouth) counts as 0, no linear relation; a measure `cand` lacks is None."""
    mc = None if cand["correlation"] is None else cand["correlation"] - (base["correlation"] or 0.0)
    ml = None if cand["lmd_pct"] is None or base["lmd_pct"] is None else base["lmd_pct"] - cand["lmd_pct"]
    return {"correlation": mc, "lmd_pct": ml}


def _beats(all_margins: list[dict]) -> dict:
    """Better on each measure against every one of `all_margins`; a None never counts as better."""
    return {"correlation": all(m["correlation"] is not None and m["correlation"] > 0 for m in all_margins),
            "lmd": all(m["lmd_pct"] is not None and m["lmd_pct"] > 0 for m in all_margins)}


def compare(cands: dict) -> dict:
    """The renderer vs each baseline (`beats_baselines`, `margins`), and each phoneme path that was measured
    (`recognition`, `phonemes`) vs the renderer's audio map and vs each baseline: positive margins mean better."""
    base = {b: margins(cands["renderer"], cands[b]) for b in BASELINES}
    out: dict = {"beats_baselines": _beats(list(base.values())), "margins": base}
    for path in ("recognition", "phonemes"):
        if path in cands:
            cand = cands[path]
            vs_map = margins(cand, cands["renderer"])
            cand_base = {b: margins(cand, cands[b]) for b in BASELINES}
            lag = cand.get("best_lag_frames")
            out[path] = {"vs_audio_map": {**vs_map, "beats": _beats([vs_map])},
                         "beats_baselines": _beats(list(cand_base.values())), "margins": cand_base,
                         "lag_within_one_frame": lag is not None and abs(lag) <= 1}
    return out
