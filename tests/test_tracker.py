"""Live progress and DVCLive: the files are DVCLive's own format (compared with what `dvclive.Live`
writes), cut back on resume like the JSON logs, published with the run; the progress line that
training under Snakemake prints."""

import json
import os
import re
import subprocess
import sys

import pytest
from test_engine import INFO, tiny_cfg

from ugpcl.engine.progress import duration, progress_line
from ugpcl.engine.tracker import Tracker, read_series, series_path
from ugpcl.engine.trainer import Trainer

SERIES = {"train/loss": [0.9, 0.5, 0.25], "train/lr": [0.01, 0.005, 0.0025], "val/dice": [0.1, 0.4, 0.7]}


def untimed(folder) -> dict:
    """Each series file without its timestamp column, and the summary."""
    files = {}
    for path in sorted((folder / "plots" / "metrics").rglob("*.tsv")):
        lines = path.read_text().splitlines()
        files[path.relative_to(folder).as_posix()] = [line.split("\t", 1)[1] for line in lines]
    return {"files": files, "summary": json.loads((folder / "metrics.json").read_text())}


def test_files_are_what_dvclive_writes(tmp_path):
    """The same series through dvclive.Live (in a folder outside any repository, no experiment, no
    dvc.yaml) and through Tracker: same files, same rows, same summary; timestamps in ms."""
    script = (
        "import json, sys\nfrom dvclive import Live\n"
        "series = json.loads(sys.argv[1])\n"
        "with Live('live', save_dvc_exp=False, dvcyaml=None) as live:\n"
        "    for i, step in enumerate((0, 2, 5)):\n"
        "        live.step = step\n"
        "        for name, values in series.items():\n"
        "            live.log_metric(name, values[i], timestamp=True)\n"
        "        live.make_summary()\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, json.dumps(SERIES)], cwd=tmp_path, env=env, check=True,
                   capture_output=True, timeout=120)
    tracker = Tracker(tmp_path / "ours", 0)
    for i, step in enumerate((0, 2, 5)):
        tracker.log(step, 1_700_000_000.5 + i, {name: values[i] for name, values in SERIES.items()})
    tracker.flush()
    tracker.close()
    assert untimed(tmp_path / "ours") == untimed(tmp_path / "live")
    assert untimed(tmp_path / "ours")["summary"] == {"train": {"loss": 0.25, "lr": 0.0025}, "val": {"dice": 0.7},
                                                    "step": 5}
    rows = read_series(series_path(tmp_path / "ours", "train/loss"))
    assert [r["timestamp"] for r in rows] == [1_700_000_000_500, 1_700_000_001_500, 1_700_000_002_500]
    theirs = read_series(series_path(tmp_path / "live", "train/loss"))
    assert all(abs(r["timestamp"] / 1000 - rows[0]["timestamp"] / 1000) < 10 * 365 * 86400 for r in theirs)


def test_resume_keeps_earlier_steps_drops_a_partial_line_and_rebuilds_the_summary(tmp_path, capsys):
    tracker = Tracker(tmp_path, 0)
    for step in range(6):
        tracker.log(step, 1e9 + step, {"train/loss": 1.0 / (step + 1), **({"val/dice": step / 10} if step % 2 else {})})
    tracker.flush()
    tracker.close()
    with open(series_path(tmp_path, "train/loss"), "a") as f:
        f.write("1000000006000\t6\t0.1")  # a kill mid-row
    resumed = Tracker(tmp_path, 4)
    resumed.close()
    assert "dropped a partial last line" in capsys.readouterr().err
    assert [r["step"] for r in read_series(series_path(tmp_path, "train/loss"))] == [0, 1, 2, 3]
    assert [r["step"] for r in read_series(series_path(tmp_path, "val/dice"))] == [1, 3]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"train": {"loss": 0.25}, "val": {"dice": 0.3},
                                                                   "step": 3}
    Tracker(tmp_path, 0).close()  # a fresh start: nothing kept
    assert not list(tmp_path.rglob("*.tsv")) and not (tmp_path / "metrics.json").exists()


def test_a_malformed_row_in_the_middle_is_an_error_naming_the_file(tmp_path):
    tracker = Tracker(tmp_path, 0)
    for step in range(3):
        tracker.log(step, 1e9, {"train/loss": 1.0})
    tracker.close()
    path = series_path(tmp_path, "train/loss")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], "garbage", *lines[2:]]) + "\n")
    with pytest.raises(Exception, match="line 3 is not a log row") as err:
        Tracker(tmp_path, 2)
    assert str(path) in str(err.value)


def test_training_writes_dvclive_files_and_progress_lines(tiny_acdc, tmp_path, capsys):
    cfg = tiny_cfg(iterations=8, checkpoint_every=4, val_every=2, log_every=2)
    assert not Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(stop_after=4, progress=False)
    live = tmp_path / "progress" / "dvclive"
    assert [r["step"] for r in read_series(series_path(live, "train/loss"))] == [0, 1, 2, 3]
    assert Trainer(cfg, INFO, tmp_path, data=tiny_acdc).fit(progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " it " in line]
    assert len(lines) == 2 + 2  # every log_every iterations, of both attempts (the second from iteration 4)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.match(rf"{stamp} tiny_ugpcl s1337 it 2/8 \(25%\) \| loss \d\.\d{{4}} sup ", lines[0]), lines[0]
    assert "| val Dice " in lines[1] and "% @4 |" in lines[1] and " it/s | ETA " in lines[1], lines[1]
    published = tmp_path / "dvclive"
    loss = read_series(series_path(published, "train/loss"))
    assert [r["step"] for r in loss] == list(range(8))
    assert [r["step"] for r in read_series(series_path(published, "val/dice"))] == [1, 3, 5, 7]
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged] == [r["loss"] for r in loss]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", r["time"]) for r in logged)
    summary = json.loads((published / "metrics.json").read_text())
    assert summary["step"] == 7 and {"loss", "lr", "sup"} <= summary["train"].keys()


def test_progress_line():
    row = {"t": 199, "lr": 0.0097, "loss": 0.43121, "sup": 0.3, "con": 0.012}
    line = progress_line("acdc136_ugpcl s1", row, 6000, (149, 0.712), 100, 1000.0, 1025.0)
    assert line.endswith("it 200/6000 (3%) | loss 0.4312 sup 0.3 con 0.012 | lr 9.70e-03 | val Dice 71.20% @150 "
                         "| 4 it/s | ETA 0:24:10")
    assert "val Dice" not in progress_line("r", row, 6000, None, 0, 1000.0, 1025.0)
    assert duration(90061) == "25:01:01"
