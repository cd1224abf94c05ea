"""The data stage: make the raw input of a dataset available, and convert it into the prepared file."""

from __future__ import annotations

from pathlib import Path

from ..config import prepared_path
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
    """Fetch if needed and write the prepared file (default `prepared_path(cfg, dataset)`)."""
    return DATASETS[dataset].prepare(cfg, Path(out) if out else prepared_path(cfg, dataset))


def summary_line(summary: dict) -> str:
    labeled = ", ".join(f"{regime}: {text}" for regime, text in summary["labeled"].items())
    return (f"{summary['dataset']}: train {summary['train']} (labeled {labeled}); "
            f"val {summary['val']} -> {summary['out']}")
