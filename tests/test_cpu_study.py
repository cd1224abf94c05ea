"""tools/cpu_study.py: reports/cpu_acdc.md's tables are what its committed records say."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("cpu_study", ROOT / "tools" / "cpu_study.py")
cpu_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_study)


def test_the_reports_tables_are_computed_from_its_records():
    records = cpu_study.read_records()
    report = (ROOT / "reports" / "cpu_acdc.md").read_text()
    for line in cpu_study.variant_rows(records)[2:] + cpu_study.difference_rows(records)[2:]:
        assert line in report, f"reports/cpu_acdc.md lacks (run tools/cpu_study.py and paste): {line}"
    assert (ROOT / "reports" / "cpu_acdc" / "seeds.png").is_file()


def test_differences_pair_runs_by_seed(tmp_path):
    def run(variant, seed, best, last):
        folder = tmp_path / variant / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "summary_best.json").write_text(json.dumps({"dice": best}))
        (folder / "summary_last.json").write_text(json.dumps({"dice": last}))
        (folder / "run.json").write_text(json.dumps({"git_commit": "abc1234", "attempts": [{}], "device_name": "cpu",
                                                     "finished": "2026-12-06T00:00:00+00:00"}))

    run("acdc136_ugpcl", 1337, 0.60, 0.59)
    run("acdc136_ugpcl", 1, 0.62, 0.61)
    run("acdc136_supervised", 1, 0.57, 0.56)
    run("acdc136_supervised", 2, 0.50, 0.50)  # no UGPCL run with seed 2: not paired
    records = cpu_study.read_records(tmp_path)
    assert cpu_study.variant_rows(records)[2:] == ["| supervised | 1, 2 | 53.50 (50.00-57.00) | 53.00 |",
                                                   "| UGPCL (row 7) | 1337, 1 | 61.00 (60.00-62.00) | 60.00 |"]
    assert cpu_study.differences(records)[0][0] == "UGPCL - supervised"
    assert cpu_study.differences(records)[0][1] == {1: pytest.approx(5.0)}
    # a comparison that names its seeds pairs those only (runs of one seed on different processors)
    run("acdc136_cct", 1337, 0.50, 0.50)
    run("acdc136_cct", 1, 0.51, 0.51)
    run("acdc136_cct_main", 1337, 0.55, 0.55)
    run("acdc136_cct_main", 1, 0.58, 0.58)
    diffs = dict(cpu_study.differences(cpu_study.read_records(tmp_path)))
    assert diffs["CCT: main decoder only - mean over four"] == {1: pytest.approx(7.0)}
    assert diffs["CCT, main decoder only - supervised"] == {1: pytest.approx(1.0)}

    cpu_study.figure(records, tmp_path / "out" / "seeds.png")
    assert (tmp_path / "out" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    assert "abc1234" in cpu_study.provenance(records)

    shutil.copytree(tmp_path / "acdc136_ugpcl", tmp_path / "acdc136_mine")
    with pytest.raises(SystemExit, match="acdc136_mine"):
        cpu_study.read_records(tmp_path)


def test_pooled_dice_counts_overlap_over_the_whole_stack():
    truth = np.zeros((2, 4, 4), dtype=np.uint8)
    truth[0, :2] = 1          # class 1: 8 pixels, all on slice 0
    truth[1, :, :1] = 2       # class 2: 4 pixels on slice 1
    pred = truth.copy()
    assert cpu_study.pooled_dice(pred, truth, [1, 2]) == pytest.approx(100.0)
    pred[0, 0] = 0            # 4 of class 1's 8 pixels missed: 2 * 4 / (4 + 8)
    assert cpu_study.pooled_dice(pred, truth, [1, 2]) == pytest.approx(100 * (2 * 4 / 12 + 1) / 2)
    assert cpu_study.pooled_dice(pred, truth, [3]) == pytest.approx(100.0)  # absent from both
