"""Child processes (ffmpeg, nginx) started from an argument list, never a shell string.

stderr is drained by a background thread into a bounded ring buffer with stream keys scrubbed, so a
failure can show what the tool said without leaking a secret into logs or exceptions.
"""

from __future__ import annotations

import collections
import re
import subprocess
import threading
from collections.abc import Sequence

from studio.masking import MASK, scrub_secrets, scrub_url_keys  # noqa: F401  (re-exported)

TAIL_LINES = 200
MAX_LINE_CHARS = 2000
class MediaError(RuntimeError):
    """An ffmpeg command failed; the message holds its (scrubbed) stderr tail."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def describe_args(args: Sequence[str]) -> str:
    """A printable, scrubbed command line (for messages only; never executed)."""
    return scrub_secrets(" ".join(str(a) for a in args))


class FFmpegProcess:
    """One running child: `FFmpegProcess(["ffmpeg", ...], stdin=True)`.

    `.stdin` is the child's binary stdin when `stdin=True`; stdout is discarded unless `stdout=True`.
    `.stop()` shuts it down: close stdin (and give it `timeout` s to finish on EOF), terminate, wait, kill.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: bool = False,
        stdout: bool = False,
        tail_lines: int = TAIL_LINES,
        name: str | None = None,
    ):
        if isinstance(args, str) or not args:
            raise ValueError(f"args must be a non-empty argument list, got {args!r}")
        self.args = [str(a) for a in args]
        self.name = name or self.args[0]
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lock = threading.Lock()
        self._stopping = False
        try:
            self._proc = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise MediaError(f"cannot start {self.name} ({describe_args(self.args)}): {exc}") from None
        self._reader = threading.Thread(target=self._drain, name=f"{self.name}-stderr", daemon=True)
        self._reader.start()

    # -- stderr ring buffer -------------------------------------------------------------------------
    def _drain(self) -> None:
        stream = self._proc.stderr
        assert stream is not None
        pending = b""
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            pending += chunk
            # ffmpeg ends progress lines with '\r'; treat it as a line end too.
            *lines, pending = re.split(rb"\r\n|\r|\n", pending)
            for raw in lines:
                self._add_line(raw)
            if len(pending) > MAX_LINE_CHARS * 4:
                self._add_line(pending)
                pending = b""
        if pending:
            self._add_line(pending)
        stream.close()

    def _add_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            return
        line = scrub_secrets(line)
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [...]"
        with self._lock:
            self._tail.append(line)

    def stderr_tail(self, lines: int | None = None) -> str:
        """The last `lines` (default: all kept) lines of stderr, stream keys masked."""
        with self._lock:
            kept = list(self._tail)
        if lines is not None:
            kept = kept[-lines:] if lines > 0 else []
        return "\n".join(kept)

    # -- process state ------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def stdin(self):
        return self._proc.stdin

    @property
    def stdout(self):
        return self._proc.stdout

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    @property
    def stopping(self) -> bool:
        """True once stop() was called, so an exit from here on was asked for."""
        return self._stopping

    def wait(self, timeout: float | None = None) -> int:
        """Wait for exit (subprocess.TimeoutExpired if still running) and for stderr to be drained."""
        rc = self._proc.wait(timeout)
        self._reader.join(timeout=2.0)
        return rc

    def stop(self, timeout: float = 5.0) -> int | None:
        """Close stdin (EOF lets ffmpeg finish its output), terminate, wait, kill. Returns the exit code."""
        self._stopping = True
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:  # broken pipe while flushing: the child is gone already
                pass
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self._proc.poll() is None:
            # ffmpeg ends on the first SIGTERM only once its current read returns; one blocked on a
            # network input (an idle RTMP stream) needs a second signal, which interrupts the read and
            # still lets it finish its output file. nginx treats both as a fast shutdown.
            for wait_s in (min(1.0, timeout), timeout):
                if self._proc.poll() is not None:
                    break
                self._proc.terminate()
                try:
                    return self.wait(wait_s)
                except subprocess.TimeoutExpired:
                    pass
            if self._proc.poll() is None:
                self._proc.kill()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> FFmpegProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"exited {self.returncode}"
        return f"<FFmpegProcess {self.name} pid={self.pid} {state}>"


def run_ffmpeg(
    args: Sequence[str], *, input_bytes: bytes | None = None, timeout: float | None = None
) -> None:
    """Run a one-shot ffmpeg command; raise MediaError with the scrubbed stderr tail if it fails."""
    if isinstance(args, str) or not args:
        raise ValueError(f"args must be a non-empty argument list, got {args!r}")
    args = [str(a) for a in args]
    try:
        done = subprocess.run(
            args,
            input=input_bytes,
            stdin=subprocess.DEVNULL if input_bytes is None else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise MediaError(f"{args[0]} not found on PATH (is ffmpeg installed?)") from None
    except subprocess.TimeoutExpired as exc:
        tail = _tail_text(exc.stderr or b"")
        raise MediaError(
            f"{args[0]} did not finish within {timeout} s: {describe_args(args)}\n{tail}", stderr_tail=tail
        ) from None
    if done.returncode != 0:
        tail = _tail_text(done.stderr)
        raise MediaError(
            f"{args[0]} failed with exit code {done.returncode}: {describe_args(args)}\n{tail}",
            returncode=done.returncode,
            stderr_tail=tail,
        )


def _tail_text(stderr: bytes, lines: int = 30) -> str:
    text = stderr.decode("utf-8", "replace")
    kept = [ln.rstrip() for ln in re.split(r"\r\n|\r|\n", text) if ln.strip()]
    return scrub_secrets("\n".join(kept[-lines:]))
