"""The report's figures: Figure 3 (segmentations), Figure 4 (t-SNE of pixel features),
training curves, and bar charts of our Dice against the paper's. PNGs, written atomically.

Figure 4 embeds the encoder features at each run's embedding stage (conv1..conv4 = f2..f5),
the same tensor for every panel, so runs without an embedding head (Table 2 row 4) compare
like with like. Its pixels are a fixed sample: the same slices and, per class, the same
random grid positions (seeded) for every panel.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..config import prepared_path  # noqa: E402
from ..data.prepared import load_prepared  # noqa: E402
from ..engine.checkpoint import load_run  # noqa: E402
from ..device import pick_device  # noqa: E402
from ..metrics import predict_slices  # noqa: E402
from ..fileio import atomic_path  # noqa: E402
from ..models.unet import EMBED_STAGES  # noqa: E402
from ..study import distinct_runs  # noqa: E402
from .tables import figure3_runs, figure4_runs, figure_datasets, figure_outputs  # noqa: E402

CLASS_COLOURS = np.array([
    [0.0, 0.0, 0.0],      # background (not drawn in overlays)
    [0.90, 0.10, 0.29],   # RV / lesion
    [0.24, 0.71, 0.29],   # myocardium
    [0.00, 0.51, 0.78],   # LV
    [0.96, 0.51, 0.19],
    [0.57, 0.12, 0.71],
])
TSNE_SEED = 0
FIGURE3_SLICES = 4
FIGURE4_SLICES = 16
FIGURE4_PIXELS_PER_CLASS = 300


# --- writing ------------------------------------------------------------------------------
def save(fig, path: Path, dpi: int = 110) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def placeholder(path: Path, message: str) -> Path:
    """A PNG that says why the figure could not be drawn (the report shows it in place)."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    return save(fig, path)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- bar charts and curves ----------------------------------------------------------------
def bar_chart(groups: dict[str, list[tuple[str, list[float], float | None]]], title: str, path: Path) -> Path:
    """One panel per group (two per row); per entry (label, our Dice per seed, paper Dice) two bars.

    Ours is the mean with the std over seeds as error bar; a missing result draws no bar
    and is labelled "missing" on the axis.
    """
    ncols = min(2, len(groups))
    nrows = -(-len(groups) // ncols)
    widest = max(len(entries) for entries in groups.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * (0.6 * widest + 1.5), 3.4 * nrows), squeeze=False,
                             sharey=True)
    for ax, (name, entries) in zip(axes.flat, groups.items()):
        x = np.arange(len(entries))
        ours = np.array([np.mean(v) if v else np.nan for _, v, _ in entries])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for _, v, _ in entries])
        paper = np.array([np.nan if p is None else p for _, _, p in entries])
        ax.bar(x - 0.2, ours, 0.4, yerr=std, label="ours", color="tab:blue", capsize=2)
        ax.bar(x + 0.2, paper, 0.4, label="paper", color="tab:gray")
        ax.set_xticks(x, [label + ("\n(missing)" if not v else "") for label, v, _ in entries], rotation=45, ha="right",
                      fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 100)
        ax.set_ylabel("Dice (%)")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def training_curves(run_id: str, logs: dict[int, tuple[list[dict], list[dict]]], path: Path) -> Path:
    """Loss terms and validation Dice against iteration, one line style per seed."""
    if not any(log or val for log, val in logs.values()):
        return placeholder(path, f"{run_id}: no training log yet")
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.4))
    styles = ["-", "--", ":", "-."]
    colours = {}
    for i, (seed, (log, val)) in enumerate(sorted(logs.items())):
        style = styles[i % len(styles)]
        terms = [k for k in (log[0] if log else {}) if k not in ("t", "lr", "time")]
        t = np.array([row["t"] for row in log])
        for term in terms:
            colour = colours.setdefault(term, f"C{len(colours) % 10}")
            values = np.array([row.get(term, np.nan) for row in log], dtype=float)
            ax_loss.plot(t, values, style, color=colour, lw=1, label=term if i == 0 else None)
        if val:
            ax_val.plot([r["t"] for r in val], [100 * r["val_dice"] for r in val], style, marker=".", color="C0",
                        label=f"seed {seed}")
    ax_loss.set(xlabel="iteration", ylabel="loss", title="loss terms")
    ax_loss.legend(fontsize=7, ncol=2)
    ax_val.set(xlabel="iteration", ylabel="val Dice (%)", title="validation Dice")
    if ax_val.lines:
        ax_val.legend(fontsize=7)
    fig.suptitle(run_id)
    return save(fig, path)


