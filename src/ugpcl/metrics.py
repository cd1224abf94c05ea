"""Scoring a network on the validation cases of a prepared file: the metrics of both protocols.

Protocol "volume" (METHODS §4, SSL4MIS): every validation slice is predicted at image_size
(eval mode, argmax of the logits). ACDC predictions are resized back to the original H x W of
`val/original/<case>` (nearest), stacked to D x H x W and scored in 3D against the original
labels; ISIC images (no originals stored) are scored per image at image_size. Per foreground
class: Dice, Jaccard, ASD (MONAI, directed, prediction surface to truth surface, as medpy's
`asd`) and HD95 by two definitions:
- `hd95` (MONAI): the larger of the two directed 95th percentiles of surface distances;
- `hd95_medpy` (medpy's `hd95`, what SSL4MIS reports): the 95th percentile of both directed
  distance sets pooled; computed here with scipy (`hd95_pooled`), medpy is not a dependency.
Distances are in millimetres where the prepared file stores the case's voxel size (ACDC from
the NIfTI headers), otherwise in voxels (the SSL4MIS h5 layout stores none) or pixels at
image_size (ISIC); the summary's `distance_unit` says which.

Edge cases, per (case, class), chosen so that no score is optimistic (METHODS §5.8):
- class absent from both prediction and truth: every metric is NaN, so that case does not
  count in that class's averages;
- truth present, prediction empty: Dice 0 and Jaccard 0; HD95 and ASD are NaN (undefined,
  never 0 as the SSL4MIS validation guard returns), and the pair is counted in
  `empty_predictions`;
- prediction present, truth absent: Dice 0 and Jaccard 0; HD95 and ASD NaN.
Averages: per class over cases ignoring NaN, then the plain mean over foreground classes.
A class whose distances are NaN in every case therefore leaves the mean HD95/ASD undefined
(written as null), rather than silently averaging the other classes.

Protocol "slices" (METHODS §4, the authors' UGPCL code): validation slices at image_size in
file order, in batches of 16; per batch and class, Dice and Jaccard pooled over the batch's
pixels (NaN when the class is absent from the whole batch, in prediction and truth alike, as
the code's tensor 0/0); averaged over batches. There the two differ: the code sums the batch
scores, so one such batch turns that class's score, and the mean over classes, into NaN; here
that batch is left out of that class's average (the code's result would be undefined). No
resizing back and no distances. The code also applies random rot/flip to its validation
slices; that is not reproduced (scores would depend on the augmentation draw).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from .data.prepared import Prepared
from .errors import UserError
from .fileio import atomic_path, write_json
from .losses import class_map

METRICS = ("dice", "jaccard", "hd95", "hd95_medpy", "asd")


# --- prediction ---------------------------------------------------------------------------
def predict_slices(net: nn.Module, images: np.ndarray, batch_size: int = 32, device="cpu",
                   progress: bool = False) -> np.ndarray:
    """Argmax labels (M x S x S uint8) of M x C x S x S images (float32 in [0, 1] or uint8 0..255).

    The network must already be on `device`; it runs in eval mode and gets its previous
    train/eval mode back afterwards. In float32 whatever train.amp (bf16 autocast trains only):
    checkpoint selection, evaluation and `ugpcl predict` see the same predictions.
    """
    device = torch.device(device)
    was_training = net.training
    net.eval()
    out = np.empty((images.shape[0], *images.shape[2:]), dtype=np.uint8)
    starts = range(0, images.shape[0], batch_size)
    try:
        with torch.no_grad():
            for start in tqdm(starts, desc="predict", unit="batch", disable=not progress, dynamic_ncols=True):
                x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
                x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
                out[start : start + len(x)] = class_map(net(x)).to(torch.uint8).cpu().numpy()
    finally:
        net.train(was_training)
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x h x w label maps -> N x H x W uint8 by nearest interpolation, pixel centres aligned: the
    inverse of data.resize's nearest (the same grid; a round trip of ACDC's labels at 224 px keeps
    Dice 0.993, tests/test_data_acdc.py)."""
    t = torch.from_numpy(np.ascontiguousarray(labels)).float()[:, None]
    return F.interpolate(t, size=tuple(size), mode="nearest-exact")[:, 0].to(torch.uint8).numpy()


