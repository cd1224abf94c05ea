"""Workflow jobs in forks of one server (ugpcl.forkserver): the command's output, exit status and
signals are as if it ran in the job's own process; a job killed outright stops its command; the
server ends with the workflow."""

import json
import os
import signal
import subprocess
import sys
import traceback

import pytest
from test_locks import wait_for

from ugpcl import forkserver
from ugpcl.lifetime import ENV, alive, token

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux's")

PY = [sys.executable, "-m", "ugpcl.cli"]


@pytest.fixture
def workflow():
    """A stand-in for the Snakemake process, and the environment its jobs get."""
    parent = subprocess.Popen(["sleep", "300"])
    env = {**os.environ, ENV: token(parent.pid), forkserver.ENV: "1", "OMP_NUM_THREADS": "1"}
    yield parent, env
    parent.kill()
    parent.wait()


def server_up(env) -> bool:
    sock = forkserver._connect(forkserver.server_name(env))
    if sock is None:
        return False
    sock.close()
    return True


def holder(run_dir):
    try:
        return json.loads((run_dir / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def parent_of(pid: int) -> int:
    stat = open(f"/proc/{pid}/stat").read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_commands_give_the_same_output_and_status_as_in_their_own_process(workflow, tmp_path):
    parent, env = workflow
    own = {k: v for k, v in env.items() if k != forkserver.ENV}
    expected = subprocess.run([*PY, "choices", "--profile", "demo"], env=own, capture_output=True, text=True, timeout=120)
    assert not server_up(env)
    for _ in range(2):  # the first starts the server, the second finds it
        served = subprocess.run([*PY, "choices", "--profile", "demo"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert (served.returncode, served.stdout, served.stderr) == (0, expected.stdout, expected.stderr)
        assert server_up(env)
    failed = subprocess.run([*PY, "train", "--profile", "demo", "--run", "nosuch"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode == 2 and "no run 'nosuch' in the experiment matrix" in failed.stderr
    assert "Traceback" not in failed.stderr

    parent.kill()  # the workflow ends: so does its server
    wait_for(lambda: not server_up(env), 15)


def test_signals_reach_the_forked_command_and_a_killed_job_stops_it(workflow, tiny_acdc, tmp_path):
    _, env = workflow
    runs = []
    for name in ("term", "kill"):
        run_dir = tmp_path / name
        job = subprocess.Popen(
            [*PY, "train", "--profile", "demo", "--method", "supervised", "--dataset", "acdc", "--regime", "tiny",
             "--data", str(tiny_acdc), "--out", str(run_dir), "--no-progress", "--set", "train.iterations=100000",
             "--set", "train.checkpoint_every=5", "--set", "train.val_every=5"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        command = wait_for(lambda: holder(run_dir), 120)
        wait_for(lambda: (run_dir / "progress" / "resume.pt").exists(), 120)
        assert command != job.pid and alive(command), "the command runs in a fork of the server, not in the job"
        assert parent_of(command) != job.pid
        runs.append((job, command, run_dir))

    job, command, run_dir = runs[0]
    job.send_signal(signal.SIGTERM)  # what Snakemake sends a job it stops
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM and "stopped: terminated by SIGTERM" in err
    assert not alive(command) and not (run_dir / ".lock").exists()
    attempts = json.loads((run_dir / "progress" / "attempts.json").read_text())["attempts"]
    assert [a["ended"] for a in attempts] == ["interrupted"]

    job, command, run_dir = runs[1]
    job.kill()  # SIGKILL: nothing to relay; the command notices its job is gone
    job.wait()
    wait_for(lambda: not alive(command), 15)
    wait_for(lambda: not (run_dir / ".lock").exists(), 15)


def test_a_crash_is_printed_after_what_the_command_printed(tmp_path, monkeypatch):
    """A job's log holds stdout and stderr (`> log 2>&1`): in a fork, whose stdout into a file is
    block-buffered, a traceback came before the command's own `training ... ->` line."""
    log = tmp_path / "job.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT)
    monkeypatch.setattr(sys, "stdout", open(fd, "w", closefd=False, buffering=-1))   # as the fork opens them
    monkeypatch.setattr(sys, "stderr", open(fd, "w", closefd=False, buffering=1))
    print("training acdc136_pseudo seed 1337 on cpu -> results/demo/runs/acdc136_pseudo/seed1337")
    try:
        raise RuntimeError("a slip in a method")
    except RuntimeError:
        forkserver.print_after_stdout(traceback.format_exc().rstrip("\n"))
    sys.stdout.flush()
    os.close(fd)
    text = log.read_text()
    assert text.startswith("training acdc136_pseudo") and text.index("training") < text.index("Traceback")
    assert text.rstrip().endswith("RuntimeError: a slip in a method")
