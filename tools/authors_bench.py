"""Time the authors' training step (taovv/UGPCL) on the same device as `ugpcl bench`, and compare.

    python tools/authors_bench.py run --code .authors/UGPCL --method all --device cuda --json theirs.json
    ugpcl bench --profile paper --method all --device cuda --json ours.json
    python tools/authors_bench.py compare ours.json theirs.json      # a Markdown table, ratio ours/theirs

`run` imports the authors' code from a checkout of https://github.com/taovv/UGPCL (the paper's
code, commit 5980405; `make authors` fetches it and its pinned requirements into `.authors/`) and
builds each trainer exactly as their `train.py` does, from their own config files
(`configs/comparison_acdc_224_136/*.yaml` merged by their `parse_yaml`), with one change: the
encoder starts from random weights instead of downloading ImageNet weights (a step's time does
not depend on them). Then it times what their training loop does per iteration
(`codes/trainers/_base.py`, `train`): `train_step`, `zero_grad`, `backward`, the optimiser and
scheduler steps and, for the mean teacher, the EMA update, with their `set_deterministic`
(cuDNN deterministic, no autotuning) as their `train.py` sets it.

The authors implemented three of the eight methods: supervised (`unet_r50.yaml`), the mean
teacher (`mt_unet_r50.yaml`) and UGPCL (`ugpcl_unet_r50.yaml`). What is not timed, for either
code: loading data. What differs in the work a step does, and is recorded in the JSON:
- their batches are 3-channel (their `ToRGB`), ours 1-channel; their augmentation runs in the
  CPU data loader (not timed) while ours runs on the device inside the step (timed);
- their supervised step forwards the whole batch of 16 and uses the 8 labeled images' outputs;
  so does ours (`methods.supervised.batch_norm_unlabeled: true`; before 2026-11-23 it forwarded
  the 8 labeled images only);
- UGPCL is timed past their contrast warm-up (`step > 1000`), as `ugpcl bench` times ours.

This file imports none of `ugpcl`: it runs with the authors' requirements on the path, which
conflict with ours (timm 0.4.12).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

AUTHORS_COMMIT = "5980405b15ef1bc139be0447647a213b5a5f30b9"
CONFIGS = {  # our method name -> the authors' config of the same method (ACDC, 136 labeled slices)
    "supervised": "configs/comparison_acdc_224_136/unet_r50.yaml",
    "mt": "configs/comparison_acdc_224_136/mt_unet_r50.yaml",
    "ugpcl": "configs/comparison_acdc_224_136/ugpcl_unet_r50.yaml",
}
# From the first iteration past this one, their UGPCL step includes the contrast term (`step > 1000`).
CONTRAST_START = 1000
FIX = "pass --code a checkout of https://github.com/taovv/UGPCL at commit 5980405 (make authors)"


class BenchError(Exception):
    """A problem with the input, with what to do about it."""

    def __init__(self, message: str, fix: str):
        super().__init__(f"{message}\n  fix: {fix}")


class _QuietLogger:
    """What their trainers call on the logger while being built (their Logger writes TensorBoard files)."""

    def info(self, *_):
        pass


def check_checkout(code: Path) -> str:
    """The checkout's commit (its COMMIT file, else git's; 'unknown' without either); a BenchError if
    it is not their code."""
    for part in ("codes/trainers/ugpcl_trainer.py", "codes/utils/utils.py", *CONFIGS.values()):
        if not (code / part).is_file():
            raise BenchError(f"{code}: no {part}; this is not a checkout of the authors' code", FIX)
    if (code / "COMMIT").is_file():  # an export by `make authors`
        return (code / "COMMIT").read_text().strip() or "unknown"
    try:
        out = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_trainer(code: Path, method: str, device: str, size: int = 224, batch: tuple[int, int] | None = None,
                  seed: int = 1337):
    """Their trainer for `method`, built the way their train.py builds it (random encoder weights);
    `size` other than 224 sets their Swin decoder's img_size, `batch` (total, labeled) replaces the
    config's 16 and 8 (for quick checks only)."""
    sys.path.insert(0, str(code))
    try:
        from codes.utils.utils import Namespace, parse_yaml
        import codes.trainers as trainers
    except ImportError as e:
        raise BenchError(f"the authors' code in {code} does not import: {e}",
                         "put their requirements on the path: `make authors` installs them into .authors/site") from e
    cfg = parse_yaml(str(code / CONFIGS[method]))
    for key in ("model", "ema_model"):
        if key in cfg:
            kwargs = cfg[key].setdefault("kwargs", {})
            kwargs["encoder_weights"] = None
            if cfg[key]["name"] == "UNetTF":
                kwargs["img_size"] = size
    if batch:
        cfg["dataset"]["kwargs"]["batch_size"], cfg["dataset"]["kwargs"]["labeled_bs"] = batch
        cfg["train"]["kwargs"]["labeled_bs"] = batch[1]
    args = Namespace(cfg)
    kwargs = dict(vars(args.train.kwargs))
    kwargs.update({k: v for k, v in vars(args).items() if k not in ("name", "dataset", "train", "logger")})
    _set_deterministic(seed)  # as their train.py does before building anything
    trainer_class = getattr(trainers, args.train.name)
    trainer = trainer_class(logger=_QuietLogger(), device=device, data_parallel=False, ckpt_save_path=None,
                            resume_from=None, **kwargs)
    loader = cfg["dataset"]["kwargs"]
    return trainer, int(loader["batch_size"]), int(loader["labeled_bs"])


