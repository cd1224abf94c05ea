"""Per-iteration metrics in DVCLive's format, for `dvc plots` and any DVCLive reader.

    dvclive/
      metrics.json                         DVCLive's summary: the latest value of every series and its step
      plots/metrics/train/loss.tsv         one file per series: timestamp (ms since the epoch), step, value
      plots/metrics/train/<term>.tsv       (a method's loss terms, and lr)
      plots/metrics/val/dice.tsv           one row per validation

The step is the iteration `t` of the JSON logs (0-based); the timestamp is when the iteration's
step returned on the host. The files are DVCLive's own layout, checked against what
`dvclive.Live` writes in tests/test_tracker.py; they are written here rather than through
`Live`, which opens the DVC repository when it starts (and runs `dvc init` in a Git repository
that has none), may post to DVC Studio, and costs seconds of start-up per training job.

Like the JSON logs (`jsonlog`), the folder lives in the run's `progress/` while training and is
published into the run directory when training finishes. On resume at iteration `start`, every
series keeps only its rows of earlier steps (a partial last line, left by a kill or a full disk,
is dropped with a note) and the summary is rebuilt from what is kept. Rows are appended, and the
summary replaced atomically, only when the trainer reads its losses back (`train.log_every`).
"""

from __future__ import annotations

from pathlib import Path

from ..fileio import write_error, write_json, write_text
from .jsonlog import kept_rows

SERIES = Path("plots") / "metrics"
SUMMARY = "metrics.json"


def series_path(folder: Path, name: str) -> Path:
    """The TSV of series `name` ("train/loss", "val/dice")."""
    return Path(folder) / SERIES / f"{name}.tsv"


def _step(line: str) -> int:
    return int(line.split("\t")[1])


def read_series(path: Path) -> list[dict]:
    """The rows of one series as {"timestamp", "step", <name>} with numbers (complete lines only)."""
    lines = Path(path).read_text().split("\n")[:-1]
    if not lines:
        return []
    header = lines[0].split("\t")
    return [{k: (int(v) if k in ("timestamp", "step") else float(v)) for k, v in zip(header, line.split("\t"))}
            for line in lines[1:] if line]


class Tracker:
    """The DVCLive folder of one run, opened for appending at iteration `start`."""

    def __init__(self, folder: str | Path, start: int):
        self.folder = Path(folder)
        self.files: dict[str, object] = {}
        self.summary: dict = {}
        self.step: int | None = None
        root = self.folder / SERIES
        for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
            kept = kept_rows(path, start, _step, header=1)
            if len(kept) > 1:
                write_text(path, "".join(line + "\n" for line in kept))
                self._remember(path.relative_to(root).with_suffix("").as_posix(), kept[-1])
            else:
                path.unlink()
        if self.summary:
            self._write_summary()
        else:
            (self.folder / SUMMARY).unlink(missing_ok=True)

    def _remember(self, name: str, line: str) -> None:
        step, value = line.split("\t")[1:3]
        self._set(name, float(value), int(step))

    def _set(self, name: str, value: float, step: int) -> None:
        node = self.summary
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        self.step = step if self.step is None else max(self.step, step)

    def _write_summary(self) -> None:
        write_json(self.folder / SUMMARY, {**self.summary, "step": self.step})

    def _file(self, name: str):
        if name not in self.files:
            path = series_path(self.folder, name)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                new = not path.exists() or path.stat().st_size == 0
                self.files[name] = path.open("a")
                if new:
                    self.files[name].write(f"timestamp\tstep\t{name.rsplit('/', 1)[-1]}\n")
            except OSError as exc:
                raise (write_error(exc, path, creating=True) or exc) from exc
        return self.files[name]

    def log(self, step: int, when: float, values: dict[str, float]) -> None:
        """One row per series: `values` maps series names to numbers at iteration `step`, `when` in
        seconds since the epoch."""
        stamp = int(when * 1000)
        for name, value in values.items():
            try:
                self._file(name).write(f"{stamp}\t{step}\t{float(value)!r}\n")
            except OSError as exc:
                raise (write_error(exc, series_path(self.folder, name)) or exc) from exc
            self._set(name, float(value), step)

    def flush(self) -> None:
        """Make the rows so far readable (a live `dvc plots show`) and write the summary."""
        for name, f in self.files.items():
            try:
                f.flush()
            except OSError as exc:
                raise (write_error(exc, series_path(self.folder, name)) or exc) from exc
        if self.summary:
            self._write_summary()

    def close(self) -> None:
        for f in self.files.values():
            try:
                f.close()
            except OSError:
                pass  # the write that failed already raised; closing must not hide it
