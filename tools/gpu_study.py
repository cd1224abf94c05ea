"""reports/gpu_acdc.md from what GPU leases bring back: the records of paper-scale runs, and their tables.

    python tools/gpu_study.py collect OUT [OUT ...]     # each OUT: a runs.tgz of `gpu_session.py lease` or
                                                        # `train`, or the folder holding it
    python tools/gpu_study.py markdown [--profile paper] [--set KEY=VALUE ...]
                                                        # the tables of reports/gpu_acdc.md, to stdout

A short lease trains a few runs and brings back `runs.tgz` (records and logs, no checkpoints:
tools/gpu_session.py). `collect` files each finished run-seed of one or several such bundles under
reports/gpu_acdc/<profile>/runs/<run>/seed<seed>/ (RECORD_FILES), the layout of a results folder,
so that the whole report can be made from them as well: `ugpcl report --profile paper --set
paths.results=reports/gpu_acdc --set paths.reports=R`, with `--set model.pretrained=false` where the
runs started from random weights (the report compares only runs trained with its settings).
Bundles from several leases merge. A run-seed recorded already with the same files is left as it is;
a different record of it is refused unless `--replace` is given (nothing recorded is lost
silently). Runs that did not finish (stopped for time, failed) are named and left out. Every bundle
is read and checked before anything is written.

`markdown` renders, from the records and the paper's tables (workflow/resources/paper/), Table 1's
ACDC rows against the paper (every cell, "missing" where no run is recorded yet), Tables 2 and 3
where any of their runs is, and every run: Dice, Jaccard, HD95 and ASD of the best and the last
checkpoint, the best iteration, wall time, device, torch, commit and how the encoder started (the
paper's was initialised from ImageNet). The numbers are the report's own (ugpcl.report.tables).
Only runs trained with the profile's settings (plus `--set`; `report.tables.split_by_settings`, as
`ugpcl report` does) go into the tables against the paper, whatever started their encoder: a run a
lease made with other settings (fewer iterations, say) is listed with the keys that differ.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ugpcl.config import eval_dir, load_config  # noqa: E402
from ugpcl.errors import UserError  # noqa: E402
from ugpcl.fileio import atomic_dir  # noqa: E402
from ugpcl.projection import format_duration  # noqa: E402
from ugpcl.report import stamp  # noqa: E402
from ugpcl.report.tables import (HD95_KEYS, build_tables, collect_results, fmt_diff, fmt_value, kind,  # noqa: E402
                                 split_by_settings)
from ugpcl.study import distinct_runs  # noqa: E402

RECORDS = ROOT / "reports" / "gpu_acdc"
# what a run's folder keeps (as written by `ugpcl train`); checkpoints never come back from a lease
RECORD_FILES = ("run.json", "config.yaml", "log.jsonl", "val.jsonl", "eval/summary.json", "eval/per_case.csv",
                "eval-last/summary.json", "eval-last/per_case.csv")
# how the encoder started: its own column and caveat, not a reason to leave a run out of the tables
ENCODER_KEYS = ("model.pretrained", "model.weights")
MEMBER = re.compile(r"runs/([A-Za-z0-9][A-Za-z0-9_.-]*)/seed(\d+)/(.+)")


# --- collect ------------------------------------------------------------------------------------------
def bundle_path(source: Path) -> Path:
    """`source` itself, or the runs.tgz in the folder `source` (a lease's $OUT)."""
    path = source / "runs.tgz" if source.is_dir() else source
    if not path.is_file():
        raise UserError("no such bundle" if not source.is_dir() else "this folder holds no runs.tgz", path=source,
                        fix="pass DIR/runs.tgz, which `tools/gpu_session.py train --out DIR` wrote, or DIR")
    return path


def read_bundle(path: Path) -> dict[tuple[str, str, int], dict[str, bytes]]:
    """{(profile, run, seed): {record file: bytes}} of every run-seed in the bundle (finished or not).
    Only RECORD_FILES are read, by name; nothing is extracted, so no member can write elsewhere."""
    found: dict[tuple[str, int], dict[str, bytes]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                match = MEMBER.fullmatch(member.name)
                if not (match and member.isfile() and match[3] in RECORD_FILES):
                    continue
                found.setdefault((match[1], int(match[2])), {})[match[3]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"not a readable gzip tar archive ({exc})", path=path,
                        fix="copy runs.tgz from the GPU machine's --out folder again") from exc
    if not found:
        raise UserError("holds no run records (runs/<run>/seed<seed>/run.json ...)", path=path,
                        fix="pass the runs.tgz of `tools/gpu_session.py train`")
    out = {}
    for (run, seed), files in found.items():
        info = _json(files.get("run.json"), f"{path}: runs/{run}/seed{seed}/run.json")
        profile = str((info or {}).get("profile") or "unknown")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", profile):
            raise UserError(f"runs/{run}/seed{seed}/run.json names the profile {profile!r}", path=path,
                            fix="collect only bundles of `tools/gpu_session.py train`")
        out[(profile, run, seed)] = files
    return out


def _json(data: bytes | None, where: str) -> dict | None:
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UserError(f"not valid JSON ({exc})", path=where, fix="copy the bundle from the lease again") from exc


def unfinished(files: dict[str, bytes]) -> str | None:
    """Why a run-seed's files are no finished run's record, or None."""
    info = json.loads(files["run.json"]) if "run.json" in files else None
    if info is None:
        return "no run.json"
    if info.get("status") != "finished":
        return f"status {info.get('status', 'unknown')!r}"
    missing = [name for name in ("config.yaml", "eval/summary.json") if name not in files]
    return f"{', '.join(missing)} missing" if missing else None


def collect(sources: list[Path], records: Path = RECORDS, replace: bool = False) -> list[str]:
    """File every finished run-seed of the bundles under `records`; the lines saying what was done."""
    planned: dict[tuple[str, str, int], dict[str, bytes]] = {}
    origin: dict[tuple[str, str, int], Path] = {}
    lines = []
    for source in sources:
        path = bundle_path(Path(source))
        for key, files in sorted(read_bundle(path).items()):
            profile, run, seed = key
            why = unfinished(files)
            if why:
                lines.append(f"left out: {profile} {run} seed {seed} ({why}) from {path}")
                continue
            if key in planned and planned[key] != files:
                raise UserError(f"{run} seed {seed} is in {origin[key]} too, with other files", path=path,
                                fix="collect the bundles one at a time and keep the run you mean (--replace)")
            planned[key], origin[key] = files, path
    writes = []
    for key, files in planned.items():
        target = records / key[0] / "runs" / key[1] / f"seed{key[2]}"
        if target.exists():
            held = {name: (target / name).read_bytes() for name in RECORD_FILES if (target / name).is_file()}
            if held == files:
                lines.append(f"already recorded: {target.relative_to(records)}")
                continue
            if not replace:
                raise UserError("holds another record of this run-seed (other files or contents)", path=target,
                                fix=f"pass --replace to take the one in {origin[key]}, or leave that bundle out")
        writes.append((target, files, key))
    for target, files, key in writes:   # everything read and checked: now write, a run-seed at a time
        with atomic_dir(target) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
        lines.append(f"recorded: {target.relative_to(records)} (from {origin[key]})")
    return lines


# --- markdown -----------------------------------------------------------------------------------------
def fmt(x, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def encoder_start(run_dir: Path) -> str:
    """How the run's ResNet-50 started, from the config.yaml it trained with."""
    model = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("model", {})
    if model.get("weights"):
        return f"ImageNet ({Path(str(model['weights'])).name})"
    return "ImageNet (torchvision)" if model.get("pretrained") else "random (no ImageNet)"


def cell_rows(cells, label_keys: list[str]) -> list[str]:
    """A table's cells as Markdown rows: ours (mean ± std over the seeds) against the paper."""
    units = sorted({c.hd95_unit for c in cells if c.hd95_unit})
    unit = " or ".join(units) or "voxel"
    head = [*label_keys, "seeds", "Dice (%)", "paper", "diff", "Jaccard (%)", "paper", "diff", f"HD95 ({unit})",
            "Dice, other checkpoint (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        other = f"{fmt(sum(c.other_dice) / len(c.other_dice))} ({c.other})" if c.other_dice else ""
        lines.append("| " + " | ".join([*(str(c.labels[k]) for k in label_keys), str(len(c.dice)),
                                        fmt_value(c.dice), fmt(c.paper_dice), fmt_diff(c.dice_diff),
                                        fmt_value(c.jaccard), fmt(c.paper_jaccard), fmt_diff(c.jaccard_diff),
                                        fmt_value(c.hd95) if c.dice else "", other]) + " |")
    return lines


def run_dirs(cfg: dict, results: dict[str, dict[int, dict]]) -> dict[tuple[str, int], Path]:
    """(run id, seed) -> the folder of each recorded run-seed, in the order of `results`."""
    by_id = {run.id: run for run in distinct_runs(cfg)}
    return {(run_id, seed): by_id[run_id].run_dir(cfg, seed) for run_id, seeds in results.items() for seed in seeds}


def run_rows(cfg: dict, results: dict[str, dict[int, dict]], other: dict[tuple[str, int], str]) -> list[str]:
    """Two rows per run-seed, its best and its last checkpoint; the run's facts on the first."""
    hd95_key = HD95_KEYS[cfg["evaluation"]["hd95"]]
    head = ["run", "seed", "checkpoint", "Dice (%)", "Jaccard (%)", "HD95", "ASD", "unit", "at iteration",
            "wall time", "device", "torch", "commit", "encoder start", "settings other than the profile's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (run_id, seed), run_dir in run_dirs(cfg, results).items():
        info = results[run_id][seed]["run"]
        commit = str(info.get("git_commit", ""))[:10] + (" +modified" if info.get("code_modified") else "")
        facts = [format_duration(info.get("wall_time_s")), f"{info.get('device', '')} ({info.get('device_name', '')})",
                 str(info.get("torch", "")), commit, encoder_start(run_dir), other.get((run_id, seed), "")]
        first = [run_id, str(seed)]
        for checkpoint in ("best", "last"):
            path = eval_dir(run_dir, checkpoint) / "summary.json"
            if not path.is_file():
                continue
            summary = json.loads(path.read_text())
            scores = [fmt(100 * summary["dice"]), fmt(100 * summary["jaccard"]), fmt(summary.get(hd95_key)),
                      fmt(summary.get("asd")), str(summary.get("distance_unit", "voxel")),
                      str(summary.get("iteration", ""))]
            lines.append("| " + " | ".join([*first, checkpoint, *scores, *facts]) + " |")
            first, facts = ["", ""], [""] * len(facts)
    return lines


def markdown(profile: str = "paper", records: Path = RECORDS, overrides: list[str] = ()) -> str:
    """The tables of reports/gpu_acdc.md from the records under `records`/<profile>, against the
    profile's settings with `overrides` (`--set`)."""
    cfg = load_config(profile=profile, overrides=[*overrides, f"paths.results={Path(records).resolve()}"])
    results = {run: seeds for run, seeds in collect_results(cfg).items() if seeds}
    same, other = split_by_settings(cfg, results, ENCODER_KEYS)
    known = {p.parent.name for p in (Path(records) / profile / "runs").glob("*/seed*")}
    stray = sorted(known - set(results))
    tables = build_tables(cfg, same)
    hd95 = cfg["evaluation"]["hd95"]
    infos = stamp.finished_runs(results)
    source = Path(records).resolve() / profile
    shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    lines = [stamp.describe(infos, made="written") + f", by `tools/gpu_study.py markdown` from `{shown}/`.", ""]
    starts = {encoder_start(run_dir) for run_dir in run_dirs(cfg, results).values()}
    if any(s.startswith("random") for s in starts):
        lines += ["**Caveat:** " + ("every run here" if starts == {"random (no ImageNet)"} else "some runs here")
                  + " started its ResNet-50 encoder from random weights (`model.pretrained: false`), where the "
                    "paper's was initialised from ImageNet: the differences to the paper include that.", ""]
    acdc = [c for c in tables["table1"] if kind(cfg, c.labels["dataset"]) == "acdc"]
    lines += [f"### Table 1, ACDC ({cfg['evaluation']['checkpoint']} checkpoint, protocol "
              f"`{cfg['evaluation']['protocol']}`, HD95 {hd95})", "",
              *cell_rows(acdc, ["labeled", "method"]), ""]
    for table, keys in (("table2", ["row"]), ("table3", ["feature", "resolution"])):
        if any(c.dice for c in tables[table]):
            lines += [f"### Table {table[-1]}, ACDC-136", "", *cell_rows(tables[table], keys), ""]
    if other:
        lines += [f"**Left out of the tables above:** {len(other)} run-seed{'s' if len(other) > 1 else ''} trained "
                  f"with settings other than the {profile} profile's" + (f" (with {', '.join(overrides)})"
                                                                          if overrides else "")
                  + ", named in the last column below.", ""]
    lines += ["### Every run", "", *run_rows(cfg, results, other), ""]
    if stray:
        lines += [f"Recorded but not in the {profile} profile's experiments (left out above): {', '.join(stray)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="file the finished runs of lease bundles under reports/gpu_acdc/")
    c.add_argument("sources", nargs="+", type=Path, metavar="OUT", help="a runs.tgz, or the folder holding it")
    c.add_argument("--records", type=Path, default=RECORDS, help="where the records go (default: %(default)s)")
    c.add_argument("--replace", action="store_true", help="take a bundle's record over a different one held")
    m = sub.add_parser("markdown", help="the tables of reports/gpu_acdc.md, to stdout")
    m.add_argument("--profile", default="paper")
    m.add_argument("--records", type=Path, default=RECORDS, help="where the records are (default: %(default)s)")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="settings the runs were meant to have beyond the profile's (repeatable); runs trained "
                        "with others are left out of the tables against the paper")
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            print("\n".join(collect(args.sources, args.records, args.replace)))
        else:
            sys.stdout.write(markdown(args.profile, args.records, args.overrides))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
