"""The two-stream batch sampler of SSL4MIS, resumable from a tiny state.

Each batch is `labeled_bs` labeled indices followed by `batch_size - labeled_bs` unlabeled ones.
The labeled stream walks one random permutation per epoch in chunks (leftovers dropped); the
unlabeled stream is an endless chain of fresh permutations. Every permutation is a pure function
of (seed, stream, epoch), so the state is four integers and a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError


@dataclass
class SamplerState:
    labeled_epoch: int = 0
    labeled_pos: int = 0
    unlabeled_epoch: int = 0
    unlabeled_pos: int = 0


class TwoStreamSampler:
    def __init__(self, labeled: np.ndarray, unlabeled: np.ndarray, batch_size: int, labeled_bs: int, seed: int):
        self.labeled = np.asarray(labeled)
        self.unlabeled = np.asarray(unlabeled)
        self.labeled_bs = labeled_bs
        self.unlabeled_bs = batch_size - labeled_bs
        self.seed = seed
        self.state = SamplerState()
        if len(self.labeled) < labeled_bs:
            raise UserError(
                f"only {len(self.labeled)} labeled images for a labeled batch of {labeled_bs}",
                fix="lower train.labeled_bs or label more images",
            )
        if self.unlabeled_bs > 0 and len(self.unlabeled) < self.unlabeled_bs:
            raise UserError(
                f"only {len(self.unlabeled)} unlabeled images for an unlabeled batch of {self.unlabeled_bs}",
                fix="label fewer in the regime (data.<dataset>.regimes) so that enough images stay unlabeled",
            )

    def _perm(self, stream: int, epoch: int, n: int) -> np.ndarray:
        return np.random.default_rng([self.seed, stream, epoch]).permutation(n)

    def _take(self, pool: np.ndarray, stream: int, epoch: int, pos: int, size: int) -> tuple[np.ndarray, int, int]:
        if pos + size > len(pool):
            epoch, pos = epoch + 1, 0
        idx = pool[self._perm(stream, epoch, len(pool))[pos : pos + size]]
        return idx, epoch, pos + size

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        """(labeled indices, unlabeled indices) of the next batch."""
        s = self.state
        lab, s.labeled_epoch, s.labeled_pos = self._take(self.labeled, 0, s.labeled_epoch, s.labeled_pos, self.labeled_bs)
        if self.unlabeled_bs == 0:
            return lab, self.unlabeled[:0]
        unl, s.unlabeled_epoch, s.unlabeled_pos = self._take(
            self.unlabeled, 1, s.unlabeled_epoch, s.unlabeled_pos, self.unlabeled_bs
        )
        return lab, unl

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = SamplerState(**state)
