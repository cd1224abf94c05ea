"""The demo profile end to end, in a copy of the repository: `snakemake all` builds every table,
figure and the HTML report; `dvc repro` then has nothing to do, and after a change to the report
code only it re-renders the report and retrains nothing. And the README's own-data example, on
real ISIC images written as its folder expects them: `snakemake all` trains two methods on it
and the report shows its table.

Slow (the whole study at demo scale): kept in this one module, marked `workflow`, meant to run last.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from data_helpers import isic_pngs, readme_example

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 1800


def run(args, cwd, env, timeout=TIMEOUT):
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failure(result, repo: Path) -> str:
    logs = "".join(f"\n--- {p}\n{p.read_text()[-1500:]}" for p in sorted((repo / "results").rglob("*.log"))[-3:])
    return f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}{logs}"


def copy_checkout(dest: Path) -> None:
    """The files git would commit (tracked, plus untracked ones not ignored): no results, no venv."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    ugpcl = BIN / "ugpcl"
    if not ugpcl.exists() or run([ugpcl, "train", "--help"], REPO, os.environ, 300).returncode != 0:
        pytest.skip("`ugpcl train` is not available yet (`ugpcl train --help` fails)")
    repo = tmp_path_factory.mktemp("workflow") / "repo"
    copy_checkout(repo)
    # DVC follows `profile:` of params.yaml; Snakemake gets it from workflow/profiles/demo
    params = repo / "params.yaml"
    text, n = re.subn(r"^profile: \w+$", "profile: demo", params.read_text(), count=1, flags=re.M)
    assert n == 1, "params.yaml has no top-level `profile:` line"
    # half the demo's 120 iterations: what is checked here is the DAG and its outputs, not how well the
    # phantoms are learnt (the README's figures are `make demo`'s); validations, the resume point and the
    # ramps' starts (every 20, at 60, from 20) all still fall inside the run
    start = text.index("\n  demo:")
    assert "\n      iterations: 120\n" in text[start:], "params.yaml's demo profile sets no `train.iterations: 120`"
    params.write_text(text[:start] + text[start:].replace("\n      iterations: 120\n", "\n      iterations: 60\n", 1))
    # the copy's own code, and the venv's snakemake/dvc/ugpcl on PATH as after `source .venv/bin/activate`
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo / "src")}
    result = run([ugpcl, "dvc-matrix"], repo, env, 300)   # DVC's stages of the demo's matrix
    assert result.returncode == 0, failure(result, repo)
    result = run([BIN / "snakemake", "all", "--profile", "workflow/profiles/demo"], repo, env)
    assert result.returncode == 0, failure(result, repo)
    said = [line for line in result.stderr.splitlines() if line.startswith("The report: ")]
    assert said == ["The report: reports/demo/report.html (open it in a browser)"], result.stderr[-2000:]
    return repo, env


