"""`make bench`: run every benchmark; each prints its figures and writes bench/out/NAME.json."""

from __future__ import annotations

import sys

from bench import render_encode

BENCHES = {"render_encode": render_encode.main}
BENCHES["watermark"] = lambda: __import__("bench.watermark", fromlist=["main"]).main()  # lazy: the peer imports torch
BENCHES["watermark_verify"] = lambda: __import__("bench.watermark_verify", fromlist=["main"]).main()
BENCHES["planner"] = lambda: __import__("bench.planner", fromlist=["main"]).main()
BENCHES["continuity"] = lambda: __import__("bench.continuity", fromlist=["main"]).main()
BENCHES["stream_cpu"] = lambda: __import__("bench.channels", fromlist=["main_cpu"]).main_cpu()
BENCHES["channels"] = lambda: __import__("bench.channels", fromlist=["main"]).main()
BENCHES["db_claims"] = lambda: __import__("bench.db_claims", fromlist=["main"]).main()
BENCHES["store"] = lambda: __import__("bench.store", fromlist=["main"]).main()
BENCHES["fleet"] = lambda: __import__("bench.fleet", fromlist=["main"]).main()
BENCHES["voiceover_align"] = lambda: __import__("bench.voiceover_align", fromlist=["main"]).main()
BENCHES["voiceover_api"] = lambda: __import__("bench.voiceover_api", fromlist=["main"]).main()
BENCHES["lipsync"] = lambda: __import__("bench.lipsync", fromlist=["main"]).main()
BENCHES["gpu_render"] = lambda: __import__("bench.gpu_render", fromlist=["main"]).main([])
# Benches with options of their own, run alone (`python -m bench soak --minutes 60`) and left out of `make bench`:
# the soak airs for the warm-up plus N minutes.
WITH_OPTIONS = {"soak": lambda argv: __import__("bench.soak", fromlist=["main"]).main(argv)}


def main(argv: list[str]) -> int:
    if argv and argv[0] in WITH_OPTIONS:
        WITH_OPTIONS[argv[0]](argv[1:])
        return 0
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join([*BENCHES, *WITH_OPTIONS])}", file=sys.stderr)
        return 2
    for name in names:
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
