"""The training loop every method shares: batches, optimiser, LR schedule, AMP, checkpoints,
validation and logging. Methods supply only their `compute_loss`; one iteration is `step.train_step`."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..config import prepared_path
from ..data.prepared import Prepared, load_prepared
from ..device import pick_device
from ..errors import UserError
from ..fileio import write_text
from ..methods import build_method
from ..methods.base import Batch
from ..metrics import validation_dice
from . import checkpoint, speed
from .augment import augment_batch
from .sampler import TwoStreamSampler
from .step import make_optimizer, poly_lr, train_step


def training_device(train_cfg: dict, requested: str | None = None) -> torch.device:
    """The device to train on; the CPU only when train.allow_cpu says so."""
    device = pick_device(requested or train_cfg["device"])
    if device.type == "cpu" and not train_cfg["allow_cpu"]:
        raise UserError(
            "no CUDA device: paper-scale training on the CPU would take days, so it is refused",
            fix="run on a GPU machine, use the demo profile (--profile demo), or pass --set train.allow_cpu=true",
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains one run (a method on a dataset regime with a seed) into `run_dir`."""

    def __init__(self, cfg: dict, info: dict, run_dir: str | Path, *, data: Prepared | str | Path | None = None,
                 device: str | None = None):
        self.cfg, self.tr = cfg, cfg["train"]
        self.run_dir = Path(run_dir)
        self.device = training_device(self.tr, device)
        self.data = data if isinstance(data, Prepared) else load_prepared(data or prepared_path(cfg, info["dataset"]))
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

        seed_everything(self.tr["seed"])
        self.speed = speed.resolve(self.tr["speed"], self.device)
        method = build_method(cfg, info["method"], self.data.num_classes, self.data.in_channels).to(self.device)
        self.method = speed.apply(method, self.speed)
        self.optimizer = make_optimizer(self.method, self.tr, fused=self.speed.fused_optimizer)
        regime = info["regime"]
        unlabeled = self.data.unlabeled_indices(regime) if self.method.uses_unlabeled else np.array([], dtype=np.int64)
        batch_size = self.tr["batch_size"] if self.method.uses_unlabeled else self.tr["labeled_bs"]
        self.sampler = TwoStreamSampler(self.data.labeled_indices(regime), unlabeled, batch_size,
                                        self.tr["labeled_bs"], self.tr["seed"])
        self.images = torch.from_numpy(self.data.train.images).to(self.device)
        self.labels = torch.from_numpy(self.data.train.labels).to(self.device)
        self.amp = self.device.type == "cuda" and self.tr["amp"] == "bf16"
        self.best = -math.inf
        self.elapsed = 0.0

    # --- data -----------------------------------------------------------------------------
    def next_batch(self) -> Batch:
        lab, unl = self.sampler.next()
        idx = torch.from_numpy(np.concatenate([lab, unl]))
        if self.device.type == "cuda":  # a pinned copy does not wait for the GPU's queue
            idx = idx.pin_memory().to(self.device, non_blocking=True)
        images = self.images[idx]
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        labels = self.labels[idx[: len(lab)]].long()
        images, labels = augment_batch(images, labels, self.tr["augment"])
        return Batch(speed.batch_layout(images, self.speed), labels, len(lab))

    # --- checkpoints ----------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _save(self, name: str, iteration: int, training: bool) -> None:
        state = {}
        if training:
            state = dict(optimizer=self.optimizer.state_dict(), sampler=self.sampler.state_dict(),
                         rng=checkpoint.rng_state(), best=self.best, elapsed=self.elapsed)
        checkpoint.save_method(self.ckpt_dir / name, self.method, self.cfg, self.info, iteration, **state)

    def resume(self) -> int:
        """Restore `checkpoints/resume.pt` if present; returns the iteration to start from."""
        path = self.ckpt_dir / "resume.pt"
        if not path.exists():
            return 0
        ckpt = checkpoint.read(path, map_location=self.device)
        if ckpt["cfg"] != self.cfg or ckpt["info"] != self.info:
            raise UserError(
                "this run directory holds an unfinished run with a different configuration",
                path=path, fix="use --fresh to discard it, or choose another --out",
            )
        self.method.load_state_dict(ckpt["state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.sampler.load_state_dict(ckpt["sampler"])
        checkpoint.set_rng_state(ckpt["rng"])
        self.best, self.elapsed = ckpt["best"], ckpt["elapsed"]
        return int(ckpt["iteration"])

    # --- logging --------------------------------------------------------------------------
    def _open_log(self, name: str, start: int):
        """Open a JSON-lines log for appending, dropping entries from iterations being redone."""
        path = self.run_dir / name
        if path.exists():
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["t"] < start]
            write_text(path, "".join(ln + "\n" for ln in kept))
        return path.open("a")

    def _flush(self, pending: list, log, bar) -> None:
        """Write the log rows of the iterations in `pending` with one read from the device.

        The training step leaves its loss and terms on the device (no synchronisation); every
        `train.log_every` iterations, before each checkpoint and at the end, they are copied
        back together, checked for NaN, and written as one JSON line per iteration.
        """
        if not pending:
            return
        tensors = [v.detach().float().reshape(()) for _, _, loss, terms in pending
                   for v in (loss, *terms.values()) if torch.is_tensor(v)]
        values = iter(torch.stack(tensors).tolist() if tensors else [])
        for t, lr, loss, terms in pending:
            row = {"t": t, "lr": lr}
            row.update((k, next(values) if torch.is_tensor(v) else float(v)) for k, v in (("loss", loss), *terms.items()))
            if not math.isfinite(row["loss"]):
                raise UserError(f"loss became {row['loss']} at iteration {t}: {row}",
                                fix="lower train.lr or check the data")
            log.write(json.dumps(row) + "\n")
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
        pending.clear()

    # --- the loop -------------------------------------------------------------------------
    def validate(self) -> float:
        return float(validation_dice(self.method.eval_network(), self.data, self.tr["val_batch"], self.device,
                                     self.cfg["evaluation"]["protocol"]))

    def fit(self, stop_after: int | None = None, progress: bool = True) -> bool:
        """Train until `train.iterations` (or `stop_after` iterations, to test resuming).

        Returns True when the run finished, False when it stopped early at `stop_after`.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
        start = self.resume()
        total = self.tr["iterations"]
        log, val_log = self._open_log("log.jsonl", start), self._open_log("val.jsonl", start)
        self.method.train()
        bar = tqdm(range(start, total), initial=start, total=total, desc=self.info.get("run_id", "train"),
                   disable=not progress, dynamic_ncols=True, mininterval=2.0)
        tick = time.perf_counter()
        pending: list = []  # (t, lr, loss, terms) of iterations not yet read back from the device
        try:
            for t in bar:
                lr = poly_lr(t, self.tr)
                loss, terms = train_step(self.method, self.optimizer, self.next_batch(), t, lr=lr, amp=self.amp)
                pending.append((t, lr, loss, terms))
                done = t + 1
                stopping = stop_after is not None and done >= stop_after and done < total
                checkpointing = done % self.tr["checkpoint_every"] == 0 or stopping
                if done % self.tr["log_every"] == 0 or done == total or checkpointing:
                    self._flush(pending, log, bar)
                if done % self.tr["val_every"] == 0 or done == total:
                    score = self.validate()
                    val_log.write(json.dumps({"t": t, "val_dice": score}) + "\n")
                    val_log.flush()
                    if score > self.best:
                        self.best = score
                        self._save("best.pt", done, training=False)
                if checkpointing:
                    log.flush()
                    self.elapsed += time.perf_counter() - tick
                    tick = time.perf_counter()
                    self._save("resume.pt", done, training=True)
                if stopping:
                    return False
        finally:
            bar.close()
            log.close()
            val_log.close()
        self.elapsed += time.perf_counter() - tick
        self._save("last.pt", total, training=False)
        return True

    def facts(self) -> dict:
        """What run.json records about the training itself."""
        return {
            "device": self.device.type,
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "iterations": self.tr["iterations"],
            "wall_time_s": round(self.elapsed, 1),
            "best_val_dice": self.best,
        }
