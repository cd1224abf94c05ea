"""Statistics the report shows beside the means: one method, the reference (`experiments.table1.paired_with`;
UGPCL, the paper's comparison, by default), paired against every other method of its setting over the
validation cases, and how our ordering of the methods agrees with the paper's.

What is paired. For one Table 1 setting (dataset, labeled regime), every validation case
(a volume for ACDC, an image for ISIC; a batch of 16 slices under protocol "slices") gets one
score per method: its mean foreground Dice (per_case.csv of the headline checkpoint, the
method's first network; classes absent from both truth and prediction are NaN there and left
out of the case's mean), averaged over the method's finished seeds. The reference and another method
are paired on the cases both have (all of them, as both are scored on the same validation set).
The test is scipy's two-sided Wilcoxon signed-rank test on the n paired differences (zero
differences dropped, `zero_method="wilcox"`; exact for small n without ties). The p-values are
not corrected for the number of comparisons shown.

Ordering agreement is Kendall's tau-b between our mean Dice and the paper's over the methods of
a setting that have both.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .tables import Cell

ALPHA = 0.05


def case_scores(path: Path) -> dict[str, float]:
    """Case -> mean foreground Dice (fraction) from a per_case.csv, for its first network only;
    classes with no Dice (NaN: absent from truth and prediction) are left out of a case's mean,
    and a case without any Dice is left out."""
    path = Path(path)
    scores: dict[str, list[float]] = {}
    network = None
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                network = row.get("network") if network is None else network
                if row.get("network") != network:
                    continue
                dice = float(row["dice"]) if row["dice"] not in ("", "nan", "NaN") else math.nan
                scores.setdefault(row["case"], [])
                if not math.isnan(dice):
                    scores[row["case"]].append(dice)
    except (KeyError, ValueError) as exc:
        raise UserError(f"not a per-case table ({exc})", path=path,
                        fix="evaluate the run again: ugpcl evaluate --run-dir <the run directory>") from exc
    return {case: statistics.fmean(values) for case, values in scores.items() if values}


def seed_average(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Case -> the mean of its scores over the seeds that scored it."""
    cases: dict[str, list[float]] = {}
    for scores in per_seed:
        for case, value in scores.items():
            cases.setdefault(case, []).append(value)
    return {case: statistics.fmean(values) for case, values in cases.items()}


@dataclass(frozen=True)
class Paired:
    n: int                  # cases paired
    ours: float             # mean case score over the paired cases (fraction)
    theirs: float
    statistic: float | None
    p: float | None         # None: no test possible (every difference zero)

    @property
    def mean_diff(self) -> float:
        return self.ours - self.theirs


def paired_test(ours: dict[str, float], theirs: dict[str, float]) -> Paired | None:
    """Wilcoxon signed-rank test of ours against theirs on the cases both have (None: none shared)."""
    cases = sorted(ours.keys() & theirs.keys())
    if not cases:
        return None
    diffs = [ours[c] - theirs[c] for c in cases]
    means = statistics.fmean(ours[c] for c in cases), statistics.fmean(theirs[c] for c in cases)
    if all(d == 0 for d in diffs):
        return Paired(len(cases), *means, None, None)
    from scipy.stats import wilcoxon  # here: scipy is imported only when a report is built

    result = wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
    return Paired(len(cases), *means, float(result.statistic), float(result.pvalue))


def pair_cells(cells: list[Cell], reference: str) -> list[dict]:
    """The method `reference` (experiments.table1.paired_with) against every other method of each Table 1
    setting (dataset, labeled) where both have finished seeds: sets `cell.paired` and `cell.paired_with` on
    the other method's cell and returns one row per test (Dice in %; `paired_columns`: the CSV's columns)."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.labels["dataset"], c.labels["labeled"]), []).append(c)
    rows = []
    for (dataset, labeled), part in groups.items():
        ours = next((c for c in part if c.labels["method"] == reference and c.case_files), None)
        if ours is None:
            continue
        ours_cases = seed_average([case_scores(p) for p in ours.case_files])
        for c in part:
            if c is ours or not c.case_files:
                continue
            result = paired_test(ours_cases, seed_average([case_scores(p) for p in c.case_files]))
            if result is None:
                continue
            c.paired, c.paired_with = result, reference
            rows.append({"dataset": dataset, "labeled": labeled, "reference": reference, "method": c.labels["method"],
                         "n_cases": result.n, "seeds_reference": len(ours.case_files),
                         "seeds_method": len(c.case_files),
                         "reference_case_dice": round(100 * result.ours, 2),
                         "method_case_dice": round(100 * result.theirs, 2),
                         "mean_diff": round(100 * result.mean_diff, 2), "wilcoxon_w": result.statistic, "p": result.p})
    return rows


def paired_columns(reference: str) -> dict[str, str]:
    """table1_paired.csv's columns -> the keys of pair_cells' rows: the reference's seeds and case Dice are
    named after it (seeds_ugpcl and ugpcl_case_dice in the paper's comparison), the other method's `method`."""
    named = "reference" if reference == "method" else reference  # a method called "method": no clash
    return {"dataset": "dataset", "labeled": "labeled", "method": "method", "n_cases": "n_cases",
            f"seeds_{named}": "seeds_reference", "seeds_method": "seeds_method",
            f"{named}_case_dice": "reference_case_dice", "method_case_dice": "method_case_dice",
            "mean_diff": "mean_diff", "wilcoxon_w": "wilcoxon_w", "p": "p"}


def kendall_tau(ours: list[float], paper: list[float]) -> float | None:
    """Kendall's tau-b between two scorings of the same methods (None below two methods or without variation)."""
    if len(ours) < 2:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(ours, paper).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
