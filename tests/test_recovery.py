"""Crashes a run recovers from: a real Snakemake training job killed after its best checkpoint,
and Snakemake itself killed, rerun to the same result as an uninterrupted run; Snakemake's
deletions simulated exactly on the trainer; partial log lines, stale temporary files, attempts."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_engine import INFO, tiny_cfg
from test_workflow import copy_checkout

from ugpcl.data.prepared import load_prepared
from ugpcl.engine import checkpoint
from ugpcl.engine.tracker import read_series
from ugpcl.engine.trainer import Trainer
from ugpcl.errors import UserError
from ugpcl.lifetime import alive

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_FILES = ast.literal_eval(re.search(r"RUN_FILES = (\{.*?\})", (REPO / "workflow" / "rules" / "common.smk")
                                       .read_text(), re.S)[1])
RUN = "acdc136_supervised"


def state_of(path: Path) -> dict:
    return checkpoint.read(path)["state"]


def untimed_rows(path: Path) -> list[dict]:
    """A JSON log's rows without their "time" (when it was written differs between two runs)."""
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()]


def dvclive_series(run_dir: Path) -> dict[str, list[tuple]]:
    """Every DVCLive series of a run as (step, value) rows, without the timestamps."""
    root = run_dir / "dvclive" / "plots" / "metrics"
    return {p.relative_to(root).as_posix(): [tuple(r.values())[1:] for r in read_series(p)]
            for p in sorted(root.rglob("*.tsv"))}


def assert_same_run(a: Path, b: Path, logs=True) -> None:
    """Two run directories hold the same trained run: checkpoints, logs, scores."""
    for name in ("best", "last"):
        sa, sb = state_of(a / RUN_FILES[name]), state_of(b / RUN_FILES[name])
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (name, key)
        assert checkpoint.read(a / RUN_FILES[name])["iteration"] == checkpoint.read(b / RUN_FILES[name])["iteration"]
    if logs:
        for name in ("log", "val"):
            assert untimed_rows(a / RUN_FILES[name]) == untimed_rows(b / RUN_FILES[name]), name
        assert dvclive_series(a) == dvclive_series(b) and dvclive_series(a)
    if (a / RUN_FILES["summary"]).exists():
        sa, sb = (json.loads((d / RUN_FILES["summary"]).read_text()) for d in (a, b))
        assert sa["dice"] == sb["dice"] and sa["iteration"] == sb["iteration"]


