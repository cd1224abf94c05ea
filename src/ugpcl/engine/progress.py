"""The line training prints every `train.log_every` iterations when no progress bar is shown (under
Snakemake, which writes it to the job's log file): time, iteration, loss terms, learning rate,
the latest validation Dice, speed and the estimated time to the end.

    2026-11-23T13:45:01Z acdc136_ugpcl s1337 it 200/6000 (3%) | loss 0.4312 sup 0.3012 con 0.0120
      | lr 9.7e-03 | val Dice 71.20% @150 | 4.12 it/s | ETA 0:23:27

(one line). Speed and ETA count this attempt only (from the iteration it started or resumed at),
validations included.
"""

from __future__ import annotations

from datetime import datetime, timezone

SKIP = ("t", "lr", "time", "loss")  # not loss terms, or shown first


def duration(seconds: float) -> str:
    """H:MM:SS (hours unbounded)."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def utc_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress_line(name: str, row: dict, total: int, validation: tuple[int, float] | None, start: int,
                  started: float, now: float) -> str:
    """The line for log row `row` (of iteration row["t"]) of a run `name` training to `total`
    iterations; `validation` is (iteration, Dice) of the latest one; this attempt began at
    iteration `start` at time `started` (seconds since the epoch, as `now`)."""
    done = row["t"] + 1
    terms = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in SKIP)
    parts = [f"{utc_stamp(now)} {name} it {done}/{total} ({100 * done // total}%)",
             f"loss {row['loss']:.4f}" + (f" {terms}" if terms else ""), f"lr {row['lr']:.2e}"]
    if validation is not None:
        parts.append(f"val Dice {100 * validation[1]:.2f}% @{validation[0] + 1}")
    elapsed = now - started
    if done > start and elapsed > 0:
        rate = (done - start) / elapsed
        parts += [f"{rate:.3g} it/s", f"ETA {duration((total - done) / rate)}"]
    return " | ".join(parts)
