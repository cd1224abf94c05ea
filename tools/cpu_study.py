"""The tables and figure of the CPU ACDC-136 study (reports/cpu_acdc.md), from its records.

    python tools/cpu_study.py                                   # the Markdown tables, to stdout
    python tools/cpu_study.py --figure reports/cpu_acdc/seeds.png
    python tools/cpu_study.py --fit PREPARED.h5 RUN_DIR [RUN_DIR ...]   # how each best checkpoint fits

Each run's records sit in reports/cpu_acdc/<variant>/seed<seed>/ (run.json, config.yaml,
summary_best.json, summary_last.json, val.jsonl); how they were made is in the report. Scores are
the volume protocol's mean foreground Dice of the best and of the last checkpoint. Differences are
paired by seed: both variants trained from the same seed (the same initial weights and batches).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "reports" / "cpu_acdc"
SEEDS = (1337, 1, 2, 3, 4)  # the study's order: the paper's seed first (3 and 4: the CCT follow-up only)

# folder under RECORDS -> the name the report gives it, in the report's order
VARIANTS = {
    "acdc136_supervised": "supervised",
    "acdc136_supervised_rot": "supervised + rotation",
    "acdc136_mt": "MT",
    "acdc136_uamt": "UA-MT",
    "acdc136_em": "EM",
    "acdc136_dct": "DCT",
    "acdc136_cct": "CCT",
    "acdc136_cps": "CPS",
    "acdc136_ugpcl": "UGPCL (row 7)",
    "acdc136_ugpcl_norot": "UGPCL without rotation",
    "acdc136_ugpcl_contrast-none_noeqv": "row 2: l_con",
    "acdc136_ugpcl_nocon_contrast-none": "row 3: l_e",
    "acdc136_ugpcl_contrast-none": "row 4: l_con + l_e",
    "acdc136_ugpcl_contrast-sup": "row 5: + contrast, labeled pixels",
    "acdc136_ugpcl_contrast-pseudo": "row 6: + contrast, all pseudo labels",
    "acdc136_mt_w1": "MT, consistency weight 1.0",
    "acdc136_uamt_w1": "UA-MT, consistency weight 1.0",
    "acdc136_cct_main": "CCT, main decoder supervised only",
    "acdc136_cct_rerun": "CCT, seed 1337 again (AMD EPYC)",
    "acdc136_supervised_noturns": "supervised, no turns as above, again (AMD EPYC)",
    "acdc136_supervised_aug": "supervised, the authors' turns (AMD EPYC)",
    "acdc136_mt_aug": "MT, the authors' turns (AMD EPYC)",
    "acdc136_cps_aug": "CPS, the authors' turns (AMD EPYC)",
    "acdc136_ugpcl_amd": "UGPCL (row 7), again (AMD EPYC)",
}
# (a, b, what a - b measures[, the seeds to pair: default every seed both ran])
COMPARISONS = [
    ("acdc136_ugpcl", "acdc136_supervised", "UGPCL - supervised"),
    ("acdc136_ugpcl_contrast-none", "acdc136_supervised", "row 4 (no contrast) - supervised"),
    ("acdc136_ugpcl", "acdc136_ugpcl_contrast-none", "UGPCL - row 4: what the pixel contrast adds"),
    ("acdc136_ugpcl_contrast-sup", "acdc136_ugpcl_contrast-none", "row 5 - row 4: contrast on labeled pixels"),
    ("acdc136_ugpcl_contrast-pseudo", "acdc136_ugpcl_contrast-none", "row 6 - row 4: contrast on all pseudo labels"),
    ("acdc136_ugpcl", "acdc136_ugpcl_contrast-sup", "UGPCL - row 5: what the uncertainty guidance adds"),
    ("acdc136_ugpcl", "acdc136_ugpcl_norot", "UGPCL - UGPCL without rotation"),
    ("acdc136_supervised_rot", "acdc136_supervised", "supervised + rotation - supervised"),
    ("acdc136_cps", "acdc136_supervised", "CPS - supervised"),
    ("acdc136_mt", "acdc136_supervised", "MT - supervised"),
    ("acdc136_uamt", "acdc136_supervised", "UA-MT - supervised"),
    ("acdc136_em", "acdc136_supervised", "EM - supervised"),
    ("acdc136_dct", "acdc136_supervised", "DCT - supervised"),
    ("acdc136_cct", "acdc136_supervised", "CCT - supervised"),
    ("acdc136_ugpcl", "acdc136_cps", "UGPCL - CPS (the strongest baseline here)"),
    ("acdc136_mt_w1", "acdc136_mt", "MT: weight 1.0 - 0.1"),
    ("acdc136_uamt_w1", "acdc136_uamt", "UA-MT: weight 1.0 - 0.1"),
    # the same processor only: CCT's seed-1337 record ran on the Intel machine, its rerun on the AMD one
    ("acdc136_cct_main", "acdc136_cct", "CCT: main decoder only - mean over four", (1, 2, 3, 4)),
    ("acdc136_cct_main", "acdc136_cct_rerun", "CCT: main decoder only - mean over four, seed 1337"),
    ("acdc136_cct_rerun", "acdc136_cct", "CCT seed 1337: AMD EPYC - Intel Xeon (same code)"),
    ("acdc136_cct_main", "acdc136_supervised", "CCT, main decoder only - supervised"),
    # the baselines with the turns of the authors' baseline configs (the default since c177ed7), on the AMD machine
    ("acdc136_supervised_aug", "acdc136_supervised_noturns", "supervised: the authors' turns - none (same processor)"),
    ("acdc136_mt_aug", "acdc136_supervised_aug", "MT - supervised, both with the turns (same processor)"),
    ("acdc136_cps_aug", "acdc136_supervised_aug", "CPS - supervised, both with the turns (same processor)"),
    ("acdc136_ugpcl_amd", "acdc136_supervised_noturns", "UGPCL - supervised without the turns (same processor)"),
    ("acdc136_ugpcl_amd", "acdc136_supervised_aug", "UGPCL - supervised with the turns (same processor)"),
    ("acdc136_ugpcl_amd", "acdc136_mt_aug", "UGPCL - MT with the turns (same processor)"),
    ("acdc136_ugpcl_amd", "acdc136_cps_aug", "UGPCL - CPS with the turns (same processor)"),
    ("acdc136_supervised_noturns", "acdc136_supervised", "supervised, no turns: AMD EPYC - Intel Xeon (same settings)"),
    ("acdc136_ugpcl_amd", "acdc136_ugpcl", "UGPCL: AMD EPYC - Intel Xeon (same settings)"),
]


def read_records(root: Path = RECORDS) -> dict[str, dict[int, dict]]:
    """{variant folder: {seed: {"best": Dice %, "last": Dice %, "run": run.json}}} of every
    finished run under `root`, seeds in the study's order."""
    found: dict[str, dict[int, dict]] = {}
    for variant in VARIANTS:
        seeds = {}
        for seed in SEEDS:
            folder = root / variant / f"seed{seed}"
            if (folder / "summary_best.json").is_file():
                seeds[seed] = {"best": 100 * json.loads((folder / "summary_best.json").read_text())["dice"],
                               "last": 100 * json.loads((folder / "summary_last.json").read_text())["dice"],
                               "run": json.loads((folder / "run.json").read_text())}
        if seeds:
            found[variant] = seeds
    unknown = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in VARIANTS)
    if unknown:
        raise SystemExit(f"{root}: folders {unknown} are not variants of tools/cpu_study.py; add them to VARIANTS")
    return found


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def variant_rows(records: dict[str, dict[int, dict]]) -> list[str]:
    """The Markdown table: per variant its seeds, best Dice mean (range) and last Dice mean."""
    lines = ["| variant | seeds | best | last |", "|---|---|---|---|"]
    for variant, seeds in records.items():
        best = [r["best"] for r in seeds.values()]
        spread = f" ({min(best):.2f}-{max(best):.2f})" if len(best) > 1 else ""
        lines.append(f"| {VARIANTS[variant]} | {', '.join(map(str, seeds))} | {mean(best):.2f}{spread} | "
                     f"{mean([r['last'] for r in seeds.values()]):.2f} |")
    return lines


