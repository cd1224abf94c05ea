"""One writer per run directory and prepared file; stale locks; commands that end cleanly on SIGTERM
and with the workflow process that started them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ugpcl import lock
from ugpcl.errors import UserError
from ugpcl.lifetime import ENV, alive, host, start_time, token

PY = [sys.executable, "-m", "ugpcl.cli"]


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def record(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dead_pid() -> tuple[int, str]:
    """The PID and start time of a process that has exited."""
    proc = subprocess.Popen(["sleep", "0.2"])
    started = start_time(proc.pid)
    proc.wait()
    return proc.pid, started


def test_two_trainings_on_one_run_directory_the_second_stops_at_once(tiny_acdc, tmp_path):
    run_dir = tmp_path / "run"
    train = [*PY, "train", "--profile", "demo", "--method", "supervised", "--dataset", "acdc", "--regime", "tiny",
             "--data", str(tiny_acdc), "--out", str(run_dir), "--no-progress", "--set", "train.iterations=100000",
             "--set", "train.checkpoint_every=5", "--set", "train.val_every=5"]
    first = subprocess.Popen(train, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run_dir / "progress" / "resume.pt").exists())
        holder = record(run_dir / ".lock")
        assert holder["pid"] == first.pid and holder["host"] == host() and holder["command"] == "ugpcl train"
        # another configuration on the same directory (the same one is refused alike)
        second = subprocess.run(train + ["--set", "train.lr=0.02"], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"{run_dir}: being written by PID {first.pid} on host {host()}" in second.stderr
        assert f"kill {first.pid}" in second.stderr
        assert first.poll() is None, "the first writer goes on"
    finally:
        first.send_signal(signal.SIGTERM)  # ends cleanly: lock released, attempt recorded
        _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM and "stopped: terminated by SIGTERM" in err
    assert not (run_dir / ".lock").exists()
    attempts = json.loads((run_dir / "progress" / "attempts.json").read_text())["attempts"]
    assert [a["ended"] for a in attempts] == ["interrupted"]


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, capsys):
    pid, started = dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "start": started, "host": host(),
                                                "command": "ugpcl train", "since": "earlier"}))
    assert not alive(pid, started)
    with lock.hold_folder(tmp_path, "ugpcl train") as path:
        assert record(path)["pid"] == os.getpid()
    assert f"took over the lock of PID {pid}" in capsys.readouterr().err
    assert not (tmp_path / ".lock").exists()


def test_a_lock_held_from_another_host_is_refused_until_its_heartbeat_is_old(tmp_path, capsys):
    path = tmp_path / ".lock"
    path.write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "command": "ugpcl train", "since": "today"}))
    with pytest.raises(UserError, match="PID 4242 on host gpu-node-7") as err:
        with lock.hold_folder(tmp_path, "ugpcl train"):
            pass
    assert f"delete {path}" in str(err.value) and path.exists()
    old = time.time() - lock.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    with lock.hold_folder(tmp_path, "ugpcl train"):
        assert record(path)["pid"] == os.getpid()
    assert "took over the lock of PID 4242 on gpu-node-7" in capsys.readouterr().err


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    target = tmp_path / "acdc.h5"
    probe = ("import sys; from ugpcl.lock import hold_file; from ugpcl.errors import UserError\n"
             "try:\n    hold_file(sys.argv[1], 'probe').__enter__()\nexcept UserError as e:\n    print(e); sys.exit(2)")
    with lock.hold_file(target, "ugpcl prepare acdc") as path:
        with lock.hold_file(target, "ugpcl prepare acdc"):
            assert path == tmp_path / ".acdc.h5.lock"
        assert path.exists()
        other = subprocess.run([sys.executable, "-c", probe, str(target)], capture_output=True, text=True)
        assert other.returncode == 2 and f"PID {os.getpid()}" in other.stdout and "ugpcl prepare acdc" in other.stdout
    assert not path.exists()
    assert subprocess.run([sys.executable, "-c", probe, str(target)]).returncode == 0


def test_a_second_prepare_of_one_file_stops_at_once(tmp_path):
    out = tmp_path / "acdc.h5"
    with lock.hold_file(out, "ugpcl prepare acdc"):
        result = subprocess.run([*PY, "prepare", "acdc", "--profile", "demo", "--set", f"paths.raw={tmp_path}/raw",
                                 "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and f"being written by PID {os.getpid()}" in result.stderr
    assert not out.exists() and not (tmp_path / "raw").exists(), "refused before any work"


def test_a_command_exits_when_the_workflow_process_that_started_it_dies(tmp_path):
    parent = subprocess.Popen(["sleep", "120"])
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom ugpcl import lifetime\nlifetime.install()\n"
         "try:\n    time.sleep(60)\nexcept lifetime.Terminated as e:\n    print(e)\n    raise SystemExit(143)"],
        env={**os.environ, ENV: token(parent.pid)}, stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert child.poll() is None, "it runs while the workflow process lives"
    parent.kill()  # not reaped yet: a zombie counts as gone
    out, _ = child.communicate(timeout=15)
    parent.wait()
    assert child.returncode == 143 and f"the workflow process {parent.pid} that started this job is gone" in out


def test_the_exit_with_variable_of_another_host_is_ignored():
    from ugpcl import lifetime

    assert lifetime.install({ENV: f"elsewhere:{os.getpid()}:x"}) is None