# --- the real thing: Snakemake ----------------------------------------------------------------------
def wait_for(condition, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def holder(run_dir: Path) -> int | None:
    """The PID in the run directory's lock record, once the trainer holds it."""
    try:
        return json.loads((run_dir / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def attempt_of(run_dir: Path, pid: int) -> bool:
    """Whether process `pid` has started its attempt (recorded in progress/attempts.json)."""
    try:
        current = json.loads((run_dir / "progress" / "attempts.json").read_text())["attempts"][-1]
    except (OSError, ValueError, KeyError, IndexError):
        return False
    return current["pid"] == pid and current["ended"] == "running"


# Long enough that a killed run cannot finish before it notices: the demo's one-block encoder
# trains 120 iterations in a few seconds, about the time a job takes to see Snakemake gone.
ITERATIONS = 360


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    repo = tmp_path_factory.mktemp("recovery") / "repo"
    copy_checkout(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["train"].update(iterations=ITERATIONS, val_every=10, checkpoint_every=20)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo / "src"),
           "OMP_NUM_THREADS": "1"}
    env.pop("UGPCL_EXIT_WITH", None)
    return repo, env


def snakemake(repo, env, *args, wait=True):
    cmd = [BIN / "snakemake", f"results/demo/runs/{RUN}/seed1337/run.json", "--profile", "workflow/profiles/demo",
           *args]
    proc = subprocess.Popen([str(c) for c in cmd], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if wait:
        out = proc.communicate(timeout=600)[0]
        return proc.returncode, out
    return proc


def test_snakemake_job_killed_after_its_best_checkpoint_and_snakemake_killed_rerun_to_the_same_result(study):
    repo, env = study
    run_dir = repo / "results" / "demo" / "runs" / RUN / "seed1337"

    # 1. the training job is killed (SIGKILL) after a resume point and its best checkpoint:
    #    Snakemake marks the job failed and deletes its outputs
    proc = snakemake(repo, env, wait=False)
    wait_for(lambda: (run_dir / "progress" / "resume.pt").exists(), 300, "the first resume point")
    os.kill(wait_for(lambda: holder(run_dir), 10, "the lock record"), signal.SIGKILL)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out
    assert not (run_dir / RUN_FILES["config"]).exists(), "Snakemake deleted the failed job's outputs"
    assert list((run_dir / "progress").glob("best-*.pt")) and (run_dir / "progress" / "resume.pt").exists()
    reached = len((run_dir / "progress" / "log.jsonl").read_text().splitlines())
    assert reached < ITERATIONS, "the job finished before it was killed: nothing was tested"

    # 2. an uninterrupted run of the same job, for comparison
    straight = repo / "straight"
    result = subprocess.run([str(BIN / "ugpcl"), "train", "--profile", "demo", "--run", RUN, "--seed", "1337",
                             "--out", str(straight), "--no-progress"], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr

    # 3. rerun; this time Snakemake itself is killed (SIGKILL) once the job is training: the job
    #    notices and stops within seconds instead of training on as an orphan
    proc = snakemake(repo, env, wait=False)
    trainer = wait_for(lambda: (pid := holder(run_dir)) and alive(pid) and pid, 300, "the rerun's trainer")
    wait_for(lambda: attempt_of(run_dir, trainer), 60, "the rerun's training loop")
    proc.kill()
    wait_for(lambda: not alive(trainer), 30, f"the orphaned trainer {trainer} to exit")

    proc.communicate(timeout=60)

    # 4. rerun after `--unlock`: finishes, with the uninterrupted run's result
    code, out = snakemake(repo, env, "--unlock")
    assert code == 0, out
    code, out = snakemake(repo, env)
    assert code == 0, out
    assert_same_run(run_dir, straight)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and not (run_dir / "progress").exists() and not (run_dir / ".lock").exists()
    assert [a["ended"] for a in record["attempts"]] == ["interrupted", "interrupted", "finished"]
    # the total is the attempts' sum rounded to 0.1 s (a float sum of 0.1-s figures is not exact)
    assert record["wall_time_s"] >= round(sum(a["seconds"] for a in record["attempts"][1:]), 1) > 0
    assert 0 < record["attempts"][1]["from"] <= record["attempts"][2]["from"] < ITERATIONS  # each rerun resumed
    assert all({"commit", "modified"} <= set(a) for a in record["attempts"])  # the code each attempt ran
    assert record["git_commit"] == record["attempts"][-1]["commit"]


# --- Snakemake's deletions, simulated on the trainer ------------------------------------------------
class Killed(BaseException):
    """Stands for SIGKILL in-process (raised past every `except Exception`)."""


def kill_at(monkeypatch, when: str, iteration: int):
    """Make the trainer die right after it saves `when` ('best' | 'resume') at `iteration`."""
    original = {"best": Trainer._save_best, "resume": Trainer._save_resume}[when]

    def dying(self, done):
        original(self, done)
        if done == iteration:
            raise Killed()

    monkeypatch.setattr(Trainer, {"best": "_save_best", "resume": "_save_resume"}[when], dying)


def snakemake_deletes(run_dir: Path) -> None:
    """What Snakemake does to a failed job, and again before rerunning it: delete its outputs."""
    for rel in RUN_FILES.values():
        (run_dir / rel).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def straight_run(tiny_acdc, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    assert Trainer(tiny_cfg(iterations=8, checkpoint_every=4, val_every=2), INFO, run_dir, data=tiny_acdc).fit(
        progress=False)
    return run_dir


def best_saves(run_dir: Path) -> list[int]:
    """The iterations after which the uninterrupted run saved a new best checkpoint."""
    best, saves = -1.0, []
    for line in (run_dir / "val.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["val_dice"] > best:
            best, saves = row["val_dice"], saves + [row["t"] + 1]
    return saves


@pytest.mark.parametrize("when", ["best", "resume"])
def test_killed_after_a_best_checkpoint_then_outputs_deleted_reruns_to_the_same_result(
        tiny_acdc, straight_run, tmp_path, monkeypatch, when):
    """Killed right after the last new best that follows the first resume point (at 4), or right
    after that resume point; which iterations improve depends on the training, so it is read off
    the uninterrupted run."""
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2)
    iteration = 4 if when == "resume" else max(best_saves(straight_run))
    with monkeypatch.context() as patch:
        kill_at(patch, when, iteration)
        with pytest.raises(Killed):
            Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    snakemake_deletes(tmp_path)
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert_same_run(tmp_path, straight_run)


def test_rerun_after_a_kill_during_the_evaluation_trains_nothing_again(tiny_acdc, straight_run, tmp_path):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2)
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)  # then killed before run.json
    snakemake_deletes(tmp_path)
    again = Trainer(cfg, INFO, tmp_path, data=tiny_acdc)
    assert again.fit(progress=False)
    assert again.attempts.current["from"] == 8 == again.attempts.current["reached"]
    assert_same_run(tmp_path, straight_run)


# --- logs, temporary files, attempts ----------------------------------------------------------------
@pytest.mark.parametrize("log, partial", [("log.jsonl", '{"t": 4, "lr": 0.00'),
                                          ("dvclive/plots/metrics/train/loss.tsv", "1795441193881\t4\t0.6")])
def test_a_partial_last_log_line_is_dropped_with_a_note(tiny_acdc, straight_run, tmp_path, capsys, log, partial):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2)
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    live = tmp_path / "progress" / log
    with open(live, "a") as f:
        f.write(partial)  # a disk that filled up mid-line, then the process died
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert "dropped a partial last line" in capsys.readouterr().err
    assert_same_run(tmp_path, straight_run)


def test_a_malformed_log_line_in_the_middle_is_an_error_naming_the_file_and_line(tiny_acdc, tmp_path):
    cfg = tiny_cfg(iterations=8)
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    live = tmp_path / "progress" / "log.jsonl"
    lines = live.read_text().splitlines()
    live.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(UserError, match=r"line 2 is not a log row") as err:
        Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert str(live) in str(err.value) and "--fresh" in str(err.value)


def test_temporary_files_of_interrupted_writes_are_removed_at_the_next_start(tiny_acdc, tmp_path, capsys):
    cfg = tiny_cfg(iterations=8)
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    stale = [tmp_path / "progress" / ".resume.pt.k3j_9x0a.pt", tmp_path / "checkpoints" / ".last.pt.abcdefgh.pt",
             tmp_path / ".config.yaml.q1w2e3r4.tmp", tmp_path / "eval" / ".summary.json.zz99yy88.tmp"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a checkpoint")
    mine = tmp_path / "notes.txt"
    mine.write_text("the user's")
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert not any(p.exists() for p in stale) and mine.read_text() == "the user's"
    assert "removed 4 temporary file(s)" in capsys.readouterr().err


def test_wall_time_counts_an_interrupted_attempt(tiny_acdc, tmp_path, monkeypatch):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4)
    with monkeypatch.context() as patch:
        kill_at(patch, "resume", 4)
        with pytest.raises(Killed):
            Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    # a SIGKILL leaves the attempt "running" (its finally never ran)
    record = json.loads((tmp_path / "progress" / "attempts.json").read_text())
    record["attempts"][0].update(ended="running", seconds=100.0)
    (tmp_path / "progress" / "attempts.json").write_text(json.dumps(record))
    trainer = Trainer(cfg, INFO, tmp_path, data=tiny_acdc)
    assert trainer.fit(progress=False)
    facts = trainer.facts()
    assert [a["ended"] for a in facts["attempts"]] == ["interrupted", "finished"]
    assert facts["wall_time_s"] >= 100.0 > facts["train_time_s"]
    assert [a["threads"] for a in facts["attempts"]] == [torch.get_num_threads()] * 2  # CPU results depend on it


def test_an_attempt_killed_soon_after_a_resume_point_is_counted_up_to_it(tiny_acdc, tmp_path, monkeypatch, capsys):
    """SIGKILL in iteration 5, well within the heartbeat's 30 s: attempts.json stays as the kill left
    it (no `finally` runs), and must already record the resume point at 4 and its seconds."""
    cfg = tiny_cfg(iterations=8, checkpoint_every=4)
    record = tmp_path / "progress" / "attempts.json"
    left, original = {}, Trainer.next_batch

    def killed_in_iteration_5(self):
        if not left and self.attempts.current["reached"] == 4:
            left["attempts"] = record.read_text()
            raise Killed()
        return original(self)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "next_batch", killed_in_iteration_5)
        with pytest.raises(Killed):
            Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    record.write_text(left["attempts"])
    killed = json.loads(left["attempts"])["attempts"][0]
    assert killed["ended"] == "running" and killed["reached"] == 4 and killed["seconds"] > 0
    trainer = Trainer(cfg, INFO, tmp_path, data=tiny_acdc)
    assert trainer.fit(progress=False)
    assert "interrupted near iteration 4" in capsys.readouterr().err
    facts = trainer.facts()
    assert [a["ended"] for a in facts["attempts"]] == ["interrupted", "finished"]
    assert facts["wall_time_s"] >= facts["train_time_s"]


def test_ctrl_c_says_where_training_stopped_and_the_rerun_where_it_resumes(tiny_acdc, tmp_path, monkeypatch, capsys):
    from ugpcl import cli
    from ugpcl.errors import Interrupted

    cfg = tiny_cfg(iterations=8, checkpoint_every=4)
    for at, says in [(2, "interrupted at iteration 2, before the first resume point (every train.checkpoint_every "
                         "= 4 iterations); run the same command again to start over"),
                     (6, "interrupted at iteration 6; run the same command again to resume (from iteration 4, "
                         "the latest resume point)")]:
        calls, original = [], Trainer.next_batch

        def ctrl_c(self):
            calls.append(1)
            if len(calls) == at + 1:
                raise KeyboardInterrupt
            return original(self)

        with monkeypatch.context() as patch:
            patch.setattr(Trainer, "next_batch", ctrl_c)
            with pytest.raises(Interrupted) as err:
                Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
        assert str(err.value) == says
    capsys.readouterr()
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert [line for line in capsys.readouterr().err.splitlines() if "resum" in line] == [
        "resuming from iteration 4 of 8"]



def test_ctrl_c_in_ugpcl_train_prints_that_one_line(tiny_acdc, tmp_path):
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "ugpcl.cli", "train", "--profile", "demo", "--method", "supervised", "--dataset",
             "acdc", "--regime", "tiny", "--data", str(tiny_acdc), "--out", str(run_dir), "--no-progress",
             "--set", "train.iterations=100000", "--set", "train.checkpoint_every=5", "--set", "train.val_every=5"]
    # SIGINT as a terminal delivers it: a shell starts background jobs (`make test &`) with SIGINT
    # ignored, which children inherit and Python then leaves ignored; a terminal's job has the default
    proc = subprocess.Popen(train, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: (run_dir / "progress" / "resume.pt").exists(), 120, "the first resume point")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert re.fullmatch(r"interrupted at iteration \d+; run the same command again to resume \(from iteration "
                        r"\d+, the latest resume point\)", err.splitlines()[-1])


