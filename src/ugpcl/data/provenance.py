"""What a run records about the data it used: the prepared file itself, not the configuration."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..errors import UserError
from ..fileio import read_json
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


def trained_data_sha256(run_dir: str | Path) -> str | None:
    """The SHA-256 of the prepared file the run was trained on (run.json's `data` record, written
    when training finished), or None where the run records none."""
    record = Path(run_dir) / "run.json"
    if not record.is_file():
        return None
    data = read_json(record, fix="restore the file, or retrain the run (`ugpcl train ... --force`)").get("data")
    return data.get("sha256") if isinstance(data, dict) else None


def data_changed(run_dir: str | Path, current: str | Path) -> tuple[str, str] | None:
    """(SHA-256 trained on, SHA-256 now) where the run in run_dir was trained on another prepared file
    than `current` is now (prepared again since); None where they agree or either is unknown (no
    run.json data record, an unreadable one, no file)."""
    try:
        trained = trained_data_sha256(run_dir)
        stat = Path(current).stat()
    except (OSError, UserError):
        return None
    if trained is None:
        return None
    now = _cached_sha256(str(current), stat.st_size, stat.st_mtime_ns)
    return None if trained == now else (trained, now)


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """file_sha256 once per version of a file (its size and modification time) per process."""
    return file_sha256(path)
