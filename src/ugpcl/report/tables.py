"""Our results beside the paper's, one cell per table entry, and where the report writes them.

A cell holds the run that fills it (if the experiment matrix has one), the Dice, Jaccard, HD95
and per-class scores of every finished seed, the per-case tables they came from (for the paired
tests, `stats`), and the paper's values. Every score is shown as mean ± std over the seeds. Its
verdict compares the mean Dice over seeds with the paper's: within TOLERANCE Dice points it
"matches", otherwise it is "above" or "below".
Runs that have not finished are shown as missing, never filled in. Ours is the checkpoint
`evaluation.checkpoint` names (best, selected on the very cases it is scored on); the other
one (last) stands beside it, so the selection effect shows. A method evaluating two networks
(CPS) is reported by its first; the second's Dice has a column of its own.

This module imports nothing heavy: the Snakefile reads the output layout from it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .. import choices
from ..config import (REPO_ROOT, dataset_names, dataset_source, eval_dir, prepared_path, read_yaml, reports_dir,
                      results_dir)
from ..errors import UserError
from ..models.unet import EMBED_STAGES
from ..study import Run, distinct_runs, settings_changes

TOLERANCE = 2.0  # Dice points (%): |ours - paper| <= TOLERANCE reads "matches"
HD95_KEYS = {"medpy": "hd95_medpy", "monai": "hd95"}  # evaluation.hd95 -> the summary.json key tables show
HD95_NAMES = {"medpy": "the 95th percentile of both directed surface distances pooled (medpy's hd95)",
              "monai": "the larger of the two directed 95th percentiles (MONAI's)"}
PAPER_DIR = REPO_ROOT / "workflow" / "resources" / "paper"
TABLES = ("table1", "table2", "table3")
PAPER_COLUMNS = {
    "table1": ["method", "dataset", "labeled", "dice", "jaccard"],
    "table2": ["row", "l_con", "l_e", "l_c_sup", "l_c_pseudo", "l_c_ugpcl", "dice", "jaccard"],
    "table3": ["feature", "resolution", "dice", "jaccard"],
}
SYNTHETIC_WARNING = (
    "SYNTHETIC DATA: these are smoke-test results on generated images (the demo phantoms), "
    "not a reproduction of the paper. Nothing here says anything about UGPCL or its baselines."
)
PAPER_METHOD = "ugpcl"  # the paper's method: the verdict's claims are about it; the paired tests' default reference
FIGURE3_METHODS = ("mt", "cps", "ugpcl")  # the paper's Figure 3: MT and CPS against UGPCL, ACDC-136
FIGURE3_REGIME = ("acdc", "136")          # (dataset kind, regime)
PAPER_ABLATIONS = ("acdc", "136")         # Tables 2 and 3 of the paper: (dataset kind, regime)
FIGURE4_ROWS = {4: "no contrast (row 4)", 6: "pseudo-label contrast (row 6)", 7: "UGPCL (row 7)"}


# --- where things go ----------------------------------------------------------------------
def report_outputs(cfg: dict) -> dict[str, Path]:
    """Files `ugpcl report` writes: tables (md, csv), metrics.json, report.html, bar charts."""
    out_dir = reports_dir(cfg)
    files = {}
    for table in TABLES:
        files[f"{table}_md"] = out_dir / f"{table}.md"
        files[f"{table}_csv"] = out_dir / f"{table}.csv"
        files[f"{table}_bars"] = out_dir / "figures" / f"bars_{table}.png"
    files["table1_per_class_csv"] = out_dir / "table1_per_class.csv"
    files["table1_paired_csv"] = out_dir / "table1_paired.csv"
    files["metrics"] = out_dir / "metrics.json"
    files["html"] = out_dir / "report.html"
    return files


def metrics_dir(cfg: dict) -> Path:
    """The folder of one small JSON file per table row (`dvc metrics show`: a row per file, a column
    per setting); written whole by `ugpcl report`, declared as top-level `metrics:` in dvc.yaml."""
    return reports_dir(cfg) / "metrics"


def curves_data(cfg: dict) -> dict[str, Path]:
    """The training curves of every run as plot data for `dvc plots show` (top-level `plots:` in dvc.yaml):
    training loss, validation Dice, and each loss term of the Table 1 runs."""
    out_dir = reports_dir(cfg) / "curves"
    return {"curves_loss": out_dir / "train_loss.tsv", "curves_val": out_dir / "val_dice.tsv",
            "curves_terms": out_dir / "loss_terms.tsv"}


def figure_outputs(cfg: dict) -> dict[str, Path]:
    """Files `ugpcl figures` writes: Figure 3, Figure 4, the training curves of every run (one
    figure of small panels), each loss term of every Table 1 run (one panel per run), and the
    same curves as plot data for `dvc plots show`."""
    fig_dir = reports_dir(cfg) / "figures"
    return {"figure3": fig_dir / "figure3.png", "figure4": fig_dir / "figure4.png", "curves": fig_dir / "curves.png",
            "loss_terms": fig_dir / "loss_terms.png", **curves_data(cfg)}


def curve_groups(cfg: dict, ablations: bool = True) -> dict[str, list[tuple[str, Run]]]:
    """The runs whose curves share a panel, each with its name there: Table 1 per dataset and
    regime (by method), then (unless `ablations` is False) Table 2 (by row) and Table 3 (by stage)."""
    groups: dict[str, list[tuple[str, Run]]] = {}
    for run in distinct_runs(cfg):
        for tag in run.tables:
            table, _, entry = tag.partition(":")
            if table == "table1":
                groups.setdefault(f"{run.dataset}-{run.regime}", []).append((run.method, run))
            elif ablations:
                name = f"{'Table 2' if table == 'table2' else 'Table 3'} ({run.dataset}-{run.regime})"
                groups.setdefault(name, []).append((f"row {entry}" if table == "table2" else entry, run))
    # the ablation tables after Table 1's settings (a stable sort), each sorted by its entries
    return {k: sorted(v, key=lambda e: e[0]) if k.startswith("Table") else v
            for k, v in sorted(groups.items(), key=lambda kv: kv[0].startswith("Table"))}


def train_log(cfg: dict, run: Run, seed: int) -> Path:
    """Where the workflow's training job writes its output (workflow/rules/train.smk: `log:`)."""
    return results_dir(cfg) / "logs" / "train" / run.id / f"seed{seed}.log"


