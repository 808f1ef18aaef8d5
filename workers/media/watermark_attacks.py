"""The edits that platforms and re-posters make to a clip, as ffmpeg filter graphs with their parameters drawn at
random within stated ranges: the attack corpus of bench/watermark.py and of the watermark tests (issue 20).
Every attacked clip is re-encoded with libx264 at CRF 28, as a platform would."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.media.proc import run_ffmpeg

FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
CRF = 28
# Kinds an attack can be; "chain3" is three different chainable kinds in a row.
KINDS = ("mirror", "crop", "aspect", "aspect_cut", "scale", "luma", "gamma", "colour", "fps", "speed", "pad",
         "pip", "chain3")
CHAINABLE = ("mirror", "crop", "aspect", "scale", "luma", "gamma", "colour", "fps", "speed", "pad")
_EVEN = "scale=trunc(iw/2)*2:trunc(ih/2)*2"


@dataclass(frozen=True)
class Attack:
    kind: str
    params: dict
    chain: str                       # filters from the clip to the output, comma-separated
    background: str | None = None    # a lavfi source under a picture-in-picture
    parts: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({shown})"


def _r(x: float) -> float:
    return round(float(x), 3)


def _one(kind: str, rng: np.random.Generator, w: int, h: int) -> tuple[dict, str]:
    """Parameters and filter chain of one edit of a w x h clip."""
    if kind == "mirror":
        return {}, "hflip"
    if kind == "crop":  # 0-15 % off each side, scaled back to the frame size or not
        left, right, top, bottom = (_r(v) for v in rng.uniform(0, 0.15, 4))
        back = bool(rng.random() < 0.5)
        chain = (f"crop=iw*{1 - left - right:.4f}:ih*{1 - top - bottom:.4f}:iw*{left}:ih*{top}"
                 + (f",scale={w}:{h}" if back else ""))
        return {"left": left, "right": right, "top": top, "bottom": bottom, "scaled_back": back}, chain
    if kind == "aspect":  # stretched to the other aspect ratio (9:16 <-> 16:9) and back
        return {}, f"scale={h}:{w},scale={w}:{h}"
    if kind == "aspect_cut":  # a 16:9 band cut out of 9:16 and shown at 16:9
        band = w * 9 / 16 / h
        y = _r(rng.uniform(0, 1 - band))
        return {"band": _r(band), "y": y}, f"crop=iw:ih*{band:.4f}:0:ih*{y},scale={h}:{w}"
    if kind == "scale":
        s = _r(rng.uniform(0.25, 2.0))
        return {"scale": s}, f"scale=trunc(iw*{s}/2)*2:trunc(ih*{s}/2)*2"
    if kind == "luma":  # gain (contrast) and offset (brightness) within +-30 %
        c, b = _r(rng.uniform(0.7, 1.3)), _r(rng.uniform(-0.3, 0.3))
        return {"contrast": c, "brightness": b}, f"eq=contrast={c}:brightness={b}"
    if kind == "gamma":
        g = _r(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        return {"gamma": g}, f"eq=gamma={g}"
    if kind == "colour":  # mild: hue, saturation, a colour balance tilt
        hue, sat = _r(rng.uniform(-15, 15)), _r(rng.uniform(0.8, 1.2))
        rm, bm = (_r(v) for v in rng.uniform(-0.1, 0.1, 2))
        return ({"hue": hue, "saturation": sat, "red": rm, "blue": bm},
                f"hue=h={hue}:s={sat},colorbalance=rm={rm}:bm={bm}")
    if kind == "fps":
        fps = int(rng.choice([24, 30, 60]))
        return {"fps": fps}, f"fps={fps}"
    if kind == "speed":
        s = _r(rng.uniform(0.9, 1.1))
        return {"speed": s}, f"setpts=PTS/{s},fps=25"
    if kind == "pad":  # pillarboxed into 16:9, and at random letterboxed back into 9:16
        back = bool(rng.random() < 0.5)
        chain = f"pad=trunc(ih*16/18)*2:ih:(ow-iw)/2:0,scale={h}:{w}"
        if back:
            chain += f",pad=iw:trunc(iw*16/18)*2:0:(oh-ih)/2,scale={w}:{h}"
        return {"letterboxed_back": back}, chain
    raise ValueError(f"unknown attack kind {kind!r}; known: {', '.join(KINDS)}")


def draw(kind: str, rng: np.random.Generator, *, width: int, height: int) -> Attack:
    """One attack of `kind` on a width x height clip, its parameters drawn from `rng`."""
    if kind == "pip":  # the clip at half size over another picture, anywhere in it
        x, y = _r(rng.uniform(0, 0.5)), _r(rng.uniform(0, 0.5))
        return Attack(kind, {"x": x, "y": y}, f"scale=iw/2:ih/2[pip];[1:v][pip]overlay=W*{x}:H*{y}:shortest=1",
                      background=f"testsrc2=s={width}x{height}:r=25:d=60")
    if kind == "chain3":
        kinds = [str(k) for k in rng.choice(CHAINABLE, 3, replace=False)]
        parts = [_one(k, rng, width, height) for k in kinds]
        params = {k: p for k, (p, _) in zip(kinds, parts, strict=True)}
        return Attack(kind, params, ",".join(c for _, c in parts), parts=tuple(kinds))
    params, chain = _one(kind, rng, width, height)
    return Attack(kind, params, chain)


def apply(attack: Attack, src: Path, out: Path, *, crf: int = CRF, preset: str = "veryfast") -> Path:
    """`src` edited by `attack`, re-encoded H.264 at `crf` into `out` (no audio)."""
    extra = ["-f", "lavfi", "-i", attack.background] if attack.background else []
    graph = f"[0:v]{attack.chain},{_EVEN}[v]"
    run_ffmpeg([*FFMPEG, "-i", str(src), *extra, "-filter_complex", graph, "-map", "[v]", "-an", "-shortest",
                "-c:v", "libx264", "-crf", str(crf), "-preset", preset, "-pix_fmt", "yuv420p", str(out)],
               timeout=600)
    return out
