"""`ugpcl runs`, `ugpcl report` and `ugpcl figures`."""

from __future__ import annotations

import json
from pathlib import Path

from ..cli import add_config_args, config_from_args
from ..fileio import write_json, write_text
from ..study import distinct_runs
from . import figures, html, tables


def register(sub) -> None:
    r = sub.add_parser("runs", help="list the distinct training runs, the tables each serves and what has finished")
    add_config_args(r)
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=runs_command)

    p = sub.add_parser("report", help="tables against the paper, metrics.json and report.html under reports/<profile>/")
    add_config_args(p)
    p.set_defaults(func=report_command)

    f = sub.add_parser("figures", help="Figure 3, Figure 4 and training curves (PNGs in reports/<profile>/figures/)")
    add_config_args(f)
    f.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    f.set_defaults(func=figures_command)


def list_runs(cfg: dict) -> list[dict]:
    """Every distinct run: its id, what it is, the tables it serves, each seed's status and directory."""
    out = []
    for run in distinct_runs(cfg):
        seeds = {}
        for seed in cfg["experiments"]["seeds"]:
            run_dir = run.run_dir(cfg, seed)
            status = "finished" if tables.read_finished(run_dir) else ("started" if run_dir.exists() else "missing")
            seeds[str(seed)] = {"status": status, "dir": str(run_dir)}
        out.append({"id": run.id, "dataset": run.dataset, "regime": run.regime, "method": run.method,
                    "overrides": run.overrides, "tables": run.tables, "seeds": seeds})
    return out


def runs_command(args) -> int:
    runs = list_runs(config_from_args(args))
    if args.format == "json":
        print(json.dumps(runs, indent=2))
        return 0
    width = max((len(r["id"]) for r in runs), default=3)
    print(f"{'run':<{width}}  {'finished':>8}  tables")
    for r in runs:
        done = sum(s["status"] == "finished" for s in r["seeds"].values())
        print(f"{r['id']:<{width}}  {done:>4}/{len(r['seeds']):<3}  {', '.join(r['tables'])}")
    print(f"{len(runs)} distinct runs x {len(runs[0]['seeds']) if runs else 0} seed(s)")
    return 0


def write_report(cfg: dict, paper_dir: Path = tables.PAPER_DIR) -> dict[str, Path]:
    """Tables (md, csv), metrics.json, bar charts and report.html from whatever runs have finished."""
    results = tables.collect_results(cfg)
    cells = tables.build_tables(cfg, results, paper_dir)
    files = tables.report_outputs(cfg)
    for name, table_cells in cells.items():
        write_text(files[f"{name}_md"], tables.markdown_document(cfg, name, table_cells))
        write_text(files[f"{name}_csv"], tables.csv_text(table_cells))
        title = f"{name.replace('table', 'Table ')}: our Dice against the paper's"
        figures.bar_chart(bar_groups(name, table_cells), title, files[f"{name}_bars"])
    write_json(files["metrics"], tables.metrics(cells))
    bars = {name: files[f"{name}_bars"] for name in cells}
    write_text(files["html"], html.render(cfg, cells, results, tables.figure_outputs(cfg), bars))
    return files


def bar_groups(table: str, cells: list[tables.Cell]) -> dict[str, list]:
    """Table 1 in one panel per dataset and regime; Tables 2 and 3 in one panel each."""
    if table == "table1":
        groups: dict[str, list] = {}
        for c in cells:
            groups.setdefault(f"{c.labels['dataset']}-{c.labels['labeled']}", []).append(
                (c.labels["method"], c.dice, c.paper_dice))
        return groups
    key = "row" if table == "table2" else "feature"
    return {table: [(str(c.labels[key]), c.dice, c.paper_dice) for c in cells]}


def report_command(args) -> int:
    cfg = config_from_args(args)
    files = write_report(cfg)
    print(f"report of profile {cfg['profile']} -> {files['html']}")
    return 0


def figures_command(args) -> int:
    cfg = config_from_args(args)
    files = figures.make_figures(cfg, args.device)
    print(f"{len(files)} figures -> {Path(files['figure3']).parent}")
    return 0
