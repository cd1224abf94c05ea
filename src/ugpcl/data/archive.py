"""Zip archives read safely: no member may escape the folder it is extracted into."""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..fileio import atomic_dir, remove_stale_temps, write_error
from ..lock import hold_file

CORRUPT_FIX = "the archive is truncated or corrupt: delete it and run `ugpcl fetch` again"
SOURCE_STAMP = ".extracted-from.json"


def check_member(name: str, archive: Path) -> PurePosixPath:
    """The member's relative path, or a UserError if it is absolute or climbs out with `..`."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise UserError(
            f"unsafe member path {name!r} (absolute or containing '..')",
            path=archive,
            fix="this is not the expected archive; delete it and download it again",
        )
    return path


def open_zip(path: str | Path) -> zipfile.ZipFile:
    """Open a zip and check every member path; corrupt or unsafe archives are UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError("archive not found", path=path, fix="run `ugpcl fetch` first or correct the configured path")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"not a readable zip archive ({exc})", path=path, fix=CORRUPT_FIX) from exc
    try:
        for name in zf.namelist():
            check_member(name, path)
    except UserError:
        zf.close()
        raise
    return zf


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; a CRC or decompression failure names the archive and the member."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read member {name!r} ({exc})", path=zf.filename, fix=CORRUPT_FIX) from exc


def _source_stamp(archive: Path) -> dict:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_extracted(archive: str | Path, folder: Path) -> bool:
    """Whether `folder` was extracted from this very archive file (same name, size and mtime)."""
    try:
        return json.loads((folder / SOURCE_STAMP).read_text()) == _source_stamp(Path(archive))
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _extraction_dir(target: Path):
    """`atomic_dir(target)` under the target's lock (one extraction at a time), after deleting the
    temporary folder a killed extraction left (the full ISIC input is 11 GB)."""
    with hold_file(target, "ugpcl prepare (extracting)"):
        remove_stale_temps(target.parent, of=target.name)
        with atomic_dir(target) as tmp:
            yield tmp


def extract_folder(archive: str | Path, folder: str, dest_parent: str | Path) -> Path:
    """Extract the members under `folder/` of `archive` to `dest_parent/folder`, atomically.

    Members outside `folder` (e.g. `__MACOSX/`) are skipped. The files land in a temporary
    directory beside the target that is renamed into place only once all of them are written;
    a stamp inside records which archive file they came from (see `is_extracted`). One extraction
    of a target at a time; what a killed extraction left is deleted first (`_extraction_dir`).
    """
    archive = Path(archive)
    target = Path(dest_parent) / folder
    with open_zip(archive) as zf, _extraction_dir(target) as tmp:
        count = 0
        for info in zf.infolist():
            parts = check_member(info.filename, archive).parts
            if len(parts) < 2 or parts[0] != folder or info.is_dir():
                continue
            out = tmp.joinpath(*parts[1:])
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                if isinstance(exc, OSError) and (error := write_error(exc, target)) is not None:
                    raise error from exc  # a full disk is not the archive's fault
                raise UserError(f"cannot extract {info.filename!r} ({exc})", path=archive, fix=CORRUPT_FIX) from exc
            count += 1
        if count == 0:
            raise UserError(
                f"no files under {folder}/ in the archive",
                path=archive,
                fix="this is not the expected archive; check the configured URL or file",
            )
        (tmp / SOURCE_STAMP).write_text(json.dumps(_source_stamp(archive)))
    return target
