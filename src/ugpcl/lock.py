"""One writer per run directory and per prepared file.

`hold_folder(folder)` and `hold_file(file)` take the lock of a target (a folder: `<folder>/.lock`;
a file: `.<name>.lock` beside it), or stop at once with a UserError naming the holder's PID,
host, command and start, and how to clear a stale lock. Two mechanisms together:

- `fcntl.flock` on the lock file: the kernel releases it when the holder dies, even by SIGKILL,
  so on one host a dead holder never blocks anyone;
- a record in the file (PID, process start time, boot id, host, command, since), which names the
  holder in the message and serves where flock does not reach (another host on a network file
  system, or a file system without flock). A record whose process is gone is stale: on this
  host, the PID is dead (or reused by another process, or the machine rebooted); from another
  host, the holder's heartbeat (the file's mtime, touched every HEARTBEAT_S) is older than
  STALE_AFTER_S. A stale lock is taken over with a note; the holder removes the file when it ends.

The lock is re-entrant within a process (the train command holds it around training and
evaluation, the trainer takes it again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .fileio import make_dirs, write_error
from .lifetime import alive, boot_id, host, start_time

HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
_held: dict[Path, int] = {}


def lock_path(target: str | os.PathLike, *, folder: bool) -> Path:
    """The lock file of a folder (`<folder>/.lock`) or of a file (`.<name>.lock` beside it)."""
    target = Path(target)
    return target / ".lock" if folder else target.with_name(f".{target.name}.lock")


def _record(command: str) -> dict:
    return {"pid": os.getpid(), "start": start_time(os.getpid()), "boot": boot_id(), "host": host(),
            "command": command, "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        record = json.loads(raw)
    except ValueError:
        return None  # empty (a holder that ended, or one that had not written yet) or garbage
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def stale(record: dict, path: Path, flocked: bool) -> bool:
    """Whether the holder named by `record` is gone (see the module docstring)."""
    if record.get("host") == host():
        if flocked:  # on one host flock is authoritative: the holder cannot hold the lock any more
            return True
        same_boot = record.get("boot") is None or record.get("boot") == boot_id()
        return not same_boot or not alive(record["pid"], record.get("start"))
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except OSError:
        return True


def _busy(target: Path, path: Path, record: dict) -> UserError:
    age = ""
    with contextlib.suppress(OSError):
        age = f", alive {time.time() - path.stat().st_mtime:.0f} s ago"
    where = record.get("host")
    here = where == host()
    return UserError(
        f"being written by PID {record['pid']} on host {where} ({record.get('command', '?')}, "
        f"since {record.get('since', '?')}{'' if here else age}); one writer at a time",
        path=target,
        fix=("wait for it to finish or stop it (`kill " + str(record["pid"]) + "`); a lock whose process has "
             "died is taken over automatically" if here else
             f"wait for it to finish or stop it on {where}; if no such process runs there any more, delete {path} "
             f"(or wait until its heartbeat is {STALE_AFTER_S / 60:.0f} minutes old)"),
    )


def _open_locked(path: Path, target: Path) -> tuple[int, bool]:
    """Open the lock file and flock it; retried while the file is replaced under us."""
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise (write_error(exc, path, creating=True) or exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except BlockingIOError:
            record = _read(fd) or {"pid": "?", "host": "?"}
            os.close(fd)
            raise _busy(target, path, record) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            flocked = False  # no flock on this file system: the record alone decides
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd, flocked
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file between our open and flock: try the new one
    raise UserError("could not take the lock (it keeps being replaced)", path=path, fix="try again")


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(path)


def hold_folder(folder: str | os.PathLike, command: str):
    """Hold the lock of a folder (a run directory) for the duration of a `with` block."""
    return _hold(Path(folder), lock_path(folder, folder=True), command)


def hold_file(file: str | os.PathLike, command: str):
    """Hold the lock of one output file (a prepared file, a download) for the duration of a `with` block."""
    return _hold(Path(file), lock_path(file, folder=False), command)


@contextlib.contextmanager
def _hold(target: Path, path: Path, command: str):
    make_dirs(path.parent)
    path = path.resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield path
        finally:
            _held[path] -= 1
        return
    fd, flocked = _open_locked(path, target)
    try:
        previous = _read(fd)
        if previous is not None:
            if not stale(previous, path, flocked):
                raise _busy(target, path, previous)
            print(f"note: {target}: took over the lock of PID {previous['pid']} on {previous.get('host')} "
                  f"({previous.get('command', '?')}, since {previous.get('since', '?')}), which is no longer "
                  "running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_record(command)).encode(), 0)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise (write_error(exc, path) or exc) from exc
    except BaseException:
        os.close(fd)
        raise
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(path, stop), daemon=True, name="ugpcl-lock-heartbeat").start()
    _held[path] = 1
    try:
        yield path
    finally:
        del _held[path]
        stop.set()
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)  # releases the flock
