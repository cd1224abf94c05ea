"""Several GPUs: each training job claims the least busy one (ugpcl.device.claim_least_busy_gpu).

The claims are lock files that the kernel releases when their process dies; these tests use real
processes (a holder that lives, one killed, one that ended) and no GPU: the choice only counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ugpcl import device as device_module
from ugpcl.device import claim_least_busy_gpu
from ugpcl.engine.trainer import training_device

HOLDER = """
import sys
from pathlib import Path
from ugpcl.device import claim_least_busy_gpu
print(claim_least_busy_gpu(int(sys.argv[1]), Path(sys.argv[2])), flush=True)
sys.stdin.read()  # hold the claim until told to end
"""


@pytest.fixture(autouse=True)
def own_claims(monkeypatch):
    """Each test starts with no claim of its own process (claims are per process, until it exits)."""
    monkeypatch.setattr(device_module, "_claims", [])
    yield
    for fd in device_module._claims:
        os.close(fd)


def holder(count: int, folder: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(count), str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def test_jobs_spread_over_the_gpus_then_share_them_evenly(tmp_path):
    assert [claim_least_busy_gpu(3, tmp_path) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert len(list(tmp_path.glob("gpu0-*.claim"))) == 3


def test_a_live_process_counts_and_a_dead_ones_claim_is_cleared(tmp_path):
    first, gpu = holder(2, tmp_path)
    second, gpu2 = holder(2, tmp_path)
    try:
        assert (gpu, gpu2) == (0, 1)
        assert claim_least_busy_gpu(2, tmp_path) == 0  # both busy once: the lowest index
        os.kill(first.pid, signal.SIGKILL)  # its claim on GPU 0 is released by the kernel
        first.wait()
        assert claim_least_busy_gpu(2, tmp_path) == 0  # GPU 0: ours only; GPU 1: the second holder
        assert not list(tmp_path.glob(f"gpu0-{first.pid}-*.claim")), "the dead process's claim was removed"
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
    ended, gpu = holder(2, tmp_path)
    ended.communicate("")  # ends normally, its claim file left behind unlocked
    assert gpu == 1 and claim_least_busy_gpu(2, tmp_path) == 1  # 2 of ours on GPU 0, none alive on GPU 1


def test_training_takes_the_least_busy_gpu_when_several_are_visible(tmp_path, monkeypatch):
    monkeypatch.setenv("UGPCL_GPU_CLAIMS", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    cfg = {"device": "auto", "allow_cpu": False}
    busy, _ = holder(2, tmp_path)
    try:
        device = training_device(cfg)
    finally:
        busy.kill()
        busy.wait()
    assert device == torch.device("cuda", 1) and chosen == [device]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU: nothing to choose, no claim
    assert training_device(cfg) == torch.device("cuda") and len(chosen) == 1
