"""A run directory's files, and what keeps a run recoverable whatever Snakemake deletes.

    <run_dir>/
      .lock                    one writer at a time (ugpcl.lock), removed when the writer ends
      config.yaml              the configuration (written when training starts)
      log.jsonl, val.jsonl     published when training finishes
      dvclive/                 published when training finishes (DVCLive's files: `tracker`)
      checkpoints/best.pt      published when training finishes
      checkpoints/last.pt      written when training finishes
      eval/, run.json          written by the evaluation after training
      progress/                the trainer's own state while the run is unfinished:
        resume.pt              the training state every train.checkpoint_every iterations
        best-<t>.pt            the best checkpoint so far (from iteration t); the one resume.pt
                               names, plus at most one newer one
        log.jsonl, val.jsonl   the live logs (what to watch during training)
        dvclive/               the live DVCLive files (`dvc plots show` on them during training)
        attempts.json          every attempt at training the run: start, seconds, iterations

Snakemake deletes a failed job's declared outputs (workflow/rules/common.smk RUN_FILES) and
again before rerunning an incomplete one; `progress/` is not an output, so it survives, and
it holds everything a rerun needs: resume.pt, the best checkpoint resume.pt's score belongs to,
and the logs. The outputs are published from it (hard links, or copies) only once training is
complete, and `progress/` is deleted once run.json is written. A run trained again from its first
iteration first deletes the logs and dvclive/ a replaced run published (`drop_published`).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import lock
from ..fileio import link_or_copy, link_or_copy_tree, remove_stale_temps, writable_dir

DVCLIVE = "dvclive"  # the DVCLive folder's name, in progress/ and, once published, in the run directory
BEST_RE = re.compile(r"best-(\d+)\.pt")


@dataclass(frozen=True)
class RunFiles:
    run_dir: Path

    @property
    def progress(self) -> Path:
        return self.run_dir / "progress"

    @property
    def resume(self) -> Path:
        return self.progress / "resume.pt"

    @property
    def attempts(self) -> Path:
        return self.progress / "attempts.json"

    def live_log(self, name: str) -> Path:
        return self.progress / name

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def best_file(self, iteration: int) -> Path:
        return self.progress / f"best-{iteration}.pt"

    def best_files(self) -> list[Path]:
        return sorted(p for p in self.progress.glob("best-*.pt") if BEST_RE.fullmatch(p.name))

    @contextlib.contextmanager
    def writing(self, command: str):
        """Create the run directory if needed and hold its lock for the block. If this call created
        it and the block fails before a resume point exists, it is removed again (nothing to resume)."""
        missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        writable_dir(self.run_dir)
        try:
            with lock.hold_folder(self.run_dir, command):
                try:
                    yield
                except BaseException:
                    if missing and not self.resume.exists():
                        for path in self.run_dir.iterdir():
                            if path.name != ".lock":  # the lock's holder removes it
                                shutil.rmtree(path) if path.is_dir() else path.unlink()
                    raise
        finally:
            for folder in missing:  # deepest first; only empty ones: this call's, after a failure
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def clean_start(self) -> None:
        """Delete what interrupted writes left (temporary files) anywhere in the run directory."""
        removed = remove_stale_temps(self.run_dir, recursive=True)
        if removed:
            print(f"note: {self.run_dir}: removed {len(removed)} temporary file(s) of interrupted writes: "
                  + ", ".join(str(p.relative_to(self.run_dir)) for p in removed), file=sys.stderr)

    def keep_best(self, keep: list[Path | None]) -> None:
        """Delete every best-<t>.pt but those in `keep` (the current one and the one resume.pt names)."""
        wanted = {p.name for p in keep if p is not None}
        for path in self.best_files():
            if path.name not in wanted:
                path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Forget the unfinished run (--fresh, --force): its progress and checkpoints."""
        shutil.rmtree(self.progress, ignore_errors=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def drop_published(self) -> list[str]:
        """Delete the logs and the DVCLive folder published by a run this directory held before (a
        run trained again from its first iteration: --force, --fresh, or Snakemake after a settings
        change, which deletes its declared outputs but not dvclive/), so that neither `dvc plots` nor
        the report shows the replaced run's curves as this one's. Returns the names deleted."""
        gone = []
        for name in ("log.jsonl", "val.jsonl", DVCLIVE):
            path = self.run_dir / name
            if path.is_dir():
                if not (path / "plots" / "metrics" / "val" / "dice.tsv").is_file():
                    continue  # a DVCLive folder of something else (an ad-hoc --out of the user's): not ours
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            gone.append(name)
        return gone

    def publish(self, best: Path) -> None:
        """The outputs from progress/: checkpoints/best.pt, the two logs and the DVCLive folder."""
        link_or_copy(best, self.checkpoints / "best.pt")
        for name in ("log.jsonl", "val.jsonl"):
            link_or_copy(self.live_log(name), self.run_dir / name)
        link_or_copy_tree(self.live_log(DVCLIVE), self.run_dir / DVCLIVE)

    def finished(self) -> None:
        """run.json is written: the progress folder has served its purpose."""
        shutil.rmtree(self.progress, ignore_errors=True)