def _set_deterministic(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def bench_method(code: Path, method: str, device: str, steps: int, warmup: int, size: int,
                 batch: tuple[int, int] | None = None, num_classes: int = 4, in_channels: int = 3) -> dict:
    """Median wall time of one iteration of their training loop for `method`, on random data."""
    import numpy as np
    import torch

    trainer, batch_size, labeled_bs = build_trainer(code, method, device, size, batch)
    dev = torch.device(device)
    data = {"image": torch.rand(batch_size, in_channels, size, size, device=dev),
            "label": torch.randint(0, num_classes, (batch_size, 1, size, size), device=dev).float()}
    trainer.model.train()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(warmup + steps):
        step = CONTRAST_START + 1 + i
        start = time.perf_counter()
        loss, *_ = trainer.train_step(data, step, False)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        trainer.scheduler.step()
        if hasattr(trainer, "update_ema_variables"):
            trainer.update_ema_variables(step)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if dev.type == "cuda":
        peak, name = torch.cuda.max_memory_allocated(dev) / 2**20, torch.cuda.get_device_name(dev)
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = f"{_processor()} ({torch.get_num_threads()} threads)"
    return {
        "method": method, "code": "taovv/UGPCL", "config": CONFIGS[method], "device": name, "image_size": size,
        "batch_size": batch_size, "labeled_bs": labeled_bs, "in_channels": in_channels,
        "forwarded_images": batch_size, "steps": steps, "median_step_s": round(median, 6),
        "step_s_p10_p90": [round(float(np.percentile(times, 10)), 6), round(float(np.percentile(times, 90)), 6)],
        "images_per_s": round(batch_size / median, 2), "peak_memory_mib": round(peak, 1),
        "cudnn": "deterministic, no benchmark (their train.py)",
        "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__,
    }


def _processor() -> str:
    """The CPU's model as `ugpcl bench` names it: the two files' device strings must be equal for
    `compare`. From src/ugpcl/processor.py, loaded by its path (this file imports no ugpcl)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ugpcl_processor",
                                                  Path(__file__).resolve().parents[1] / "src" / "ugpcl" / "processor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.processor_name()


def run_command(args) -> int:
    code = args.code.resolve()
    commit = check_checkout(code)
    if commit not in ("unknown", AUTHORS_COMMIT):
        print(f"warning: {code} is at {commit[:10]}, not the paper's commit {AUTHORS_COMMIT[:7]}", file=sys.stderr)
    methods = list(CONFIGS) if args.method == "all" else [args.method]
    results = []
    for method in methods:
        # each method in its own process: their modules keep global state (cuDNN flags, the queue
        # tensors) and the peak-memory figure is per process
        if len(methods) > 1:
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, __file__, "run", "--code", str(code), "--method", method,
                                      "--device", args.device, "--steps", str(args.steps), "--warmup",
                                      str(args.warmup), "--size", str(args.size), "--json", f"{tmp}/result.json",
                                      *(["--batch", str(args.batch[0]), str(args.batch[1])] if args.batch else [])],
                                     stdout=subprocess.DEVNULL)
                if out.returncode != 0:
                    raise BenchError(f"their {method} step failed (exit status {out.returncode}, above)",
                                     f"run `{Path(__file__).name} run --method {method}` alone to see the whole error")
                results.append(json.loads(Path(tmp, "result.json").read_text()))
        else:
            results.append(bench_method(code, method, args.device, args.steps, args.warmup, args.size,
                                        tuple(args.batch) if args.batch else None))
        results[-1]["commit"] = commit
        print(json.dumps(results[-1], indent=2), flush=True)
    if args.json:
        _write_json(args.json, results if args.method == "all" else results[0])
    return 0


def _write_json(path: Path, value) -> None:
    """Atomically: a temporary name, then a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def _read_results(path: Path) -> dict[str, dict]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no such file", "write it with --json first") from None
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not JSON ({e})", "write it again with --json") from None
    rows = value if isinstance(value, list) else [value]
    if not all(isinstance(r, dict) and "method" in r and "median_step_s" in r for r in rows):
        raise BenchError(f"{path}: not a benchmark result (each entry needs method and median_step_s)",
                         "pass the --json file of `ugpcl bench` or of this tool's `run`")
    return {r["method"]: r for r in rows}


def compare(ours: dict[str, dict], theirs: dict[str, dict]) -> str:
    """A Markdown table over the methods both codes have: step times, their ratio, throughput."""
    shared = [m for m in CONFIGS if m in ours and m in theirs]
    if not shared:
        raise BenchError("the two files have no method in common",
                         f"time at least one of {', '.join(CONFIGS)} with both codes")
    devices = {r["device"] for m in shared for r in (ours[m], theirs[m])}
    if len(devices) > 1:
        raise BenchError(f"the two files were measured on different devices: {', '.join(sorted(devices))}",
                         "time both codes on the same device, in the same session")
    for m in shared:
        for key in ("image_size", "labeled_bs"):
            if ours[m][key] != theirs[m][key]:
                raise BenchError(f"{m}: ours was timed with {key} {ours[m][key]}, theirs with {theirs[m][key]}",
                                 "time both with the same configuration (theirs: 224 px, 8 labeled of 16)")
    lines = ["| method | ours: median step (s) | images forwarded | theirs: median step (s) | images forwarded "
             "| ratio ours / theirs | ours: images/s | theirs: images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for m in shared:
        o, t = ours[m], theirs[m]
        lines.append(f"| {m} | {o['median_step_s']:.4f} | {o['batch_size']} | {t['median_step_s']:.4f} "
                     f"| {t.get('forwarded_images', t['batch_size'])} | {o['median_step_s'] / t['median_step_s']:.2f} "
                     f"| {o['images_per_s']:.1f} | {t['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def compare_command(args) -> int:
    sys.stdout.write(compare(_read_results(args.ours), _read_results(args.theirs)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="time the authors' step for one method, or all three")
    r.add_argument("--code", type=Path, default=Path(".authors/UGPCL"), help="checkout of taovv/UGPCL")
    r.add_argument("--method", choices=[*CONFIGS, "all"], default="ugpcl")
    r.add_argument("--device", default="cuda")
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--warmup", type=int, default=2)
    r.add_argument("--size", type=int, default=224, help="image size (their configs: 224)")
    r.add_argument("--batch", type=int, nargs=2, metavar=("TOTAL", "LABELED"), default=None,
                   help="replace their batch of 16 with 8 labeled (quick checks; not for the comparison)")
    r.add_argument("--json", type=Path, default=None)
    r.set_defaults(func=run_command)
    c = sub.add_parser("compare", help="Markdown table of `ugpcl bench` against `run`, same device")
    c.add_argument("ours", type=Path, help="--json of `ugpcl bench --method all`")
    c.add_argument("theirs", type=Path, help="--json of this tool's `run --method all`")
    c.set_defaults(func=compare_command)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
