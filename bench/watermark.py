"""Invisible watermark (POLICY M3): our keyed STDM mark against invisible-watermark's DWT-DCT method, on the
same labelled 720x1280 talking-head frames, through the same ffmpeg re-encodes, measured in the same run."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from imwatermark import WatermarkDecoder, WatermarkEncoder

from bench.common import Figure, report
from workers.media import fec
from workers.media.encode import pipe_frames
from workers.media.proc import run_ffmpeg
from workers.media.synthface import render_face_frame
from workers.media.watermark import Mark, WatermarkDetector, WatermarkEmbedder, payload_bits

W, H, FPS, FRAMES = 720, 1280, 25, 50
KEY = b"bench-watermark-key"
MARK = Mark(produce_token=0x3BAD78A0E1C7D481, avatar_ref=0xE655571D)
PEER = "invisible-watermark dwtDct"
PEER_PAYLOAD = MARK.produce_token.to_bytes(8, "big")  # 64 bits, its usual payload size
PEER_FOUND = 56  # of 64 bits must match for the peer to count as found: P(random bits) ~ 2e-10
FP_FRAMES = 10  # frames of each unmarked video clip both read (the peer takes ~140 ms a frame)
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
CHAINS = {"segment (CRF 23) as encoded": [], "CRF 28": ["-crf", "28"], "50% scale": ["-vf", "scale=iw/2:ih/2"],
          "CRF 28 + 50% scale": ["-vf", "scale=iw/2:ih/2", "-crf", "28"]}


def _labelled(i: int, *, width: int = W, height: int = H, seed: int = 7) -> np.ndarray:
    """Talking head with a flat white badge and a black caption box, drawn before the mark as in the product."""
    f = render_face_frame(i / FPS, abs(np.sin(i * 0.4)), width=width, height=height, seed=seed)
    s = width / 720
    cv2.rectangle(f, (int(30 * s), int(60 * s)), (int(330 * s), int(140 * s)), (255, 255, 255), -1)
    cv2.putText(f, "AI GENERATED", (int(40 * s), int(115 * s)), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * s, (0, 0, 0),
                max(1, int(3 * s)), cv2.LINE_AA)
    cv2.rectangle(f, (int(40 * s), int(1050 * s)), (int(680 * s), int(1200 * s)), (0, 0, 0), -1)
    cv2.putText(f, "Glow Serum $19", (int(60 * s), int(1140 * s)), cv2.FONT_HERSHEY_SIMPLEX, 1.5 * s,
                (255, 255, 255), max(1, int(3 * s)), cv2.LINE_AA)
    return f


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _encode(frames: list[np.ndarray], out: Path) -> Path:
    pipe_frames([*FFMPEG, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-",
                 "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", str(out)], frames, shape=(H, W))
    return out


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _embed_all(frames: list[np.ndarray]) -> tuple[dict, dict, float, float]:
    """Mark every frame both ways; per-frame embed time (median, ms) and mean PSNR for each."""
    ours_embedder = WatermarkEmbedder(KEY, MARK, width=W, height=H)
    peer_encoder = WatermarkEncoder()
    peer_encoder.set_watermark("bytes", PEER_PAYLOAD)
    ours, peer, ours_ms, peer_ms = [], [], [], []
    for f in frames:
        ours_embedder.embed(f.copy())  # warm caches so both are timed on a hot frame
        work = f.copy()
        t = time.perf_counter()
        ours_embedder.embed(work)
        ours_ms.append(1e3 * (time.perf_counter() - t))
        ours.append(work)
        t = time.perf_counter()  # the peer works on BGR: the two conversions are part of using it here
        marked = cv2.cvtColor(peer_encoder.encode(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), "dwtDct"), cv2.COLOR_BGR2RGB)
        peer_ms.append(1e3 * (time.perf_counter() - t))
        peer.append(marked)
    psnr = {"ours": statistics.mean(_psnr(a, b) for a, b in zip(frames, ours, strict=True)),
            "peer": statistics.mean(_psnr(a, b) for a, b in zip(frames, peer, strict=True))}
    return {"ours": ours, "peer": peer}, psnr, statistics.median(ours_ms), statistics.median(peer_ms)


def _ours_accuracy(frames: list[np.ndarray]) -> dict[str, float]:
    """Raw coded-bit and payload (after the Viterbi decoder) accuracy per frame, and for the whole clip."""
    info = payload_bits(KEY, MARK)
    signs = 1.0 - 2.0 * fec.encode(info)
    clip, raw, payload = WatermarkDetector(KEY), [], []
    for f in frames:
        one = WatermarkDetector(KEY)
        one.add_frame(f)
        clip.add_frame(f)
        raw.append(np.mean(one.evidence * signs > 0))
        payload.append(np.mean(fec.decode(one.evidence) == info))
    result = clip.result()
    return {"raw": float(np.mean(raw)), "payload": float(np.mean(payload)),
            "clip_raw": float(np.mean(clip.evidence * signs > 0)),
            "clip_payload": float(np.mean(fec.decode(clip.evidence) == info)),
            "found": float(result.found and result.mark == MARK)}


def _peer_bits(frame: np.ndarray) -> np.ndarray:
    if frame.shape[:2] != (H, W):  # the peer reads only at the size it wrote
        frame = cv2.resize(frame, (W, H), interpolation=cv2.INTER_CUBIC)
    got = WatermarkDecoder("bytes", 64).decode(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), "dwtDct")
    return np.unpackbits(np.frombuffer(got, np.uint8))


def _peer_accuracy(frames: list[np.ndarray]) -> dict[str, float]:
    """Bit accuracy per frame, and of the per-bit majority over the clip (the peer has no soft output)."""
    truth = np.unpackbits(np.frombuffer(PEER_PAYLOAD, np.uint8))
    bits = np.array([_peer_bits(f) for f in frames])
    majority = bits.mean(axis=0) > 0.5
    return {"raw": float(np.mean(bits == truth)), "clip": float(np.mean(majority == truth)),
            "found": float(np.sum(majority == truth) >= PEER_FOUND)}


def _unmarked_clips(rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Single frames and 5-frame clips of other content at 360x640: presenters, noise, flat, gradients."""
    clips = []
    for i in range(60):
        kind = i % 4
        if kind == 0:
            frames = [_labelled(int(rng.integers(0, 500)) + k, width=360, height=640, seed=i % 5) for k in range(5)]
        elif kind == 1:
            cell = int(rng.integers(1, 40))
            noise = rng.integers(0, 256, (640 // cell + 1, 360 // cell + 1, 3), dtype=np.uint8)
            frames = [cv2.resize(noise, (360, 640), interpolation=cv2.INTER_CUBIC)]
        elif kind == 2:
            frames = [np.full((640, 360, 3), rng.integers(0, 256, 3), np.uint8)]
        else:
            ramp = np.linspace(rng.uniform(0, 255), rng.uniform(0, 255), 640)[:, None, None]
            frames = [np.broadcast_to(ramp, (640, 360, 3)).astype(np.uint8)]
        clips.append(frames)
    return clips


def _false_positives(clips: list[list[np.ndarray]]) -> tuple[float, float, float]:
    """Share of unmarked clips found: ours (tag verifies and score >= threshold), the peer (>= 56 of 64
    bits of the clip's majority match its payload). Also our highest score on them."""
    ours = peer = 0
    top = 0.0
    for frames in clips:
        det = WatermarkDetector(KEY)
        for f in frames:
            det.add_frame(f)
        res = det.result()
        ours += res.found
        top = max(top, res.score)
        peer += _peer_accuracy(frames)["found"]
    return 100 * ours / len(clips), 100 * peer / len(clips), top


NOTES = (
    "{frames} labelled synthetic talking-head frames {w}x{h}, encoded libx264 CRF 23 yuv420p as a segment, then "
    "re-encoded by ffmpeg (default preset). Ours: 128-bit payload (64-bit produce token, 32-bit avatar ref, "
    "32-bit HMAC tag), K=7 rate-1/2 code, 268 coded bits a frame; found = tag verifies and score >= 0.6. "
    "Peer: 64-bit payload decoded per frame, half-size frames resized back to {w}x{h} (bicubic) first as it "
    "reads only at the size it wrote; no ECC, so its payload accuracy is its raw bit accuracy; its clip "
    "figures are the per-bit majority over frames; found = >= {peer_found}/64 bits match. Its default embeds "
    "only in U and V (4x4 blocks of the chroma DWT band), which survive CRF 23 but not CRF 28 or scaling. "
    "Exact mark found in {ours_found}/{chains} videos by ours, {peer_found_n}/{chains} by the peer. "
    "Unmarked clips: 60 in memory (1 or 5 frames at 360x640: other presenters, noise, flat, gradients) and "
    "the first {fp_frames} frames of the unmarked encode and its re-encodes; false positives {fp_ours:.1f} % "
    "ours, {fp_peer:.1f} % peer. Timings: medians on a shared 2-core machine; {took:.0f} s in all."
)


def _chain_videos(videos: dict[str, Path], args: list[str], out_dir: Path, tag: int) -> dict[str, list[np.ndarray]]:
    """Decoded frames of each video after ffmpeg re-encodes it with `args` (as encoded when empty)."""
    got = {}
    for name, src in videos.items():
        if args:
            out = out_dir / f"{name}-{tag}.mp4"
            run_ffmpeg([*FFMPEG, "-i", str(src), *args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)],
                       timeout=300)
            src = out
        got[name] = _decoded(src)
    return got


def main() -> None:
    t0 = time.perf_counter()
    originals = [_labelled(i) for i in range(FRAMES)]
    marked, psnr, ours_ms, peer_ms = _embed_all(originals)
    figures = [
        Figure(f"embed time per frame {W}x{H}", ours_ms, "ms/frame", PEER, peer_ms),
        Figure("PSNR of the marked frames", psnr["ours"], "dB", PEER, psnr["peer"]),
    ]
    unmarked_clips = _unmarked_clips(np.random.default_rng(1))
    found = {"ours": 0.0, "peer": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-watermark-") as td:
        videos = {name: _encode(frames, Path(td) / f"{name}.mp4") for name, frames in marked.items()}
        videos["unmarked"] = _encode(originals, Path(td) / "unmarked.mp4")
        for tag, (chain, args) in enumerate(CHAINS.items()):
            got = _chain_videos(videos, args, Path(td), tag)
            unmarked_clips.append(got["unmarked"][:FP_FRAMES])
            ours, peer = _ours_accuracy(got["ours"]), _peer_accuracy(got["peer"])
            found["ours"] += ours["found"]
            found["peer"] += peer["found"]
            figures += [
                Figure(f"{chain}: raw coded-bit accuracy per frame", 100 * ours["raw"], "%", PEER, 100 * peer["raw"]),
                Figure(f"{chain}: payload accuracy per frame (ECC)", 100 * ours["payload"], "%", PEER,
                       100 * peer["raw"]),
                Figure(f"{chain}: raw coded-bit accuracy, {FRAMES}-frame clip", 100 * ours["clip_raw"], "%", PEER,
                       100 * peer["clip"]),
                Figure(f"{chain}: payload accuracy, {FRAMES}-frame clip", 100 * ours["clip_payload"], "%", PEER,
                       100 * peer["clip"]),
            ]
    fp_ours, fp_peer, top = _false_positives(unmarked_clips)
    # The share rejected rather than found: report() cannot print a ratio against a peer value of 0.
    figures += [
        Figure(f"unmarked clips rejected (of {len(unmarked_clips)})", 100 - fp_ours, "%", PEER, 100 - fp_peer),
        Figure("highest score on unmarked clips (found needs 0.6)", top, "score"),
    ]
    report("watermark", figures, notes=NOTES.format(
        frames=FRAMES, w=W, h=H, peer_found=PEER_FOUND, ours_found=round(found["ours"]),
        peer_found_n=round(found["peer"]), chains=len(CHAINS), fp_frames=FP_FRAMES, fp_ours=fp_ours, fp_peer=fp_peer,
        took=time.perf_counter() - t0))


if __name__ == "__main__":
    main()
