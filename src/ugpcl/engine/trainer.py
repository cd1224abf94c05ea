"""The training loop every method shares: batches, optimiser, LR schedule, AMP, checkpoints,
validation and logging. Methods supply only their `compute_loss`; one iteration is `step.train_step`.

Recovery. A run is trained by one process at a time (the run directory's lock, `ugpcl.lock`) and
can be killed at any moment (kill -9, a full disk, Snakemake stopping or deleting things); the
next `fit` on the same directory continues and ends with the same result as an uninterrupted
run (bit for bit on the CPU, and on a GPU with `train.deterministic`; without it, as two
uninterrupted GPU runs agree: some CUDA kernels use atomics). What makes that hold:
- All state a rerun needs lives in `progress/` (see `runfiles`), never a Snakemake output:
  `resume.pt` (weights, optimiser, sampler, every RNG, best score, wall time, the data's SHA-256),
  the best checkpoint that score belongs to (`best-<t>.pt`: resume.pt names it, so a better one
  found after the last resume point is dropped with the iterations that are redone), and the logs
  (JSON lines and DVCLive's files, `tracker`).
  Snakemake deletes a failed job's declared outputs (best.pt, last.pt, logs, config.yaml,
  eval/, run.json) and reruns it: nothing of that is needed to continue. The declared outputs are
  published from `progress/` only when training completes; a resume point is saved at the last
  iteration first, so a kill during evaluation reruns the evaluation only.
- Every file is written under a temporary name and renamed when complete; the temporary files of
  a killed write are deleted at the next start. A log line cut short is dropped on resume.
- Before anything is written, a resume is checked against the configuration, the run
  description and the data; a mismatch stops with the fix, leaving the directory as it was.
- Every attempt's wall time, interrupted ones included, is kept in `progress/attempts.json`.
- A run directory this call created is removed again when it fails before a first resume point.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..config import prepared_path
from ..data.prepared import Prepared, load_prepared
from ..data.provenance import data_record
from ..data.split import batch_fit
from ..device import claim_least_busy_gpu, device_name, pick_device
from ..errors import Interrupted, UserError
from ..fileio import write_text
from ..lifetime import Terminated
from ..methods import build_method, get_method, parse_hparams
from ..methods.base import Batch
from ..metrics import validation_dice
from . import checkpoint, determinism, speed
from .attempts import Attempts
from .augment import augment_batch
from .jsonlog import JsonLog
from .progress import progress_line
from .runfiles import DVCLIVE, RunFiles
from .sampler import TwoStreamSampler
from .step import make_optimizer, method_code, method_source, poly_lr, train_step
from .tracker import Tracker


def training_device(train_cfg: dict, requested: str | None = None) -> torch.device:
    """The device to train on; the CPU only when train.allow_cpu says so. With several GPUs
    visible, the one the fewest other training processes use (device.claim_least_busy_gpu)."""
    device = pick_device(requested or train_cfg["device"])
    if device.type == "cpu" and not train_cfg["allow_cpu"]:
        raise UserError(
            "no CUDA device: paper-scale training on the CPU would take days, so it is refused",
            fix="run on a GPU machine, use the demo profile (--profile demo), or pass --set train.allow_cpu=true",
        )
    if device.type == "cuda" and device.index is None and (count := torch.cuda.device_count()) > 1:
        device = torch.device("cuda", claim_least_busy_gpu(count))
        torch.cuda.set_device(device)  # tensors made on "cuda" (no index) go there too
        print(f"GPU {device.index} of {count} visible: the least busy one", file=sys.stderr, flush=True)
    return device


def iso_time(when: float) -> str:
    """Seconds since the epoch as the JSON logs' "time": ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def trained_with(cfg: dict, info: dict) -> dict:
    """The part of a configuration that a resume must find unchanged: all of it but the experiment matrix
    (a run's own overrides are in its method's section already), other methods' sections and other
    datasets' entries, which the workflows let change without retraining this run (study.run_settings)."""
    data = {k: v for k, v in cfg["data"].items()
            if k == info.get("dataset") or k in ("image_size", "demo") or not isinstance(v, dict)}
    return {**{k: v for k, v in cfg.items() if k != "experiments"}, "data": data,
            "methods": {info.get("method"): cfg["methods"].get(info.get("method"))}}


