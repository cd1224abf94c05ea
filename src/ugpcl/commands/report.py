"""`ugpcl runs`, `ugpcl report`, `ugpcl figures` and `ugpcl choices`."""

from __future__ import annotations

import json
from pathlib import Path

from . import add_config_args, config_from_args, config_options


def register(sub) -> None:
    r = sub.add_parser("runs", help="list the distinct training runs, the tables each serves and what has finished")
    add_config_args(r)
    r.add_argument("--format", choices=["table", "json"], default="table",
                   help="a table to read (default) or JSON, every run and seed with its status")
    r.add_argument("--bench", type=Path, default=None, metavar="FILE",
                   help="project each run's wall time from `ugpcl bench --method all --json FILE` on the training device "
                        "(with --processes K: K runs at a time)")
    r.set_defaults(func=runs_command)

    p = sub.add_parser("report", help="tables against the paper, metrics.json and report.html under reports/<profile>/")
    add_config_args(p)
    p.set_defaults(func=report_command)

    f = sub.add_parser("figures", help="Figure 3, Figure 4, training curves and loss terms (PNGs in "
                                      "reports/<profile>/figures/)")
    add_config_args(f)
    f.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="where Figures 3 and 4 run the networks (default: auto, CUDA when there is one)")
    f.set_defaults(func=figures_command)

    c = sub.add_parser("choices", help="where the paper and the reference code differ, and the value in force")
    add_config_args(c)
    c.set_defaults(func=choices_command)


def runs_command(args) -> int:
    from ..config import results_dir
    from ..projection import format_duration, read_bench, run_seconds, runs_at_once, validation_images
    from ..report.build import list_runs
    from ..study import distinct_runs

    cfg = config_from_args(args)
    runs = list_runs(cfg)
    at_once = 1
    if args.bench:
        bench = read_bench(args.bench)
        at_once = runs_at_once(bench, args.bench)
        by_id = {run.id: run for run in distinct_runs(cfg)}
        for r in runs:
            r["projected_s"] = run_seconds(by_id[r["id"]], cfg, bench, validation_images(cfg, r["dataset"]))
    if args.format == "json":
        print(json.dumps(runs, indent=2))
        return 0
    width = max((len(r["id"]) for r in runs), default=3)
    projected = " projected/seed" if args.bench else ""
    print(f"{'run':<{width}}  {'finished':>8}{projected}  tables")
    for r in runs:
        done = sum(s["status"] == "finished" for s in r["seeds"].values())
        hours = f" {format_duration(r['projected_s']):>14}" if args.bench else ""
        print(f"{r['id']:<{width}}  {done:>4}/{len(r['seeds']):<3}{hours}  {', '.join(r['tables'])}")
    print(f"{len(runs)} distinct runs x {len(runs[0]['seeds']) if runs else 0} seed(s) of profile {cfg['profile']} "
          f"in {results_dir(cfg) / 'runs'} (--profile NAME lists another's)")
    for r in runs:
        for seed, s in r["seeds"].items():
            if s["status"] == "other settings":
                print(f"{r['id']} seed {seed}: finished with other settings than these (trained with "
                      f"{s['settings']}), left out of the report; `ugpcl train --run {r['id']} --seed {seed} --force"
                      f"{config_options(args, cfg)}` retrains it with these")
    if args.bench:
        seeds = len(cfg["experiments"]["seeds"])
        known = [r["projected_s"] for r in runs if r["projected_s"] is not None]
        how = "one run at a time" if at_once == 1 else \
            f"{at_once} runs at a time, each as long as measured with {at_once} sharing the device,"
        print(f"projected: {format_duration(seeds * sum(known) / at_once)} {how} on the benchmarked device "
              f"({len(known)} of {len(runs)} runs benchmarked; validation counted only where the data is prepared)")
    return 0


def report_command(args) -> int:
    from ..report.build import write_report

    cfg = config_from_args(args)
    files = write_report(cfg)
    print(f"report of profile {cfg['profile']} -> {files['html']}")
    return 0


def figures_command(args) -> int:
    from ..report.figures import make_figures

    cfg = config_from_args(args)
    files = make_figures(cfg, args.device)
    print(f"{len(files)} figures -> {Path(files['figure3']).parent}")
    return 0


def choices_command(args) -> int:
    from ..choices import markdown

    print(markdown(config_from_args(args, study=False)), end="")
    return 0
