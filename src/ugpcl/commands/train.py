"""`ugpcl train` and `ugpcl bench`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import dataset_config, prepared_path
from ..errors import UserError
from . import MethodNames, add_config_args, config_from_args

if TYPE_CHECKING:
    from ..study import Run


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (and evaluate it when it finishes)")
    add_config_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run id of the experiment matrix (see `ugpcl runs`)")
    which.add_argument("--method", choices=(methods := MethodNames()), type=methods.check, metavar="METHOD",
                       help="an ad-hoc run: method (with --dataset and --regime), one of %(choices)s")
    p.add_argument("--dataset", help="ad-hoc run: a dataset configured under data: (e.g. acdc, isic)")
    p.add_argument("--regime", help="ad-hoc run: labeled regime, e.g. 136")
    p.add_argument("--seed", type=int, default=None, help="default: train.seed")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default: results/<profile>/runs/<id>/seed<seed> for --run, "
                        "results/<profile>/adhoc/<id>/seed<seed> for an ad-hoc run)")
    p.add_argument("--data", type=Path, default=None, help="prepared HDF5 file (default: the profile's)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None,
                   help="where to train (default: train.device of the configuration)")
    p.add_argument("--fresh", action="store_true", help="discard an unfinished run in --out instead of resuming it")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a finished run")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=train_command)

    b = sub.add_parser("bench", help="median train-step time, images/s and peak memory of a method")
    add_config_args(b)
    b.add_argument("--method", choices=(methods := MethodNames("all")), type=methods.check, metavar="METHOD",
                   default="ugpcl",
                   help="a method, or all of them in turn: %(choices)s (default: %(default)s)")
    b.add_argument("--steps", type=int, default=10, help="timed training steps (default: 10)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2; compilation, autotuning)")
    b.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="where to run (default: auto, CUDA when there is one)")
    b.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file (a list with --method all)")
    b.add_argument("--processes", type=int, default=1, metavar="K",
                   help="run K copies at once on the device and report their total throughput "
                        "(how many training jobs should share one GPU: Snakemake's --resources gpu=K)")
    b.add_argument("--sync-debug", choices=["warn", "error"], default=None,
                   help="CUDA: report (warn) or refuse (error) every host-device synchronisation inside a step")
    # a process of `--processes K`: the folder of their barrier, K, and this process's number
    b.add_argument("--barrier", nargs=3, default=None, metavar=("DIR", "K", "I"), help=argparse.SUPPRESS)
    b.set_defaults(func=bench_command)


def _run_from_args(args, cfg) -> Run:
    from ..study import Run, find_run

    if args.run:
        return find_run(cfg, args.run)
    if not (args.dataset and args.regime):
        raise UserError("--method needs --dataset and --regime", fix="e.g. --method ugpcl --dataset acdc --regime 136")
    dataset_config(cfg, args.dataset)  # a UserError naming the configured datasets
    return Run(args.dataset, args.regime, args.method)


def adhoc_dir(cfg: dict, run: Run, seed: int) -> Path:
    """Where an ad-hoc run (--method) goes by default: under results/, beside the workflow's runs
    but never into them (those are Snakemake's outputs and DVC's, even when the ids agree)."""
    from ..config import results_dir

    return results_dir(cfg) / "adhoc" / run.id / f"seed{seed}"


def refuse_other_settings(run_dir: Path, cfg: dict, run: Run, seed: int, shown: int = 5) -> None:
    """UserError where the finished run in `run_dir` was trained with other settings than `cfg`
    (its config.yaml against this command's configuration), naming up to `shown` differing keys."""
    from ..config import read_yaml
    from ..study import settings_changes

    recorded = run_dir / "config.yaml"
    if not recorded.is_file():
        return
    try:
        changes = settings_changes(read_yaml(recorded), cfg, run, seed)
    except (KeyError, TypeError, AttributeError, UserError):  # written by another version: nothing to compare
        return
    if changes:
        listed = "; ".join(f"{key}: {old!r} in the finished run, {new!r} now" for key, old, new in changes[:shown])
        raise UserError(f"already holds a finished run, trained with other settings than this command's "
                        f"({listed}{'; ...' if len(changes) > shown else ''})", path=run_dir,
                        fix="retrain it with --force (this command's settings then replace the finished run), "
                            "or give another --out to keep it")


def refuse_other_data(run_dir: Path, data: Path) -> None:
    """UserError where the finished run in `run_dir` was trained on another prepared file than `data` is now."""
    from ..data.provenance import data_changed

    changed = data_changed(run_dir, data)
    if changed:
        raise UserError(f"already holds a finished run, trained on another version of {data} (SHA-256 "
                        f"{changed[0][:12]} then, {changed[1][:12]} now: prepared again since)", path=run_dir,
                        fix="retrain it with --force (on the file as it is now), or give another --out to keep it")


def train_command(args) -> int:
    from ..engine.runfiles import RunFiles
    from ..engine.trainer import Trainer
    from ..evaluation import finish_run
    from ..fileio import read_json

    base = config_from_args(args)
    run = _run_from_args(args, base)
    seed = base["train"]["seed"] if args.seed is None else args.seed
    cfg = run.config(base, seed)
    run_dir = Path(args.out or (run.run_dir(base, seed) if args.run else adhoc_dir(base, run, seed)))
    record = run_dir / "run.json"
    if record.exists() and not args.force:
        status = read_json(record, fix="restore the file, or delete it and retrain with --force").get("status")
        if status == "finished":
            refuse_other_settings(run_dir, cfg, run, seed)
            refuse_other_data(run_dir, Path(args.data) if args.data else prepared_path(cfg, run.dataset))
            print(f"{run_dir} already holds a finished run; --force retrains it")
            return 0
    info = {"run_id": run.id, "method": run.method, "dataset": run.dataset, "regime": run.regime, "seed": seed,
            "profile": cfg["profile"], "overrides": run.overrides}
    files = RunFiles(run_dir)
    with files.writing("ugpcl train"):  # one writer, from here: training and the evaluation that ends it
        trainer = Trainer(cfg, info, run_dir, data=args.data, device=args.device)  # checks, writes nothing
        if args.fresh or args.force:
            files.discard()
            record.unlink(missing_ok=True)
        print(f"training {run.id} seed {seed} on {trainer.device} -> {run_dir}")
        if not trainer.fit(stop_after=args.stop_after, progress=not args.no_progress):
            print(f"stopped after {args.stop_after} iterations; run the same command again to resume")
            return 0
        # `overrides` (info) are the experiment matrix's; `set`, this command's --set options
        result = finish_run(run_dir, cfg, trainer.info, {**trainer.facts(), "set": list(args.overrides)},
                            trainer.data, trainer.device)
    attempts = len(result["attempts"])
    print(f"finished {run.id}: mean Dice {100 * result['dice']:.2f}% ({cfg['evaluation']['checkpoint']} checkpoint; "
          f"best {100 * result['dice_best']:.2f}%, last {100 * result['dice_last']:.2f}%; {result['wall_time_s']:.0f} s"
          f"{f' over {attempts} attempts' if attempts > 1 else ''})")
    return 0


def concurrent_bench(args) -> int:
    """K processes running the same benchmark at the same time; their images/s add up."""
    import subprocess
    import sys
    import tempfile

    from ..engine.bench import summary_line
    from ..fileio import write_json

    argv = [a for a in sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        procs, files = [], []
        for i in range(args.processes):
            files.append(Path(tmp) / f"{i}.json")
            # each process waits for the others before its timed steps (engine.bench.file_barrier)
            cmd = [sys.executable, "-m", "ugpcl.cli", *_without(argv, "--processes", "--json"),
                   "--json", str(files[-1]), "--barrier", tmp, str(args.processes), str(i)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
        failed = _wait_all(procs)
        if failed:
            raise UserError(f"a benchmark process failed (exit status {failed})",
                            fix="run the same command without --processes to see why")
        results = [json.loads(f.read_text()) for f in files]
    per_method: dict[str, list[dict]] = {}
    for result in (r for rs in results for r in (rs if isinstance(rs, list) else [rs])):
        per_method.setdefault(result["method"], []).append(result)
    # one entry per method, readable by `ugpcl runs --bench` (ugpcl.projection): a run's step and
    # evaluation times as measured while K processes shared the device, and their summed throughput
    summary = [{"method": method, "processes": args.processes,
                "images_per_s_total": round(sum(r["images_per_s"] for r in rs), 2),
                "median_step_s": round(sum(r["median_step_s"] for r in rs) / len(rs), 4),
                "median_step_s_each": [r["median_step_s"] for r in rs],
                "eval_s_per_image": round(sum(r["eval_s_per_image"] for r in rs) / len(rs), 6),
                # seconds during which all K were timed at once (the barrier makes it most of each window)
                "timed_together_s": round(min(r["timed_window"][1] for r in rs)
                                          - max(r["timed_window"][0] for r in rs), 3)}
               for method, rs in per_method.items()]
    print(json.dumps(summary, indent=2))
    for entry in summary:
        print(summary_line(entry), file=sys.stderr)
    if args.json:
        write_json(args.json, summary)
    return 0


def _wait_all(procs, poll: float = 0.1) -> int:
    """Wait for every process; once one fails, stop the others (they would wait at the barrier
    for it). The first failure's exit status, 0 when all succeeded."""
    import time

    while True:
        codes = [p.poll() for p in procs]
        failed = next((c for c in codes if c not in (None, 0)), 0)
        if failed:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
            return failed
        if all(c == 0 for c in codes):
            return 0
        time.sleep(poll)


def _without(argv: list[str], *options: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not any(a.startswith(o + "=") for o in options):
            out.append(a)
    return out


def bench_command(args) -> int:
    """The figures as JSON on stdout (tools read them), and one line each for a person on stderr."""
    import sys

    if args.processes > 1:
        return concurrent_bench(args)
    from ..device import pick_device
    from ..engine.bench import benchmark, file_barrier, summary_line
    from ..fileio import write_json
    from ..methods import names

    cfg, device = config_from_args(args), pick_device(args.device)
    barrier = file_barrier(Path(args.barrier[0]), int(args.barrier[1]), int(args.barrier[2])) if args.barrier else None
    chosen = names() if args.method == "all" else [args.method]
    results = []
    for name in chosen:
        results.append(benchmark(cfg, name, device, args.steps, args.warmup, sync_debug=args.sync_debug,
                                 barrier=barrier))
        print(json.dumps(results[-1], indent=2), flush=True)
        print(summary_line(results[-1]), file=sys.stderr, flush=True)
    if args.json:
        write_json(args.json, results if args.method == "all" else results[0])
    return 0