def differences(then: dict, now: dict, shown: int = 5) -> str:
    """`key: value in the unfinished run, value now; ...` of two configurations, at most `shown` keys."""
    from ..config import changed_keys

    changes = changed_keys(then, now)
    listed = "; ".join(f"{k}: {old!r} in it, {new!r} now" for k, old, new in changes[:shown])
    return listed + ("; ..." if len(changes) > shown else "")


class Trainer:
    """Trains one run (a method on a dataset regime with a seed) into `run_dir`."""

    def __init__(self, cfg: dict, info: dict, run_dir: str | Path, *, data: Prepared | str | Path | None = None,
                 device: str | None = None):
        self.cfg, self.tr = cfg, cfg["train"]
        self.run_dir = Path(run_dir)
        self.device = training_device(self.tr, device)
        dataset = info["dataset"]
        if isinstance(data, Prepared):
            self.data = data
        else:  # the configured file, unless --data names another; a missing one names the command that writes it
            self.data = load_prepared(data or prepared_path(cfg, dataset),
                                      **({} if data else {"dataset": dataset, "profile": cfg["profile"]}))
        self.data.check_dataset(dataset, role="the run trains",
                                fix=f"pass a prepared {dataset} file with --data (`ugpcl prepare {dataset}` writes "
                                    f"{prepared_path(cfg, dataset)}), or train on this file's dataset "
                                    f"(--dataset {self.data.dataset})")
        if self.data.image_size != cfg["data"]["image_size"]:
            raise UserError(
                f"prepared at {self.data.image_size} px but data.image_size is {cfg['data']['image_size']}",
                path=self.data.path, fix="prepare the data again with this configuration",
            )
        prepared_with = json.loads(self.data.attrs.get("provenance", "{}")).get("interpolation")
        wanted = cfg["data"][info["dataset"]].get("interpolation")
        if prepared_with and wanted and prepared_with != wanted:
            raise UserError(f"images prepared with {prepared_with} interpolation but data.{info['dataset']}"
                            f".interpolation is {wanted}", path=self.data.path,
                            fix="prepare the data again with this configuration")
        self.info = {**info, "num_classes": self.data.num_classes, "in_channels": self.data.in_channels}

        # the regime against the batch first: before the networks are built (and ImageNet weights fetched)
        regime, labeled_bs = info["regime"], self.tr["labeled_bs"]
        takes = get_method(info["method"]).takes_unlabeled(parse_hparams(cfg, info["method"]))
        labeled = self.data.labeled_indices(regime)
        unlabeled = self.data.unlabeled_indices(regime) if takes else np.array([], dtype=np.int64)
        batch_size = self.tr["batch_size"] if takes else labeled_bs
        unfit = batch_fit(info["dataset"], regime, len(labeled), len(self.data.train), labeled_bs,
                          batch_size - labeled_bs)
        if unfit:
            problem, fix = unfit[0]
            raise UserError(problem, path=self.data.path, fix=fix)

        seed_everything(self.tr["seed"])
        self.speed = speed.resolve(self.tr["speed"], self.device)
        method = build_method(cfg, info["method"], self.data.num_classes, self.data.in_channels).to(self.device)
        if method.uses_unlabeled != takes:  # the batches are drawn for `takes`
            raise UserError(f"method {info['method']!r} sets uses_unlabeled to {method.uses_unlabeled} but its "
                            f"takes_unlabeled() says {takes}", path=sys.modules[type(method).__module__].__file__,
                            fix="where a hyper-parameter decides uses_unlabeled, override the classmethod "
                                "takes_unlabeled(hp) to return it, and set uses_unlabeled from it in __init__")
        self.method = speed.apply(method, self.speed)
        self.augment = method.augmentation(self.tr["augment"])
        self.optimizer = make_optimizer(self.method, self.tr, fused=self.speed.fused_optimizer)
        self.sampler = TwoStreamSampler(labeled, unlabeled, batch_size, labeled_bs, self.tr["seed"])
        self.images = torch.from_numpy(self.data.train.images).to(self.device)
        self.labels = torch.from_numpy(self.data.train.labels).to(self.device)
        self.amp = self.device.type == "cuda" and self.tr["amp"] == "bf16"
        self.files = RunFiles(self.run_dir)
        self.data_record = data_record(self.data)
        self.best = -math.inf
        self.best_path: Path | None = None    # progress/best-<t>.pt of self.best
        self.committed: Path | None = None    # the best file the last resume point names
        self.elapsed = 0.0
        self.attempts: Attempts | None = None
        self.resume_point: int | None = None  # the iteration of the latest resume point

    # --- data -----------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        lab, unl = self.sampler.next()
        idx = torch.from_numpy(np.concatenate([lab, unl]))
        if self.device.type == "cuda":  # a pinned copy does not wait for the GPU's queue
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        images = self.images[idx]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        labels = self.labels[idx[: len(lab)]].long()
        images, labels = augment_batch(images, labels, self.augment)
        return Batch(speed.batch_layout(images, self.speed), labels, len(lab))

    # --- checkpoints ----------------------------------------------------------------------
    def _save(self, path: Path, iteration: int, training: bool) -> None:
        state = {}
        if training:
            state = dict(optimizer=self.optimizer.state_dict(), sampler=self.sampler.state_dict(),
                         rng=checkpoint.rng_state(self.device), best=self.best, elapsed=self.elapsed,
                         best_file=self.best_path.name if self.best_path else None, data=self.data_record["sha256"],
                         method_code=method_code(self.method))
        checkpoint.save_method(path, self.method, self.cfg, self.info, iteration, **state)

    def _save_best(self, iteration: int) -> None:
        path = self.files.best_file(iteration)
        self._save(path, iteration, training=False)
        self.best_path = path
        self.files.keep_best([path, self.committed])

    def _save_resume(self, iteration: int) -> None:
        self._save(self.files.resume, iteration, training=True)
        self.resume_point = iteration
        self.committed = self.best_path
        self.files.keep_best([self.best_path])

    def resume(self) -> int:
        """Restore `progress/resume.pt` if present; returns the iteration to start from.

        Checks first that it belongs to this configuration, run and data; writes nothing.
        """
        path = self.files.resume
        if not path.exists():
            legacy = self.files.checkpoints / "resume.pt"  # where ugpcl kept it before progress/ existed
            if legacy.exists():
                raise UserError("an unfinished run of an earlier ugpcl version (its resume point is not in "
                                "progress/): it cannot be continued", path=legacy,
                                fix="retrain it with --fresh (or delete the run directory)")
            return 0
        ckpt = checkpoint.read(path, map_location="cpu")  # RNG states must stay CPU tensors
        fresh = f"use --fresh to discard it (or delete {self.files.progress}), or choose another --out"
        then, now = trained_with(ckpt["cfg"], ckpt["info"]), trained_with(self.cfg, self.info)
        if then != now or ckpt["info"] != self.info:
            raise UserError("this run directory holds an unfinished run with a different configuration ("
                            f"{differences({**then, 'run': ckpt['info']}, {**now, 'run': self.info})})",
                            path=path, fix=fresh)
        if ckpt.get("data") != self.data_record["sha256"]:
            raise UserError(f"this unfinished run was trained on other data (SHA-256 {ckpt.get('data')}) than "
                            f"{self.data.path} holds now ({self.data_record['sha256']})", path=path,
                            fix=f"give the run its original data with --data, or {fresh}")
        best = self.files.progress / ckpt["best_file"] if ckpt.get("best_file") else None
        if best is not None and not best.is_file():
            raise UserError(f"the best checkpoint of this unfinished run, {best.name}, is missing", path=best,
                            fix=f"restore it, or {fresh}")
        code, source = ckpt.get("method_code"), method_source(self.method)[0]
        if code is not None and code != method_code(self.method):  # a slip fixed after a failure, say
            print(f"warning: {source} has changed since this run's resume point (iteration {ckpt['iteration']}) "
                  f"was saved: its first {ckpt['iteration']} iterations ran the old code. To train every iteration "
                  f"with the new, rerun with --fresh (or delete {self.files.progress})", file=sys.stderr, flush=True)
        self.method.load_state_dict(ckpt["state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.sampler.load_state_dict(ckpt["sampler"])
        checkpoint.set_rng_state(ckpt["rng"], self.device)
        self.best, self.elapsed = ckpt["best"], ckpt["elapsed"]
        self.best_path = self.committed = best
        return int(ckpt["iteration"])

    def _flush(self, pending: list, log, tracker: Tracker, bar) -> dict | None:
        """Write the log rows of the iterations in `pending` with one read from the device; return the last.

        The training step leaves its loss and terms on the device (no synchronisation); every
        `train.log_every` iterations, before each checkpoint and at the end, they are copied
        back together, checked for NaN, and written as one JSON line per iteration (with the
        time its step returned) and one DVCLive row per series (`tracker`).
        """
        if not pending:
            return None
        tensors = [v.detach().float().reshape(()) for _, _, loss, terms, _ in pending
                   for v in (loss, *terms.values()) if torch.is_tensor(v)]
        values = iter(torch.stack(tensors).tolist() if tensors else [])
        for t, lr, loss, terms, when in pending:
            row = {"t": t, "lr": lr}
            row.update((k, next(values) if torch.is_tensor(v) else float(v)) for k, v in (("loss", loss), *terms.items()))
            if not math.isfinite(row["loss"]):
                raise self._not_finite(row)
            log.write(json.dumps({**row, "time": iso_time(when)}) + "\n")
            tracker.log(t, when, {f"train/{k}": v for k, v in row.items() if k != "t"})
        tracker.flush()
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
        pending.clear()
        return row

    def _not_finite(self, row: dict) -> UserError:
        """The error for a loss that became NaN or infinite: which terms did, and where to look. A term
        that is not finite from the first step, before any update, is the method's own arithmetic."""
        t = row["t"]
        terms = [k for k, v in row.items() if k not in ("t", "lr", "loss") and not math.isfinite(v)]
        path, line, name = method_source(self.method)
        code = name + (f" in {path}" if path else "") + (f" (line {line})" if line else "")
        which = f" ({', '.join(f'{k} {row[k]}' for k in terms)})" if terms else ""
        look = (f"the method's arithmetic is the likely cause: look at {code} (e.g. a division by a count that can "
                "be 0, the log of 0)" if t == 0 else
                f"if it is not finite from the first logged steps, look at {code} (e.g. a division by a count that "
                "can be 0, the log of 0); if it grew there, lower train.lr or check the data")
        first = " (the first, before any update)" if t == 0 else ""
        return UserError(f"loss became {row['loss']} at iteration {t}{first}{which}: {row}",
                         fix=f"{look}. After changing the code, rerun with --fresh (or delete {self.files.progress}): "
                             "the run would otherwise resume from its last resume point, trained by the old code")

    def validate(self) -> float:
        return float(validation_dice(self.method.eval_network(), self.data, self.tr["val_batch"], self.device,
                                     self.cfg["evaluation"]["protocol"]))

    # --- the loop -------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None, progress: bool = True) -> bool:
        """Train until `train.iterations` (or `stop_after` iterations, to test resuming).

        Returns True when the run finished, False when it stopped early at `stop_after`.
        """
        with self.files.writing("ugpcl train"), determinism.mode(self.tr["deterministic"]):
            return self._fit(stop_after, progress)

    def _fit(self, stop_after: int | None, progress: bool) -> bool:
        self.files.clean_start()
        start = self.resume()
        if start == 0:  # a run from its first iteration: what a replaced run published goes
            self.files.drop_published()
        self.files.keep_best([self.committed])  # a better best found after the resume point is redone
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
        total = self.tr["iterations"]
        if 0 < start < total:
            print(f"resuming from iteration {start} of {total}", file=sys.stderr, flush=True)
        self.resume_point, t = (start or None), start
        self.attempts = attempts = Attempts(self.files.attempts, start)
        log, val_log = JsonLog(self.files.live_log("log.jsonl"), start), JsonLog(self.files.live_log("val.jsonl"), start)
        tracker = Tracker(self.files.live_log(DVCLIVE), start)
        self.method.train()
        bar = tqdm(range(start, total), initial=start, total=total, desc=self.info.get("run_id", "train"),
                   disable=not progress, dynamic_ncols=True, mininterval=2.0)
        tick, started = time.perf_counter(), time.time()
        pending: list = []  # (t, lr, loss, terms, time) of iterations not yet read back from the device
        validation = None   # (t, Dice) of the latest validation, for the progress line
        how = "failed"
        try:
            for t in bar:
                lr = poly_lr(t, self.tr)
                loss, terms = train_step(self.method, self.optimizer, self.next_batch(), t, lr=lr, amp=self.amp)
                pending.append((t, lr, loss, terms, time.time()))
                done = t + 1
                stopping = stop_after is not None and done >= stop_after and done < total
                checkpointing = done % self.tr["checkpoint_every"] == 0 or stopping
                row = None
                if done % self.tr["log_every"] == 0 or done == total or checkpointing:
                    row = self._flush(pending, log, tracker, bar)
                if done % self.tr["val_every"] == 0 or done == total:
                    score, now = self.validate(), time.time()
                    val_log.write(json.dumps({"t": t, "val_dice": score, "time": iso_time(now)}) + "\n")
                    val_log.flush()
                    tracker.log(t, now, {"val/dice": score})
                    tracker.flush()
                    validation = (t, score)
                    if score > self.best:
                        self.best = score
                        self._save_best(done)
                if row is not None and not progress:  # under Snakemake: a line in the job's log
                    print(progress_line(f"{self.info.get('run_id', 'train')} s{self.tr['seed']}", row, total,
                                        validation, start, started, time.time()), file=sys.stderr, flush=True)
                if checkpointing:
                    log.flush()
                    self.elapsed += time.perf_counter() - tick
                    tick = time.perf_counter()
                    self._save_resume(done)
                attempts.beat(done, now=stopping or checkpointing)  # a killed attempt counts to its last resume point
                if stopping:
                    how = "stopped"
                    return False
            log.flush()
            self.elapsed += time.perf_counter() - tick
            if start < total:  # a kill during the evaluation then reruns the evaluation only
                self._save_resume(total)
            self._save(self.files.checkpoints / "last.pt", total, training=False)
            self.files.publish(self.best_path)
            how = "finished"
            return True
        except KeyboardInterrupt as exc:
            how = "interrupted"
            raise Interrupted(self._interrupted_at(t)) from exc
        except Terminated:
            how = "interrupted"
            raise
        finally:
            bar.close()
            log.close()
            val_log.close()
            tracker.close()
            attempts.end(how)

    def _interrupted_at(self, iteration: int) -> str:
        """What Ctrl-C in `iteration` leaves: where a rerun of the command goes on."""
        if self.resume_point is None:
            return (f"interrupted at iteration {iteration}, before the first resume point (every "
                    f"train.checkpoint_every = {self.tr['checkpoint_every']} iterations); run the same command "
                    "again to start over")
        return (f"interrupted at iteration {iteration}; run the same command again to resume (from iteration "
                f"{self.resume_point}, the latest resume point)")

    def facts(self) -> dict:
        """What run.json records about the training itself and the data it used."""
        attempts = self.attempts.all if self.attempts else []
        return {
            "device": self.device.type,
            "device_name": device_name(self.device),
            "torch": torch.__version__,
            "iterations": self.tr["iterations"],
            "started": attempts[0]["started"] if attempts else None,
            "wall_time_s": self.attempts.total_seconds() if self.attempts else round(self.elapsed, 1),
            "train_time_s": round(self.elapsed, 1),
            "attempts": attempts,
            "best_val_dice": self.best,
            "data": self.data_record,
            "data_source": self.data_record["source"],
        }
