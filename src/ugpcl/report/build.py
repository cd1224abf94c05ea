"""The report's outputs from the finished runs: tables, metrics.json, bar charts, report.html; and the
list of runs with their status (`ugpcl runs`)."""

from __future__ import annotations

from pathlib import Path

from ..fileio import atomic_dir, write_json, write_text
from ..study import distinct_runs
from . import html, stamp, stats, tables


def list_runs(cfg: dict) -> list[dict]:
    """Every distinct run: its id, what it is, the tables it serves, each seed's status and directory.
    A seed finished with settings other than `cfg`'s has the status "other settings" and, under
    `settings`, the keys that differ as it was trained (tables.other_settings): the report leaves it out."""
    out = []
    for run in distinct_runs(cfg):
        seeds = {}
        for seed in cfg["experiments"]["seeds"]:
            run_dir = run.run_dir(cfg, seed)
            finished = tables.read_finished(run_dir, cfg["evaluation"]["checkpoint"])
            differs = tables.other_settings(cfg, run, seed) if finished else None
            status = ("other settings" if differs else "finished") if finished else \
                ("started" if run_dir.exists() else "missing")
            seeds[str(seed)] = {"status": status, "dir": str(run_dir), **({"settings": differs} if differs else {})}
        out.append({"id": run.id, "dataset": run.dataset, "regime": run.regime, "method": run.method,
                    "overrides": run.overrides, "tables": run.tables, "seeds": seeds})
    return out


def write_report(cfg: dict, paper_dir: Path = tables.PAPER_DIR) -> dict[str, Path]:
    """Tables (md, csv), the per-class scores and paired tests, metrics.json and the metrics folder,
    bar charts and report.html from whatever runs have finished."""
    from . import figures  # matplotlib and the networks: not for `ugpcl runs`, which lists runs with this module

    # only runs trained with cfg's settings are compared with the paper; the others are named in the page
    results, other = tables.split_by_settings(cfg, tables.collect_results(cfg))
    cells = tables.build_tables(cfg, results, paper_dir)
    reference = tables.paired_with(cfg)
    paired = stats.pair_cells(cells["table1"], reference)
    files = tables.report_outputs(cfg)
    marked = tables.synthetic(cfg)
    for name, table_cells in cells.items():
        made_from = stamp.finished_runs(results, [c.run_id for c in table_cells])
        write_text(files[f"{name}_md"], tables.markdown_document(cfg, name, table_cells, paired,
                                                                 stamp.describe(made_from, made="written")))
        write_text(files[f"{name}_csv"], tables.csv_text(table_cells))
        title = f"{name.replace('table', 'Table ')}: our Dice against the paper's"
        figures.bar_chart(bar_groups(name, table_cells), title, files[f"{name}_bars"], marked,
                          stamp.describe(made_from))
    write_text(files["table1_per_class_csv"], tables.per_class_csv(cells["table1"], cfg["evaluation"]["hd95"]))
    write_text(files["table1_paired_csv"], paired_csv(paired, reference))
    write_json(files["metrics"], tables.metrics(cells))
    with atomic_dir(tables.metrics_dir(cfg)) as folder:  # whole: a row the matrix no longer has goes
        for name, values in tables.metrics_files(cfg, cells).items():
            write_json(folder / f"{name}.json", values)
    bars = {name: files[f"{name}_bars"] for name in cells}
    write_text(files["html"], html.render(cfg, cells, results, tables.figure_outputs(cfg), bars, paired, other))
    return files


def paired_csv(rows: list[dict], reference: str) -> str:
    """stats.pair_cells' rows of `reference` against the other methods as table1_paired.csv."""
    columns = stats.paired_columns(reference)
    lines = [",".join(columns)] + [",".join("" if r[k] is None else str(r[k]) for k in columns.values()) for r in rows]
    return "\n".join(lines) + "\n"


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
