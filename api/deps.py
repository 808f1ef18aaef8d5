"""Dependencies as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, UploadFile
from sqlmodel import Session

from studio.access import get_or_404  # noqa: F401  (re-exported)
from studio.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.runtime.engine, expire_on_commit=False) as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SessionDep = Annotated[Session, Depends(get_session)]


CHUNK = 1 << 20


async def receive_upload(file: UploadFile, dest: Path, *, max_mb: int) -> int:
    """Write an upload to `dest` (a server-chosen name) in 1 MiB chunks; 413 once it passes `max_mb` (the body
    limit in api.limits refuses most before they are read; this holds for a body that streams in unannounced).
    Returns its size. The caller removes `dest` on any error."""
    size = 0
    with open(dest, "wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > max_mb * 1024 * 1024:
                raise HTTPException(413, f"upload exceeds the limit of {max_mb} MB")
            out.write(chunk)
    return size
