"""What a run records about the data it used: the prepared file itself, not the configuration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .prepared import Prepared


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def data_record(prepared: Prepared) -> dict:
    """Path, size and SHA-256 of the prepared file, and its own record of where its data came from
    (the `source` and `provenance` attributes the data stage wrote into it)."""
    path = Path(prepared.path).resolve()
    try:
        provenance = json.loads(prepared.attrs.get("provenance", "{}"))
    except (TypeError, ValueError):
        provenance = {"unparsed": str(prepared.attrs.get("provenance"))}
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path),
            "dataset": prepared.dataset, "source": str(prepared.attrs.get("source", "")), "provenance": provenance}