def test_a_failure_before_the_first_resume_point_leaves_no_run_directory(tiny_acdc, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "new" / "seed1"
    with monkeypatch.context() as patch:
        kill_at(patch, "best", 4)
        with pytest.raises(Killed):
            Trainer(tiny_cfg(iterations=8), INFO, run_dir, data=tiny_acdc).fit(progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_resume_leaves_the_run_directory_as_it_was(tiny_acdc, tmp_path):
    Trainer(tiny_cfg(iterations=8), INFO, tmp_path, data=tiny_acdc).fit(stop_after=2, progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="different configuration"):
        Trainer(tiny_cfg(iterations=9), INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # config.yaml included


def test_prepare_deletes_what_a_killed_extraction_and_write_left_and_nothing_else(isic_dir, tmp_path, capsys):
    from data_helpers import mini_isic, zip_folder
    from test_data_errors import _official_isic

    from ugpcl.data import stage
    from ugpcl.data.layout import ISIC_GT_FOLDER, ISIC_INPUT_FOLDER

    folder = mini_isic(isic_dir, tmp_path / "isic", 6)
    zips = [zip_folder(folder / name, tmp_path / f"{name}.zip") for name in (ISIC_INPUT_FOLDER, ISIC_GT_FOLDER)]
    raw_isic, cfg = _official_isic(tmp_path, *zips)
    out = tmp_path / "data" / "isic.h5"
    half_extracted = raw_isic / f".{ISIC_GT_FOLDER}.k2j4h5g6"
    (half_extracted / "sub").mkdir(parents=True)
    (half_extracted / "sub" / "ISIC_0000000_segmentation.png").write_bytes(b"half")
    out.parent.mkdir()
    stale = [half_extracted, out.parent / ".isic.h5.abcd_fgh.h5", out.parent / ".isic_split.csv.12345678.tmp"]
    for path in stale[1:]:
        path.write_bytes(b"half a file")
    another_writers = out.parent / ".acdc.h5.abcdefgh.h5"  # the ACDC job's, perhaps running now
    another_writers.write_bytes(b"in progress")
    stage.prepare(cfg, "isic", out)
    assert not any(p.exists() for p in stale) and another_writers.exists()
    assert len(load_prepared(out).train) == 4 and "removed 2 temporary file(s)" in capsys.readouterr().err