def kind(cfg: dict, dataset: str) -> str:
    """A dataset's kind (its name when it is not configured: the paper's datasets are kinds)."""
    return (cfg["data"].get(dataset) or {}).get("kind", dataset)


def figure3_runs(cfg: dict) -> dict[str, Run | None]:
    """Figure 3's methods -> their Table 1 run on an ACDC-kind dataset with regime 136 (None where the matrix lacks it)."""
    dataset_kind, regime = FIGURE3_REGIME
    found = {r.method: r for r in distinct_runs(cfg)
             if "table1" in r.tables and (kind(cfg, r.dataset), r.regime) == (dataset_kind, regime)}
    return {method: found.get(method) for method in FIGURE3_METHODS}


def figure4_runs(cfg: dict) -> dict[str, Run | None]:
    """Figure 4's panels -> the Table 2 run of that row (None where the matrix lacks it)."""
    by_tag = {tag: r for r in distinct_runs(cfg) for tag in r.tables}
    return {label: by_tag.get(f"table2:{row}") for row, label in FIGURE4_ROWS.items()}


def figure_datasets(cfg: dict) -> dict[str, str | None]:
    """The dataset each figure shows: Figure 3 its runs', Figure 4 Table 2's (None: the figure has no run)."""
    fig3 = {r.dataset for r in figure3_runs(cfg).values() if r is not None}
    fig4 = any(r is not None for r in figure4_runs(cfg).values())
    return {"figure3": min(fig3) if fig3 else None,
            "figure4": cfg["experiments"]["table2"]["dataset"] if fig4 else None}


def synthetic(cfg: dict) -> bool:
    """True when any dataset of the study comes from the synthetic demo generator. The profile does not
    count: real data trained under the demo profile (small model, short runs) is not synthetic."""
    return any(dataset_source(cfg, r.dataset) == "demo" for r in distinct_runs(cfg))


# --- reading results ----------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc})", path=path,
                        fix="delete the run directory and train it again") from exc


def other_checkpoint(headline: str) -> str:
    return "last" if headline == "best" else "best"


def read_finished(run_dir: Path, headline: str = "best") -> dict | None:
    """{'run': run.json, 'summary': the `headline` checkpoint's summary.json, 'other': the other
    checkpoint's (None if absent)} of a finished run, else None."""
    info = _read_json(run_dir / "run.json")
    summary = _read_json(eval_dir(run_dir, headline) / "summary.json")
    if info is None or summary is None or info.get("status") != "finished":
        return None
    other = _read_json(eval_dir(run_dir, other_checkpoint(headline)) / "summary.json")
    return {"run": info, "summary": summary, "other": other, "per_case": eval_dir(run_dir, headline) / "per_case.csv"}


def collect_results(cfg: dict) -> dict[str, dict[int, dict]]:
    """run id -> {seed: finished result} for every run of the matrix (seeds not finished left out)."""
    results = {}
    for run in distinct_runs(cfg):
        per_seed = {}
        for seed in cfg["experiments"]["seeds"]:
            result = read_finished(run.run_dir(cfg, seed), cfg["evaluation"]["checkpoint"])
            if result is not None:
                per_seed[seed] = result
        results[run.id] = per_seed
    return results