def differences(records: dict[str, dict[int, dict]]) -> list[tuple[str, dict[int, float]]]:
    """Per comparison, a - b of the best Dice on each seed both variants ran."""
    out = []
    for a, b, label, *only in COMPARISONS:
        common = [s for s in (only[0] if only else SEEDS) if s in records.get(a, {}) and s in records.get(b, {})]
        if common:
            out.append((label, {s: records[a][s]["best"] - records[b][s]["best"] for s in common}))
    return out


def difference_rows(records: dict[str, dict[int, dict]]) -> list[str]:
    lines = ["| comparison | per seed | mean |", "|---|---|---|"]
    for label, diffs in differences(records):
        seeds = ", ".join(f"{d:+.2f} ({s})" for s, d in diffs.items())
        lines.append(f"| {label} | {seeds} | {mean(list(diffs.values())):+.2f} |")
    return lines


def provenance(records: dict[str, dict[int, dict]]) -> str:
    """What the figure shows and where it comes from: runs, device, code, drawing date and commit."""
    runs = [r["run"] for seeds in records.values() for r in seeds.values()]
    commits = sorted({a.get("commit", run["git_commit"])[:7] for run in runs for a in run["attempts"]})
    days = sorted({run["finished"][:10] for run in runs})
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or "unknown"
    # "cpu": a run of before 5482922, when run.json did not name the processor
    devices = sorted({"a CPU not named" if run["device_name"] == "cpu" else run["device_name"] for run in runs})
    return (f"{len(runs)} runs on {', '.join(devices)}, trained {days[0]} to {days[-1]} with code "
            f"{', '.join(commits)}; drawn {datetime.date.today()} at {head} by tools/cpu_study.py")