# --- Figure 3 -----------------------------------------------------------------------------
def pick_slices(labels: np.ndarray, n: int) -> np.ndarray:
    """n slice indices spread evenly over the slices showing the most foreground classes
    (at least n candidates: all slices scoring at least the n-th best score)."""
    flat = labels.reshape(len(labels), -1)
    score = np.zeros(len(labels), dtype=int)
    for c in range(1, int(labels.max()) + 1):
        score += (flat == c).any(axis=1)
    best = np.flatnonzero(score >= np.sort(score)[-min(n, len(score))])
    return np.unique(best[np.linspace(0, len(best) - 1, min(n, len(best))).round().astype(int)])


def grey(image: np.ndarray) -> np.ndarray:
    """C x H x W image (float in [0, 1] or uint8) -> H x W grey in [0, 1]."""
    x = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    return x.mean(axis=0)


def overlay(ax, image: np.ndarray, mask: np.ndarray | None) -> None:
    ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1)
    if mask is not None:
        rgba = np.zeros((*mask.shape, 4))
        rgba[..., :3] = CLASS_COLOURS[mask % len(CLASS_COLOURS)]
        rgba[..., 3] = np.where(mask > 0, 0.55, 0.0)
        ax.imshow(rgba)
    ax.set_xticks([])
    ax.set_yticks([])


def figure3(images: np.ndarray, labels: np.ndarray, predictions: dict[str, np.ndarray | None], class_names: list[str],
            path: Path) -> Path:
    """Rows: slices; columns: image, ground truth, then each method's prediction (None: missing)."""
    columns = ["image", "ground truth", *predictions]
    fig, axes = plt.subplots(len(images), len(columns), figsize=(2.2 * len(columns), 2.2 * len(images)), squeeze=False)
    for i in range(len(images)):
        overlay(axes[i][0], images[i], None)
        overlay(axes[i][1], images[i], labels[i])
        for j, pred in enumerate(predictions.values(), start=2):
            if pred is None:
                axes[i][j].axis("off")
                axes[i][j].text(0.5, 0.5, "run missing", ha="center", va="center")
            else:
                overlay(axes[i][j], images[i], pred[i])
    for j, name in enumerate(columns):
        axes[0][j].set_title(name.upper() if name in predictions else name, fontsize=10)
    handles = [Patch(color=CLASS_COLOURS[c], label=class_names[c]) for c in range(1, len(class_names))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.subplots_adjust(bottom=0.08)
    return save(fig, path)


# --- Figure 4 -----------------------------------------------------------------------------
def _as_float(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images))
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def stage_features(model, images: np.ndarray, labels: np.ndarray, feature_index: int, device="cpu",
                   batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features f<feature_index> per grid pixel (P x D) and the labels nearest-downsampled
    to that grid (P,), in slice-major order."""
    was_training = model.training
    model.eval()
    feats, grid_labels = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = _as_float(images[start : start + batch_size]).to(device)
            f = model.encode(x)[feature_index].float()
            y = torch.from_numpy(np.ascontiguousarray(labels[start : start + batch_size])).float()[:, None]
            y = F.interpolate(y, size=f.shape[-2:], mode="nearest")[:, 0].long()
            feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).cpu())
            grid_labels.append(y.reshape(-1))
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(grid_labels).numpy()


def sample_pixels(grid_labels: np.ndarray, per_class: int, seed: int = TSNE_SEED) -> np.ndarray:
    """Up to `per_class` pixel indices of every class present, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(grid_labels == c))[:per_class] for c in np.unique(grid_labels)]
    return np.sort(np.concatenate(picks))