# --- scoring ------------------------------------------------------------------------------
def foreground_box(pred: np.ndarray, truth: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """The bounding box of all foreground in either map, grown by `margin` voxels.

    Cropping to it leaves every metric unchanged (the margin keeps the surface voxels of
    masks away from the crop border) and makes the surface distances several times faster.
    """
    union = (pred > 0) | (truth > 0)
    if not union.any():
        return tuple(slice(0, 0) for _ in union.shape)
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), hits[-1] + 1 + margin))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """medpy's surface of a boolean mask: the mask minus its erosion by the face-connected
    structure (the array border counting as background)."""
    return mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(mask.ndim, 1))


def surface_distances(a: np.ndarray, b: np.ndarray, spacing=None) -> np.ndarray:
    """Distance from every surface voxel of mask `a` to the surface of mask `b` (medpy's
    `__surface_distances`: Euclidean distance transform with `spacing`)."""
    return ndimage.distance_transform_edt(~surface(b), sampling=spacing)[surface(a)]


def hd95_pooled(pred: np.ndarray, truth: np.ndarray, spacing=None) -> float:
    """medpy's `hd95`: the 95th percentile of both directed surface-distance sets pooled."""
    pred_surface, truth_surface = surface(pred), surface(truth)
    both = np.concatenate([ndimage.distance_transform_edt(~truth_surface, sampling=spacing)[pred_surface],
                           ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[truth_surface]])
    return float(np.percentile(both, 95))


def score_volume(pred: np.ndarray, truth: np.ndarray, num_classes: int, spacing=None) -> dict[str, np.ndarray]:
    """Scores of each foreground class 1..num_classes-1 of one 2D or 3D label map.

    Returns {"dice", "jaccard", "hd95", "hd95_medpy", "asd", "pred_voxels", "truth_voxels"}, each
    an array with one entry per foreground class; the edge cases follow the module docstring.
    `spacing`: the voxel size per axis (distances then in its unit), None for voxels.
    """
    # imported here, not with the module: `import monai` loads all of MONAI (about 2 s), which
    # commands that only list or report runs need not pay
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou

    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    box = foreground_box(pred, truth)
    pred, truth = pred[box], truth[box]
    classes = np.arange(1, num_classes).reshape(-1, *([1] * truth.ndim))
    pred_masks, truth_masks = pred[None] == classes, truth[None] == classes
    pred_oh = torch.from_numpy(pred_masks)[None].float()   # 1 x K x spatial
    truth_oh = torch.from_numpy(truth_masks)[None].float()
    axes = tuple(range(2, pred_oh.ndim))
    pred_n = pred_oh.sum(axes)[0].numpy()
    truth_n = truth_oh.sum(axes)[0].numpy()

    dice = compute_dice(pred_oh, truth_oh, include_background=True, ignore_empty=False)[0].numpy()
    jaccard = compute_iou(pred_oh, truth_oh, include_background=True, ignore_empty=False)[0].numpy()
    absent = (pred_n == 0) & (truth_n == 0)
    dice[absent] = np.nan
    jaccard[absent] = np.nan

    hd95, hd95_medpy, asd = (np.full(num_classes - 1, np.nan) for _ in range(3))
    both = (pred_n > 0) & (truth_n > 0)
    if both.any():
        keep = torch.from_numpy(both)
        space = None if spacing is None else [float(v) for v in spacing]
        with warnings.catch_warnings():  # MONAI warns about its own deprecated internal argument
            warnings.simplefilter("ignore", FutureWarning)
            hd95[both] = compute_hausdorff_distance(
                pred_oh[:, keep], truth_oh[:, keep], include_background=True, percentile=95, spacing=space)[0].numpy()
            asd[both] = compute_average_surface_distance(
                pred_oh[:, keep], truth_oh[:, keep], include_background=True, symmetric=False, spacing=space)[0].numpy()
        for i in np.flatnonzero(both):
            hd95_medpy[i] = hd95_pooled(pred_masks[i], truth_masks[i], space)
    return {"dice": dice, "jaccard": jaccard, "hd95": hd95, "hd95_medpy": hd95_medpy, "asd": asd,
            "pred_voxels": pred_n.astype(np.int64), "truth_voxels": truth_n.astype(np.int64)}


