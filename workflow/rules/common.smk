# Shared set-up of the workflow: the ugpcl package of this checkout, paths and run lookups.
import os
import re
import shlex
import sys
import time
from pathlib import Path

from snakemake.exceptions import WorkflowError


def export(name, value):
    """Set an environment variable for this process and every job it starts. The workflow sets these
    itself: nothing the user must define, so no `envvars:` assertion."""
    os.environ[name] = value


# Import the ugpcl package beside this Snakefile, and make every job do the same, even when
# another checkout is the one pip-installed (e.g. a copy of the repository run with the same venv).
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
export("PYTHONPATH", os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))

from ugpcl.config import DEFAULT_CONFIG, dataset_names, load_config, prepared_path, reports_dir, resolve, results_dir
from ugpcl.data.stage import input_files
from ugpcl.forkserver import ENV as FORKSERVER
from ugpcl.lifetime import ENV as EXIT_WITH, token
from ugpcl.report.tables import (
    PAPER_DIR,
    TABLES,
    figure3_runs,
    figure4_runs,
    figure_datasets,
    figure_outputs,
    report_outputs,
)
from ugpcl.study import check_study, dataset_settings, distinct_runs, run_settings, settings_digest

# Jobs end when this Snakemake process ends: killed outright (SIGKILL), it cannot stop its jobs,
# which would train on as orphans; every `ugpcl` command watches the process named here.
export(EXIT_WITH, token())


def use_forkserver(wanted):
    """Export UGPCL_FORKSERVER=1 to the jobs (`ugpcl.forkserver`) when `wanted` (--config forkserver=true)."""
    value = str(wanted).lower()
    if value not in ("true", "false"):
        raise WorkflowError(f"--config forkserver={wanted!r}: expected true or false")
    if value == "true":
        export(FORKSERVER, "1")


# A job's `ugpcl` is a shell function that runs this checkout's package (PYTHONPATH above) with the
# interpreter running Snakemake (the venv's), so that jobs need no activated venv or PATH entry. It is
# defined in the prefix of every job's shell command rather than written into the rules' commands:
# the interpreter's path is not a setting of the study, and Snakemake reruns a job whose command
# text (code trigger) or params change. Snakemake's shell is /bin/sh (dash or bash); both export an
# assignment before a function call (`OMP_NUM_THREADS=2 ugpcl ...`) to the command it runs. A
# prefix replaces Snakemake's own (`set -euo pipefail;` under bash), so it sets the strict mode that
# both shells have: stop at the first failing command, an unset variable is an error.
shell.prefix(
    "set -eu; "
    f'ugpcl() ( exec {shlex.quote(sys.executable)} -m ugpcl.cli "$@" ); '.replace("{", "{{").replace("}", "}}")
)
RUN_FILES = {
    "run_json": "run.json",
    "config": "config.yaml",
    "log": "log.jsonl",
    "val": "val.jsonl",
    "best": "checkpoints/best.pt",
    "last": "checkpoints/last.pt",
    "summary": "eval/summary.json",  # the best checkpoint (ugpcl.config.EVAL_DIRS)
    "per_case": "eval/per_case.csv",
    "summary_last": "eval-last/summary.json",  # the last iteration
    "per_case_last": "eval-last/per_case.csv",
}


# The --config keys the workflow takes: the jobs read params.yaml themselves (`ugpcl ... --profile P`), so any
# other value would change Snakemake's config but not what they train.
PASSED_ON = ("profile", "forkserver")
ONLY_PROFILE = (
    "only --config profile=NAME (and forkserver=true, which the demo profile sets) is passed on to the ugpcl "
    "commands, which read params.yaml themselves: a value given here would not reach them"
)
EDIT_PARAMS = (
    "Fix: edit params.yaml (or add a profile under `profiles:`) instead of other --config/--configfile values."
)


def check_command_line_config(params=DEFAULT_CONFIG, shown=5):
    """Refuse --config KEY=VALUE for any key but PASSED_ON, and --configfile values that differ from
    params.yaml, before the configuration is checked: else their values are checked as params.yaml's
    (Snakemake reads --config values as text: "'0.5' is not of type 'number'", blamed on params.yaml)."""
    from snakemake.common.configfile import load_configfile
    from ugpcl.config import NOT_SET, flat_keys

    found = [f"--config {key}=..." for key in workflow.config_settings.config if key not in PASSED_ON]
    if workflow.config_settings.configfiles:
        file = flat_keys(load_configfile(params))
        for path in workflow.config_settings.configfiles:
            given = flat_keys({k: v for k, v in load_configfile(path).items() if k not in PASSED_ON})
            found += [
                f"--configfile {rel(path)}: {key}" for key, value in given.items() if file.get(key, NOT_SET) != value
            ]
    if found:
        listed = ", ".join(found[:shown]) + (", ..." if len(found) > shown else "")
        raise WorkflowError(f"{listed}: {ONLY_PROFILE}.\n{EDIT_PARAMS}")


