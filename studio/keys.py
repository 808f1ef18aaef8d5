"""The policy key: from settings/environment, else the key file made by `studio keys init`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from studio.config import Settings


class PolicyKeyError(RuntimeError):
    pass


def key_file(settings: Settings) -> Path:
    return settings.data_path / "keys" / "policy.key"


def init_key(settings: Settings, *, force: bool = False) -> Path:
    """Create a random 256-bit key file (mode 600) unless one exists."""
    path = key_file(settings)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.replace(tmp, path)
    return path


def load_key(settings: Settings) -> bytes:
    if settings.policy_key:
        return settings.policy_key.encode()
    path = key_file(settings)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise PolicyKeyError(f"no policy key: set STUDIO_POLICY_KEY or run `studio keys init` "
                             f"(expected {path})") from None
    if len(value) < 32:
        raise PolicyKeyError(f"policy key file {path} is too short; run `studio keys init --force`")
    return value.encode()
