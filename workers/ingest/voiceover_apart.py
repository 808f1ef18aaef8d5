"""A voice-over's check (decode, force-align, cut: workers.ingest.voiceover.check_voiceover) in a process of its own,
for the API.

pocketsphinx holds Python's global interpreter lock while it decodes: run in one of the API's threads, each of the
aligner's three passes stopped every other thread of that API process, seconds at a time for a long recording (a
24 s recording decoded for 1.3 s with a 5 ms ticker beside it not running once in 1.15 s). Every request on that
process waited: the pages, the health check a balancer reads, the poll for the check's own progress. Here the
check runs in a child forked from a small server process (multiprocessing's forkserver, started once, with the
aligner imported), which sends its progress and its result back over a pipe; the API's thread only waits on the pipe,
without the lock.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from pathlib import Path

from workers.ingest.voiceover import Checked, VoiceoverRefused, check_voiceover

_PRELOAD = ["workers.ingest.voiceover", "workers.speech.align", "workers.speech.recording"]
_lock = threading.Lock()
_context = None
# Checks at once per API process: one per core, so that uploads arriving together do not take every core from the
# API (they waited for one another in its thread before); the others wait here, their progress at "decode" 0.
_running = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


class CheckFailed(RuntimeError):
    """The check's process failed (not a refusal of the recording): the message says how."""


def _ctx():
    global _context
    with _lock:
        if _context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _context = ctx
        return _context


def _child(conn, upload: str, text: str, language: str) -> None:
    try:
        checked = check_voiceover(Path(upload), text, language=language,
                                  progress=lambda stage, done, total: conn.send(("progress", stage, done, total)))
        conn.send(("ok", checked))
    except VoiceoverRefused as exc:
        conn.send(("refused", str(exc), exc.missing, exc.extra))
    except BaseException as exc:  # noqa: BLE001  (whatever it was, the API answers with it instead of hanging)
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def check_voiceover_apart(upload: Path, text: str, *, language: str, progress=None) -> Checked:
    """check_voiceover in a child process: the same result, refusals (VoiceoverRefused) and progress, while the
    calling process's other threads keep running. CheckFailed: the child failed or died (its exit code said)."""
    step = progress or (lambda stage, done, total: None)
    with _running:
        return _check(upload, text, language, step)


def _check(upload: Path, text: str, language: str, step) -> Checked:
    ctx = _ctx()
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(theirs, str(upload), text, language), daemon=True,
                       name="voiceover-check")
    proc.start()
    theirs.close()  # ours then sees EOF if the child dies without answering
    try:
        while True:
            try:
                msg = ours.recv()
            except EOFError:
                proc.join(5)
                raise CheckFailed(f"the voice-over check's process ended without an answer (exit code "
                                  f"{proc.exitcode})") from None
            if msg[0] == "progress":
                step(*msg[1:])
            elif msg[0] == "ok":
                return msg[1]
            elif msg[0] == "refused":
                raise VoiceoverRefused(msg[1], missing=msg[2], extra=msg[3])
            else:
                raise CheckFailed(f"the voice-over check failed: {msg[1]}\n{msg[2]}")
    finally:
        ours.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