def check_same_as_params(cfg):
    """The jobs read params.yaml themselves (`ugpcl ... --profile P`): refuse Snakemake config
    changes they would not see, rather than train something else than Snakemake tracks."""
    if cfg != load_config(profile=cfg["profile"]):
        raise WorkflowError(
            "the Snakemake config differs from params.yaml with profile "
            f"{cfg['profile']!r}; {ONLY_PROFILE}.\n{EDIT_PARAMS}"
        )


def rel(path):
    """A path inside the working directory as a relative one (how Snakemake prints and matches it)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


REPORT_CODE = sorted(rel(p) for p in Path(SRC, "ugpcl", "report").glob("*.py"))


def run_digest(wildcards):
    """What a training job trains with (ugpcl.study.run_settings), as the params its rerun trigger compares:
    its own method's parameters with the run's overrides, model:, train:, evaluation: and its dataset's settings."""
    return settings_digest(run_settings(CFG, run_by_id(wildcards.run), int(wildcards.seed)))


def data_digest(wildcards):
    """What preparing a dataset reads from the configuration (ugpcl.study.dataset_settings)."""
    return settings_digest(dataset_settings(CFG, wildcards.dataset))


def run_by_id(run_id):
    for run in RUNS:
        if run.id == run_id:
            return run
    raise WorkflowError(f"no run {run_id!r} in the experiment matrix (see `ugpcl runs`)")


def datasets():
    return sorted({run.dataset for run in RUNS})


def prepared_file(dataset):
    return rel(prepared_path(CFG, dataset))


def run_dir(run, seed):
    return rel(run.run_dir(CFG, seed))


def run_outputs(names=tuple(RUN_FILES)):
    return [f"{run_dir(run, seed)}/{RUN_FILES[n]}" for run in RUNS for seed in SEEDS for n in names]


def figure_checkpoints():
    """The checkpoints Figures 3 and 4 load (first seed), and the prepared data they show."""
    runs = [r for r in {**figure3_runs(CFG), **figure4_runs(CFG)}.values() if r is not None]
    files = [f"{run_dir(r, SEEDS[0])}/checkpoints/{CFG['evaluation']['checkpoint']}.pt" for r in runs]
    return files + sorted({prepared_file(d) for d in figure_datasets(CFG).values() if d is not None})


def dataset_pattern():
    """The prepare rule's wildcard constraint: exactly the datasets configured under data:."""
    return "|".join(re.escape(d) for d in dataset_names(CFG))


def prepare_inputs(wildcards):
    """The files a folder dataset's preparation reads (Snakemake reruns it when one is newer)."""
    return [rel(p) for p in input_files(CFG, wildcards.dataset)]


def figure_files():
    return [rel(p) for p in figure_outputs(CFG).values()]


def report_files():
    return [rel(p) for p in report_outputs(CFG).values()]


STARTED = time.time()  # when this workflow run began


def say_where_the_report_is():
    """After a successful run: the report's path, where this run wrote it (not after `snakemake data`)."""
    page = Path(report_outputs(CFG)["html"])
    if page.is_file() and page.stat().st_mtime >= STARTED:
        print(f"The report: {rel(page)} (open it in a browser)", file=sys.stderr)


def reported(outputs):
    """Rule outputs by name (ugpcl.report.tables.figure_outputs, report_outputs), each flagged for
    `snakemake --report`: a category, a subcategory per table or figure, a caption in workflow/report/."""
    flagged = {}
    for name, path in outputs.items():
        table = re.match(r"table(\d+)_", name)
        if table:
            where = ("Tables", f"Table {table[1]}", f"table{table[1]}.rst")
        elif name.startswith("curves") or name == "loss_terms":
            where = ("Figures", "Training curves", "curves.rst")
        elif name.startswith("figure"):
            where = ("Figures", f"Figure {name.removeprefix('figure')}", f"{name}.rst")
        else:  # metrics.json, report.html
            where = ("Report", None, "report.rst")
        category, subcategory, caption = where
        # the caption is relative to workflow/rules/, where the rules using this are
        flagged[name] = report(rel(path), caption=f"../report/{caption}", category=category, subcategory=subcategory)
    return flagged