def test_demo_workflow_builds_every_table_figure_and_the_report(demo):
    repo, _ = demo
    reports = repo / "reports" / "demo"
    for table, cells in (("table1", 32), ("table2", 7), ("table3", 4)):
        assert "SYNTHETIC DATA" in (reports / f"{table}.md").read_text()
        assert len((reports / f"{table}.csv").read_text().splitlines()) == 1 + cells
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["compared"] == 32 + 7 + 4 and metrics["missing"] == 0
    rows = [json.loads(p.read_text()) for p in (reports / "metrics").rglob("*.json")]  # a file per table row
    dice = [v for row in rows for v in row.values()]
    assert len(rows) == 8 + 7 + 4 and len(dice) == 32 + 7 + 4
    assert all(isinstance(v, float) and 0 <= v <= 100 for v in dice)

    run_dirs = list((repo / "results" / "demo" / "runs").glob("*/seed1337"))
    assert len(run_dirs) == 40
    for run_dir in run_dirs:  # DVCLive's files of every run, and the progress lines in its job's log
        assert (run_dir / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").is_file(), run_dir
        assert (run_dir / "dvclive" / "plots" / "metrics" / "val" / "dice.tsv").is_file(), run_dir
        log = (repo / "results" / "demo" / "logs" / "train" / run_dir.parent.name / "seed1337.log").read_text()
        assert re.search(r"Z \S+ s1337 it \d+/\d+ .*\| val Dice .* ETA ", log), log
    figures = reports / "figures"
    for name in ["figure3", "figure4", "bars_table1", "bars_table2", "bars_table3", "curves", "loss_terms"]:
        assert (figures / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    for name in ("train_loss", "val_dice", "loss_terms"):
        assert len((reports / "curves" / f"{name}.tsv").read_text().splitlines()) > 40

    page = (reports / "report.html").read_text()
    assert "SYNTHETIC DATA" in page and "Synthetic demo data" in page.split('id="verdict"')[1]
    for ident in ("table1", "table2", "table3", "runs", "choices", "paired", "per-class-acdc-136"):
        assert f'id="{ident}"' in page
    assert page.count('src="data:image/png;base64,') == 7
    assert "missing" not in page.split('id="runs"')[1].split("</table>")[0]  # every run finished


def test_dvc_metrics_and_plots_show_the_report(demo):
    """`dvc metrics show`: a short row per table row; `dvc plots show`: the training curves and loss terms
    from data."""
    repo, env = demo
    result = run([BIN / "dvc", "config", "--local", "core.no_scm", "true"], repo, env)
    assert result.returncode == 0, failure(result, repo)
    shown = run([BIN / "dvc", "metrics", "show"], repo, env)
    lines = shown.stdout.splitlines()
    assert shown.returncode == 0 and len(lines) == 1 + 1 + 8 + 7 + 4, shown.stdout + shown.stderr
    assert max(map(len, lines)) < 160 and "reports/demo/metrics/table1/ugpcl.json" in shown.stdout
    plots = run([BIN / "dvc", "plots", "show", "--json"], repo, env)
    assert plots.returncode == 0, plots.stderr
    data = json.loads(plots.stdout)["data"]
    for plot, field in (("training_loss", "loss"), ("validation_dice", "dice")):
        (spec,) = data[plot]
        values = spec["content"]["data"]["values"]
        assert spec["type"] == "vega" and len({(v["setting"], v["run"]) for v in values}) >= 40
        assert all(field in v for v in values)
    (spec,) = data["loss_terms"]   # a panel per Table 1 run, a line per term
    values = spec["content"]["data"]["values"]
    assert spec["type"] == "vega" and len({(v["setting"], v["run"]) for v in values}) == 32
    assert {"loss", "sup", "weight×unsup", "weight×con", "contrast"} <= {v["term"] for v in values}


def set_method_param(repo: Path, method: str, key: str, value) -> str:
    """Set methods.<method>.<key> in the demo profile of the copy's params.yaml; returns the old text."""
    path = repo / "params.yaml"
    text = path.read_text()
    params = yaml.safe_load(text)
    params["profiles"]["demo"].setdefault("methods", {}).setdefault(method, {})[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return text


def run_ids(repo: Path, method: str) -> set[str]:
    """The ids of a method's runs (<dataset><regime>_<method>[_<variant>]) in the demo's results."""
    runs = (repo / "results" / "demo" / "runs").glob("*/seed1337")
    return {p.parent.name for p in runs if p.parent.name.split("_")[1] == method}


def test_snakemake_plans_only_the_runs_of_a_changed_method(demo):
    """A run's rerun trigger covers what it trains with: one method's parameter, that method's runs."""
    repo, env = demo
    original = set_method_param(repo, "ugpcl", "temperature", 0.2)
    try:
        result = run([BIN / "snakemake", "-n", "all", "--profile", "workflow/profiles/demo"], repo, env, 600)
    finally:
        (repo / "params.yaml").write_text(original)
    assert result.returncode == 0, failure(result, repo)
    text = result.stdout + result.stderr
    planned = set(re.findall(r"^rule train:\n(?:    .*\n)*?    wildcards: run=([^,\s]+), seed=1337", text, flags=re.M))
    assert len(run_ids(repo, "ugpcl")) == 12 and planned == run_ids(repo, "ugpcl"), text[-3000:]
    assert "rule prepare:" not in text
    unchanged = run([BIN / "snakemake", "-n", "all", "--profile", "workflow/profiles/demo"], repo, env, 600)
    assert "Nothing to be done" in unchanged.stdout + unchanged.stderr, unchanged.stdout[-3000:]


def test_dvc_repro_retrains_nothing_after_a_report_code_change(demo):
    repo, env = demo

    def dvc(*args):
        result = run([BIN / "dvc", *args], repo, env)
        assert result.returncode == 0, failure(result, repo)
        return result.stdout + result.stderr

    checkpoints = sorted((repo / "results" / "demo" / "runs").rglob("*.pt"))
    report = repo / "reports" / "demo" / "report.html"
    dvc("config", "--local", "core.no_scm", "true")   # the copy is no git repository
    dvc("commit", "--force")                          # record what Snakemake built as the pipeline's state
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    report_before = report.stat().st_mtime_ns

    out = dvc("repro")
    assert "Running stage" not in out, out
    assert report.stat().st_mtime_ns == report_before

    html_code = repo / "src" / "ugpcl" / "report" / "html.py"
    html_code.write_text(html_code.read_text() + "\n# a report-only change\n")
    out = dvc("repro")
    assert "Running stage 'report'" in out, out
    assert "Running stage 'train@" not in out and "Running stage 'data'" not in out, out
    assert report.stat().st_mtime_ns > report_before
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before   # nothing retrained
    assert "Data and pipelines are up to date" in dvc("status")

    # one method's parameter: DVC retrains that method's runs (one stage per run) and nothing else
    set_method_param(repo, "cps", "consistency", 0.2)
    out = dvc("repro")
    cps = run_ids(repo, "cps")
    assert len(cps) == 4
    assert set(re.findall(r"Running stage 'train@([^']+)-seed1337'", out)) == cps, out
    assert "Running stage 'data'" not in out and "Running stage 'report'" in out, out
    after = {p: p.stat().st_mtime_ns for p in checkpoints}
    assert {p for p in checkpoints if after[p] != before[p]} == {p for p in checkpoints if p.parts[-4] in cps}
    config = yaml.safe_load((repo / "results" / "demo" / "runs" / "acdc68_cps" / "seed1337" / "config.yaml").read_text())
    assert config["methods"]["cps"]["consistency"] == 0.2
    assert "Data and pipelines are up to date" in dvc("status")


@pytest.fixture(scope="module")
def own_data(tmp_path_factory, isic_dir):
    """A copy of the repository whose params.yaml holds the README's example dataset (12 real ISIC
    images as PNG files where the example looks for them) and a profile training two methods on it."""
    repo = tmp_path_factory.mktemp("own") / "repo"
    copy_checkout(repo)
    example = readme_example()
    folder = example["data"]["mydata"]
    isic_pngs(isic_dir, repo / folder["images"], repo / folder["masks"], 12, size=96,
              image_name=folder["image_pattern"], mask_name=folder["mask_pattern"])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(example["data"])
    experiments = params["experiments"]
    experiments["table1"] = {"methods": ["supervised", "mt"], "datasets": example["experiments"]["table1"]["datasets"],
                             "paired_with": "mt"}
    experiments["table2"].update(dataset="mydata", regime="4", rows=[])
    experiments["table3"].update(dataset="mydata", regime="4", stages=[])
    demo = params["profiles"]["demo"]   # the demo's tiny model and 20 iterations, on real data
    params["profiles"]["mine"] = {**{k: v for k, v in demo.items() if k != "data"}, "data": {"image_size": 64}}
    params["profile"] = "mine"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo / "src")}
    result = run([BIN / "snakemake", "all", "--cores", "2", "--resources", "gpu=2", "--scheduler", "greedy",
                  "--set-threads", "train=1", "prepare=1"], repo, env)
    assert result.returncode == 0, failure(result, repo)
    return repo


def test_readme_example_dataset_through_snakemake_to_its_table(own_data):
    reports = own_data / "reports" / "mine"
    run_ids = sorted(p.parent.name for p in (own_data / "results" / "mine" / "runs").glob("*/seed1337"))
    assert run_ids == ["mydata4_mt", "mydata4_supervised", "mydata50pct_mt", "mydata50pct_supervised"]
    rows = [r.split(",") for r in (reports / "table1.csv").read_text().splitlines()]
    header, ours = rows[0], [r for r in rows[1:] if r[0] == "mydata"]
    assert len(ours) == 4 and all(r[header.index("seeds")] == "1" for r in ours)
    assert all(r[header.index("dice_paper")] == "" and 0 <= float(r[header.index("dice")]) <= 100 for r in ours)
    assert "## Table 1 on mydata (kind folder)" in (reports / "table1.md").read_text()
    page = (reports / "report.html").read_text()
    table = page.split('id="table1-mydata"')[1].split("</table>")[0]
    assert all(run_id in table for run_id in run_ids) and "missing" not in table and "paper" not in table
    assert (own_data / "results" / "mine" / "data" / "mydata_split.csv").is_file()
