"""The experiment matrix of the paper profile, and the Snakemake DAG that trains it."""

import json
import re
import subprocess
import sys
from pathlib import Path

from ugpcl.cli import main
from ugpcl.config import load_config
from ugpcl.study import dataset_settings, distinct_runs, run_settings, settings_digest

REPO = Path(__file__).resolve().parents[1]
METHODS = ["supervised", "mt", "uamt", "em", "dct", "cct", "cps", "ugpcl"]
TABLE1_IDS = [f"{d}{n}_{m}" for d, n in (("acdc", 68), ("acdc", 136), ("isic", 91), ("isic", 181)) for m in METHODS]
TABLE2_EXTRA = [  # rows 2-6; row 1 is Table 1's supervised run and row 7 its UGPCL run
    "acdc136_ugpcl_contrast-none_noeqv",   # l_con only
    "acdc136_ugpcl_nocon_contrast-none",   # l_e only
    "acdc136_ugpcl_contrast-none",         # l_con + l_e
    "acdc136_ugpcl_contrast-sup",
    "acdc136_ugpcl_contrast-pseudo",
]
TABLE3_EXTRA = ["acdc136_ugpcl_embed-conv1", "acdc136_ugpcl_embed-conv3", "acdc136_ugpcl_embed-conv4"]


def test_paper_profile_trains_each_distinct_run_once():
    runs = distinct_runs(load_config(profile="paper"))
    assert [r.id for r in runs] == TABLE1_IDS + TABLE2_EXTRA + TABLE3_EXTRA
    tables = {r.id: r.tables for r in runs}
    assert tables["acdc136_ugpcl"] == ["table1", "table2:7", "table3:conv2"]
    assert tables["acdc136_supervised"] == ["table1", "table2:1"]
    assert sum("table1" in t for t in tables.values()) == 32
    table2 = sorted(tag for t in tables.values() for tag in t if tag.startswith("table2"))
    assert table2 == [f"table2:{i}" for i in range(1, 8)]


def test_runs_command_lists_runs_and_tables(capsys):
    assert main(["runs", "--profile", "paper", "--format", "json"]) == 0
    listed = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(listed) == TABLE1_IDS + TABLE2_EXTRA + TABLE3_EXTRA
    assert listed["acdc136_ugpcl"]["tables"] == ["table1", "table2:7", "table3:conv2"]
    assert main(["runs", "--profile", "paper"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"acdc136_ugpcl\s+\d+/1\s+table1, table2:7, table3:conv2", table)


def test_dry_run_schedules_exactly_those_training_jobs():
    # the README command, as a forced dry run so that existing results do not hide jobs
    out = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "all", "--cores", "1", "--resources", "gpu=1",
         "--dry-run", "--forceall", "--nolock"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    text = out.stdout + out.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], flags=re.M))
    assert counts["train"] == "40" and counts["prepare"] == "2"
    assert counts["figures"] == counts["report"] == counts["all"] == "1"
    jobs = re.findall(r"^rule train:\n(?:    .*\n)*?    wildcards: run=([^,\s]+), seed=(\d+)", text, flags=re.M)
    assert sorted(jobs) == sorted((run_id, "1337") for run_id in TABLE1_IDS + TABLE2_EXTRA + TABLE3_EXTRA)



def test_the_slurm_profile_submits_each_training_job_with_a_gpu_and_the_paper_settings():
    # the README's cluster command, dry: what each sbatch job would ask for and run
    target = "results/paper/runs/acdc136_ugpcl/seed1337/run.json"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), target, "--profile", "workflow/profiles/slurm",
         "--dry-run", "--forceall", "--nolock"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    text = out.stdout + out.stderr
    train = text[text.index("rule train:"):]
    resources = dict(kv.split("=", 1) for kv in re.search(r"resources: (.*)", train).group(1).split(", "))
    assert resources["gpu"] == "1" and resources["runtime"] == "720" and resources["mem_mb"] == "64000"
    assert "ugpcl train --profile paper --run acdc136_ugpcl --seed 1337" in train
    # the profile's 8 threads (a dry run without the profile's `cores:` shows 1: Snakemake 9 takes 1 core there)
    assert "OMP_NUM_THREADS=8 ugpcl train" in train and re.search(r"threads: 8\n", train), train[:1500]
    # (`executor: slurm` is checked too: without snakemake-executor-plugin-slurm the arguments are refused)

def digests(cfg) -> dict:
    return {(run.id, seed): settings_digest(run_settings(cfg, run, seed))
            for run in distinct_runs(cfg) for seed in cfg["experiments"]["seeds"]}


def changed_runs(*overrides) -> set[str]:
    before, after = digests(load_config(profile="demo")), digests(load_config(profile="demo", overrides=overrides))
    assert before.keys() == after.keys()
    return {run_id for (run_id, _), value in before.items() if after[(run_id, _)] != value}


def test_a_runs_rerun_trigger_covers_what_it_trains_with_and_nothing_else():
    ids = {run.id: run for run in distinct_runs(load_config(profile="demo"))}
    ugpcl = {i for i, run in ids.items() if run.method == "ugpcl"}
    assert len(ugpcl) == 12 and changed_runs("methods.ugpcl.temperature=0.1") == ugpcl
    assert changed_runs("methods.cps.consistency=0.2") == {"acdc68_cps", "acdc136_cps", "isic91_cps", "isic181_cps"}
    assert changed_runs("data.isic.split_seed=7") == {i for i in ids if i.startswith("isic")}
    assert changed_runs("data.demo.isic_images=30") == {i for i in ids if i.startswith("isic")}
    assert changed_runs("data.demo.acdc_slices=5") == {i for i in ids if i.startswith("acdc")}
    for shared in ("train.lr=0.02", "model.width=8", "evaluation.checkpoint=last", "data.image_size=96"):
        assert changed_runs(shared) == set(ids), shared
    assert changed_runs("experiments.table1.methods=[supervised, mt, uamt, em, dct, cct, cps, ugpcl]") == set()


def test_a_datasets_rerun_trigger_covers_its_own_settings():
    cfg = load_config(profile="demo")
    before = {d: settings_digest(dataset_settings(cfg, d)) for d in ("acdc", "isic")}
    other = load_config(profile="demo", overrides=["data.demo.isic_size=96"])
    assert {d for d in before if settings_digest(dataset_settings(other, d)) != before[d]} == {"isic"}
