"""`studio verify`: what a clip says about itself (AIGC metadata and its signature)."""

from __future__ import annotations

from pathlib import Path

import av

from studio.policy import verify_aigc_metadata


def read_aigc(path: Path) -> str | None:
    with av.open(str(path)) as c:
        meta = {k.lower(): v for k, v in c.metadata.items()}
    return meta.get("aigc")


def verify_file(path: Path, *, key: bytes) -> dict:
    value = read_aigc(path)
    report = {"file": str(path), "produce_id": None, "show_id": None,
              "aigc_metadata": {"present": value is not None, "signature_valid": False, "error": None}}
    if value is None:
        report["aigc_metadata"]["error"] = "no AIGC key in the container metadata"
        return report
    try:
        data = verify_aigc_metadata(key, value)
        report["aigc_metadata"]["signature_valid"] = True
    except ValueError as exc:
        report["aigc_metadata"]["error"] = str(exc)
        return report
    report["produce_id"], report["show_id"] = data["ProduceID"], data["PropagateID"]
    return report
