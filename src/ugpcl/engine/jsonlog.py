"""The training logs (`log.jsonl`, `val.jsonl`): one JSON object per line, appended as training
goes, cut back to the resumed iteration when a run resumes.

A process killed mid-write (or a disk that filled up) can leave a partial last line: on resume
it is dropped with a note, as are rows of iterations about to be redone. A malformed line
elsewhere is a UserError naming the file and the line. A failed write names the file too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from ..fileio import write_error, write_text


def json_step(line: str) -> int:
    """The iteration of a JSON log row (its "t")."""
    return int(json.loads(line)["t"])


def kept_rows(path: Path, start: int, step_of=json_step, header: int = 0) -> list[str]:
    """The lines of `path` from iterations before `start` (a partial last line dropped, with a note).

    `step_of(line)` reads a row's iteration (ValueError, KeyError, TypeError or IndexError for a
    line that is not a row); the first `header` lines are kept as they are."""
    lines = path.read_text(errors="replace").split("\n")
    complete, tail = lines[:-1], lines[-1]  # text after the last newline was never finished
    kept = complete[:header]
    for number, line in enumerate(complete[header:], header + 1):
        if not line.strip():
            continue
        try:
            t = step_of(line)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            if number == len(complete) and not tail:  # a last line that is not a row: cut short too
                tail = line
                break
            raise UserError(f"line {number} is not a log row ({exc}): {line[:80]!r}", path=path,
                            fix="delete that line (the log of the iterations it held is lost), or restart the run "
                                "with --fresh") from exc
        if t < start:
            kept.append(line)
    if tail.strip():
        print(f"note: {path}: dropped a partial last line left by an interrupted write ({tail[:60]!r})",
              file=sys.stderr)
    return kept


class JsonLog:
    """A JSON-lines log opened for appending at iteration `start` (see the module docstring); used
    like the text file it is (`write(json.dumps(row) + "\n")`, `flush`, `close`)."""

    def __init__(self, path: str | Path, start: int):
        self.path = Path(path)
        if self.path.exists():
            kept = kept_rows(self.path, start)
            write_text(self.path, "".join(line + "\n" for line in kept))
        try:
            self.file = self.path.open("a")
        except OSError as exc:
            raise (write_error(exc, self.path, creating=True) or exc) from exc

    def _guard(self, action, *args):
        try:
            return action(*args)
        except OSError as exc:
            raise (write_error(exc, self.path) or exc) from exc

    def write(self, text: str) -> None:
        self._guard(self.file.write, text)

    def flush(self) -> None:
        self._guard(self.file.flush)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # the write that failed already raised; closing must not hide it
