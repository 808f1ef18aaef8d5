"""One GPU, many channels: every render in a worker process hands its frames to one thread that owns the models.

Render threads (a GPU worker runs its render tasks in threads, `--pool threads`) submit frames in pieces; the GPU
thread takes what is waiting, from any number of segments, into one forward pass of up to `batch_frames` frames,
and hands each piece its faces back. A render thread pastes and encodes its own frames, so the encode of one
segment never holds the batch. The models are loaded on first use and let go (GPU memory returned) after
`unload_after` seconds without work; on CUDA the process is held to its memory budget.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
GATHER_SECONDS = 0.004  # after the first piece, how long the GPU thread waits for more before a pass


@dataclass
class _Piece:
    latents: Any  # torch.Tensor (n, 8, h, w)
    tokens: Any  # torch.Tensor (n, tokens, d_model)
    owner: int  # the render thread that asked
    future: Future = field(default_factory=Future)

    @property
    def frames(self) -> int:
        return int(self.latents.shape[0])


@dataclass
class BatchStats:
    passes: int = 0
    frames: int = 0
    shared_passes: int = 0  # passes that held frames of more than one segment
    largest: int = 0
    loads: int = 0
    unloads: int = 0
    busy_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        fps = self.frames / self.busy_seconds if self.busy_seconds else 0.0
        return {**self.__dict__, "frames_per_second": round(fps, 2)}


class FrameBatcher:
    """The one thread that runs a model set; `load()` builds it (MuseTalkNet or any object with `generate`)."""

    def __init__(self, load: Callable[[], Any], *, batch_frames: int, unload_after: float,
                 memory_mb: int | None = None):
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be at least 1, got {batch_frames}")
        self._load, self.batch_frames, self.unload_after = load, batch_frames, unload_after
        self.memory_mb = memory_mb
        self.net: Any = None
        self.stats = BatchStats()
        self._pieces: deque[_Piece] = deque()
        self._calls: deque[tuple[Callable, tuple, Future]] = deque()
        self._wake = threading.Condition()
        self._last_used = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="musetalk-gpu", daemon=True)
        self._thread.start()

    # --- what render threads call -----------------------------------------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(net, *args)` on the GPU thread (audio features, face latents) and return its result."""
        future: Future = Future()
        with self._wake:
            self._calls.append((fn, args, future))
            self._wake.notify()
        return future.result()

    def generate(self, latents, tokens) -> np.ndarray:
        """Faces for `latents` and `tokens` (any count), possibly in passes shared with other segments."""
        owner, size = threading.get_ident(), self.piece_frames
        pieces = [_Piece(latents[i:i + size], tokens[i:i + size], owner)
                  for i in range(0, int(latents.shape[0]), size)]
        with self._wake:
            self._pieces.extend(pieces)
            self._wake.notify()
        if not pieces:
            return np.zeros((0, 1, 1, 3), np.uint8)
        return np.concatenate([p.future.result() for p in pieces])

    # --- the GPU thread -----------------------------------------------------------------------------------------------
    def _ensure(self) -> Any:
        if self.net is None:
            self._limit_memory()
            self.net = self._load()
            self.stats.loads += 1
        self._last_used = time.monotonic()
        return self.net

    def _limit_memory(self) -> None:
        """Hold this process to `memory_mb` of the GPU before anything is put there (torch's per-process cap: an
        allocation past it fails as out of memory, in this process only)."""
        if not self.memory_mb:
            return
        import torch

        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.memory_mb * 2**20 / total), 0)

    def unload(self) -> None:
        """Let the models go and give their memory back to the device."""
        if self.net is None:
            return
        device = getattr(self.net, "device", None)
        self.stats.unloads += 1
        self.net = None
        gc.collect()
        if getattr(device, "type", "") == "cuda":
            import torch

            torch.cuda.empty_cache()
        log.info("musetalk models unloaded after %.0f s without work", self.unload_after)

    @property
    def piece_frames(self) -> int:
        """Frames a render's request is cut into: a quarter of a pass, so four channels can share one."""
        return max(1, self.batch_frames // 4)

    def _take(self) -> list[_Piece]:
        """Up to batch_frames frames, one piece from each waiting render in turn (oldest first), so every channel
        moves on in every pass rather than one channel's whole segment going first."""
        by_owner: dict[int, deque[_Piece]] = {}
        for piece in self._pieces:
            by_owner.setdefault(piece.owner, deque()).append(piece)
        batch, frames = [], 0
        while by_owner and frames < self.batch_frames:
            for owner in list(by_owner):
                queue = by_owner[owner]
                if frames + queue[0].frames > self.batch_frames:
                    del by_owner[owner]
                    continue
                piece = queue.popleft()
                batch.append(piece)
                frames += piece.frames
                if not queue:
                    del by_owner[owner]
        taken = {id(p) for p in batch}
        self._pieces = deque(p for p in self._pieces if id(p) not in taken)
        return batch

    def _run(self) -> None:
        while True:
            try:
                self._once()
            except Exception:  # noqa: BLE001 - the thread every render waits on must outlive any one failure
                log.exception("musetalk GPU thread: a pass failed outside any render")
                time.sleep(0.1)

    def _once(self) -> None:
        """Wait for work; serve one call, or one pass of what is waiting; let the models go when idle."""
        with self._wake:
            while not self._pieces and not self._calls:
                idle = time.monotonic() - self._last_used
                if self.net is not None and idle >= self.unload_after:
                    self.unload()
                wait = max(0.05, self.unload_after - idle) if self.net is not None else None
                self._wake.wait(wait)
            call = self._calls.popleft() if self._calls else None
        if call is not None:
            fn, args, future = call
            self._serve(future, lambda fn=fn, args=args: fn(self._ensure(), *args))
            return
        time.sleep(GATHER_SECONDS)  # let the other channels' pieces arrive
        with self._wake:
            batch = self._take()
        if batch:
            self._pass(batch)

    def _serve(self, future: Future, work: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the render thread that asked
            future.set_exception(exc)

    def _pass(self, batch: list[_Piece]) -> None:
        import torch

        started = time.monotonic()
        try:
            net = self._ensure()
            faces = net.generate(torch.cat([p.latents for p in batch]), torch.cat([p.tokens for p in batch]))
        except BaseException as exc:  # noqa: BLE001 - every piece of the pass hears of it
            for p in batch:
                p.future.set_exception(exc)
            return
        at = 0
        for p in batch:
            p.future.set_result(faces[at:at + p.frames])
            at += p.frames
        self.stats.passes += 1
        self.stats.frames += at
        self.stats.largest = max(self.stats.largest, at)
        self.stats.shared_passes += len({p.owner for p in batch}) > 1
        self.stats.busy_seconds += time.monotonic() - started
        self._last_used = time.monotonic()
