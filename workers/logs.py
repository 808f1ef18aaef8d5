"""Logs a fleet can read: one JSON object per line on stdout, the same shape from every role.

Each line has ts, level, role, host, logger and message, and, where they apply, request_id (the API's
X-Request-ID), task_id, segment, channel and show, taken from context variables set by whoever knows them
(`log_context`). Every message goes through the key scrubbing that ffmpeg's stderr gets, so no stream key or
password in a URL reaches a line. Under the embedded stack (`studio up`) each role's stdout is its file in
data/logs.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from studio.masking import scrub_secrets

CONTEXT_FIELDS = ("request_id", "task_id", "segment", "channel", "show")
_context: dict[str, ContextVar[str | None]] = {name: ContextVar(name, default=None) for name in CONTEXT_FIELDS}
# Libraries whose chatter at INFO drowns a role's own lines.
QUIET = {"httpx": logging.WARNING, "multipart": logging.WARNING, "PIL": logging.WARNING, "alembic": logging.WARNING}


def set_context(**values: str | None) -> None:
    """Set context fields for the rest of this thread or task (a Celery task sets task_id and segment)."""
    for name, value in values.items():
        _context[name].set(value)


@contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Context fields for the lines logged inside the block."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str):
        super().__init__()
        self.role, self.host = role, socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        line = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "role": self.role, "host": self.host,
                "logger": record.name, "message": scrub_secrets(message)}
        for name, var in _context.items():
            value = getattr(record, name, None) or var.get()
            if value:
                line[name] = str(value)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(role: str, *, level: int = logging.INFO) -> None:
    """Send every logger (uvicorn's and Celery's included) to stdout as JSON lines tagged with `role`."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    for name, lvl in QUIET.items():
        logging.getLogger(name).setLevel(lvl)
    logging.captureWarnings(True)  # a library's warning is a line like any other
