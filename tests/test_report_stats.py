"""The report's statistics: per-case scores, seed averages, the paired Wilcoxon test, ordering
agreement, the verdict's wording, and the curves' binning."""

import math
import statistics

import numpy as np
import pytest

from ugpcl.report import build, stats, tables, verdict
from ugpcl.report.figures import binned
from ugpcl.report.tables import Cell


def test_case_scores_use_the_first_network_and_leave_out_undefined_classes(tmp_path):
    path = tmp_path / "per_case.csv"
    path.write_text("case,class,dice,network\n"
                    "a,RV,0.5,model\na,LV,0.7,model\n"     # mean 0.6
                    "b,RV,nan,model\nb,LV,0.9,model\n"     # RV absent from both: 0.9
                    "c,RV,,model\nc,LV,nan,model\n"        # nothing defined: no score
                    "a,RV,0.1,model2\na,LV,0.1,model2\n")  # CPS's second network: not this table's
    assert stats.case_scores(path) == {"a": pytest.approx(0.6), "b": pytest.approx(0.9)}
    path.write_text("case,class,dice\na,RV,high\n")
    with pytest.raises(Exception, match="not a per-case table"):
        stats.case_scores(path)


def test_seed_average_and_exact_paired_test():
    ours = stats.seed_average([{"a": 0.8, "b": 0.7}, {"a": 0.9, "b": 0.9, "x": 0.5}])
    assert ours == {"a": pytest.approx(0.85), "b": pytest.approx(0.8), "x": 0.5}
    diffs = [0.01, 0.02, 0.03, 0.04, 0.05, -0.06]  # one negative, the largest: W = 6 of 21
    theirs = {c: 0.5 for c in "abcdef"}
    result = stats.paired_test({c: 0.5 + d for c, d in zip("abcdef", diffs)} | {"zz": 1.0}, theirs)
    assert result.n == 6 and result.statistic == 6 and result.mean_diff == pytest.approx(np.mean(diffs))
    # exact: P(W <= 6) over the 2^6 equally likely sign patterns, doubled
    sums = [sum(r for r, bit in zip(range(1, 7), f"{k:06b}") if bit == "1") for k in range(64)]
    assert result.p == pytest.approx(2 * sum(s <= 6 for s in sums) / 64)
    assert stats.paired_test({"a": 0.5, "b": 0.6}, {"a": 0.5, "b": 0.6}).p is None  # no difference at all
    assert stats.paired_test({"a": 0.5}, {"b": 0.5}) is None                          # no case in common