def other_settings(cfg: dict, run: Run, seed: int, ignore: tuple[str, ...] = ()) -> str | None:
    """`key=value, ...` (as trained) where the run-seed's config.yaml differs from `cfg` in what the run
    trains and is evaluated with (study.settings_changes, the workflows' rerun trigger), keys in
    `ignore` aside; None where it does not. A config.yaml that is missing or cannot be compared (not
    this version's) says so: such a run is not known to have `cfg`'s settings either."""
    path = run.run_dir(cfg, seed) / "config.yaml"
    if not path.is_file():
        return f"unknown: {path.name} missing"
    try:
        changes = [(key, old) for key, old, _ in settings_changes(read_yaml(path), cfg, run, seed)
                   if key not in ignore]
    except (OSError, KeyError, TypeError, AttributeError, UserError):
        return f"unknown: {path.name} not comparable"
    return ", ".join([*(f"{key}={old}" for key, old in changes), *other_data(cfg, run, seed)]) or None


def other_data(cfg: dict, run: Run, seed: int) -> list[str]:
    """`data=<SHA-256> (...)` where the run-seed was trained on another prepared file than the one its
    dataset has now (prepared again since: new masks, cases, sizes), as `ugpcl evaluate` refuses it."""
    from ..data.provenance import data_changed

    changed = data_changed(run.run_dir(cfg, seed), prepared_path(cfg, run.dataset))
    return [f"data={changed[0][:12]} (the prepared file is {changed[1][:12]} now)"] if changed else []


def split_by_settings(cfg: dict, results: dict[str, dict[int, dict]], ignore: tuple[str, ...] = ()
                      ) -> tuple[dict[str, dict[int, dict]], dict[tuple[str, int], str]]:
    """`results` (collect_results) split into the run-seeds trained with `cfg`'s settings, which the
    tables compare with the paper, and {(run id, seed): other_settings} of the others, which they leave out."""
    by_id = {run.id: run for run in distinct_runs(cfg)}
    same, other = {}, {}
    for run_id, seeds in results.items():
        same[run_id] = {}
        for seed, result in seeds.items():
            differs = other_settings(cfg, by_id[run_id], seed, ignore)
            if differs:
                other[(run_id, seed)] = differs
            else:
                same[run_id][seed] = result
    return same, other


RESTORE_PAPER = "restore it from git (workflow/resources/paper/ holds the paper's tables as CSV)"


def read_paper_table(table: str, paper_dir: Path = PAPER_DIR) -> list[dict]:
    path = Path(paper_dir) / f"{table}.csv"
    if not path.is_file():
        raise UserError("the paper's table is missing", path=path, fix=RESTORE_PAPER)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = set(PAPER_COLUMNS[table]) - set(rows[0] if rows else {})
    if missing:
        raise UserError(f"columns {sorted(missing)} missing", path=path, fix=RESTORE_PAPER)
    return rows


# --- cells --------------------------------------------------------------------------------
@dataclass
class Cell:
    labels: dict                      # the columns that name the cell, e.g. dataset/labeled/method
    run_id: str | None                # None: the experiment matrix does not include this cell
    seeds_planned: int
    dice: list[float] = field(default_factory=list)      # % per finished seed (the headline checkpoint)
    jaccard: list[float] = field(default_factory=list)
    hd95: list[float] = field(default_factory=list)      # the definition evaluation.hd95 names, in hd95_unit;
                                                         # NaN for a seed whose HD95 is undefined (metrics.summarise)
    paper_dice: float | None = None
    paper_jaccard: float | None = None
    other: str = "last"                                  # the checkpoint shown beside the headline one
    other_dice: list[float] = field(default_factory=list)
    other_jaccard: list[float] = field(default_factory=list)
    dice_net2: list[float] = field(default_factory=list)  # a second evaluated network (CPS), headline checkpoint
    hd95_unit: str | None = None
    empty_predictions: int = 0                            # (case, class) pairs predicted empty, over the seeds
    per_class: dict = field(default_factory=dict)        # class -> metric -> values per seed (Dice/Jaccard in %)
    case_files: list[Path] = field(default_factory=list)  # per_case.csv of every finished seed (headline checkpoint)
    paired: object | None = None                          # stats.Paired: paired_with against this cell (pair_cells)
    paired_with: str | None = None                        # that method: experiments.table1.paired_with

    @property
    def dice_mean(self) -> float | None:
        return statistics.fmean(self.dice) if self.dice else None

    @property
    def jaccard_mean(self) -> float | None:
        return statistics.fmean(self.jaccard) if self.jaccard else None

    @property
    def dice_diff(self) -> float | None:
        return _diff(self.dice_mean, self.paper_dice)

    @property
    def jaccard_diff(self) -> float | None:
        return _diff(self.jaccard_mean, self.paper_jaccard)

    @property
    def verdict(self) -> str:
        if self.run_id is None:
            return "not run"
        if not self.dice:
            return "missing"
        if self.paper_dice is None:
            return "no paper value"
        diff = self.dice_diff
        return "matches" if abs(diff) <= TOLERANCE else ("above" if diff > 0 else "below")

    def row(self) -> dict:
        """The CSV row: labels, then numbers (blank where there is none)."""
        def std(v):
            return _round(statistics.stdev(v)) if len(v) > 1 and not any(map(math.isnan, v)) else None

        return {
            **self.labels,
            "run": self.run_id or "",
            "seeds": len(self.dice),
            "seeds_planned": self.seeds_planned if self.run_id else 0,
            "dice": _round(self.dice_mean),
            "dice_std": std(self.dice),
            "dice_paper": self.paper_dice,
            "dice_diff": _round(self.dice_diff),
            "verdict": self.verdict,
            "jaccard": _round(self.jaccard_mean),
            "jaccard_std": std(self.jaccard),
            "jaccard_paper": self.paper_jaccard,
            "jaccard_diff": _round(self.jaccard_diff),
            f"dice_{self.other}": _mean_or_none(self.other_dice),
            f"jaccard_{self.other}": _mean_or_none(self.other_jaccard),
            "dice_net2": _mean_or_none(self.dice_net2),
            "hd95": _mean_or_none(self.hd95),
            "hd95_std": std(self.hd95),
            "hd95_unit": self.hd95_unit or "",
            "hd95_undefined_seeds": sum(map(math.isnan, self.hd95)),
            "empty_predictions": self.empty_predictions,
        }


