"""Evaluating a trained run: its checkpoint scored on the validation cases (`metrics.py`), the
results written to `eval/`, and the run's record `run.json` when training has finished."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import choices
from .config import REPO_ROOT, prepared_path
from .data.prepared import Prepared, load_prepared
from .engine.checkpoint import load_run
from .engine.runfiles import RunFiles
from .errors import UserError
from .fileio import write_json
from .metrics import evaluate_network, write_evaluation


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def evaluate_run(run_dir: str | Path, *, checkpoint: str = "best", data: Prepared | str | Path | None = None,
                 device="cpu", batch_size: int | None = None, protocol: str | None = None, out: Path | None = None,
                 progress: bool = False) -> dict:
    """Score `run_dir/checkpoints/<checkpoint>.pt`; write per_case.csv and summary.json to `out`
    (default `run_dir/eval`) and return the summary."""
    loaded = load_run(run_dir, checkpoint, device=device)
    cfg, info = loaded.cfg, loaded.info
    prepared = data if isinstance(data, Prepared) else load_prepared(data or prepared_path(cfg, info["dataset"]))
    check_data_fits(prepared, cfg, info, loaded.path)
    protocol = protocol or cfg["evaluation"]["protocol"]
    amp = cfg["train"]["amp"] == "bf16"
    per_case, summary = evaluate_network(loaded.net, prepared, batch_size or cfg["train"]["val_batch"], device,
                                         amp=amp, progress=progress, protocol=protocol)
    summary.update({k: info.get(k) for k in ("method", "dataset", "regime", "seed")},
                   checkpoint=checkpoint, iteration=loaded.iteration, protocol=protocol)
    write_evaluation(out or Path(run_dir) / "eval", per_case, summary)
    return summary


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


def finish_run(run_dir: Path, cfg: dict, info: dict, facts: dict, data: Prepared, device: torch.device) -> dict:
    """After training: evaluate the configured checkpoint, write run.json, drop the progress folder.

    `facts` (Trainer.facts) hold the wall time of every attempt and the record of the data used."""
    summary = evaluate_run(run_dir, checkpoint=cfg["evaluation"]["checkpoint"], data=data, device=device)
    run = {
        **info,
        **facts,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "protocol": cfg["evaluation"]["protocol"],
        "choices": choices.in_force(cfg),
        "dice": summary["dice"],
        "status": "finished",
    }
    write_json(run_dir / "run.json", run)
    RunFiles(run_dir).finished()
    return run
