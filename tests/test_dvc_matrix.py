"""DVC's stages from the one experiment matrix (ugpcl.dvcmatrix, workflow/dvc-matrix.yaml, dvc.yaml)."""

import subprocess
import sys
from pathlib import Path

import yaml

from ugpcl import dvcmatrix
from ugpcl.config import load_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_the_committed_matrix_is_that_of_params_yaml():
    assert dvcmatrix.read() == dvcmatrix.current(), "workflow/dvc-matrix.yaml is out of date: run `ugpcl dvc-matrix`"


def test_dvc_makes_one_training_stage_per_run_and_seed():
    result = subprocess.run([str(BIN / "dvc"), "stage", "list", "--name-only"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    stages = result.stdout.split()
    runs = dvcmatrix.read()[dvcmatrix.KEY]["runs"]
    assert stages == ["matrix", "data", *(f"train@{key}" for key in runs), "report"]
    assert len(runs) == 40 and runs["acdc136_ugpcl-seed1337"]["dir"] == "results/paper/runs/acdc136_ugpcl/seed1337"


def test_the_matrix_stage_tells_when_the_stages_themselves_changed(tmp_path):
    path = tmp_path / "matrix.yaml"
    cfg = load_config(profile="demo")
    assert dvcmatrix.write(dvcmatrix.build(cfg), path)            # no file yet
    tuned = load_config(profile="demo", overrides=["methods.ugpcl.temperature=0.1"])
    assert not dvcmatrix.write(dvcmatrix.build(tuned), path)      # digests only: the same stages
    assert dvcmatrix.read(path) == dvcmatrix.build(tuned)
    seeds = load_config(profile="demo", overrides=["experiments.seeds=[1337, 7]"])
    assert dvcmatrix.write(dvcmatrix.build(seeds), path)          # new stages: DVC must read the file again
    assert len(dvcmatrix.read(path)[dvcmatrix.KEY]["runs"]) == 80


def test_the_paired_tests_reference_rebuilds_the_report_and_retrains_nothing():
    """experiments.table1.paired_with is the report's alone: no run's digest changes (every train stage and
    Snakemake job stays), the report stage depends on `experiments` (DVC) and the report rule has it as a
    param (Snakemake's params trigger)."""
    cfg = load_config(profile="demo")
    other = load_config(profile="demo", overrides=["experiments.table1.paired_with=mt"])
    assert other["experiments"]["table1"]["paired_with"] == "mt"
    assert dvcmatrix.build(other) == dvcmatrix.build(cfg)
    assert "experiments" in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]["params"]
    rule = (REPO / "workflow" / "rules" / "report.smk").read_text().split("\nrule report:\n")[1].split("\nrule ")[0]
    assert 'paired_with=CFG["experiments"]["table1"]["paired_with"]' in rule.split("params:")[1].split("shell:")[0]