def _mean_or_none(values: list[float]) -> float | None:
    """The mean, or None where there is none: no value, or one seed's undefined (NaN), which
    is never averaged away over the other seeds."""
    return _round(statistics.fmean(values)) if values and not any(map(math.isnan, values)) else None


def _diff(ours: float | None, paper: float | None) -> float | None:
    return None if ours is None or paper is None else ours - paper


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def fill(cell: Cell, results: dict[str, dict[int, dict]], hd95: str = "medpy") -> Cell:
    """Add each finished seed's Dice and Jaccard (fractions in summary.json) as percentages, for the
    headline checkpoint, the other one and a second network; and the HD95 `hd95` defines."""
    for result in results.get(cell.run_id, {}).values():
        summary, other = result["summary"], result.get("other")
        cell.dice.append(100.0 * float(summary["dice"]))
        cell.jaccard.append(100.0 * float(summary["jaccard"]))
        if other is not None and other.get("dice") is not None:
            cell.other_dice.append(100.0 * float(other["dice"]))
            cell.other_jaccard.append(100.0 * float(other["jaccard"]))
        second = list(summary.get("networks", {}).values())[1:2]
        if second and second[0].get("dice") is not None:
            cell.dice_net2.append(100.0 * float(second[0]["dice"]))
        cell.hd95.append(_number(summary.get(HD95_KEYS[hd95])))  # NaN: undefined for this seed, shown so
        cell.hd95_unit = summary.get("distance_unit", "voxel")
        cell.empty_predictions += int(summary.get("empty_predictions") or 0)
        for name, scores in (summary.get("per_class") or {}).items():
            for metric, key, scale in per_class_metrics(hd95):
                cell.per_class.setdefault(name, {}).setdefault(metric, []).append(scale * _number(scores.get(key)))
        if result.get("per_case") is not None and Path(result["per_case"]).is_file():
            cell.case_files.append(Path(result["per_case"]))
    if cell.case_files:  # the data's class order (summary.json sorts the names)
        order = class_order(cell.case_files[0])
        cell.per_class = {n: cell.per_class[n] for n in sorted(cell.per_class, key=lambda n: order.get(n, len(order)))}
    return cell


def _number(value) -> float:
    """summary.json's value as a float; null (undefined) as NaN."""
    return math.nan if value is None else float(value)


def per_class_metrics(hd95: str) -> tuple[tuple[str, str, float], ...]:
    """(shown name, summary.json key, scale) of the per-class table's metrics."""
    return (("Dice", "dice", 100.0), ("Jaccard", "jaccard", 100.0), ("HD95", HD95_KEYS[hd95], 1.0), ("ASD", "asd", 1.0))


def class_order(per_case: Path) -> dict[str, int]:
    """Class name -> its position in a per_case.csv (the order of the data's classes)."""
    order: dict[str, int] = {}
    with Path(per_case).open(newline="") as f:
        for row in csv.DictReader(f):
            name = row.get("class")
            if name in order:
                break
            order[name] = len(order)
    return order


def _paper_value(row: dict | None, key: str) -> float | None:
    return float(row[key]) if row is not None and row.get(key) not in (None, "") else None


