"""The data stage: make the raw input of a dataset available, and convert it into the prepared file.

A dataset is an entry of `data:` (config.dataset_names); its kind is the module here that reads it.
Each kind module provides `fetch(cfg, name) -> [paths]` and `prepare(cfg, name, out) -> summary`;
folder-based kinds also `inspect(cfg, name) -> report` (survey.describe renders it), and the folder
kind `input_files(cfg, name)`, the files preparation reads (the workflow's up-to-date check).
"""

from __future__ import annotations

from pathlib import Path

import sys

from ..config import dataset_kind, prepared_path
from ..errors import UserError
from ..fileio import remove_stale_temps, removed_if_failed, writable_dir
from ..lock import hold_file
from . import acdc, folder, isic

KINDS = {"acdc": acdc, "isic": isic, "folder": folder}


def kind_module(cfg: dict, name: str):
    return KINDS[dataset_kind(cfg, name)]


def fetch(cfg: dict, dataset: str) -> list[Path]:
    """Make sure the raw input of `dataset` exists for the configured source; returns its paths."""
    return kind_module(cfg, dataset).fetch(cfg, dataset)


def prepare(cfg: dict, dataset: str, out: str | Path | None = None) -> dict:
    """Fetch if needed and write the prepared file (default `prepared_path(cfg, dataset)`).

    One writer per prepared file (its lock); the temporary files an interrupted earlier write of
    it left are deleted first; an unwritable output folder is an error before any work.
    """
    out = Path(out) if out else prepared_path(cfg, dataset)
    with removed_if_failed(out.parent):
        writable_dir(out.parent)
        return _prepare_locked(cfg, dataset, out)


def _prepare_locked(cfg: dict, dataset: str, out: Path) -> dict:
    with hold_file(out, f"ugpcl prepare {dataset}"):
        removed = [p for name in (out.name, f"{dataset}_split.csv") for p in remove_stale_temps(out.parent, of=name)]
        if removed:
            print(f"note: removed {len(removed)} temporary file(s) of an interrupted earlier write: "
                  + ", ".join(str(p) for p in removed), file=sys.stderr)
        return kind_module(cfg, dataset).prepare(cfg, dataset, out)


def inspect(cfg: dict, dataset: str) -> dict:
    """Survey the raw input of a folder-based dataset without writing anything (fetches it first if needed)."""
    module = kind_module(cfg, dataset)
    if not hasattr(module, "inspect"):
        raise UserError(f"`ugpcl inspect` surveys folders of images and masks; {dataset} is of kind "
                        f"{dataset_kind(cfg, dataset)}, whose preparation checks its own input",
                        fix=f"run `ugpcl prepare {dataset}` (it stops at the first problem, naming the file)")
    return module.inspect(cfg, dataset)


def input_files(cfg: dict, dataset: str) -> list[Path]:
    """The local files the preparation of `dataset` reads, where the kind knows them in advance."""
    module = kind_module(cfg, dataset)
    return module.input_files(cfg, dataset) if hasattr(module, "input_files") else []


def summary_line(summary: dict) -> str:
    labeled = ", ".join(f"{regime}: {text}" for regime, text in summary["labeled"].items())
    line = (f"{summary['dataset']}: train {summary['train']} (labeled {labeled}); "
            f"val {summary['val']} -> {summary['out']}")
    if summary.get("classes"):
        line += "\n  class pixel fractions: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in summary["classes"].items())
    line += "".join(f"\n  warning: {w}" for w in summary.get("warnings", []))
    return line
