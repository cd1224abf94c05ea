"""The data stage: make the raw input of a dataset available, and convert it into the prepared file."""

from __future__ import annotations

from pathlib import Path

import sys

from ..config import prepared_path
from ..fileio import remove_stale_temps, writable_dir
from ..lock import hold_file
from . import acdc, isic

DATASETS = {"acdc": acdc, "isic": isic}


def fetch(cfg: dict, dataset: str) -> list[Path]:
    """Make sure the raw input of `dataset` exists for the configured source; returns its paths."""
    if dataset == "acdc":
        reader, lists, _ = acdc.fetch(cfg)
        return [reader.path, lists.folder]
    input_dir, gt_dir, _ = isic.fetch(cfg)
    return [input_dir, gt_dir]


def prepare(cfg: dict, dataset: str, out: str | Path | None = None) -> dict:
    """Fetch if needed and write the prepared file (default `prepared_path(cfg, dataset)`).

    One writer per prepared file (its lock); the temporary files an interrupted earlier write of
    it left are deleted first; an unwritable output folder is an error before any work.
    """
    out = Path(out) if out else prepared_path(cfg, dataset)
    writable_dir(out.parent)
    with hold_file(out, f"ugpcl prepare {dataset}"):
        removed = [p for name in (out.name, "isic_split.csv" if dataset == "isic" else None) if name
                   for p in remove_stale_temps(out.parent, of=name)]
        if removed:
            print(f"note: removed {len(removed)} temporary file(s) of an interrupted earlier write: "
                  + ", ".join(str(p) for p in removed), file=sys.stderr)
        return DATASETS[dataset].prepare(cfg, out)


def summary_line(summary: dict) -> str:
    labeled = ", ".join(f"{regime}: {text}" for regime, text in summary["labeled"].items())
    return (f"{summary['dataset']}: train {summary['train']} (labeled {labeled}); "
            f"val {summary['val']} -> {summary['out']}")
