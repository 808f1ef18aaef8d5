"""Encoding raw RGB frames with ffmpeg: the frames go to stdin, the result is written atomically."""

from __future__ import annotations

import queue
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from studio.masking import scrub_url_keys
from studio.storage import atomic_path
from workers.media.proc import MediaError

_DONE = object()


def _ahead(frames: Iterable[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Produce frames on a thread while the caller writes earlier ones to the encoder.

    Rendering (numpy, OpenCV, PyAV decode) and pipe writes release the GIL, so the two overlap; the
    bounded queue keeps at most `depth` frames in memory. An error in the producer is raised here.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        q.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name="frame-producer", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def pipe_frames(args: list[str], frames: Iterable[np.ndarray], *, expect: int | None = None,
                shape: tuple[int, int] | None = None) -> int:
    """Run ffmpeg `args` (which reads rawvideo rgb24 on stdin) and feed it `frames`.

    Returns the number of frames written. Raises MediaError with ffmpeg's stderr if it fails, or if the
    frame count or size differs from what the caller promised: a short segment must never pass as whole.
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        count = 0
        try:
            for frame in _ahead(frames):
                if shape is not None and frame.shape[:2] != shape:
                    raise MediaError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"expected {shape[1]}x{shape[0]}")
                proc.stdin.write(memoryview(np.ascontiguousarray(frame, dtype=np.uint8)).cast("B"))
                count += 1
            proc.stdin.close()
            rc = proc.wait()
        except BrokenPipeError:
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        if rc != 0:
            err.seek(0)
            tail = scrub_url_keys(err.read().decode(errors="replace"))[-2000:]
            raise MediaError(f"ffmpeg exited with {rc}: {tail.strip()}")
    if expect is not None and count != expect:
        raise MediaError(f"encoder got {count} frames, expected {expect}")
    return count


def encode_video_only(frames: Iterable[np.ndarray], out: Path, *, width: int, height: int, fps: int,
                      crf: int = 18, gop: int = 25) -> int:
    """Frames -> H.264 MP4 without audio (avatar base loops)."""
    with atomic_path(out) as tmp:
        args = [
            "ffmpeg", "-hide_banner", "-y", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-g", str(gop), "-bf", "0", "-movflags", "+faststart", "-f", "mp4", str(tmp),
        ]
        return pipe_frames(args, frames, shape=(height, width))
