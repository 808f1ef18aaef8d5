"""The musetalk backend's cost, split where it runs (issue 17):

- `--backend-only` (on a GPU host; runs on the device image, which has torch and transformers but none of our other
  packages: it loads net.py and the published configs by file path): MuseTalk 1.5 at full published size with
  random weights (the same arithmetic as real weights), frames/s of one forward pass (UNet + VAE decode) at batch
  1, 8, 32 and 64, the Whisper tokens per second of audio, and peak GPU memory. Writes gpu_render_backend.json.
- default (here, CPU): what each channel costs the host's cores besides the network: the paste of the network's
  faces into 720x1280 base frames (feathered, colour matched), the policy middleware (badge, captions, watermark,
  metadata) and the x264 encode, as CPU seconds per second of video, against plain ffmpeg x264 encoding the same
  frames. Then, when a backend figure from a GPU is in bench/out, the channels one such host keeps in real time:
  GPU-bound (frames/s at the best batch / fps) and CPU-bound (cores / CPU cost per channel), both printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("OUT", "")) if os.environ.get("OUT") else ROOT / "bench" / "out"
BATCHES = (1, 8, 32, 64)
HOST_CORES = 16  # an H100/H200 device host of this workplace: 16 cores


def _by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def backend_only(tiny: bool = False, seconds: float = 4.0) -> dict:
    """Frames/s and memory of the network alone, at full size on the GPU (`tiny`: the tests' small models, to try
    this code on a CPU)."""
    import torch

    net = _by_path("musetalk_net", ROOT / "workers" / "renderers" / "musetalk" / "net.py")
    pub = _by_path("musetalk_published", ROOT / "tests" / "musetalk_helpers.py")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = ((pub.TINY_UNET, pub.TINY_VAE, pub.TINY_WHISPER) if tiny
               else (pub.MUSETALK_UNET, pub.SD_VAE_FT_MSE, pub.WHISPER_TINY))
    model = net.MuseTalkNet.random(*configs, pub.WHISPER_FEATURES, device=device)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    rows = []
    audio = (torch.randn(16000 * 30).numpy() * 0.1).astype("float32")
    model.audio_tokens(audio[:16000], 25, 25)
    sync()
    t = time.perf_counter()
    model.audio_tokens(audio, 750, 25)
    sync()
    tokens_rate = 30.0 / (time.perf_counter() - t)  # seconds of audio per second
    base_mem = torch.cuda.memory_allocated() if device == "cuda" else 0
    for batch in BATCHES:
        latents = torch.randn(batch, 8, model.latent_size, model.latent_size, device=device, dtype=model.dtype)
        tokens = torch.randn(batch, model.tokens, model.pe.shape[-1], device=device, dtype=model.dtype)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            model.generate(latents, tokens)
        sync()
        passes, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds or passes < 3:
            model.generate(latents, tokens)
            passes += 1
        sync()
        fps = batch * passes / (time.perf_counter() - t)
        peak = (torch.cuda.max_memory_allocated() if device == "cuda" else 0) / 2**20
        rows.append({"batch": batch, "frames_per_s": round(fps, 1), "peak_gpu_mib": round(peak, 1)})
        print(f"  batch {batch:>3}: {fps:8.1f} frames/s   peak GPU memory {peak:8.1f} MiB", flush=True)
    params = sum(p.numel() for m in (model.unet, model.vae, model.whisper) for p in m.parameters())
    result = {"name": "gpu_render_backend", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "device": gpu,
              "torch": torch.__version__, "dtype": str(model.dtype), "tiny": tiny, "parameters": params,
              "weights_mib": round(base_mem / 2**20, 1), "whisper_audio_x_realtime": round(tokens_rate, 1),
              "batches": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gpu_render_backend.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


def _cpu_seconds() -> float:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_side() -> None:
    import numpy as np

    from bench.common import Figure, report
    from bench.render_encode import SCRIPT, _bundle, bench_marks
    from studio.config import load_settings
    from studio.db import upgrade
    from studio.keys import init_audit_keys, init_key
    from studio.runtime import build_runtime
    from workers.media.ffmpeg_args import aac_audio_args, x264_video_args
    from workers.render.segment import encode_labelled
    from workers.renderers import make_renderer
    from workers.renderers.footage import base_path
    from workers.renderers.musetalk import face_boxes, paste_face
    from workers.tts import make_tts

    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(env={"STUDIO_DATA_DIR": str(work / "data")})
    init_key(settings)
    init_audit_keys(settings)
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    profile = settings.media
    bundle = _bundle(rt, work)  # the footage bundle make bench's render_encode builds (720x1280): its base loop
    footage = make_renderer("footage", bundle, profile)
    speech = make_tts(settings.tts).synthesize(SCRIPT)
    n = speech.frame_count(profile.fps)
    loop = base_path(n) % footage.loop_frames
    bases = dict(footage.base_frames(0, int(loop.max()) + 1))
    track = json.loads((bundle / "base_track.json").read_text())
    boxes = face_boxes(np.array([track["cx"], track["cy"], track["scale"]], np.float32).T, profile.width,
                       profile.height)
    rng = np.random.default_rng(0)
    faces = rng.integers(60, 200, (16, 256, 256, 3), dtype=np.uint8)  # stand-ins for the network's output

    def frames():
        for i in range(n):
            j = int(loop[i])
            yield paste_face(bases[j], faces[i % len(faces)], boxes[j])

    out = work / "gpu-segment.mp4"
    c0, t0 = _cpu_seconds(), time.perf_counter()
    encode_labelled(rt, speech=speech, frames=frames(), out=out, segment_id="bench", channel_id="bench",
                    show_id="bench", banner_for="Bench", text=SCRIPT, **bench_marks())
    ours_cpu, ours_wall = _cpu_seconds() - c0, time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as td:  # peer: plain x264 on the very same frames, same settings
        args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(out), *x264_video_args(profile),
                *aac_audio_args(profile), "-f", "mp4", str(Path(td) / "peer.mp4")]
        c0, t0 = _cpu_seconds(), time.perf_counter()
        subprocess.run(args, check=True)
        peer_cpu, peer_wall = _cpu_seconds() - c0, time.perf_counter() - t0
    video_s = n / profile.fps
    per_channel = ours_cpu / video_s  # cores one channel keeps busy besides the GPU
    figures = [
        Figure(f"CPU per channel: paste+label+encode {profile.width}x{profile.height}@{profile.fps}", per_channel,
               "cores", "plain ffmpeg x264 of the same frames", peer_cpu / video_s),
        Figure("paste+label+encode speed", n / ours_wall, "frames/s", "plain ffmpeg x264 of the same frames",
               n / peer_wall),
        Figure(f"channels CPU-bound on {HOST_CORES} cores (at this machine's per-core speed)",
               HOST_CORES / per_channel, "channels"),
    ]
    notes = (f"{n} frames; network output stood in by random faces (the GPU part is measured by --backend-only on a "
             f"GPU). This machine: {os.cpu_count()} cores.")
    gpu_file = OUT / "gpu_render_backend.json"
    if gpu_file.exists():
        gpu = json.loads(gpu_file.read_text())
        if not gpu.get("tiny"):
            best = max(gpu["batches"], key=lambda r: r["frames_per_s"])
            gpu_channels = best["frames_per_s"] / profile.fps
            figures += [
                Figure(f"channels GPU-bound on {gpu['device']} (batch {best['batch']})", gpu_channels, "channels",
                       "LiveTalking (MuseTalk) per GPU, upper of 2-3", 3.0),
                Figure("channels one host keeps in real time (min of both)", min(gpu_channels,
                                                                                 HOST_CORES / per_channel),
                       "channels", "goal per H200", 8.0),
            ]
            notes += f" GPU figure from {gpu_file.name} of {gpu['when']} on {gpu['device']}."
    else:
        notes += " No GPU figure: run `python bench/gpu_render.py --backend-only` on a GPU host; left open."
    report("gpu_render", figures, notes=notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend-only", action="store_true", help="the network alone, on this host's GPU")
    parser.add_argument("--tiny", action="store_true", help="with --backend-only: the tests' tiny models (CPU try)")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per batch size")
    args = parser.parse_args(argv)
    if args.backend_only:
        backend_only(tiny=args.tiny, seconds=args.seconds)
    else:
        cpu_side()


if __name__ == "__main__":
    main()
