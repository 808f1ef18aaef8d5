"""Memory a long-lived media process gives back (issue 21: the render pool process rose from 786 MiB to 2.2 GiB in
43 minutes and fell back, the streamer rose all hour). Causes, measured in one process (the README has the figures):
- A closed PyAV container keeps its decoders until the cycle collector frees it (container <-> streams): a
  threaded 720x1280 H.264 decoder holds about 14 MiB, and a render opens three containers (probe, base loop,
  read-back check). `decoding()` / `close_decoders()` free them on the way out.
- What is left in cycles waits for a full collection, which a process of this size rarely makes: `release()`
  collects after every task, and `collect_every()` on a timer in the streamer, whose feeders leave a demuxed
  container's cycle (about 0.3 MiB native) per segment.
- glibc raises its mmap threshold to the largest block freed (up to 32 MiB): after the first 2.7 MiB frame goes
  back, frames come from the heap, which keeps what a render freed. `tune()` pins the threshold so frames are
  mapped and unmapped whole; `release()` trims what the heap still holds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

M_MMAP_THRESHOLD = -3  # mallopt parameter numbers (glibc malloc.h)
# glibc's own default before it adapts: a frame (720x1280 RGB: 2.7 MiB) and every other large array is mapped.
MMAP_THRESHOLD_BYTES = 128 * 1024


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt and malloc_trim exist); None on musl, macOS and the like."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def tune() -> bool:
    """Pin this process's mmap threshold (call once, in each pool process); False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release() -> None:
    """After a task: collect reference cycles (closed PyAV containers and their decoders), then give the heap's free
    pages back to the system."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def close_decoders(container) -> None:
    """Free the decoders of a PyAV container now. Closing the container leaves them to the cycle collector
    (container <-> streams), and a threaded 720x1280 H.264 decoder holds about 14 MiB until then."""
    for stream in container.streams:
        context = stream.codec_context
        if context is not None and context.is_open:
            context.close()


@contextmanager
def decoding(container) -> Iterator:
    """`with decoding(av.open(path)) as container:` closes its decoders, then the container, on the way out."""
    with container:
        try:
            yield container
        finally:
            close_decoders(container)


COLLECT_EVERY_S = 30.0  # a full collection in the streamer: tens of ms; garbage held between them stays bounded


def collect_every(stop: threading.Event, *, seconds: float = COLLECT_EVERY_S) -> threading.Thread:
    """A thread that calls `release()` every `seconds` until `stop`, for a long-lived process that runs no tasks (the
    streamer)."""

    def loop() -> None:
        while not stop.wait(seconds):
            release()

    thread = threading.Thread(target=loop, name="memory-release", daemon=True)
    thread.start()
    return thread