def tsne(features: np.ndarray, seed: int = TSNE_SEED) -> np.ndarray:
    from sklearn.manifold import TSNE  # here, not at the top: importing it takes seconds

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def figure4(panels: dict[str, tuple[np.ndarray, np.ndarray] | None], class_names: list[str], path: Path) -> Path:
    """One t-SNE scatter per panel (points N x 2, class per point), coloured by class."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, panel) in zip(axes[0], panels.items()):
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if panel is None:
            ax.text(0.5, 0.5, "run missing", ha="center", va="center", transform=ax.transAxes)
            continue
        xy, cls = panel
        ax.scatter(xy[:, 0], xy[:, 1], c=CLASS_COLOURS[cls % len(CLASS_COLOURS)], s=4, linewidths=0)
    handles = [Patch(color=CLASS_COLOURS[c], label=name) for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.subplots_adjust(bottom=0.12)
    return save(fig, path)


# --- everything, from the study's runs ----------------------------------------------------
def _load(run, cfg: dict, device):
    """The run's first seed, loaded, or None if it has not finished."""
    run_dir = run.run_dir(cfg, cfg["experiments"]["seeds"][0])
    ckpt = run_dir / "checkpoints" / f"{cfg['evaluation']['checkpoint']}.pt"
    return load_run(run_dir, cfg["evaluation"]["checkpoint"], device=device) if ckpt.is_file() else None


def make_figure3(cfg: dict, prepared, path: Path, device) -> Path:
    runs = figure3_runs(cfg)
    if prepared is None or all(r is None for r in runs.values()):
        return placeholder(path, "Figure 3 needs the prepared ACDC data and the ACDC-136 runs of MT, CPS and UGPCL")
    index = pick_slices(prepared.val.labels, FIGURE3_SLICES)
    images, labels = prepared.val.images[index], prepared.val.labels[index]
    predictions = {}
    for method, run in runs.items():
        loaded = _load(run, cfg, device) if run else None
        predictions[method] = None if loaded is None else predict_slices(loaded.net, images, device=device)
    return figure3(images, labels, predictions, prepared.class_names, path)


def make_figure4(cfg: dict, prepared, path: Path, device) -> Path:
    runs = figure4_runs(cfg)
    if prepared is None or all(r is None for r in runs.values()):
        return placeholder(path, "Figure 4 needs the prepared ACDC data and the Table 2 runs of rows 4, 6 and 7")
    index = pick_slices(prepared.val.labels, FIGURE4_SLICES)
    images, labels = prepared.val.images[index], prepared.val.labels[index]
    panels = {}
    for name, run in runs.items():
        loaded = _load(run, cfg, device) if run else None
        if loaded is None:
            panels[name] = None
            continue
        stage = loaded.cfg["methods"]["ugpcl"]["embed_stage"]
        feats, grid = stage_features(loaded.method.model, images, labels, EMBED_STAGES[stage], device)
        pick = sample_pixels(grid, FIGURE4_PIXELS_PER_CLASS)
        panels[f"{name}, {stage}"] = (tsne(feats[pick]), grid[pick])
    return figure4(panels, prepared.class_names, path)


def make_figures(cfg: dict, device: str = "auto") -> dict[str, Path]:
    """Write every figure of figure_outputs(cfg); return them."""
    torch_device = pick_device(device)
    files = figure_outputs(cfg)
    for run in distinct_runs(cfg):
        dirs = {seed: run.run_dir(cfg, seed) for seed in cfg["experiments"]["seeds"]}
        logs = {seed: (read_jsonl(d / "log.jsonl"), read_jsonl(d / "val.jsonl")) for seed, d in dirs.items()}
        training_curves(run.id, logs, files[f"curves:{run.id}"])
    shown = figure_datasets(cfg)  # the paper's figures are on ACDC: its dataset in this study, if any

    def prepared(figure: str):
        path = prepared_path(cfg, shown[figure]) if shown[figure] else None
        return load_prepared(path) if path and path.is_file() else None

    make_figure3(cfg, prepared("figure3"), files["figure3"], torch_device)
    make_figure4(cfg, prepared("figure4"), files["figure4"], torch_device)
    return files