def build_tables(cfg: dict, results: dict[str, dict[int, dict]], paper_dir: Path = PAPER_DIR) -> dict[str, list[Cell]]:
    """Cells of Tables 1-3: the paper's entries in its order, then matrix entries the paper lacks
    (in Table 1, a method of your own after the paper's methods of the same setting).

    The paper's values go to the datasets of its datasets' kinds (Table 1: acdc, isic; Tables 2
    and 3: an ACDC-kind dataset at regime 136); any other dataset's cells have none.
    """
    runs = distinct_runs(cfg)
    n_seeds = len(cfg["experiments"]["seeds"])
    by_tag = {tag: r for r in runs for tag in r.tables}

    evaluation = cfg["evaluation"]

    def cell(labels: dict, run: Run | None, paper: dict | None) -> Cell:
        c = Cell(labels, run.id if run else None, n_seeds, paper_dice=_paper_value(paper, "dice"),
                 paper_jaccard=_paper_value(paper, "jaccard"), other=other_checkpoint(evaluation["checkpoint"]))
        return fill(c, results, evaluation["hd95"])

    # Table 1: (dataset, labeled, method)
    t1_runs = {(r.dataset, r.regime, r.method): r for r in runs if "table1" in r.tables}
    t1_paper = {(p["dataset"], p["labeled"], p["method"]): p for p in read_paper_table("table1", paper_dir)}
    keys = []
    for paper_kind, n, m in t1_paper:  # each paper entry under every configured dataset of its kind
        keys += [(d, n, m) for d in [d for d in dataset_names(cfg) if kind(cfg, d) == paper_kind] or [paper_kind]]
    keys = list(dict.fromkeys(keys + list(t1_runs)))
    settings = list(dict.fromkeys((d, n) for d, n, _ in keys))
    keys.sort(key=lambda k: settings.index(k[:2]))  # a method the paper lacks: last in its own setting
    table1 = [cell({"dataset": d, "labeled": n, "method": m}, t1_runs.get((d, n, m)),
                   t1_paper.get((kind(cfg, d), n, m))) for d, n, m in keys]
    paper_setting = {t: (kind(cfg, cfg["experiments"][t]["dataset"]), cfg["experiments"][t]["regime"])
                     == PAPER_ABLATIONS for t in ("table2", "table3")}

    # Table 2: rows, their loss-term switches as the paper's columns
    t2_paper = {int(p["row"]): p for p in read_paper_table("table2", paper_dir)} if paper_setting["table2"] else {}
    t2_rows = [int(r["row"]) for r in cfg["experiments"]["table2"]["rows"]]
    switches = ("l_con", "l_e", "l_c_sup", "l_c_pseudo", "l_c_ugpcl")
    table2 = []
    for row in list(t2_paper) + [r for r in t2_rows if r not in t2_paper]:
        paper = t2_paper.get(row)
        labels = {"row": row, **{s: (paper or {}).get(s, "") for s in switches}}
        table2.append(cell(labels, by_tag.get(f"table2:{row}"), paper))

    # Table 3: embedding stage
    t3_paper = {p["feature"]: p for p in read_paper_table("table3", paper_dir)} if paper_setting["table3"] else {}
    stages = cfg["experiments"]["table3"]["stages"]
    table3 = []
    for stage in list(t3_paper) + [s for s in stages if s not in t3_paper]:
        paper = t3_paper.get(stage)
        labels = {"feature": stage, "resolution": stage_resolution(stage, cfg["data"]["image_size"], paper)}
        table3.append(cell(labels, by_tag.get(f"table3:{stage}"), paper))

    return {"table1": table1, "table2": table2, "table3": table3}


