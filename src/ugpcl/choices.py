"""Where the paper and the reference code differ: the one table of those choices.

Each row is one key of params.yaml. Its default follows the code (the authors' UGPCL code, or
SSL4MIS for the baselines) unless the paper states otherwise. The README section, the HTML
report and every run's `run.json` render from this table; a test keeps the README in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    key: str        # dotted key in params.yaml
    paper: str      # what the paper says
    code: str       # what the reference code does
    source: str     # where that is documented (METHODS.md section, config file)


CHOICES: tuple[Choice, ...] = (
    Choice("train.iterations", "6000", "10000 (ACDC-136 config)", "METHODS §3.7"),
    Choice("train.min_lr", "poly decay to 0.001", "floor 1e-4", "METHODS §3.3 step 7"),
    Choice("train.weight_decay", "5e-4", "UGPCL 5e-4; SSL4MIS 1e-4", "METHODS §1, §3.3"),
    Choice("model.swin.train_pos_embed", "learnable (eq. 2)", "never trained (false)", "METHODS §3.1"),
    Choice("train.dice_background", "not stated", "UGPCL false; SSL4MIS true", "METHODS §5.3"),
    Choice("train.augment.crop_scale", "random crop", "RandomCrop 224 on 224 images (a no-op)", "METHODS §3.2"),
    Choice("train.augment.rot90_flip_p", "rotation", "UGPCL config 0; SSL4MIS 0.5", "METHODS §1, §3.2"),
    Choice("train.augment.rotate_p", "rotation", "UGPCL config 0; SSL4MIS when no rot90/flip", "METHODS §1, §3.2"),
    Choice("methods.ugpcl.ramp_epoch", "lambda_t rises 0 -> 0.01 over training",
           "0.01 reached at t = 100 x 100 = 10000; with 6000 iterations it peaks at 0.0043", "METHODS §3.3 step 5"),
    Choice("methods.ugpcl.contrast_start", "not stated", "contrast on for t > 1000", "METHODS §3.3 step 6"),
    Choice("methods.ugpcl.memory_size", "not stated", "500 (ACDC-136 config)", "METHODS §3.7"),
    Choice("evaluation.protocol", "not stated", "2D validation slices at 224 px, Dice pooled per batch of 16",
           "METHODS §4"),
)


def value(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def in_force(cfg: dict) -> dict:
    """{key: value in cfg} of every choice (what run.json records)."""
    return {c.key: value(cfg, c.key) for c in CHOICES}


def rows(cfg: dict) -> list[dict[str, str]]:
    """The table with the values of `cfg` in the "ours" column."""
    return [{"key": c.key, "ours": _show(value(cfg, c.key)), "paper": c.paper, "authors' code": c.code,
             "source": c.source} for c in CHOICES]


def markdown(cfg: dict) -> str:
    table = rows(cfg)
    head = list(table[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [f"`{row['key']}`", *(row[h].replace("|", "\\|") for h in head[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _show(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)
