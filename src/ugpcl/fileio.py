"""Safe file output: atomic writes, clear errors when writing fails, and cleaning up after crashes.

An output is written to a temporary sibling `.<name>.<8 random characters><suffix>` and renamed
over the target only once complete, so a crash or a raised error never leaves a half-written
output behind and an existing output stays untouched until the new one is complete. A process
killed outright (SIGKILL, power loss) leaves its temporary file: `remove_stale_temps` deletes
such files at the next start of the command that owns the folder (under its lock, `ugpcl.lock`).

Writing that fails for a reason the user can fix (disk full, quota, read-only or unwritable
folder, a file where a folder should be) is a UserError naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import UserError

FULL = {errno.ENOSPC, errno.EDQUOT}
DENIED = {errno.EROFS, errno.EACCES, errno.EPERM}
NOT_A_FOLDER = {errno.ENOTDIR, errno.EEXIST}
# what atomic_path/atomic_dir/mkstemp name their temporary files: `.<name>.<8 of [a-z0-9_]><suffix>`
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}(?P<suffix>\.[A-Za-z0-9.]+)?$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB"
    return "unknown"


def write_error(exc: OSError, target: str | os.PathLike, *, creating: bool = False) -> UserError | None:
    """The UserError for a failed write of `target`, or None when `exc` is not a write problem.

    `creating`: the error came from making `target`'s folders, where EEXIST/ENOTDIR mean that a
    file stands where a folder should be.
    """
    target = Path(target)
    if exc.errno in FULL:
        return UserError(
            f"no space left on the device (disk full or quota exceeded; {_free_space(target.parent)} free there) "
            "while writing", path=target,
            fix="free space on that file system (or write elsewhere: --out, paths.results), then run the same "
                "command again; nothing half-written was kept and finished work is intact")
    if exc.errno in DENIED:
        return UserError(f"cannot write here ({exc.strerror}: the folder is read-only or not yours)", path=target,
                         fix="make the folder writable, or choose another output (--out, or paths.results in "
                             "params.yaml)")
    if creating and exc.errno in NOT_A_FOLDER:
        return UserError(f"cannot create this folder: {exc.filename or 'a parent'} is a file, not a folder",
                         path=target, fix="choose an output path whose parent folders are folders")
    return None


@contextlib.contextmanager
def writing(target: str | os.PathLike):
    """An OSError in the block that is a write problem (`write_error`) becomes its UserError for
    `target`; any other OSError passes unchanged."""
    try:
        yield
    except OSError as exc:
        error = write_error(exc, target)
        if error is None:
            raise
        raise error from exc


def make_dirs(folder: str | os.PathLike) -> Path:
    """`folder` and its parents, or a UserError saying why they cannot exist."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (write_error(exc, folder, creating=True) or exc) from exc
    return folder


def writable_dir(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove it writable now (before long work that would write there)."""
    folder = make_dirs(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise (write_error(exc, folder, creating=True) or exc) from exc
    return folder


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, suffix: str | None = None):
    """Yield a temporary path beside `target`; rename it onto `target` on success."""
    target = Path(target)
    make_dirs(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    except OSError as exc:
        raise (write_error(exc, target, creating=True) or exc) from exc
    os.close(fd)
    tmp = Path(tmp)
    try:
        with writing(target):
            yield tmp
            if tmp.exists():  # mkstemp makes files 0600; give outputs the usual permissions
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temporary directory beside `target`; it replaces `target` on success."""
    target = Path(target)
    make_dirs(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise (write_error(exc, target, creating=True) or exc) from exc
    try:
        with writing(target):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if target.exists():
                old = target.with_name(f".{target.name}.old")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target, data: bytes | memoryview, *, suffix: str | None = None) -> None:
    """Write `data` atomically (plain file I/O, so that a full disk is an OSError, not a crash).

    Data larger than the free space is refused before anything is written."""
    target = Path(target)
    make_dirs(target.parent)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(target.parent).free
        if len(data) > free:
            raise UserError(
                f"no space left on the device: writing needs {len(data) / 2**20:.1f} MiB, {free / 2**20:.1f} MiB "
                "are free there", path=target,
                fix="free space on that file system (or write elsewhere: --out, paths.results), then run the same "
                    "command again; nothing half-written was kept and finished work is intact")
    with atomic_path(target, suffix=suffix) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def staged_bytes(target, *, suffix: str | None = None):
    """Yield an in-memory file; on success it is written to `target` atomically with plain file I/O.

    For writers that a full disk crashes (h5py can end in a segmentation fault when the file it
    writes cannot grow): they never touch the disk, and a full disk is a clean OSError here.
    """
    buffer = io.BytesIO()
    yield buffer
    write_bytes(target, buffer.getbuffer(), suffix=suffix)


def write_text(target, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, *, fix: str) -> dict:
    """A JSON object from `path`; a UserError naming the file (and `fix`) when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise UserError(f"not valid JSON ({exc})", path=path, fix=fix) from exc
    if not isinstance(data, dict):
        raise UserError(f"expected a JSON object, found {type(data).__name__}", path=path, fix=fix)
    return data


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `target` an atomic hard link to `source` (no extra space), or a copy where links fail."""
    source, target = Path(source), Path(target)
    with atomic_path(target, suffix=source.suffix) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in FULL:
                raise
            shutil.copyfile(source, tmp)  # another file system, or one without hard links


def link_or_copy_tree(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Replace folder `target` by hard links to (or copies of) every file under `source`, atomically."""
    source = Path(source)
    with atomic_dir(target) as tmp:
        for path in sorted(source.rglob("*")):
            if path.is_file() and not is_temp_name(path.name):
                dest = tmp / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, dest)
                except OSError as exc:
                    if exc.errno in FULL:
                        raise
                    shutil.copyfile(path, dest)


def is_temp_name(name: str, of: str | None = None) -> bool:
    """Whether `name` is a temporary file name of atomic_path/atomic_dir (of the target named `of`)."""
    m = TEMP_NAME.match(name)
    return m is not None and (of is None or m["name"] == of)


def remove_stale_temps(folder: str | os.PathLike, *, of: str | None = None, recursive: bool = False) -> list[Path]:
    """Delete the temporary files (and folders) that interrupted writes left in `folder`.

    `of`: only those of the target with this name (a folder other writers share); otherwise every
    temporary name, in subfolders too with `recursive` (a folder this process owns under its lock).
    Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.rglob(".*") if recursive else folder.glob(".*")):
        old = of is not None and path.name == f".{of}.old"  # atomic_dir's previous copy
        if not (is_temp_name(path.name, of) or old) or not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def removed_if_failed(folder: str | os.PathLike):
    """The folders on the way to `folder` that do not exist yet are removed again, if still empty,
    when the `with` block fails: a failed command leaves no empty output folders behind."""
    folder = Path(folder).absolute()
    new = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        new.append(parent)
    try:
        yield
    except BaseException:
        for path in new:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
        raise
