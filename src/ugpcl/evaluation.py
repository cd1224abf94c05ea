"""Evaluating a trained run: its checkpoints scored on the validation cases (`metrics.py`), the
results written to `eval/` (best checkpoint) and `eval-last/` (last iteration), and the run's
record `run.json` when training has finished.

The best checkpoint is selected during training on the very cases it is scored on here (the
validation set: the authors' code selects and reports on one set, SSL4MIS selects on val and
reports on test, METHODS §1, §4), which flatters it; the last iteration's score, evaluated beside
it, shows by how much. The selection uses a quick score (`metrics.validation_dice`: Dice at the
network's input size), this module the protocol at the original resolution.
Every network a method evaluates (`Method.evaluated`: CPS's two) is scored: `summary.json`
holds the first network's scores at the top and every network's under `networks`;
`per_case.csv` has a `network` column. The best checkpoint is the first network's best, so the
second is scored at that iteration (SSL4MIS keeps a best checkpoint per CPS network).

The data scored must be the run's dataset (the prepared file's `dataset` attribute), and
`summary.json` records which file was scored (`data`, `data_sha256`). A file other than the one
the run was trained on (run.json's `data.sha256`) is refused where it is the run's default
prepared file (it was prepared again since training), and scored with a warning where `--data`
names it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from . import choices
from .config import eval_dir, prepared_path, results_dir
from .data.prepared import Prepared, load_prepared
from .data.provenance import file_sha256, trained_data_sha256
from .engine import determinism
from .engine.checkpoint import LoadedRun, load_run
from .engine.runfiles import RunFiles
from .errors import UserError
from .fileio import write_json
from .lifetime import git_commit
from .metrics import METRICS, evaluate_network, write_evaluation

CHECKPOINTS = ("best", "last")


def evaluate_run(run_dir: str | Path, *, checkpoint: str = "best", data: Prepared | str | Path | None = None,
                 device="cpu", batch_size: int | None = None, protocol: str | None = None, out: Path | None = None,
                 progress: bool = False, loaded: LoadedRun | None = None, data_sha256: str | None = None) -> dict:
    """Score every evaluated network of `run_dir/checkpoints/<checkpoint>.pt` (or of `loaded`, that
    checkpoint already loaded); write per_case.csv and summary.json to `out` (default:
    `eval_dir(run_dir, checkpoint)`, the training's own evaluation) and return the summary.

    `data`: default the run's prepared file. `data_sha256`: the SHA-256 of `data` where the caller
    knows it to be the file the run was trained on (the training's own evaluation); otherwise it
    is computed here and compared with the run's record (`check_same_data`)."""
    loaded = loaded or load_run(run_dir, checkpoint, device=device)
    cfg, info = loaded.cfg, loaded.info
    default = prepared_path(cfg, info["dataset"])
    prepared = data if isinstance(data, Prepared) else load_prepared(  # a missing default file: the command that writes it
        data or default, **({} if data else {"dataset": info["dataset"], "profile": cfg.get("profile")}))
    prepared.check_dataset(info["dataset"], role="the run was trained on",
                           fix=f"pass a prepared {info['dataset']} file with --data (`ugpcl prepare {info['dataset']}` "
                               f"writes {default})")
    check_data_fits(prepared, cfg, info, loaded.path)
    if data_sha256 is None:
        data_sha256 = file_sha256(prepared.path)
        check_same_data(run_dir, prepared.path, data_sha256, explicit=data is not None)
    protocol = protocol or cfg["evaluation"]["protocol"]
    frames, networks = [], {}
    with determinism.mode(cfg["train"].get("deterministic", False)):  # runs of earlier versions lack the key
        for name in loaded.method.evaluated:
            per_case, networks[name] = evaluate_network(getattr(loaded.method, name), prepared,
                                                        batch_size or cfg["train"]["val_batch"], device,
                                                        progress=progress, protocol=protocol)
            frames.append(per_case.assign(network=name))
    summary = dict(networks[loaded.method.evaluated[0]])
    summary["networks"] = {name: {k: s[k] for k in (*METRICS, "per_class")} for name, s in networks.items()}
    summary.update({k: info.get(k) for k in ("method", "dataset", "regime", "seed")},
                   checkpoint=checkpoint, iteration=loaded.iteration, protocol=protocol,
                   data=str(Path(prepared.path).resolve()), data_sha256=data_sha256)
    write_evaluation(out or eval_dir(run_dir, checkpoint), pd.concat(frames, ignore_index=True), summary)
    return summary


def workflow_runs(cfg: dict) -> Path:
    """results/<profile>/runs: the run directories Snakemake declares as outputs and DVC tracks."""
    return results_dir(cfg) / "runs"


def inside(path: str | Path, folder: Path) -> Path | None:
    """`path` relative to `folder` when it lies in it (symbolic links resolved), else None."""
    try:
        return Path(path).resolve().relative_to(folder.resolve())
    except ValueError:
        return None


def evaluation_dir(cfg: dict, run_dir: str | Path, checkpoint: str, protocol: str) -> Path:
    """Where `ugpcl evaluate` writes by default: never over the training's own evaluation (eval/,
    eval-last/) nor into a workflow's run directory, whose files Snakemake and DVC own (DVC would
    restore them at the next `dvc repro`).
    - a run of the workflows (results/<profile>/runs/<run>/seed<seed>): next to the runs, in
      results/<profile>/evaluations/<run>/seed<seed>/<checkpoint>-<protocol>/;
    - any other run directory: <run_dir>/evaluations/<checkpoint>-<protocol>/.
    `cfg` is the run's own configuration (its profile and paths.results)."""
    name = f"{checkpoint}-{protocol}"
    below = inside(run_dir, workflow_runs(cfg))
    if below is None:
        return Path(run_dir) / "evaluations" / name
    return results_dir(cfg) / "evaluations" / below / name


def check_data_fits(prepared: Prepared, cfg: dict, info: dict, checkpoint_path: Path) -> None:
    """UserError unless `prepared` is data the checkpoint's network was trained for (classes,
    channels, image size)."""
    expected = {"classes": (info.get("num_classes"), prepared.num_classes),
                "channels": (info.get("in_channels"), prepared.in_channels),
                "px images": (cfg.get("data", {}).get("image_size"), prepared.image_size)}
    for what, (trained, given) in expected.items():
        if trained is not None and trained != given:
            raise UserError(f"the checkpoint {checkpoint_path} was trained on {trained} {what}, this data has {given} {what}",
                            path=prepared.path,
                            fix=f"pass the {info.get('dataset')} file it was trained on with --data (prepared "
                                f"with data.image_size {cfg.get('data', {}).get('image_size')})")


def check_same_data(run_dir: str | Path, path: str | Path, sha256: str, *, explicit: bool) -> None:
    """Whether the file `path` (SHA-256 `sha256`) is the one the run was trained on. If not: a
    UserError where it is the run's default prepared file (`explicit` False: it was prepared again
    since training, so scores would silently describe other data), a warning on stderr where the
    user named it (--data)."""
    trained = trained_data_sha256(run_dir)
    if trained is None or trained == sha256:
        return
    hashes = f"SHA-256 {sha256[:12]} now, {trained[:12]} when the run was trained"
    if not explicit:
        raise UserError(f"the prepared file changed since the run was trained on it ({hashes})", path=path,
                        fix="retrain the run on it (`ugpcl train ... --force`), or pass --data "
                            f"{path} explicitly to score on it anyway")
    print(f"warning: {path} is not the file the run was trained on ({hashes}); scoring on it as --data asks",
          file=sys.stderr, flush=True)


def code_record(attempts: list[dict]) -> dict:
    """run.json's record of the code: `git_commit`, the commit the last attempt ran (the one that
    finished training; with no resume, the commit training started from, whatever was committed
    while it ran), `git_commits` every attempt's commit in order when they differ, and
    `code_modified`, whether any attempt ran with modified tracked files (None: unknown)."""
    ran = [a for a in attempts if "commit" in a]
    if not ran:  # attempts recorded before their code was
        return {"git_commit": git_commit()}
    commits = list(dict.fromkeys(a["commit"] for a in ran))
    modified = [a.get("modified") for a in ran]
    return {"git_commit": ran[-1]["commit"], **({"git_commits": commits} if len(commits) > 1 else {}),
            "code_modified": True if any(modified) else (None if None in modified else False)}


def finish_run(run_dir: Path, cfg: dict, info: dict, facts: dict, data: Prepared, device: torch.device) -> dict:
    """After training: evaluate the best and the last checkpoint, write run.json (its `dice` is
    the one `evaluation.checkpoint` names), drop the progress folder.

    `facts` (Trainer.facts) hold the wall time of every attempt and the record of the data used."""
    summaries = {which: evaluate_run(run_dir, checkpoint=which, data=data, device=device,
                                     data_sha256=facts["data"]["sha256"]) for which in CHECKPOINTS}
    run = {
        **info,
        **facts,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **code_record(facts.get("attempts", [])),
        "protocol": cfg["evaluation"]["protocol"],
        "choices": choices.in_force(cfg),
        "dice": summaries[cfg["evaluation"]["checkpoint"]]["dice"],
        **{f"dice_{which}": summaries[which]["dice"] for which in CHECKPOINTS},
        "best_iteration": summaries["best"]["iteration"],
        "status": "finished",
    }
    write_json(run_dir / "run.json", run)
    RunFiles(run_dir).finished()
    return run
