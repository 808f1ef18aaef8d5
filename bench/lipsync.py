"""Lip-sync quality on the project's own synthetic footage, as `studio eval lipsync` measures it (360x640, 20 s,
the last 6 s held out): each phoneme path against the avatar's audio map, measured in the same run (the map is the
renderer's drive for recorded audio without phonemes, fitted on the footage's first 70 %).

Footage: the mouth shaped by the phonemes said (`mouth="articulation"`), in the eval's voice (en-us) and another
(en-gb+f3), and the mouth opened by the voice's level (`mouth="loudness"`, the footage `studio demo` uses).
Paths: `recognition` (phonemes recognised in the held-out audio, pocketsphinx all-phone) and, where the footage
knows them, `phonemes` (the phonemes said: the lips as our own TTS drives them, and the most any recognition could
give). Correlation: the mouth's opening against the real frames' (higher is better); LMD: lip landmark distance in
% of mouth width (lower is better).

One 6 s held-out part is a small sample, and libespeak-ng's timing differs by tens of milliseconds from one
synthesis to the next (workers.media.synthface), which moves a single eval's correlation by a few hundredths: each
figure is the mean over three synthetic creators (seeds), made and measured in the same run, their spread in the
notes.

`python -m bench lipsync` (part of `make bench`)."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import Figure, report

FOOTAGE = [("articulated, en-us", "articulation", "en-us"), ("articulated, en-gb+f3", "articulation", "en-gb+f3"),
           ("loudness, en-us", "loudness", "en-us")]
SEEDS = (7, 11, 23)


def main() -> None:
    from studio.config import MediaProfile, Settings
    from workers.eval.lipsync import eval_lipsync, read_phonemes
    from workers.media.synthface import make_demo_footage

    runs: dict[tuple[str, str, str], list[float]] = defaultdict(list)  # (footage, path, measure) -> per seed
    with tempfile.TemporaryDirectory(prefix="bench-lipsync-") as td:
        for i, ((name, mouth, voice), seed) in enumerate((f, s) for f in FOOTAGE for s in SEEDS):
            work = Path(td) / str(i)
            phonemes = work / "phonemes.json" if mouth == "articulation" else None
            footage = make_demo_footage(work / "footage.mp4", seconds=20, width=360, height=640, mouth=mouth,
                                        voice=voice, seed=seed, phonemes_out=phonemes)
            settings = Settings(data_dir=str(work / "data"), media=MediaProfile(width=360, height=640))
            result = eval_lipsync(footage, settings=settings, workdir=work / "eval",
                                  phonemes=read_phonemes(phonemes) if phonemes else None)
            for path, m in result["candidates"].items():
                runs[name, path, "correlation"].append(m["correlation"])
                runs[name, path, "LMD"].append(m["lmd_pct"])
            print(f"  {name}, seed {seed}: " + ", ".join(
                f"{path} {m['correlation']:.3f} / {m['lmd_pct']:.2f}" for path, m in result["candidates"].items()))
    figures: list[Figure] = []
    spread = []
    for name, *_ in FOOTAGE:
        for path in ("phonemes", "recognition", "loudness"):
            for measure, unit in (("correlation", "r"), ("LMD", "%")):
                got = runs.get((name, path, measure))
                if not got or (path == "loudness" and measure == "LMD"):
                    continue
                peer = runs[name, "renderer", measure]
                label = "loudness alone" if path == "loudness" else path
                figures.append(Figure(f"{name}: {label}, {measure}", float(np.mean(got)), unit, "audio map",
                                      float(np.mean(peer))))
                spread.append(f"{name} {label} {measure} {min(got):.3f}-{max(got):.3f} (map {min(peer):.3f}-"
                              f"{max(peer):.3f})")
    report("lipsync", figures, notes="means over seeds " + ", ".join(map(str, SEEDS)) + "; correlation: higher is "
           "better (ratio > 1 beats the map); LMD: lower is better (ratio < 1 beats the map); 150 held-out frames "
           "each. Per seed: " + "; ".join(spread))


if __name__ == "__main__":
    main()
