"""Files under the data directory: layout and atomic writes (write to a temp name, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DataDir:
    """Where everything lives; one instance per data directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def audit_checkpoint(self) -> Path:
        """Where releases before the fleet kept the audit checkpoint; read only while no shared one exists
        (studio.audit_checkpoint)."""
        return self.root / "audit-checkpoint.json"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    def archive_path(self, show_id: str, seq: int, produce_id: str) -> Path:
        return self.archive / show_id / f"{seq:08d}-{produce_id}.mp4"

    def recording_path(self, show_id: str, produce_id: str) -> Path:
        return self.archive / show_id / f"recording-{produce_id}.mp4"

    def bundle_dir(self, avatar_id: str) -> Path:
        return self.bundles / avatar_id

    def segment_path(self, channel_id: str, seq: int, produce_id: str, *, attempt: int = 1) -> Path:
        return self.segments / channel_id / f"{seq:08d}-{produce_id}-a{attempt}.mp4"

    def ensure(self) -> DataDir:
        for d in (self.root, self.bundles, self.segments, self.uploads, self.logs, self.run, self.keys, self.archive):
            d.mkdir(parents=True, exist_ok=True)
        return self


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# A fill in flight (temp_beside: ".<stem>.<8 random>.<ext>.part"), and the file boto3 downloads into beside it
# ("<that>.<8 hex>"). A process killed mid-fill leaves one behind.
FILL_FILE = re.compile(r"\.(?P<stem>.+)\.[0-9a-z_]{8}(?P<suffix>\.[^./]+)?\.part(?:\.[0-9A-Fa-f]{8})?")


def filled_name(name: str) -> str | None:
    """The name of the file that the fill temp file `name` was writing; None for any other name."""
    m = FILL_FILE.fullmatch(name)
    return m["stem"] + (m["suffix"] or "") if m else None


def temp_beside(final: Path) -> Path:
    """A new empty file beside `final` named ".<stem>.<8 random>.<suffix>.part" (FILL_FILE reads these names back: a
    process killed while writing leaves one behind)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix + ".part", dir=final.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename onto `final` only if the block succeeds."""
    tmp_path = temp_beside(final)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp directory beside `final`; it becomes `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            raise FileExistsError(f"{final} already exists")
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
