"""The one-file HTML report: a verdict at the top, the tables against the paper (mean ± std and
seeds in every cell, the paired tests' p-values), per-class scores, charts, figures, the training
curves in one figure of small panels and each Table 1 run's loss terms in another, every run with
links to its folder, configuration and logs, and the settings every number was produced with.
Images are embedded as base64, so the page stands alone; the links to the runs are relative to the
page's folder (they work where the page lies beside the results, as the workflow writes it)."""

from __future__ import annotations

import base64
import os
from html import escape
from pathlib import Path
from urllib.parse import quote

from .. import choices
from ..config import dataset_source
from ..study import distinct_runs
from . import stamp, verdict
from .tables import (PAPER_METHOD, PER_CLASS_TITLE, SYNTHETIC_WARNING, TITLES, VERDICTS, Cell, columns_note,
                     display_rows, no_paired_test, paired_display, paired_names, paired_title, paired_with,
                     per_class_metrics, per_class_rows, per_class_sections, protocol_note, synthetic, table1_sections,
                     table2_note, train_log, what_is_paired)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.wide { overflow-x: auto; margin: 0.5em 0 1.2em; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; position: sticky; top: 0; }
th.group { text-align: center; }
.matches { background: #d9f2d9; } .above { background: #d9e8fb; } .below { background: #fbdada; }
.missing, .not-run { background: #eee; color: #777; }
.banner { background: #b00020; color: #fff; font-size: 1.2em; font-weight: bold; padding: 0.8em 1em;
          margin-bottom: 1em; }
.verdict { background: #f7f7f2; border-left: 5px solid #555; padding: 0.6em 1em; font-size: 1.05em; line-height: 1.45; }
.synthetic .verdict { border-left-color: #b00020; }
nav { margin: 0.8em 0; font-size: 0.95em; } nav a { margin-right: 0.9em; }
img { max-width: 100%; display: block; margin: 0.5em 0 1em; } .note { color: #555; font-size: 0.92em; }
td a { color: #0645ad; text-decoration: none; } td a:hover { text-decoration: underline; }
#choices td { white-space: normal; vertical-align: top; } #choices td:first-child { white-space: nowrap; }
#choices td:nth-child(3), #choices td:nth-child(4) { min-width: 18em; }
"""


class Raw(str):
    """Markup made here (a link): html_table puts it in as it is."""


def cell_html(value) -> str:
    return value if isinstance(value, Raw) else escape(str(value))


def with_code(text: str) -> Raw:
    """Text holding Markdown's `inline code` (notes and the choices table are shared with the
    Markdown tables and the README), escaped, with each pair of backticks as <code>."""
    parts = escape(str(text)).split("`")
    if len(parts) % 2 == 0:  # an odd number of backticks: not code, left as written
        return Raw(escape(str(text)))
    return Raw("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def link(path: Path, base: Path, text: str) -> str:
    """A link to `path` relative to the folder `base` (text alone when the file is not there)."""
    path = Path(path)
    if not path.exists():
        return f'<span class="note">{escape(text)}</span>'
    target = quote(Path(os.path.relpath(path, base)).as_posix()) + ("/" if path.is_dir() else "")
    return f'<a href="{escape(target)}">{escape(text)}</a>'


def image_tag(path: Path, alt: str) -> str:
    path = Path(path)
    if not path.is_file():
        return f'<p class="missing">{escape(alt)}: not produced ({escape(str(path))})</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(rows: list[dict], table_id: str = "", verdict_column: str = "verdict", row_ids: list[str] | None = None,
               groups: list[tuple[str, int]] | None = None, heads: list[str] | None = None) -> str:
    """A table of `rows` (dicts with the same keys, the column heads unless `heads` names them); a
    row's class is its `verdict_column` value; `groups`: a first header row of (title, columns spanned)."""
    if not rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in (heads or rows[0]))
    if groups:
        head = "".join(f'<th class="group" colspan="{n}">{escape(t)}</th>' for t, n in groups) + "</tr><tr>" + head
    body = []
    for i, row in enumerate(rows):
        css = str(row.get(verdict_column, "")).replace(" ", "-")
        ident = f' id="{escape(row_ids[i])}"' if row_ids and row_ids[i] else ""
        cells = "".join(f"<td>{cell_html(v)}</td>" for v in row.values())
        body.append(f'<tr class="{escape(css)}"{ident}>{cells}</tr>')
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f'<div class="wide"><table{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def verdict_counts(cells: list[Cell]) -> str:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


def run_anchor(run_id: str) -> str:
    return f"run-{run_id}"


def linked_rows(rows: list[dict], label: str) -> list[dict]:
    """Display rows without their "run" column: the `label` column (method, row, stage) links to
    the run's entry in the list of runs instead."""
    out = []
    for row in rows:
        run = row["run"]
        shown = {k: v for k, v in row.items() if k != "run"}
        if run != "—":
            shown[label] = Raw(f'<a href="#{escape(run_anchor(run))}" title="{escape(run)}">{escape(shown[label])}</a>')
        out.append(shown)
    return out


def settings_rows(cfg: dict, results: dict[str, dict[int, dict]], base: Path,
                  other: dict[tuple[str, int], str] | None = None) -> tuple[list[dict], list[str]]:
    """One row per run and seed: its files (links relative to `base`), where, how long, from which
    code and data; and the rows' ids (the first seed of a run carries the run's anchor). `other`:
    run-seeds finished with other settings (tables.split_by_settings), left out of the tables."""
    other = other or {}
    rows, ids = [], []
    for run in distinct_runs(cfg):
        for i, seed in enumerate(cfg["experiments"]["seeds"]):
            run_dir = run.run_dir(cfg, seed)
            files = " · ".join(link(p, base, text) for p, text in (
                (run_dir, "folder"), (run_dir / "config.yaml", "config.yaml"), (run_dir / "run.json", "run.json"),
                (run_dir / "log.jsonl", "log.jsonl"), (run_dir / "val.jsonl", "val.jsonl"),
                (run_dir / "dvclive", "dvclive"), (train_log(cfg, run, seed), "job log")))
            info = results.get(run.id, {}).get(seed, {}).get("run")
            ids.append(run_anchor(run.id) if i == 0 else "")
            row = {"run": run.id, "seed": str(seed), "files": Raw(files)}
            if info is None:
                status = f"left out: trained with {other[(run.id, seed)]}" if (run.id, seed) in other else "missing"
                rows.append({**row, "status": status, "device": "", "iterations": "", "wall time": "",
                             "data source": "", "finished": "", "commit": ""})
                continue
            wall = float(info.get("wall_time_s") or 0)
            rows.append({
                **row, "status": info.get("status", ""),
                "device": f"{info.get('device', '')} ({info.get('device_name', '')})",
                "iterations": str(info.get("iterations", "")),
                "wall time": f"{int(wall // 3600)}:{int(wall % 3600 // 60):02d}:{int(wall % 60):02d}",
                "data source": str(info.get("data_source", "")),
                "finished": str(info.get("finished", ""))[:16].replace("T", " "),
                # "+modified": trained with uncommitted changes to tracked files; "(2 commits)": resumed on other code
                "commit": str(info.get("git_commit", ""))[:10] + (" +modified" if info.get("code_modified") else "")
                          + (f" ({len(info['git_commits'])} commits)" if len(info.get("git_commits", [])) > 1 else ""),
            })
    return rows, ids


def ordering_rows(order: list[dict]) -> list[dict]:
    return [{"setting": o["setting"], "ours (best first)": o["ours"], "paper (best first)": o["paper"],
             "Kendall's tau": "n/a" if o["tau"] is None else f"{o['tau']:+.2f}"} for o in order]


def per_class_html(cfg: dict, cells: list[Cell]) -> list[str]:
    """One table per Table 1 setting with several foreground classes: a column group per class."""
    hd95 = cfg["evaluation"]["hd95"]
    parts = []
    for setting, classes, part in per_class_sections(cells):
        unit = next((c.hd95_unit for c in part if c.hd95_unit), "")
        units = {"Dice": "%", "Jaccard": "%", "HD95": unit, "ASD": unit}
        metrics = [f"{m} ({units[m]})" if units[m] else m for m, _, _ in per_class_metrics(hd95)]
        parts.append(f"<h3>{escape(setting)}</h3>")
        parts.append(html_table(per_class_rows(part, classes, hd95), f"per-class-{setting}",
                                groups=[("", 2)] + [(name, len(metrics)) for name in classes],
                                heads=["method", "seeds"] + metrics * len(classes)))
    return parts


def render(cfg: dict, tables: dict[str, list[Cell]], results: dict[str, dict[int, dict]], figures: dict[str, Path],
           bars: dict[str, Path], paired: list[dict] | None = None,
           other: dict[tuple[str, int], str] | None = None) -> str:
    """The report as one HTML string. `figures`: figure_outputs(cfg); `bars`: table -> bar chart PNG;
    `paired`: stats.pair_cells' rows (experiments.table1.paired_with against the other methods); `other`:
    run-seeds finished with other settings than `cfg`'s (tables.split_by_settings), named and left out."""
    paired = paired or []
    other = other or {}
    profile = cfg["profile"]
    base = Path(figures["curves"]).parent.parent  # the report's folder: links are relative to it
    hd95 = cfg["evaluation"]["hd95"]
    done = sum(len(v) for v in results.values())
    planned = len(distinct_runs(cfg)) * len(cfg["experiments"]["seeds"])
    marked = synthetic(cfg)
    order = verdict.orderings(tables["table1"])
    reference = paired_with(cfg)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>UGPCL reproduction: profile {escape(profile)}</title><style>{STYLE}</style></head>"
             f"<body class=\"{'synthetic' if marked else ''}\">"]
    if marked:
        parts.append(f'<div class="banner">{escape(SYNTHETIC_WARNING)}</div>')
    parts.append(f"<h1>UGPCL reproduction against the paper (profile <code>{escape(profile)}</code>)</h1>")
    text = verdict.paragraph(tables, order, paired, marked, cfg["train"]["iterations"], choices.departures_text(cfg),
                             reference)
    parts.append(f'<p class="verdict" id="verdict"><b>Verdict.</b> {escape(text)}</p>')
    sections = [("table1", "Table 1"), ("ordering", "Method ordering"), ("per-class", "Per class"),
                ("paired", "Paired tests"), ("table2", "Table 2"), ("table3", "Table 3"), ("figure3", "Figure 3"),
                ("figure4", "Figure 4"), ("curves", "Training curves"), ("runs", "Runs"), ("settings", "Settings")]
    parts.append("<nav>" + "".join(f'<a href="#{s}-section">{escape(t)}</a>' for s, t in sections) + "</nav>")
    made = stamp.describe(stamp.finished_runs(results), made="generated")
    parts.append(f"<p class=\"note\">{escape(made)} ({done} of {planned} planned run-seeds "
                 f"finished). {with_code(VERDICTS.replace('**', ''))} Every score is the mean ± std "
                 "over the finished seeds (± –: one seed, no std); seeds: finished / planned.</p>")
    if other:
        plural = "s" if len(other) > 1 else ""
        parts.append(f"<p class=\"note\"><b>Left out:</b> {len(other)} finished run-seed{plural} "
                     "trained with settings other than this configuration's (see Runs for the keys): "
                     f"{escape(', '.join(f'{run} seed {seed}' for run, seed in sorted(other)))}. "
                     "<code>ugpcl train --run RUN --seed SEED --force</code> retrains one with these settings.</p>")
    parts.append(f"<p class=\"note\">{with_code(protocol_note(cfg))}</p>")
    parts.append(f"<p class=\"note\">{escape(columns_note(cfg))}</p>")

    for name, cells in tables.items():
        shown = table1_sections(cfg, cells) if name == "table1" else [(name, TITLES[name], cells, True)]
        parts.append(f'<span id="{name}-section"></span>')
        for ident, title, part, paper in shown:  # Table 1: the paper's datasets, then one table per other
            counts = f"<p>{escape(verdict_counts(part))}</p>" if paper else ""
            parts.append(f"<h2>{escape(title)}</h2>{counts}")
            if name == "table2":
                parts.append(f'<p class="note">{escape(table2_note(cfg).replace("`", ""))}</p>')
            label = {"table1": "method", "table2": "row", "table3": "feature"}[name]
            parts.append(html_table(linked_rows(display_rows(part, hd95, paper), label), ident))
        parts.append(image_tag(bars[name], f"{name}: our Dice against the paper's"))
        if name == "table1":
            parts.append('<h2 id="ordering-section">Method ordering: ours against the paper\'s '
                         '(Table 1, mean Dice)</h2>')
            parts.append(html_table(ordering_rows(order), "ordering") if order else
                         "<p>No setting has two methods with both our result and the paper's yet.</p>")
            parts.append(f'<h2 id="per-class-section">{escape(PER_CLASS_TITLE)}</h2>')
            per_class = per_class_html(cfg, cells)
            parts += per_class or ["<p>No Table 1 setting with several foreground classes has results yet.</p>"]
            parts.append(f'<h2 id="paired-section">{escape(paired_title(reference))}</h2>')
            parts.append(f'<p class="note">{with_code(what_is_paired(reference))}</p>')
            parts.append(html_table(paired_display(paired), "paired") if paired else
                         f"<p>{escape(no_paired_test(reference, cells))}</p>")

    parts.append('<h2 id="figure3-section">Figure 3: ACDC-136 validation slices (ground truth, MT, CPS, UGPCL)</h2>')
    parts.append(image_tag(figures["figure3"], "Figure 3"))
    parts.append('<h2 id="figure4-section">Figure 4: t-SNE of pixel features at the embedding stage '
                 '(Table 2 rows 4, 6, 7)</h2>')
    parts.append(image_tag(figures["figure4"], "Figure 4"))
    parts.append('<h2 id="curves-section">Training curves</h2>')
    parts.append('<p class="note">Every run: training loss and validation Dice against the iteration, one row of '
                 'panels per Table 1 setting and per ablation table. The same curves as data: '
                 f'{link(figures["curves_loss"], base, "train_loss.tsv")}, '
                 f'{link(figures["curves_val"], base, "val_dice.tsv")} '
                 "(<code>dvc plots show</code>); every iteration of a run: its <code>dvclive</code> folder and "
                 "<code>log.jsonl</code> (links in the list of runs).</p>")
    parts.append(image_tag(figures["curves"], "training curves"))
    parts.append('<p class="note">Each loss term of every Table 1 run, a panel per run (the ramped consistency '
                 'weight times the term it weights as its own line): to check each term\'s magnitude when the '
                 'ordering of the methods differs from the paper\'s. As data: '
                 f'{link(figures["curves_terms"], base, "loss_terms.tsv")}.</p>')
    parts.append(image_tag(figures["loss_terms"], "loss terms"))

    parts.append('<h2 id="runs-section">Runs</h2>')
    rows, ids = settings_rows(cfg, results, base, other)
    parts.append(html_table(rows, "runs", verdict_column="status", row_ids=ids))

    parts.append('<h2 id="settings-section">Settings</h2>')
    datasets = dict.fromkeys(run.dataset for run in distinct_runs(cfg))
    data_sources = ", ".join(f"{d}: {dataset_source(cfg, d)}" for d in datasets) or "none"
    evaluation = cfg["evaluation"]
    overview = [
        {"setting": "profile", "value": profile},
        {"setting": "data sources", "value": data_sources},
        {"setting": "image size", "value": str(cfg["data"]["image_size"])},
        {"setting": "iterations", "value": str(cfg["train"]["iterations"])},
        {"setting": "batch (labeled)", "value": f"{cfg['train']['batch_size']} ({cfg['train']['labeled_bs']})"},
        {"setting": "seeds", "value": ", ".join(map(str, cfg["experiments"]["seeds"]))},
        {"setting": "evaluation", "value": f"protocol {evaluation['protocol']}, {evaluation['checkpoint']} checkpoint "
                                           f"(both best and last evaluated), HD95 {evaluation['hd95']}"},
    ]
    if reference != PAPER_METHOD:  # the paper's comparison is the one the paired tests' title names
        name, each = paired_names(reference)   # (not `other`: that is the left-out run-seeds)
        overview.append({"setting": "paired tests",
                         "value": f"{name} against each {each} of a Table 1 setting "
                                  f"(experiments.table1.paired_with; the paper: {PAPER_METHOD})"})
    parts.append(html_table(overview, "settings"))
    parts.append("<h3>Where the paper and the reference code differ: the value in force</h3>")
    parts.append(html_table([{k: with_code(v) for k, v in row.items()} for row in choices.rows(cfg)], "choices"))
    parts.append("</body></html>\n")
    return "\n".join(parts)
