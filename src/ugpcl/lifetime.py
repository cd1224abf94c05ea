"""A command's lifetime: SIGTERM ends it cleanly, and a job stops when the workflow that started it dies.

Snakemake runs a job as `bash -c "... ugpcl train ..."` in its own process group and, killed
with SIGKILL, cannot pass anything on: the job would train on as an orphan, holding the GPU and
the run directory's lock. So the Snakefile exports UGPCL_EXIT_WITH=<host>:<pid>:<start> (its own
process, `token()`), and every `ugpcl` command started with it watches that process from a
thread; when it is gone, the command gets SIGTERM. A SIGTERM (from here, `kill`, or SLURM at a
time limit) raises `Terminated` in the main thread, so `finally` blocks run: temporary files go,
locks are released, and the exit status is 128 + 15.

A process is named by its PID and its start time (field 22 of /proc/<pid>/stat) with the boot
id, so a reused PID is not mistaken for the original; where /proc is missing, by its PID alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from pathlib import Path

# config.REPO_ROOT, not imported: config pulls in yaml and jsonschema, and every command (the fork
# server's light client included) imports this module first
REPO_ROOT = Path(__file__).resolve().parents[2]

ENV = "UGPCL_EXIT_WITH"
POLL_S = 1.0


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP; a BaseException so that `except Exception` lets it through."""

    def __init__(self, signum: int, reason: str = ""):
        super().__init__(reason or f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def host() -> str:
    return socket.gethostname()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """HEAD of this checkout; where the tree is a copy without git metadata (a GPU machine's, see
    tools/gpu_session.py), the commit named by $UGPCL_COMMIT, else "unknown"."""
    head = (_git("rev-parse", "HEAD") or "").strip()
    return head or os.environ.get("UGPCL_COMMIT") or "unknown"


def code_state() -> dict:
    """The code a command runs: {"commit": git_commit(), "modified": whether tracked files differ
    from that commit (None where there is no git checkout)}."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git_commit(), "modified": None if status is None else bool(status.strip())}


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # the command name in (...) may hold spaces


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, with the boot id), or None if unknown or gone."""
    fields = _stat(pid)
    return f"{boot_id()}/{fields[19]}" if fields else None


def alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` (the one that started at `started`, when given) is running on this host.

    A zombie (dead, not yet reaped by its parent) is not running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat(pid)
    if fields is None:  # no /proc: the PID alone
        return True
    return fields[0] not in ("Z", "X") and (started is None or start_time(pid) == started)


def token(pid: int | None = None) -> str:
    """`<host>:<pid>:<start>` of a process (default: this one), the value of UGPCL_EXIT_WITH."""
    pid = os.getpid() if pid is None else pid
    return f"{host()}:{pid}:{start_time(pid) or ''}"


_state = {"reason": ""}


def _on_signal(signum, frame):
    raise Terminated(signum, _state["reason"])


def _watch(pid: int, started: str | None, stop: threading.Event) -> None:
    while not stop.wait(POLL_S):
        if not alive(pid, started):
            _state["reason"] = f"the workflow process {pid} that started this job is gone: stopping with it"
            os.kill(os.getpid(), signal.SIGTERM)
            return


def install(environ=os.environ) -> threading.Event | None:
    """SIGTERM/SIGHUP -> Terminated (call from the main thread), and the watch of UGPCL_EXIT_WITH.

    Returns the watcher's stop event, or None when there is nothing to watch (not set, another
    host's process: e.g. a SLURM job, which SLURM itself stops).
    """
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers belong to the main thread (an embedding program's business)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, _on_signal):  # keep an ignored one ignored (nohup)
            signal.signal(sig, _on_signal)
    return watch(environ)


def watched(environ=os.environ) -> tuple[int, str | None] | None:
    """(pid, start) of the process UGPCL_EXIT_WITH names, or None (not set, or another host's)."""
    parts = environ.get(ENV, "").split(":", 2)
    if len(parts) != 3 or parts[0] != host() or not parts[1].isdigit():
        return None
    return int(parts[1]), parts[2] or None


def workflow_job(environ=os.environ) -> bool:
    """Whether this process is a job of a workflow (Snakemake, DVC through it): UGPCL_EXIT_WITH names
    another process, the workflow's, here or on another host (a cluster job)."""
    parts = environ.get(ENV, "").split(":", 2)
    return len(parts) == 3 and not (parts[0] == host() and parts[1] == str(os.getpid()))


def watch(environ=os.environ) -> threading.Event | None:
    """Send this process SIGTERM when the process UGPCL_EXIT_WITH names is gone (from a thread);
    returns the watcher's stop event, or None when there is nothing to watch."""
    named = watched(environ)
    if named is None:
        return None
    pid, started = named
    stop = threading.Event()
    if not alive(pid, started):  # gone before this command started
        raise Terminated(signal.SIGTERM, f"the workflow process {pid} that started this job is gone: not starting")
    threading.Thread(target=_watch, args=(pid, started, stop), daemon=True, name="ugpcl-exit-with").start()
    return stop
