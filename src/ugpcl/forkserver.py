"""Workflow jobs without the import cost: one process per workflow run imports torch, MONAI and
the training code once, and each `ugpcl` job runs in a fork of it.

Why: every job of the demo trains for seconds, and importing torch and MONAI took about 4 s of
CPU per job, a third of the demo's total. A Snakemake profile turns this on with
`config: [..., "forkserver=true"]` (workflow/profiles/demo); the Snakefile then exports
UGPCL_FORKSERVER=1 to its jobs, and each job's `ugpcl ...` (the client, `cli.main`):
1. connects to its workflow's server: a Unix socket in Linux's abstract namespace, named after
   the workflow process (UGPCL_EXIT_WITH), this checkout's code, the interpreter and the user;
   when there is none it starts one (of two jobs racing, one binds the name, the other's exits);
2. sends its arguments, environment, working directory and umask, and passes its stdin, stdout
   and stderr (SCM_RIGHTS), so the job's output goes where it always goes (its log file);
3. passes SIGTERM, SIGINT and SIGHUP on to the forked child, and exits with the child's status
   (128 + N when a signal N ended it), as if the command had run in its own process.
The server (`python -m ugpcl.cli _forkserver NAME`) binds the name first, imports, then for
each client forks a child that takes over the client's file descriptors, environment,
directory and umask, sets torch's thread count from OMP_NUM_THREADS and runs `cli.main(argv)`,
the very command the job asked for. The child's UGPCL_EXIT_WITH names its client, so a client killed
outright (SIGKILL) stops its child within a second (`lifetime`), and the client watches the
workflow process as every job does. The server forks only while it runs no other Python thread,
accepts only its own user's connections (SO_PEERCRED), and ends when the workflow process has
ended and its children with it, or after IDLE_S without a job.

Nothing changes for a job that cannot use it (not Linux, the server fails to start or dies
before forking): the command then runs in the job's own process.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from . import lifetime

ENV = "UGPCL_FORKSERVER"    # "1": run `ugpcl` commands in the workflow's fork server
SERVE = "_forkserver"       # `python -m ugpcl.cli _forkserver NAME` runs a server
SERVED = "UGPCL_FORKED"     # set in the forked child (its own subprocesses run as usual)
START_TIMEOUT_S = 60.0      # a client waits this long for a server it started to accept
IDLE_S = 600.0              # a server with no job for this long ends
POLL_S = 0.2
MAX_MESSAGE = 1 << 20
# What every job imports anyway; the forked children find it imported.
# (MONAI by name: the modules that use it import it when first called.)
PRELOAD = ("torch", "monai.networks.nets.swin_unetr", "monai.metrics", "ugpcl.engine.trainer", "ugpcl.evaluation",
           "ugpcl.models.swin", "ugpcl.data.stage", "ugpcl.commands.train", "ugpcl.commands.data",
           "ugpcl.commands.evaluate", "ugpcl.commands.report", "ugpcl.study")


# --- both sides -------------------------------------------------------------------------------
def wanted(environ=os.environ) -> bool:
    """Whether this command should run in a fork server: asked for, by a workflow on this host, on Linux."""
    return (environ.get(ENV) == "1" and not environ.get(SERVED) and sys.platform.startswith("linux")
            and lifetime.watched(environ) is not None)


def server_name(environ=os.environ) -> str:
    """The abstract socket name of this workflow's server for this code, interpreter and user."""
    code = str(Path(__file__).resolve().parent)
    key = "\0".join([environ.get(lifetime.ENV, ""), code, sys.executable, str(os.getuid())])
    return f"ugpcl-forkserver-{hashlib.sha1(key.encode()).hexdigest()[:20]}"


def _address(name: str) -> str:
    return "\0" + name  # Linux's abstract namespace: no file, gone with the process that bound it


def _send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