def figure(records: dict[str, dict[int, dict]], path: Path) -> None:
    """Left: every run's best Dice, a dot per seed, a bar at the mean. Right: the paired
    differences, a dot per seed, a bar at the mean. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ugpcl.fileio import atomic_path

    markers = {1337: "o", 1: "s", 2: "^", 3: "D", 4: "v"}
    diffs = differences(records)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.42 * max(len(records), len(diffs)) + 1.6),
                                      gridspec_kw={"width_ratios": [1, 1]})
    for axis, items, xlabel in ((left, [(VARIANTS[v], {s: r["best"] for s, r in seeds.items()})
                                        for v, seeds in records.items()], "Dice (%), best checkpoint"),
                                (right, diffs, "difference (Dice points), same seed")):
        for y, (label, by_seed) in enumerate(items):
            for seed, value in by_seed.items():
                axis.plot(value, y, markers.get(seed, "x"), color="C0", ms=5, alpha=0.8)
            axis.plot([mean(list(by_seed.values()))] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
        axis.set_yticks(range(len(items)), [label for label, _ in items], fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel(xlabel, fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    right.axvline(0, color="grey", lw=1)
    present = {seed for seeds in records.values() for seed in seeds}
    handles = [plt.Line2D([], [], ls="", marker=m, color="C0", label=f"seed {s}") for s, m in markers.items()
               if s in present]
    handles.append(plt.Line2D([], [], color="black", lw=2, label="mean over seeds"))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle("ACDC-136 on a CPU: 96 px, small encoder from scratch, 3000 iterations (not a reproduction)",
                 fontsize=10, y=0.995)
    fig.text(0.01, 0.005, textwrap.fill(provenance(records), 210), fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.045, 1, 0.93))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def pooled_dice(pred: np.ndarray, truth: np.ndarray, classes) -> float:
    """Dice (%) of each class pooled over all the slices (one count of overlap and of sizes over the
    stack), averaged over `classes`; a class absent from both counts as 1."""
    scores = []
    for c in classes:
        p, t = pred == c, truth == c
        total = int(p.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2 * int((p & t).sum()) / total)
    return 100 * float(np.mean(scores))


def fit(prepared_path: Path, runs: list[Path], regime: str = "136") -> list[str]:
    """Per run, its best checkpoint's pooled Dice on the regime's labeled training slices and on
    the slices of every other training patient (whose labels the run never saw)."""
    from ugpcl.data.prepared import load_prepared
    from ugpcl.engine.checkpoint import load_run
    from ugpcl.metrics import predict_slices

    prepared = load_prepared(prepared_path)
    labeled = prepared.labeled_indices(regime)
    groups = np.asarray(prepared.train_groups)
    others = np.flatnonzero(~np.isin(groups, groups[labeled]))
    foreground = range(1, prepared.num_classes)
    lines = []
    for run in runs:
        net = load_run(run, "best").net
        scores = [pooled_dice(predict_slices(net, prepared.train.images[idx]), prepared.train.labels[idx], foreground)
                  for idx in (labeled, others)]
        lines.append(f"{run}: labeled slices {scores[0]:.1f}%, other patients {scores[1]:.1f}%")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, default=RECORDS, help="the records' folder (default: %(default)s)")
    parser.add_argument("--figure", type=Path, help="also draw the figure to this PNG")
    parser.add_argument("--fit", nargs="+", type=Path, metavar=("PREPARED", "RUN_DIR"),
                        help="instead: the prepared file, then run directories whose best checkpoint to score on "
                             "the training slices (labeled regime 136, and the other patients)")
    args = parser.parse_args(argv)
    if args.fit:
        if len(args.fit) < 2:
            parser.error("--fit takes the prepared file and at least one run directory")
        print("\n".join(fit(args.fit[0], args.fit[1:])))
        return
    records = read_records(args.records)
    print("\n".join(variant_rows(records)) + "\n\n" + "\n".join(difference_rows(records)))
    if args.figure:
        figure(records, args.figure)


if __name__ == "__main__":
    main()