def test_kendall_tau_and_orderings():
    assert stats.kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert stats.kendall_tau([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert stats.kendall_tau([1], [2]) is None

    def cell(method, dice, paper):
        return Cell({"dataset": "acdc", "labeled": "136", "method": method}, f"acdc136_{method}", 1, dice=[dice],
                    paper_dice=paper)

    cells = [cell("mt", 80.0, 85.75), cell("ugpcl", 70.0, 88.11), cell("cps", 75.0, 85.06)]
    (row,) = verdict.orderings(cells)
    assert row["ours"] == "mt > cps > ugpcl" and row["paper"] == "ugpcl > mt > cps"
    assert (row["ugpcl_rank"], row["ugpcl_paper_rank"]) == (3, 1) and row["tau"] == pytest.approx(-1 / 3)
    text = verdict.paragraph({"table1": cells}, [row], [], synthetic=True, iterations=20)
    assert text.startswith("Synthetic demo data") and "say nothing about UGPCL" in text
    assert "0 of the 3 cells with a paper value are within ±2 Dice points of it (0 above, 3 below)" in text
    assert "UGPCL has the best mean Dice in 0 of 1 Table 1 settings (the paper: 1 of 1)" in text
    assert "acdc-136 -0.33" in text and "No paired test yet" in text
    assert "Synthetic" not in verdict.paragraph({"table1": cells}, [row], [], synthetic=False, iterations=20)
    off = "Not the paper's set-up (its Section 4.1): train.iterations 20, the paper's 6000."
    real = verdict.paragraph({"table1": cells}, [row], [], synthetic=False, iterations=20, departures=off)
    assert "(0 above, 3 below). " + off + " UGPCL has the best" in real   # right after the comparison
    assert off not in verdict.paragraph({"table1": cells}, [row], [], synthetic=True, iterations=20, departures=off)



def test_the_paired_tests_compare_the_configured_method_with_every_other_one(tmp_path):
    """experiments.table1.paired_with: `pseudo` (one's own method) against every other method of its setting,
    UGPCL included, and the CSV's columns, the tables and the verdict's sentence say so; the verdict's rank
    of UGPCL (the paper's claim) stays. The default, ugpcl, pairs and names as the paper's comparison."""
    base = [0.70, 0.72, 0.74, 0.76, 0.78, 0.80]  # pseudo's six cases; mt 5 points below, UGPCL 1 to 6 above

    def cell(dataset, method, scores, paper=None):
        path = tmp_path / f"{dataset}_{method}.csv"
        path.write_text("case,class,dice,network\n" + "".join(f"case{i},LV,{d},model\n" for i, d in enumerate(scores)))
        return Cell({"dataset": dataset, "labeled": "136", "method": method}, f"{dataset}136_{method}", 1,
                    dice=[100 * statistics.fmean(scores)], paper_dice=paper, case_files=[path])

    def study():  # no pseudo run on isic: nothing to pair there
        return [cell("acdc", "mt", [b - 0.05 for b in base], 85.75),
                cell("acdc", "ugpcl", [b + 0.01 * (i + 1) for i, b in enumerate(base)], 88.11),
                cell("acdc", "pseudo", base), cell("isic", "mt", base), cell("isic", "ugpcl", base)]

    cells = study()
    rows = stats.pair_cells(cells, "pseudo")
    assert [(r["dataset"], r["reference"], r["method"]) for r in rows] == [("acdc", "pseudo", "mt"),
                                                                          ("acdc", "pseudo", "ugpcl")]
    assert [r["mean_diff"] for r in rows] == [pytest.approx(5.0), pytest.approx(-3.5)]
    assert all(r["p"] == pytest.approx(2 / 2**6) and r["seeds_reference"] == 1 for r in rows)
    assert [c.paired_with for c in cells] == ["pseudo", "pseudo", None, None, None]
    assert build.paired_csv(rows, "pseudo").splitlines()[0] == (
        "dataset,labeled,method,n_cases,seeds_pseudo,seeds_method,pseudo_case_dice,method_case_dice,mean_diff,"
        "wilcoxon_w,p")
    assert list(tables.paired_display(rows)[0])[2:7] == [
        "other method", "cases", "seeds (pseudo / other method)", "case Dice pseudo", "case Dice other method"]
    assert "p vs pseudo (cases)" in tables.display_rows(cells)[0]
    text = verdict.paragraph({"table1": cells}, verdict.orderings(cells), rows, synthetic=True, iterations=20,
                             reference="pseudo")
    assert "pseudo is better than the other method in 1 of 2 comparisons, worse in 1," in text
    assert "UGPCL has the best mean Dice in 1 of 1 Table 1 settings (the paper: 1 of 1)" in text
    assert "baseline" not in text and "say nothing about any of the methods" in text
    assert "No paired test yet: it needs finished runs of pseudo and of another" in verdict.paragraph(
        {"table1": cells}, [], [], synthetic=False, iterations=20, reference="pseudo")
    alone = [c for c in cells if c.labels["method"] == "ugpcl"]   # Table 1 trains the reference only: never any
    assert "No paired test: Table 1 trains no method besides UGPCL (experiments.table1.methods)." in \
        verdict.paragraph({"table1": alone}, [], [], synthetic=False, iterations=20, reference="ugpcl")

    cells = study()
    rows = stats.pair_cells(cells, "ugpcl")
    assert [(r["dataset"], r["method"]) for r in rows] == [("acdc", "mt"), ("acdc", "pseudo"), ("isic", "mt")]
    assert build.paired_csv(rows, "ugpcl").splitlines()[0] == (
        "dataset,labeled,method,n_cases,seeds_ugpcl,seeds_method,ugpcl_case_dice,method_case_dice,mean_diff,"
        "wilcoxon_w,p")
    assert "UGPCL is better than the baseline in 2 of 3 comparisons" in verdict.paragraph(
        {"table1": cells}, [], rows, synthetic=False, iterations=20)
    assert list(stats.paired_columns("method"))[4:7] == ["seeds_reference", "seeds_method", "reference_case_dice"]


def test_curves_are_binned_to_at_most_the_given_points():
    rows = [{"t": t, "loss": float(t)} for t in range(450)]
    t, v = binned(rows, "loss", points=200)             # windows of 3
    assert len(t) == 150 and t[0] == 2 and t[-1] == 449 and v[0] == pytest.approx(1.0)
    t, v = binned(rows[:10], "loss", points=3)          # windows of 4: the last one has 2 rows
    assert t.tolist() == [3, 7, 9] and v.tolist() == [1.5, 5.5, 8.5]
    assert binned([], "loss")[0].size == 0 and not math.isnan(binned(rows, "loss")[1].sum())