class _Lines:
    """Newline-terminated JSON messages from a socket (None at the end of the stream)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def next(self) -> dict | None:
        while b"\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except InterruptedError:
                continue
            if not chunk:
                return None
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE:
                raise ValueError("message too long")
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


# --- the client: a workflow job's `ugpcl ...` -------------------------------------------------
def _connect(name: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address(name))
    except OSError:
        sock.close()
        return None
    return sock


def _start_server(name: str) -> None:
    """Start a server in a session of its own (Snakemake stopping this job's group does not stop it)."""
    subprocess.Popen([sys.executable, "-m", "ugpcl.cli", SERVE, name], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                     close_fds=True)


def _server_socket(name: str) -> socket.socket | None:
    sock = _connect(name)
    if sock is not None:
        return sock
    _start_server(name)
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        sock = _connect(name)
        if sock is not None:
            return sock
        time.sleep(0.05)
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_in_server(argv: list[str]) -> int | None:
    """Run `ugpcl argv` in the workflow's fork server; its exit status, or None when it could not
    be started there (then nothing has run and the caller runs the command itself)."""
    sock = _server_socket(server_name())
    if sock is None:
        return None
    with sock:
        env = {**os.environ, lifetime.ENV: lifetime.token(), SERVED: "1"}
        try:
            _send(sock, {"argv": argv, "env": env, "cwd": os.getcwd(), "umask": _umask()}, [0, 1, 2])
            lines = _Lines(sock)
            started = lines.next()
        except (OSError, ValueError):
            return None
        if not started or "pid" not in started:
            return None  # the server ended before it forked: nothing ran
        return _wait(lines, started["pid"])


def _wait(lines: _Lines, child: int) -> int:
    """Relay signals to the child until the server reports how it ended."""

    def relay(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    try:
        lifetime.watch()  # the workflow process gone: SIGTERM to this process, relayed to the child
    except lifetime.Terminated:
        relay(signal.SIGTERM, None)
    try:
        ended = lines.next()
    except (OSError, ValueError):
        ended = None
    if ended is None:
        print(f"error: the fork server ended while it ran this command (PID {child})", file=sys.stderr)
        return 1
    return ended["exit"] if "exit" in ended else 128 + ended["signal"]


# --- the server -------------------------------------------------------------------------------
def _peer_uid(conn: socket.socket) -> int:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    """The client's request and the file descriptors passed with it."""
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(MAX_MESSAGE)
        if not more:
            raise ValueError("incomplete request")
        data += more
    conn.settimeout(None)
    return json.loads(data), fds


def _child(request: dict, fds: list[int], run) -> None:
    """In the forked child: become the client's command, run it, exit with its status."""
    code = 1
    try:
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGPIPE else signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            if fd > 2:
                os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", closefd=False, buffering=1, errors="backslashreplace")
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["ugpcl", *request["argv"]]
        _fresh_process_state()
        code = run(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print_after_stdout(exc.code)
    except BaseException:  # noqa: BLE001 - printed as Python would, then the exit status 1
        print_after_stdout(traceback.format_exc().rstrip("\n"))
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def print_after_stdout(text) -> None:
    """`text` on stderr after everything the command printed on stdout: a job's log (`> log 2>&1`)
    then holds a crash's traceback after the lines printed before it, as in a process of its own,
    where Python flushes stdout first (a fork's stdout into a file is block-buffered)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(text, file=sys.stderr)


def _fresh_process_state() -> None:
    """What a new process would have: numpy's global generator from fresh entropy, torch's
    threads from OMP_NUM_THREADS (torch read the server's at import)."""
    import numpy as np
    import torch

    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    else:
        torch.set_num_threads(os.cpu_count() or 1)


def _fork(conn: socket.socket, listener: socket.socket, children: dict, run) -> None:
    try:
        if _peer_uid(conn) != os.getuid():
            conn.close()
            return
        request, fds = _receive(conn)
    except (OSError, ValueError):
        conn.close()
        return
    # No Python thread may run while forking. The BLAS thread pools numpy and SciPy start at import
    # are fork-safe (OpenBLAS stops them before a fork and starts them again when needed), as in
    # every fork of a process that imported torch (PyTorch's DataLoader workers).
    if threading.active_count() > 1:
        conn.close()  # the client runs the command itself
        for fd in fds:
            os.close(fd)
        return
    pid = os.fork()
    if pid == 0:
        listener.close()
        conn.close()
        for other in children.values():
            other.close()
        _child(request, fds, run)
    for fd in fds:
        os.close(fd)
    try:
        _send(conn, {"pid": pid})
    except OSError:
        pass
    children[pid] = conn


def _reap(children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        message = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
        with contextlib.suppress(OSError):
            _send(conn, message)
        conn.close()


def serve(name: str, run) -> int:
    """Serve the jobs of one workflow run: `run(argv) -> exit status` in a fork per job."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(_address(name))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return 0  # another job started the server first
        raise
    listener.listen(64)
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    workflow = lifetime.watched()
    children: dict[int, socket.socket] = {}
    last_job = time.monotonic()
    accepting = True
    while True:
        if accepting and select.select([listener], [], [], POLL_S)[0]:
            conn, _ = listener.accept()
            _fork(conn, listener, children, run)
            last_job = time.monotonic()
        elif not accepting:
            time.sleep(POLL_S)
        _reap(children)
        if children:
            last_job = time.monotonic()
        workflow_gone = workflow is None or not lifetime.alive(*workflow)
        if accepting and (workflow_gone or time.monotonic() - last_job > IDLE_S):
            accepting = False
            listener.close()  # new jobs start a server of their own, or run in their own process
        if not accepting and not children:
            return 0

