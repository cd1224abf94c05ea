"""Wall time across every attempt at training a run, interrupted ones included.

`progress/attempts.json` lists each attempt: who ran it, when it started, the code it ran (the
commit, and whether tracked files were modified), torch's CPU threads, the seconds it ran, the iterations it went from
and reached, and how it ended (finished, stopped, failed, interrupted). A running attempt
rewrites it every HEARTBEAT_S seconds and at each checkpoint; an attempt killed outright stays "running" and the next one marks it "interrupted", so at most
HEARTBEAT_S seconds of a killed attempt go uncounted.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import read_json, write_json
from ..lifetime import code_state, host

HEARTBEAT_S = 30.0


class Attempts:
    def __init__(self, path: str | Path, start: int):
        self.path = Path(path)
        self.history: list[dict] = []
        if self.path.exists():
            try:
                self.history = read_json(self.path, fix="")["attempts"]
            except (UserError, KeyError, TypeError):
                print(f"note: {self.path}: unreadable, earlier attempts are not counted", file=sys.stderr)
        for attempt in self.history:
            if attempt.get("ended") == "running":
                attempt["ended"] = "interrupted"
                print(f"note: an earlier attempt (PID {attempt.get('pid')} on {attempt.get('host')}, started "
                      f"{attempt.get('started')}) was interrupted near iteration {attempt.get('reached')} after "
                      f"{attempt.get('seconds', 0):.0f} s", file=sys.stderr)
        self.current = {"pid": os.getpid(), "host": host(),
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **code_state(),
                        "threads": torch.get_num_threads(),  # CPU results depend on it (summation order)
                        "seconds": 0.0, "from": start, "reached": start, "ended": "running"}
        self.t0 = self.written = time.monotonic()
        self._write()

    def _write(self) -> None:
        self.current["seconds"] = round(time.monotonic() - self.t0, 1)
        self.written = time.monotonic()
        write_json(self.path, {"attempts": [*self.history, self.current]})

    def beat(self, reached: int, *, now: bool = False) -> None:
        """Record progress: at once with `now`, else at most every HEARTBEAT_S seconds."""
        self.current["reached"] = reached
        if now or time.monotonic() - self.written >= HEARTBEAT_S:
            self._write()

    def end(self, how: str) -> None:
        self.current["ended"] = how
        try:
            self._write()
        except UserError:
            if how == "finished":
                raise
            # a failing attempt (e.g. disk full): keep its own error; this one is counted as interrupted

    @property
    def all(self) -> list[dict]:
        return [*self.history, self.current]

    def total_seconds(self) -> float:
        return round(sum(a.get("seconds", 0.0) for a in self.all), 1)
