"""Peak memory of one render, measured in a fresh process: `python -m bench.mem_probe render|peer ...`.

Prints JSON {"python_kb": peak RSS of this process, "ffmpeg_kb": peak RSS of its largest child}.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    mode, work = argv[0], Path(argv[1])
    if mode == "render":
        from bench.render_encode import SCRIPT, bench_marks
        from studio.config import load_settings
        from studio.runtime import build_runtime
        from workers.render.segment import encode_labelled
        from workers.renderers import make_renderer
        from workers.tts import make_tts

        rt = build_runtime(load_settings(env={"STUDIO_DATA_DIR": str(work / "data")}))
        speech = make_tts(rt.settings.tts).synthesize(SCRIPT)
        renderer = make_renderer(rt.settings.renderer.type, Path(argv[2]), rt.settings.media)
        encode_labelled(rt, speech=speech, frames=renderer.render(speech), out=work / "mem-segment.mp4",
                        segment_id="mem", channel_id="mem", show_id="mem", banner_for=None, **bench_marks())
    else:
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *argv[2:]], check=True)
    print(json.dumps({"python_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "ffmpeg_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))


if __name__ == "__main__":
    main(sys.argv[1:])
