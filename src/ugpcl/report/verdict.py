"""The paragraph at the top of the report: how many cells match the paper, how our ordering of the
methods compares with the paper's and where UGPCL ranks (the paper's claims, about UGPCL whatever the
paired tests compare), what the paired tests say (about the method `experiments.table1.paired_with`
names); and, for synthetic data, that none of it means anything about the methods."""

from __future__ import annotations

from .stats import ALPHA, kendall_tau
from .tables import PAPER_METHOD, TOLERANCE, Cell, no_paired_test, paired_names


def orderings(cells: list[Cell]) -> list[dict]:
    """Per Table 1 setting with at least two methods that have both our Dice and the paper's: the
    two orders (best first), Kendall's tau between them, and UGPCL's rank in each (None if absent)."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        if c.dice and c.paper_dice is not None:
            groups.setdefault(f"{c.labels['dataset']}-{c.labels['labeled']}", []).append(c)
    rows = []
    for setting, part in groups.items():
        if len(part) < 2:
            continue
        ours = sorted(part, key=lambda c: -c.dice_mean)
        paper = sorted(part, key=lambda c: -c.paper_dice)
        names = [c.labels["method"] for c in ours]
        rows.append({
            "setting": setting, "methods": len(part),
            "ours": " > ".join(names), "paper": " > ".join(c.labels["method"] for c in paper),
            "tau": kendall_tau([c.dice_mean for c in part], [c.paper_dice for c in part]),
            "ugpcl_rank": names.index(PAPER_METHOD) + 1 if PAPER_METHOD in names else None,
            "ugpcl_paper_rank": ([c.labels["method"] for c in paper].index(PAPER_METHOD) + 1
                                 if PAPER_METHOD in names else None),
        })
    return rows


def _count(cells: list[Cell]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    return counts


def paragraph(tables: dict[str, list[Cell]], order: list[dict], paired: list[dict], synthetic: bool,
              iterations: int, departures: str = "", reference: str = PAPER_METHOD) -> str:
    """The verdict, in plain sentences; `departures` (choices.departures_text) follows the comparison with
    the paper's numbers on real data; `paired`: stats.pair_cells' rows of `reference`
    (experiments.table1.paired_with) against the other methods."""
    name, other = paired_names(reference)
    cells = [c for part in tables.values() for c in part]
    compared = [c for c in cells if c.paper_dice is not None and c.run_id is not None]
    counts = _count(compared)
    done = sum(counts.get(v, 0) for v in ("matches", "above", "below"))
    sentences = []
    if synthetic:
        sentences.append(
            f"Synthetic demo data: generated phantoms, {iterations} training iterations. These "
            "results show that the pipeline runs end to end; they say nothing about "
            + ("UGPCL or its baselines" if reference == PAPER_METHOD else "any of the methods")
            + ", and how close a number comes to the paper's is coincidence.")
    if compared:
        missing = counts.get("missing", 0)
        sentences.append(
            f"{counts.get('matches', 0)} of the {len(compared)} cells with a paper value are within "
            f"±{TOLERANCE:g} Dice points of it ({counts.get('above', 0)} above, {counts.get('below', 0)} below"
            + (f", {missing} not finished" if missing else "") + ")."
            + ("" if done else " No cell has a result yet."))
        if departures and not synthetic:
            sentences.append(departures)
    ranked = [o for o in order if o["ugpcl_rank"] is not None]
    if ranked:
        first = sum(o["ugpcl_rank"] == 1 for o in ranked)
        paper_first = sum(o["ugpcl_paper_rank"] == 1 for o in ranked)
        taus = ", ".join(f"{o['setting']} {o['tau']:+.2f}" if o["tau"] is not None else f"{o['setting']} n/a"
                         for o in order)
        sentences.append(
            f"UGPCL has the best mean Dice in {first} of {len(ranked)} Table 1 settings (the paper: {paper_first} of "
            f"{len(ranked)}); agreement of our method ordering with the paper's (Kendall's tau, 1 = same order): "
            f"{taus}.")
    if paired:
        better = sum(r["p"] is not None and r["p"] < ALPHA and r["mean_diff"] > 0 for r in paired)
        worse = sum(r["p"] is not None and r["p"] < ALPHA and r["mean_diff"] < 0 for r in paired)
        n = sorted({r["n_cases"] for r in paired})
        sentences.append(
            f"Paired over the validation cases (Wilcoxon signed-rank, n = {'/'.join(map(str, n))} cases, uncorrected "
            f"p < {ALPHA:g}), {name} is better than the {other} in {better} of {len(paired)} comparisons, worse in "
            f"{worse}, and not distinguishable in {len(paired) - better - worse}.")
    elif compared:
        sentences.append(no_paired_test(reference, tables.get("table1", [])))
    return " ".join(sentences)
