"""What a figure or table was made from, in one line, for the copy that leaves the report.

A PNG pasted into slides or a Markdown table sent round loses the page that said which runs it
shows. So each carries its own: how many finished run-seeds it draws on, when they were trained, on
which devices and at which commits (a run resumed on other code counts each), and when and at
which commit it was drawn. `figures.save` writes it under the figure and into the PNG's
`Description` metadata; the Markdown tables have it under their title.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from ..lifetime import code_state

SHOWN_COMMITS = 3  # more are counted, the first and last named


def finished_runs(results: dict[str, dict[int, dict]], run_ids: Iterable[str | None] | None = None,
                  seeds: Iterable[int] | None = None) -> list[dict]:
    """The run.json of each finished seed of `run_ids` (all: None), of `seeds` only where given;
    `results` as tables.collect_results returns them."""
    ids = None if run_ids is None else {i for i in run_ids if i}
    wanted = None if seeds is None else set(seeds)
    return [result["run"] for run_id, per_seed in results.items() if ids is None or run_id in ids
            for seed, result in per_seed.items() if wanted is None or seed in wanted]


def _device(info: dict) -> str:
    name = info.get("device_name")
    return f"{info.get('device', '?')} ({name})" if name else str(info.get("device", "?"))


def _commits(infos: list[dict]) -> list[str]:
    """Every commit the runs trained at (run.json's `git_commits`, each attempt's where a resumed run
    changed code, else `git_commit`: evaluation.code_record), in the order the runs finished."""
    seen: dict[str, None] = {}
    for info in sorted(infos, key=lambda i: str(i.get("finished", ""))):
        for commit in info.get("git_commits") or [info.get("git_commit") or "unknown"]:
            seen.setdefault(str(commit)[:7], None)
    return list(seen)


def describe(infos: list[dict], now: datetime | None = None, code: dict | None = None, made: str = "drawn") -> str:
    """One line, a sentence but for its full stop: the runs (`finished_runs`), then when and at which
    commit this is `made`."""
    now = now or datetime.now(timezone.utc)
    code = code or code_state()
    drawn = (f"{made} {now:%Y-%m-%d %H:%M} UTC at {str(code['commit'])[:7]}"
             + (" with uncommitted changes" if code.get("modified") else ""))
    if not infos:
        return f"No finished run yet; {drawn}"
    days = sorted(str(i["finished"])[:10] for i in infos if i.get("finished"))
    when = "" if not days else f" {days[0]}" if days[0] == days[-1] else f" {days[0]} to {days[-1]}"
    devices = sorted({_device(i) for i in infos})
    commits = _commits(infos)
    if len(commits) > SHOWN_COMMITS:
        at = f"{len(commits)} commits ({commits[0]} ... {commits[-1]})"
    else:
        at = ", ".join(commits)
    modified = " (some with uncommitted changes)" if any(i.get("code_modified") for i in infos) else ""
    runs = f"{len(infos)} finished run-seed{'s' if len(infos) > 1 else ''}"
    return f"{runs} trained{when} on {', '.join(devices)} at {at}{modified}; {drawn}"
