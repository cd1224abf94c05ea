"""Train/validation splits and labeled subsets as pure functions of names and a seed.

The unit is the group: a patient when the dataset has a grouping key, otherwise a volume or
an image (each its own group). Every slice of a group lands on one side of the split and is
labeled or not as a whole, so no patient is ever on both sides.

- Ratio split (a : b): groups ordered by sha256(f"{seed}:{group}"), the first
  round(n * a / (a + b)) train. It does not depend on the order files are listed in.
- Labeled subset of k groups: the first k train groups ordered by sha256(f"{seed}:labeled:{group}");
  a fraction f takes round(f * n_train) groups (at least 1). A smaller subset is therefore
  always part of a larger one (nested), and the same seed gives the same subsets.

These are exactly the rules of the ISIC split before it became a dataset of the folder kind
(an ISIC image is its own group, keyed by its numeric id), so its split did not change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import UserError
from ..fileio import write_text


def rank(keys, salt: str) -> list[str]:
    """`keys` ordered by sha256(f"{salt}:{key}")."""
    return sorted(keys, key=lambda k: hashlib.sha256(f"{salt}:{k}".encode()).hexdigest())


def split_ids(groups: list[str], ratio: list[int], seed: int) -> tuple[list[str], list[str]]:
    """(train groups, val groups), each sorted: the seeded ratio split of the distinct `groups`."""
    a, b = ratio
    distinct = sorted(set(groups))
    n_train = round(len(distinct) * a / (a + b))
    ranked = rank(distinct, str(seed))
    return sorted(ranked[:n_train]), sorted(ranked[n_train:])


def regime_size(value: int | float, n: int) -> int:
    """Groups in a labeled regime: an int counts them, a float in (0, 1] is a fraction of `n` (at least 1)."""
    return max(1, round(value * n)) if isinstance(value, float) else int(value)


def labeled_ids(train: list[str], regimes: dict[str, int | float], seed: int, where: str = "data.<dataset>.regimes",
                unit: str = "groups") -> dict[str, list[str]]:
    """regime -> its labeled train groups (nested: each regime's are a prefix of one seeded order)."""
    ranked = rank(sorted(set(train)), f"{seed}:labeled")
    out = {}
    for regime, value in regimes.items():
        k = regime_size(value, len(ranked))
        if k > len(ranked):
            raise UserError(f"regime {regime!r} asks for {k} labeled {unit} but the training split has {len(ranked)}",
                            fix=f"lower {where}.{regime} (or give a fraction such as 0.1)")
        out[regime] = sorted(ranked[:k])
    return out


def write_split_csv(path: str | Path, cases: list[tuple[str, str, str]], labeled: dict[str, list[str]]) -> Path:
    """`case,group,split,labeled_<regime>...` for (case, group, split) rows: where every case went."""
    regimes = list(labeled)
    member = {r: set(labeled[r]) for r in regimes}
    rows = ["case,group,split," + ",".join(f"labeled_{r}" for r in regimes)]
    rows += [f"{case},{group},{side}," + ",".join(str(int(side == "train" and group in member[r])) for r in regimes)
             for case, group, side in cases]
    write_text(path, "\n".join(rows) + "\n")
    return Path(path)


def counted(n: int, word: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def images(n: int) -> str:
    return counted(n, "image")


def batch_fit(dataset: str, regime: str, labeled: int, train: int, labeled_bs: int,
              unlabeled_bs: int) -> list[tuple[str, str]]:
    """(problem, fix) for each way regime `regime` of `dataset` (`labeled` of its `train` training images
    labeled) cannot fill a batch: fewer labeled images than its labeled part (`labeled_bs`), or, for a
    method that takes unlabeled images (`unlabeled_bs` > 0, train.batch_size - train.labeled_bs), fewer
    unlabeled ones than the rest; or a training split too small for any regime to. A run of it would stop
    at once. The counts are images (slices of volumes); the fixes move the regime in its own unit (images,
    volumes, patients or groups)."""
    where, again = f"data.{dataset}.regimes.{regime}", f"then `ugpcl prepare {dataset}` again"
    if train < labeled_bs + unlabeled_bs:
        size = "train.batch_size" if unlabeled_bs else "train.labeled_bs"
        return [(f"{dataset} has {images(train)} for training, fewer than a batch of {labeled_bs + unlabeled_bs} "
                 f"({size})", "lower train.batch_size and train.labeled_bs, or give the training split more images")]
    out = []
    if labeled < labeled_bs:
        out.append((f"regime {regime!r} of {dataset} has {images(labeled)} labeled, fewer than the labeled part of "
                    f"a batch (train.labeled_bs: {labeled_bs})",
                    f"raise {where} until it labels at least {images(labeled_bs)} ({again}), or lower "
                    "train.labeled_bs"))
    if unlabeled_bs > 0 and train - labeled < unlabeled_bs:
        out.append((f"regime {regime!r} of {dataset} labels {labeled} of the {images(train)} for training, leaving "
                    f"{train - labeled} unlabeled for the unlabeled part of a batch (train.batch_size - "
                    f"train.labeled_bs: {unlabeled_bs})",
                    f"lower {where} until at least {images(unlabeled_bs)} stay unlabeled ({again}); the "
                    "supervised baseline with methods.supervised.batch_norm_unlabeled: false needs none"))
    return out
