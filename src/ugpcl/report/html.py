"""The one-file HTML report: tables against the paper, charts, figures, curves and the settings
every number was produced with. Images are embedded as base64, so the file stands alone."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from .. import choices
from ..study import distinct_runs
from ..config import dataset_source
from .tables import (SYNTHETIC_WARNING, TITLES, VERDICTS, Cell, columns_note, display_rows, protocol_note, synthetic,
                     table1_sections)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; }
.matches { background: #d9f2d9; } .above { background: #d9e8fb; } .below { background: #fbdada; }
.missing, .not-run { background: #eee; color: #777; }
.banner { background: #b00020; color: #fff; font-size: 1.3em; font-weight: bold; padding: 1em; margin-bottom: 1em; }
img { max-width: 100%; } .note { color: #555; }
"""


def image_tag(path: Path, alt: str) -> str:
    path = Path(path)
    if not path.is_file():
        return f'<p class="missing">{escape(alt)}: not produced ({escape(str(path))})</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def html_table(rows: list[dict], table_id: str = "", verdict_column: str = "verdict") -> str:
    if not rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in rows[0])
    body = []
    for row in rows:
        css = row.get(verdict_column, "").replace(" ", "-")
        cells = "".join(f"<td>{escape(str(v))}</td>" for v in row.values())
        body.append(f'<tr class="{escape(css)}">{cells}</tr>')
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def verdict_counts(cells: list[Cell]) -> str:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


def settings_rows(cfg: dict, results: dict[str, dict[int, dict]]) -> list[dict]:
    """One row per run and seed: where, how long, from which code and data."""
    rows = []
    for run in distinct_runs(cfg):
        for seed in cfg["experiments"]["seeds"]:
            info = results.get(run.id, {}).get(seed, {}).get("run")
            if info is None:
                rows.append({"run": run.id, "seed": str(seed), "status": "missing", "device": "", "iterations": "",
                             "wall time": "", "data source": "", "finished": "", "commit": ""})
                continue
            wall = float(info.get("wall_time_s") or 0)
            rows.append({
                "run": run.id, "seed": str(seed), "status": info.get("status", ""),
                "device": f"{info.get('device', '')} ({info.get('device_name', '')})",
                "iterations": str(info.get("iterations", "")),
                "wall time": f"{int(wall // 3600)}:{int(wall % 3600 // 60):02d}:{int(wall % 60):02d}",
                "data source": str(info.get("data_source", "")),
                "finished": str(info.get("finished", "")),
                "commit": str(info.get("git_commit", ""))[:10],
            })
    return rows


def render(cfg: dict, tables: dict[str, list[Cell]], results: dict[str, dict[int, dict]], figures: dict[str, Path],
           bars: dict[str, Path]) -> str:
    """The report as one HTML string. `figures`: figure_outputs(cfg); `bars`: table -> bar chart PNG."""
    profile = cfg["profile"]
    done = sum(len(v) for v in results.values())
    planned = len(distinct_runs(cfg)) * len(cfg["experiments"]["seeds"])
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>UGPCL reproduction: profile {escape(profile)}</title><style>{STYLE}</style></head><body>"]
    if synthetic(cfg):
        parts.append(f'<div class="banner">{escape(SYNTHETIC_WARNING)}</div>')
    parts.append(f"<h1>UGPCL reproduction against the paper (profile <code>{escape(profile)}</code>)</h1>")
    parts.append(f"<p class=\"note\">Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {done} of "
                 f"{planned} planned run-seeds. {escape(VERDICTS.replace('**', ''))}</p>")
    parts.append(f"<p class=\"note\">{escape(protocol_note(cfg).replace('`', ''))}</p>")
    parts.append(f"<p class=\"note\">{escape(columns_note(cfg))}</p>")

    for name, cells in tables.items():
        sections = table1_sections(cfg, cells) if name == "table1" else [(name, TITLES[name], cells, True)]
        for ident, title, part, paper in sections:  # Table 1: the paper's datasets, then one table per other
            counts = f"<p>{escape(verdict_counts(part))}</p>" if paper else ""
            parts.append(f"<h2>{escape(title)}</h2>{counts}")
            parts.append(html_table(display_rows(part, cfg["evaluation"]["hd95"], paper), ident))
        parts.append(image_tag(bars[name], f"{name}: our Dice against the paper's"))

    parts.append("<h2>Figure 3: ACDC-136 validation slices (ground truth, MT, CPS, UGPCL)</h2>")
    parts.append(image_tag(figures["figure3"], "Figure 3"))
    parts.append("<h2>Figure 4: t-SNE of pixel features at the embedding stage (Table 2 rows 4, 6, 7)</h2>")
    parts.append(image_tag(figures["figure4"], "Figure 4"))

    parts.append("<h2>Settings</h2>")
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
    parts.append(html_table(overview, "settings"))
    parts.append("<h3>Where the paper and the reference code differ: the value in force</h3>")
    parts.append(html_table(choices.rows(cfg), "choices"))
    parts.append("<h3>Runs</h3>")
    parts.append(html_table(settings_rows(cfg, results), "runs", verdict_column="status"))

    parts.append("<h2>Training curves</h2>")
    for key, path in figures.items():
        if key.startswith("curves:"):
            run_id = key.split(":", 1)[1]
            parts.append(f"<h3>{escape(run_id)}</h3>{image_tag(path, run_id)}")
    parts.append("</body></html>\n")
    return "\n".join(parts)
