"""Resumable, verified downloads.

A download goes to `<file>.part`, resumed with an HTTP Range request when the part exists,
and is renamed onto `<file>`, then its size and SHA-256 are checked: a failing download is
deleted, a failing file that was already there (perhaps put there by the user) is moved aside.
Verifying a large file is slow, so a verified file gets a stamp `<file>.verified` (size, mtime,
digest): the next check of an unchanged file only compares the stamp.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import requests
from tqdm import tqdm

from ..errors import UserError
from ..fileio import write_json
from ..lock import hold_file

CHUNK = 1 << 16  # small, so that little is lost of the block in flight when a connection drops


def sha256_file(path: str | Path, desc: str | None = None) -> str:
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=desc or f"sha256 {path.name}", leave=False
    ) as bar:
        while block := f.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, sha256: str) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        return json.loads(_stamp_path(path).read_text()) == _stamp(path, sha256)
    except (OSError, ValueError):
        return False


def _moved_aside(path: Path, tag: str) -> Path:
    """Rename `path` to an unused `<name>.rejected-<tag>[-n]` beside it; returns the new path."""
    for n in range(1000):
        aside = path.with_name(f"{path.name}.rejected-{tag}{f'-{n}' if n else ''}")
        if not aside.exists():
            os.replace(path, aside)
            return aside
    raise UserError("too many rejected copies beside this file", path=path, fix="delete the *.rejected-* files")


def verify_file(path: str | Path, sha256: str, size: int | None = None, *, on_bad: str = "keep") -> Path:
    """Check size and digest of `path` (skipped when its stamp is current); UserError if wrong.

    `on_bad` says what happens to a file that fails the check: "keep" (a file the user pointed
    at), "move" (a file found where a download goes, which the user may have put there: renamed
    to `<name>.rejected-<digest>`, never deleted), "remove" (the download this process just made).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path, fix="run `ugpcl fetch` or correct the configured path")
    if _stamp_matches(path, sha256):
        return path
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        problem, tag = f"size {actual_size} bytes, expected {size}", f"size{actual_size}"
    else:
        actual = sha256_file(path)
        problem, tag = (None, "") if actual == sha256 else (f"SHA-256 mismatch: expected {sha256}, got {actual}",
                                                             f"sha256-{actual[:12]}")
    if problem:
        _stamp_path(path).unlink(missing_ok=True)
        fix = "point the config at an intact copy or correct the configured sha256"
        if on_bad == "remove":
            path.unlink()
            problem += " (the download was removed)"
            fix = "run `ugpcl fetch` again to download a fresh copy"
        elif on_bad == "move":
            aside = _moved_aside(path, tag)
            problem += f"; the file was moved aside to {aside} (not deleted: it was there before this command)"
            fix = (f"check {aside.name} (an incomplete copy?) and delete it if it is of no use; then run `ugpcl "
                   f"fetch` again to download a fresh copy, or put an intact copy at {path}")
        raise UserError(problem, path=path, fix=fix)
    try:
        write_json(_stamp_path(path), _stamp(path, sha256))
    except (OSError, UserError):
        pass  # a read-only folder: the file is fine, it just gets verified again next time
    return path


def download(url: str, dest: str | Path, *, sha256: str, size: int | None = None, timeout: float = 60) -> Path:
    """Make sure `dest` holds the verified file from `url`, downloading or resuming as needed.

    One download per destination at a time (its lock). A file already at `dest` that fails the
    check is moved aside, never deleted; our own finished download that fails it is deleted.
    """
    dest = Path(dest)
    with hold_file(dest, "ugpcl fetch (download)"):
        if dest.is_file():
            return verify_file(dest, sha256, size, on_bad="move")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have > size:
            part.unlink()
            have = 0
        if size is None or have < size:
            _fetch_into(url, part, have, size, timeout)
        os.replace(part, dest)
        return verify_file(dest, sha256, size, on_bad="remove")


def _fetch_into(url: str, part: Path, have: int, size: int | None, timeout: float) -> None:
    headers = {"Accept-Encoding": "identity"}  # byte counts must be those of the file itself
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code == 416 and have:  # nothing left to send: the part is complete
                return
            if resp.status_code not in (200, 206):
                raise UserError(
                    f"download failed: HTTP {resp.status_code} {resp.reason}",
                    path=url,
                    fix="check the URL in params.yaml and your network, then run `ugpcl fetch` again",
                )
            if resp.status_code == 200:  # the server ignored the Range header: start over
                have = 0
            remaining = resp.headers.get("Content-Length")
            total = have + int(remaining) if remaining is not None else size
            with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")]
            ) as bar:
                for block in resp.iter_content(CHUNK):
                    f.write(block)
                    bar.update(len(block))
    except requests.RequestException as exc:
        raise UserError(
            f"download interrupted ({exc.__class__.__name__}: {exc})",
            path=url,
            fix=f"run `ugpcl fetch` again: it resumes from the {part.stat().st_size if part.exists() else 0} "
            f"bytes kept in {part}",
        ) from exc
    got = part.stat().st_size
    if total is not None and got != total:
        raise UserError(
            f"download ended after {got} of {total} bytes",
            path=url,
            fix=f"run `ugpcl fetch` again: it resumes from {part}",
        )