def case_prediction(pred: np.ndarray, prepared: Prepared, case: str, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, truth) of one case: at original resolution when the file stores it."""
    if case not in prepared.val_original:
        labels = prepared.val.labels[index]
        return (pred[index], labels) if len(index) > 1 else (pred[index[0]], labels[0])
    original = prepared.val_original[case]
    volume = original if original.ndim == 3 else original[None]
    if volume.shape[0] != len(index):
        raise UserError(
            f"case {case}: {len(index)} validation slices but its original label volume has {volume.shape[0]}",
            path=prepared.path, fix="delete the prepared file and run the data stage again",
        )
    back = resize_labels(pred[index], volume.shape[1:])
    return back.reshape(original.shape), original


def score_cases(pred: np.ndarray, prepared: Prepared) -> pd.DataFrame:
    """One row per (case, foreground class): case, class, dice, jaccard, hd95, asd, pred_voxels, truth_voxels.

    `pred` holds the M x S x S predictions of `prepared.val`, in its order.
    """
    if pred.shape != prepared.val.labels.shape:
        raise ValueError(f"predictions {pred.shape} do not match the validation labels {prepared.val.labels.shape}")
    names = prepared.class_names[1:]
    frames = []
    for case, index in prepared.case_slices().items():
        scores = score_volume(*case_prediction(pred, prepared, case, index), prepared.num_classes,
                              prepared.val_spacing.get(case))
        frames.append(pd.DataFrame({"case": case, "class": names, **scores}))
    return pd.concat(frames, ignore_index=True)


def distance_unit(prepared: Prepared, protocol: str = "volume") -> str | None:
    """The unit of HD95 and ASD: "mm" when every case has a voxel size, else "voxel" (3D volumes
    at original resolution) or "pixel" (2D images at image_size); None for "slices" (no distances)."""
    if protocol == "slices":
        return None
    cases = prepared.case_slices()
    if cases and all(case in prepared.val_spacing for case in cases):
        return "mm"
    return "voxel" if prepared.val_original else "pixel"


def score_batches(pred: np.ndarray, prepared: Prepared, batch_size: int = 16) -> pd.DataFrame:
    """The "slices" protocol: one row per (batch of `batch_size` slices, foreground class)."""
    truth = prepared.val.labels
    rows = []
    for start in range(0, len(truth), batch_size):
        p, g = pred[start:start + batch_size], truth[start:start + batch_size]
        for c, name in enumerate(prepared.class_names[1:], start=1):
            pc, gc = p == c, g == c
            inter, n_p, n_g = int((pc & gc).sum()), int(pc.sum()), int(gc.sum())
            union = n_p + n_g - inter
            rows.append({"case": f"batch{start // batch_size:04d}", "class": name,
                         "dice": 2 * inter / (n_p + n_g) if n_p + n_g else np.nan,
                         "jaccard": inter / union if union else np.nan,
                         "hd95": np.nan, "hd95_medpy": np.nan, "asd": np.nan, "pred_voxels": n_p, "truth_voxels": n_g})
    return pd.DataFrame(rows)


def _mean(values) -> float | None:
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return None
    return float(np.nanmean(values))


def summarise(per_case: pd.DataFrame, class_names) -> dict:
    """Per-class means over cases (NaN ignored), their mean over the classes, and tallies.

    `class_names` orders the classes; names absent from `per_case` (background) are skipped.
    Undefined values are None (JSON null).
    """
    present = set(per_case["class"])
    names = [c for c in class_names if c in present]
    empty = (per_case["truth_voxels"] > 0) & (per_case["pred_voxels"] == 0)
    per_class = {}
    for name in names:
        rows = per_case[per_case["class"] == name]
        per_class[name] = {m: _mean(rows[m]) for m in METRICS}
        per_class[name]["empty_predictions"] = int(empty[per_case["class"] == name].sum())
    summary = {}
    for m in METRICS:
        values = [per_class[n][m] for n in names]
        summary[m] = None if not values or any(v is None for v in values) else float(np.mean(values))
    summary.update(per_class=per_class, n_cases=int(per_case["case"].nunique()), empty_predictions=int(empty.sum()))
    return summary


def evaluate_network(net: nn.Module, prepared: Prepared, batch_size: int = 32, device="cpu",
                     progress: bool = False, protocol: str = "volume") -> tuple[pd.DataFrame, dict]:
    """Predict every validation slice and score it with `protocol` ("volume" or "slices")."""
    pred = predict_slices(net, prepared.val.images, batch_size, device, progress=progress)
    per_case = score_batches(pred, prepared) if protocol == "slices" else score_cases(pred, prepared)
    return per_case, {**summarise(per_case, prepared.class_names), "distance_unit": distance_unit(prepared, protocol)}


def validation_dice(net: nn.Module, prepared: Prepared, batch_size: int = 32, device="cpu",
                    protocol: str = "volume") -> float:
    """The score of best-checkpoint selection, on the very validation cases evaluation scores (as
    the authors select and report on one set): with protocol "slices" that protocol's mean Dice;
    with "volume", the quick version of it: mean foreground Dice per case at image_size.

    Counts come from one bincount over (case, predicted, true) per batch. Same edge cases as
    the full protocol (absent from both: excluded; one side empty: 0). Returns 0.0 when no
    class has a defined score.
    """
    if protocol == "slices":
        rows = score_batches(predict_slices(net, prepared.val.images, batch_size, device), prepared)
        return summarise(rows, prepared.class_names)["dice"] or 0.0
    device = torch.device(device)
    cases = prepared.case_slices()
    case_of = np.empty(len(prepared.val), dtype=np.int64)
    for i, index in enumerate(cases.values()):
        case_of[index] = i
    c = prepared.num_classes
    confusion = torch.zeros(len(cases) * c * c, dtype=torch.int64, device=device)
    labels = prepared.val.labels
    for start in range(0, len(case_of), batch_size):
        stop = start + batch_size
        pred = torch.from_numpy(predict_slices(net, prepared.val.images[start:stop], batch_size, device)).to(device)
        truth = torch.from_numpy(labels[start:stop]).to(device)
        case = torch.from_numpy(case_of[start:stop]).to(device)[:, None, None]
        key = (case * c + pred.long()) * c + truth.long()
        confusion += torch.bincount(key.flatten(), minlength=confusion.numel())
    confusion = confusion.view(len(cases), c, c).double()     # case x predicted x true
    inter = confusion.diagonal(dim1=1, dim2=2)
    total = confusion.sum(2) + confusion.sum(1)                # |P| + |G|
    dice = (2 * inter / total)[:, 1:]                          # 0/0 -> NaN: absent from both
    per_class = dice.nanmean(0)
    per_class = per_class[~per_class.isnan()]
    return float(per_class.mean()) if len(per_class) else 0.0


def write_evaluation(out_dir: str | Path, per_case: pd.DataFrame, summary: dict) -> None:
    """`per_case.csv` and `summary.json` in out_dir, each written atomically."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "per_case.csv", suffix=".csv") as tmp:
        per_case.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out_dir / "summary.json", summary)