def stage_resolution(stage: str, image_size: int, paper: dict | None) -> str:
    """The side of encoder stage `stage`'s feature map at `image_size` ('16'), with the paper's where it
    differs ('16 (paper: 56 at 224)'): the demo trains at 64 px, the paper at 224."""
    ours = str(image_size // 2 ** EMBED_STAGES[stage])
    theirs = (paper or {}).get("resolution", "")
    return ours if theirs in ("", ours) else f"{ours} (paper: {theirs} at 224)"


# --- writing ------------------------------------------------------------------------------
def fmt_value(values: list[float], digits: int = 2) -> str:
    """'85.12 ± 0.40': mean ± std over the seeds; '85.12 ± –' for one seed (no std). The tables show
    the number of seeds of each row in its "seeds" column."""
    if not values:
        return "missing"
    undefined = sum(map(math.isnan, values))
    if undefined:
        return "undefined" if undefined == len(values) else f"undefined in {undefined} of {len(values)} seeds"
    mean = statistics.fmean(values)
    std = f"{statistics.stdev(values):.{digits}f}" if len(values) > 1 else "–"
    return f"{mean:.{digits}f} ± {std}"


def fmt_diff(x: float | None) -> str:
    return "" if x is None else f"{x:+.2f}"


def table1_sections(cfg: dict, cells: list[Cell]) -> list[tuple[str, str, list[Cell], bool]]:
    """Table 1 as shown: (id, title, cells, has paper columns). First the paper's datasets (acdc,
    isic kinds) against the paper, then one table per other dataset, without paper columns."""
    paper_kinds = {kind(cfg, c.labels["dataset"]) for c in cells if c.paper_dice is not None}
    ours = [c for c in cells if kind(cfg, c.labels["dataset"]) in paper_kinds]
    sections = [("table1", TITLES["table1"], ours, True)] if ours else []
    for dataset in dict.fromkeys(c.labels["dataset"] for c in cells if c not in ours):
        part = [c for c in cells if c.labels["dataset"] == dataset]
        title = (f"Table 1 on {dataset} (kind {kind(cfg, dataset)}): Dice / Jaccard (%) of every method "
                 "(validation set; the paper has no results on it)")
        sections.append((f"table1-{dataset}", title, part, False))
    return sections


def paired_text(c: Cell) -> str:
    """The p-value of the paired test of the reference method against this cell, and the cases it paired."""
    if c.paired is None:
        return ""
    p = c.paired.p
    return ("n/a" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}") + f" ({c.paired.n})"


def display_rows(cells: list[Cell], hd95: str = "medpy", paper: bool = True) -> list[dict]:
    """The rows as shown in Markdown and HTML: formatted strings. "Dice ours" is the headline
    checkpoint's, the column beside it the other checkpoint's; "Dice net 2" appears when a run
    of the table evaluates a second network, the paired test's p-value when one was made (its
    column named after the method paired against each cell). Without `paper`, the paper's columns
    are left out."""
    net2 = any(c.dice_net2 for c in cells)
    tests = any(c.paired is not None for c in cells)
    against = next((paired_names(c.paired_with)[0] for c in cells if c.paired is not None), "")
    rows = []
    for c in cells:
        def shown(values):
            return fmt_value(values) if c.run_id else "not run"

        hd = "" if not c.hd95 else fmt_value(c.hd95) + ("" if any(map(math.isnan, c.hd95)) else f" {c.hd95_unit}")
        if c.empty_predictions:
            hd += f"; {c.empty_predictions} empty predictions left out"
        rows.append({
            **{k: str(v) for k, v in c.labels.items()},
            "run": c.run_id or "—",
            "seeds": f"{len(c.dice)}/{c.seeds_planned}" if c.run_id else "—",
            "Dice ours": shown(c.dice),
            f"Dice {c.other}": shown(c.other_dice),
            "Dice paper": "—" if c.paper_dice is None else f"{c.paper_dice:.2f}",
            "Δ Dice": fmt_diff(c.dice_diff),
            "verdict": c.verdict,
            "Jaccard ours": shown(c.jaccard),
            f"Jaccard {c.other}": shown(c.other_jaccard),
            "Jaccard paper": "—" if c.paper_jaccard is None else f"{c.paper_jaccard:.2f}",
            "Δ Jaccard": fmt_diff(c.jaccard_diff),
            f"HD95 ({hd95})": hd,
            **({"Dice net 2": fmt_value(c.dice_net2) if c.dice_net2 else ""} if net2 else {}),
            **({f"p vs {against} (cases)": paired_text(c)} if tests else {}),
        })
        if not paper:
            for key in ("Dice paper", "Δ Dice", "verdict", "Jaccard paper", "Δ Jaccard"):
                del rows[-1][key]
    return rows


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


TITLES = {
    "table1": "Table 1: Dice / Jaccard (%) of every method (validation set)",
    "table2": "Table 2: ablation on ACDC with 136 labeled slices (1 = loss term on)",
    "table3": "Table 3: UGPCL on ACDC-136 with the contrastive embedding at encoder stage conv1..conv4",
}
VERDICTS = (
    f"Verdict on the mean Dice over seeds: **matches** when within ±{TOLERANCE:g} Dice points of the paper, "
    "**above** / **below** otherwise; **missing**: the run has not finished; **not run**: the experiment "
    "matrix (params.yaml `experiments`) leaves this cell out."
)

PROTOCOL_NOTES = {
    "volume": "Our scores use protocol `volume` (METHODS §4): ACDC in 3D per volume at the original resolution "
              "(SSL4MIS), ISIC per image at {size} px (one image is one case); the paper's numbers come from the "
              "authors' code (2D slices at 224 px, Dice pooled per batch), so the two are close but not identical "
              "measurements.",
    "slices": "Our scores use protocol `slices`, the authors' (2D slices at 224 px, Dice pooled per batch of 16; "
              "METHODS §4), without the random rotation and flipping their code applies to validation slices.",
}


def protocol_note(cfg: dict) -> str:
    return PROTOCOL_NOTES[cfg["evaluation"]["protocol"]].format(size=cfg["data"]["image_size"])


PSEUDO_TARGETS = {"cnn": "the CNN head's argmax on every image, labeled ones included, so no ground truth enters "
                          "its contrast (the authors' `pseudo` branch)",
                  "mean": "the two decoders' mean prediction on unlabeled images and the ground truth on labeled ones"}


def table2_note(cfg: dict) -> str:
    """What Table 2's rows run, beside the paper's switch columns."""
    source = cfg["methods"]["ugpcl"]["pseudo_labels"]
    return ("The l_* columns are the paper's loss terms per row; each of our rows is the run its run id names "
            "(`experiments.table2.rows`: row 1 the supervised baseline, rows 2 to 7 UGPCL with switches "
            f"off). Row 6, `contrast: pseudo`, contrasts pixels labeled by {PSEUDO_TARGETS[source]} "
            f"(`methods.ugpcl.pseudo_labels: {source}`), where the paper's columns also tick l_c^sup.")


def columns_note(cfg: dict) -> str:
    """What the columns hold: which checkpoint, which HD95 definition and unit."""
    ev = cfg["evaluation"]
    headline, other = ev["checkpoint"], other_checkpoint(ev["checkpoint"])
    picked = {"best": "the best checkpoint, selected on these same validation cases (as the authors select and "
                      "report on one set)", "last": "the last iteration's network"}
    return (f"Dice/Jaccard ours: {picked[headline]}; Dice/Jaccard {other}: {picked[other]}, so the selection "
            f"effect shows. HD95 ({ev['hd95']}): {HD95_NAMES[ev['hd95']]}, of the headline checkpoint, in mm where "
            "the data gives the voxel size, else in voxels or pixels (the unit is printed); undefined for a seed "
            "that never predicts a class, and a case's class predicted empty has no distance: it is left out and "
            "counted (\"empty predictions left out\"), as it would otherwise flatter the mean. Dice net 2: the second "
            "network of a method that trains two (CPS), whose first network is the main number.")


def paired_display(rows: list[dict]) -> list[dict]:
    """stats.pair_cells' rows as shown."""
    def p_text(p):
        return "n/a" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"

    out = []
    for r in rows:
        name, other = paired_names(r["reference"])
        out.append({"dataset": r["dataset"], "labeled": r["labeled"], other: r["method"], "cases": str(r["n_cases"]),
                    f"seeds ({name} / {other})": f"{r['seeds_reference']} / {r['seeds_method']}",
                    f"case Dice {name}": f"{r['reference_case_dice']:.2f}",
                    f"case Dice {other}": f"{r['method_case_dice']:.2f}",
                    "Δ case Dice": f"{r['mean_diff']:+.2f}",
                    "W": "n/a" if r["wilcoxon_w"] is None else f"{r['wilcoxon_w']:g}",
                    "p": p_text(r["p"])})
    return out


# --- the paired tests' reference, and how the report words it ----------------------------------
def paired_with(cfg: dict) -> str:
    """The method the paired tests compare with every other method of each Table 1 setting:
    `experiments.table1.paired_with` (study.check_paired_with makes it one of Table 1's methods)."""
    return cfg["experiments"]["table1"]["paired_with"]


def paired_names(reference: str) -> tuple[str, str]:
    """How the report names the paired tests' reference and each method compared with it: the paper's
    comparison is UGPCL against its baselines; another reference (your own method, or a baseline) is
    compared with every other method, UGPCL included, none of them its baseline."""
    return ("UGPCL", "baseline") if reference == PAPER_METHOD else (reference, "other method")


def paired_title(reference: str) -> str:
    name, other = paired_names(reference)
    return f"{name} against each {other}: paired Wilcoxon signed-rank test over the validation cases"


def what_is_paired(reference: str) -> str:
    """The note under the paired tests; away from the paper's comparison it names the key that chose the method."""
    name, other = paired_names(reference)
    text = ("Paired test: for each validation case (an ACDC volume, an ISIC image; a batch of 16 slices under "
            "protocol slices), the case's mean foreground Dice (headline checkpoint, first network), averaged over "
            f"each method's finished seeds; {name} and the {other} paired on the same n cases; two-sided Wilcoxon "
            f"signed-rank test (scipy, zero differences dropped). Δ case Dice: mean over the cases of {name} minus "
            f"the {other} (Dice points). p-values are not corrected for the number of comparisons.")
    if reference != PAPER_METHOD:
        text += (f" {name} is the method `experiments.table1.paired_with` names (the paper compares "
                 f"{PAPER_METHOD} with its baselines).")
    return text


def no_paired_test(reference: str, cells: list[Cell] = ()) -> str:
    """What stands in for the paired tests (and their sentence of the verdict) before any could be made;
    `cells` (Table 1's): where it trains no method besides the reference, none ever can be."""
    if cells and not {c.labels["method"] for c in cells} - {reference}:
        return (f"No paired test: Table 1 trains no method besides {paired_names(reference)[0]} "
                "(experiments.table1.methods).")
    if reference == PAPER_METHOD:
        return "No paired test yet: it needs finished UGPCL and baseline runs of the same setting."
    return f"No paired test yet: it needs finished runs of {reference} and of another method of the same setting."


PER_CLASS_TITLE = "Per class: Dice / Jaccard (%), HD95 and ASD (mean ± std over seeds)"


def markdown_document(cfg: dict, table: str, cells: list[Cell], paired: list[dict] | None = None,
                      stamp: str = "") -> str:
    """A table's Markdown file; Table 1's also holds the per-class tables and the paired tests
    (`paired`: stats.pair_cells' rows, experiments.table1.paired_with against the other methods). `stamp`
    (report.stamp.describe) goes under the title."""
    hd95 = cfg["evaluation"]["hd95"]
    head = (f"# {TITLES[table]}\n\n" + (f"*{stamp}.*\n\n" if stamp else "")
            + f"Profile `{cfg['profile']}`, evaluation protocol "
            f"`{cfg['evaluation']['protocol']}`. {VERDICTS}\n\n{protocol_note(cfg)}\n\n{columns_note(cfg)}\n\n")
    departures = choices.departures_text(cfg) if any(c.paper_dice is not None for c in cells) else ""
    if synthetic(cfg):
        head = f"> **{SYNTHETIC_WARNING}**\n\n" + head
    elif departures:
        head = f"> {departures}\n\n" + head
    if table == "table2":
        head += table2_note(cfg) + "\n\n"
    if table != "table1":
        return head + markdown_table(display_rows(cells, hd95))
    sections = table1_sections(cfg, cells)
    text = head + "\n".join((f"## {title}\n\n" if ident != "table1" else "")
                             + markdown_table(display_rows(part, hd95, paper))
                             for ident, title, part, paper in sections)
    for setting, classes, part in per_class_sections(cells):
        text += f"\n## {PER_CLASS_TITLE}: {setting}\n\n" + markdown_table(per_class_rows(part, classes, hd95))
    if paired:
        reference = paired_with(cfg)
        text += (f"\n## {paired_title(reference)}\n\n{what_is_paired(reference)}\n\n"
                 + markdown_table(paired_display(paired)))
    return text


def csv_text(cells: list[Cell]) -> str:
    rows = [c.row() for c in cells]
    if not rows:  # the matrix leaves the whole table out
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def per_class_sections(cells: list[Cell]) -> list[tuple[str, list[str], list[Cell]]]:
    """Table 1's settings with more than one foreground class (ACDC): (dataset-labeled, classes, cells)."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(f"{c.labels['dataset']}-{c.labels['labeled']}", []).append(c)
    sections = []
    for setting, part in groups.items():
        classes = list(dict.fromkeys(name for c in part for name in c.per_class))
        if len(classes) > 1:
            sections.append((setting, classes, [c for c in part if c.run_id]))
    return sections


def per_class_rows(cells: list[Cell], classes: list[str], hd95: str = "medpy") -> list[dict]:
    """One row per method: mean ± std over seeds of each class's Dice, Jaccard (%), HD95 and ASD
    (in the data's unit), headed "<class> <metric>"."""
    rows = []
    for c in cells:
        row = {"method": c.labels["method"], "seeds": f"{len(c.dice)}/{c.seeds_planned}"}
        for name in classes:
            for metric, _, _ in per_class_metrics(hd95):
                values = c.per_class.get(name, {}).get(metric, [])
                row[f"{name} {metric}"] = fmt_value(values, 1) if values else "–"
        rows.append(row)
    return rows


def per_class_csv(cells: list[Cell], hd95: str = "medpy") -> str:
    """Every per-class score of Table 1 (tidy: one row per cell, class and metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "labeled", "method", "run", "seeds", "class", "metric", "mean", "std", "unit"])
    for c in cells:
        for name, scores in c.per_class.items():
            for metric, _, _ in per_class_metrics(hd95):
                values = scores.get(metric, [])
                if values:  # mean and std blank where a seed's value is undefined
                    unit = "%" if metric in ("Dice", "Jaccard") else c.hd95_unit or ""
                    mean = _mean_or_none(values)
                    writer.writerow([c.labels["dataset"], c.labels["labeled"], c.labels["method"], c.run_id,
                                     len(values), name, metric, "" if mean is None else mean,
                                     "" if len(values) < 2 or mean is None else _round(statistics.stdev(values)), unit])
    return buf.getvalue()


def metrics(tables: dict[str, list[Cell]]) -> dict:
    """The headline of `dvc metrics show` (reports/<profile>/metrics.json): how many cells with a
    paper value match it, of how many, and how many have no result yet."""
    compared = [c for part in tables.values() for c in part if c.paper_dice is not None and c.run_id is not None]
    return {"matching": sum(c.verdict == "matches" for c in compared), "compared": len(compared),
            "missing": sum(c.verdict == "missing" for c in compared)}


def metrics_files(cfg: dict, tables: dict[str, list[Cell]]) -> dict[str, dict]:
    """Headline Dice (%, mean over seeds; null if missing) of every table cell, one small file per
    table row: "table1/<method>", "table2/row<r>", "table3/<stage>" -> {"<dataset>-<labeled>": Dice}.
    `dvc metrics show` prints a file per row and a key per column: Table 1 as the paper lays it out."""
    files: dict[str, dict] = {}
    for c in tables["table1"]:
        if c.run_id:
            files.setdefault(f"table1/{c.labels['method']}", {})[f"{c.labels['dataset']}-{c.labels['labeled']}"] = (
                _round(c.dice_mean))
    for table, key, prefix in (("table2", "row", "row"), ("table3", "feature", "")):
        setting = f"{cfg['experiments'][table]['dataset']}-{cfg['experiments'][table]['regime']}"
        for c in tables[table]:
            if c.run_id:
                files[f"{table}/{prefix}{c.labels[key]}"] = {setting: _round(c.dice_mean)}
    return files
