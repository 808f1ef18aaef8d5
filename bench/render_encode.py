"""Render + label + encode speed at the channel's media profile, against plain ffmpeg encoding the same
frames at the same size with the same x264/AAC settings, measured in the same run."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT, Figure, report
from studio.config import load_settings
from studio.db import session_scope, upgrade
from studio.keys import init_audit_keys, init_key
from studio.models import Creator
from studio.runtime import build_runtime
from workers.ingest.footage import ingest_direct
from workers.media.ffmpeg_args import aac_audio_args, x264_video_args
from workers.media.synthface import make_demo_footage
from workers.render.segment import encode_labelled
from workers.renderers import bundle_usable, make_renderer
from workers.tts import make_tts

SCRIPT = ("Paid partnership with Lumen Labs. Meet the Glow Serum, a light vitamin C serum for everyday skin "
          "care. It absorbs in seconds and layers well under sunscreen. Tap the cart below to see the bundle.")


def _bundle(rt, work: Path) -> Path:
    marker = work / "bundle-path.txt"
    # Reuse the avatar of an earlier run while this renderer can still read it (the marker holds its store key).
    if marker.exists():
        bundle = rt.local_dir(marker.read_text())
        if bundle_usable(rt.settings.renderer.type, bundle, rt.settings.media, rt.settings.renderer):
            return bundle
    footage = make_demo_footage(work / "footage.mp4", seconds=32.0, width=rt.settings.media.width,
                                height=rt.settings.media.height, fps=rt.settings.media.fps)
    with session_scope(rt.engine) as s:
        creator = Creator(name="bench")
        s.add(creator)
    avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=rt.settings.media, limits=rt.settings.ingest,
                           creator_id=creator.id, name="bench", footage=footage, renderer=rt.settings.renderer)
    marker.write_text(avatar.bundle_path)
    return rt.local_dir(avatar.bundle_path)


def _peak_memory(work: Path, bundle: Path, segment: Path, profile) -> dict[str, float]:
    """Peak RSS of a fresh render process (and of its encoder), against ffmpeg encoding the same frames."""
    def probe(*args: str) -> dict:
        res = subprocess.run([sys.executable, "-m", "bench.mem_probe", *args], check=True, capture_output=True,
                             text=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    ours = probe("render", str(work), str(bundle))
    with tempfile.TemporaryDirectory() as td:
        peer = probe("peer", str(work), "-i", str(segment), *x264_video_args(profile), *aac_audio_args(profile),
                     "-f", "mp4", str(Path(td) / "peer.mp4"))
    return {"ours": (ours["python_kb"] + ours["ffmpeg_kb"]) / 1024, "peer": peer["ffmpeg_kb"] / 1024}


def bench_marks() -> dict:
    """Everything the middleware applies to a real segment, under the default policy."""
    from studio.models import new_produce_id
    from studio.policy_profiles import effective_policy
    from workers.media.watermark import Mark, produce_token_from_id

    produce_id = new_produce_id()
    return {"produce_id": produce_id, "policy": effective_policy(["default"]), "refs": {"segment": "bench"},
            "mark": Mark(produce_token_from_id(produce_id), 0)}


def main() -> None:
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env={"STUDIO_DATA_DIR": str(work / "data")})
    init_key(settings)
    init_audit_keys(settings)  # the runtime signs the audit events of its ingest and render
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    profile = settings.media
    bundle = _bundle(rt, work)

    t = time.perf_counter()
    speech = make_tts(settings.tts).synthesize(SCRIPT)
    tts_s = time.perf_counter() - t
    renderer = make_renderer(settings.renderer.type, bundle, profile)
    n = speech.frame_count(profile.fps)

    t = time.perf_counter()
    for _ in renderer.render(speech):
        pass
    render_only = n / (time.perf_counter() - t)

    out = work / "segment.mp4"
    t = time.perf_counter()
    encode_labelled(rt, speech=speech, frames=renderer.render(speech), out=out, segment_id="bench",
                    channel_id="bench", show_id="bench", banner_for="Bench", text=SCRIPT, **bench_marks())
    ours = n / (time.perf_counter() - t)

    # Peer: ffmpeg alone, encoding the very same frames (decoded from our segment) with the same settings.
    with tempfile.TemporaryDirectory() as td:
        args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(out),
                *x264_video_args(profile), *aac_audio_args(profile), "-f", "mp4", str(Path(td) / "peer.mp4")]
        t = time.perf_counter()
        subprocess.run(args, check=True)
        peer = n / (time.perf_counter() - t)

    mem = _peak_memory(work, bundle, out, profile)

    realtime = profile.fps
    report("render_encode", [
        Figure(f"render+label+encode {profile.width}x{profile.height}", ours, "frames/s", "plain ffmpeg x264 encode",
               peer),
        Figure("render only (footage renderer)", render_only, "frames/s", "plain ffmpeg x264 encode", peer),
        Figure("render+label+encode vs real time", ours / realtime, "x real time", "real time", 1.0),
        Figure("espeak-ng TTS for the script", speech.duration / tts_s, "x real time"),
        Figure("peak memory of one render (python + its ffmpeg)", mem["ours"], "MiB", "plain ffmpeg x264 encode",
               mem["peer"]),
    ], notes=f"{n} frames ({speech.duration:.1f} s of speech) at {profile.fps} fps, preset {profile.x264_preset}; "
             "timings drift on this machine, compare ratios")


if __name__ == "__main__":
    main()
