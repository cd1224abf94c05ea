"""DVC's stages from the one experiment matrix: `workflow/dvc-matrix.yaml`, written by `ugpcl dvc-matrix`.

dvc.yaml cannot compute the experiment matrix (which runs Tables 1-3 need, deduplicated, with
which overrides and seeds: `study.distinct_runs`), so this module writes it out for the profile
DVC follows (`profile:` in params.yaml): one entry per dataset and one per run and seed, with
its output paths and a digest of the settings it depends on (`study.dataset_settings`,
`study.run_settings`, the same digests Snakemake's params trigger compares). dvc.yaml reads the
file twice:
- as `vars`: `foreach` over its runs makes one training stage per run and seed, each with its
  run directory (checkpoints included) as a cached DVC output;
- as a params file: each stage depends on its own digest only, so changing one method's
  parameters reruns that method's stages and nothing else.

The file is the output of dvc.yaml's first stage, `matrix`, which depends on params.yaml, so
`dvc repro` rewrites it before the digests are compared. DVC reads the list of stages before
any stage runs: when the list itself changed (runs added or removed, another profile), that
stage stops after rewriting the file and asks for `dvc repro` once more.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import REPO_ROOT, load_config, prepared_path, results_dir
from .errors import UserError
from .fileio import write_text
from .study import check_study, dataset_settings, distinct_runs, run_settings, settings_digest

MATRIX_FILE = REPO_ROOT / "workflow" / "dvc-matrix.yaml"
KEY = "dvc_matrix"  # the file's one top-level key (DVC merges it with params.yaml's into one namespace)
HEADER = """\
# Written by `ugpcl dvc-matrix` from params.yaml; do not edit (`dvc repro` rewrites it when params.yaml
# changes). dvc.yaml makes one training stage per entry of `runs`, which depends on that entry's
# `settings` digest only (what the run is trained with); the data stage on the datasets' digests.
"""


def _rel(path: Path) -> str:
    """A path as dvc.yaml names it: relative to the repository root, where dvc.yaml lives."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def stage_key(run_id: str, seed: int) -> str:
    """The key of a run and seed: DVC's stage `train@<key>` and its params key (no dots in it)."""
    return f"{run_id}-seed{seed}".replace(".", "_")


def build(cfg: dict) -> dict:
    """The matrix of `cfg` (a resolved configuration) as the file holds it."""
    runs = distinct_runs(cfg)
    datasets = {name: {"file": _rel(prepared_path(cfg, name)),
                       "settings": settings_digest(dataset_settings(cfg, name))}
                for name in sorted({run.dataset for run in runs})}
    stages = {}
    for run in runs:
        for seed in cfg["experiments"]["seeds"]:
            key = stage_key(run.id, seed)
            if key in stages:
                raise UserError(f"runs {stages[key]['id']!r} and {run.id!r} give the same DVC stage key {key!r}",
                                fix="rename a dataset or regime so that their run ids differ by more than a '.'")
            stages[key] = {"id": run.id, "seed": seed, "dataset": run.dataset, "method": run.method,
                           "dir": _rel(run.run_dir(cfg, seed)), "data": datasets[run.dataset]["file"],
                           "settings": settings_digest(run_settings(cfg, run, seed))}
    root = results_dir(cfg)
    return {KEY: {"profile": cfg["profile"], "data_dir": _rel(root / "data"), "runs_dir": _rel(root / "runs"),
                  "datasets": datasets, "runs": stages}}


def layout(matrix: dict) -> dict:
    """The matrix without its digests: what decides which stages dvc.yaml has and their paths."""
    inner = matrix.get(KEY, {})
    strip = lambda entries: {k: {f: v for f, v in e.items() if f != "settings"} for k, e in entries.items()}  # noqa: E731
    return {**inner, "datasets": strip(inner.get("datasets", {})), "runs": strip(inner.get("runs", {}))}


def read(path: Path = MATRIX_FILE) -> dict:
    """The file as written, or {} when it is missing or unreadable."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def current(config: Path | None = None) -> dict:
    """The matrix of params.yaml with the profile it names (the one DVC follows)."""
    cfg = load_config(config)
    check_study(cfg, config or "params.yaml")
    return build(cfg)


def write(matrix: dict, path: Path = MATRIX_FILE) -> bool:
    """Write `matrix`; returns whether the stages changed (another layout than the file held)."""
    changed = layout(read(path)) != layout(matrix)
    write_text(path, HEADER + yaml.safe_dump(matrix, sort_keys=False))
    return changed
