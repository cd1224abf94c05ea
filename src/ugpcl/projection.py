"""How long the study will take on a device: measured step times (`ugpcl bench --method all
--json FILE` on that device) times each run's iterations, plus its validations.

    training    iterations x median step time of the run's method
    validation  (iterations // val_every + 1) x validation images x evaluation time per image
Data loading is on the device already and is inside the step time; start-up, checkpoints and the
final evaluation (one more validation pass) are small next to these and are left out.

Results of `ugpcl bench --processes K` (K runs sharing the device) give each run's time as
measured while K shared it; the study then takes about the sum over runs divided by K
(`runs_at_once`), K runs being trained at once (`--resources gpu=K` on one GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import prepared_path
from .errors import UserError
from .study import Run


def read_bench(path: str | Path) -> dict[str, dict]:
    """method -> its `ugpcl bench` result, from a JSON file of one result or a list of them."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the benchmark results ({exc})", path=path,
                        fix="write them with `ugpcl bench --method all --json FILE` on the training device") from exc
    rows = data if isinstance(data, list) else [data]
    if not rows or not all(isinstance(r, dict) and {"method", "median_step_s", "eval_s_per_image"} <= r.keys()
                           for r in rows):
        raise UserError("not `ugpcl bench` results (method, median_step_s, eval_s_per_image per entry)", path=path,
                        fix="write them with `ugpcl bench --method all --json FILE`")
    return {r["method"]: r for r in rows}


def runs_at_once(bench: dict[str, dict], path: str | Path) -> int:
    """K of `ugpcl bench --processes K` results (1 for a plain benchmark); one K per file."""
    found = {int(r.get("processes", 1)) for r in bench.values()}
    if len(found) != 1:
        raise UserError(f"results of different numbers of processes sharing the device ({sorted(found)})",
                        path=path, fix="project from one `ugpcl bench` command's --json file")
    return found.pop()


def run_seconds(run: Run, cfg: dict, bench: dict[str, dict], val_images: int | None) -> float | None:
    """Projected seconds of one run and seed, or None when its method was not benchmarked."""
    result = bench.get(run.method)
    if result is None:
        return None
    tr = run.config(cfg)["train"]
    seconds = tr["iterations"] * result["median_step_s"]
    if val_images:
        seconds += (tr["iterations"] // tr["val_every"] + 1) * val_images * result["eval_s_per_image"]
    return seconds


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def validation_images(cfg: dict, dataset: str) -> int | None:
    """The number of validation images in the prepared file of `dataset`, if it exists."""
    import h5py

    path = prepared_path(cfg, dataset)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            return len(f["val/names"])
    except (OSError, KeyError):
        return None
