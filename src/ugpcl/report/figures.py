"""The report's figures: Figure 3 (segmentations), Figure 4 (t-SNE of pixel features),
training curves (one figure of small panels, and the same curves as plot data for `dvc plots`),
each loss term of the Table 1 runs (a panel per run, and as plot data), and bar charts of our
Dice against the paper's. PNGs, written atomically; on synthetic data every PNG carries a
"synthetic" mark, so that no copy of it passes for a result.

Figure 4 embeds the encoder features at each run's embedding stage (conv1..conv4 = f2..f5),
the same tensor for every panel, so runs without an embedding head (Table 2 row 4) compare
like with like. Its pixels are a fixed sample: the same slices and, per class, the same
random grid positions (seeded) for every panel.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from ..config import prepared_path  # noqa: E402
from ..data.prepared import load_prepared  # noqa: E402
from .. import methods  # noqa: E402
from ..engine.checkpoint import load_run  # noqa: E402
from ..device import pick_device  # noqa: E402
from ..metrics import predict_slices  # noqa: E402
from ..fileio import atomic_path, write_text  # noqa: E402
from ..models.unet import EMBED_STAGES  # noqa: E402
from ..study import distinct_runs  # noqa: E402
from . import stamp as provenance  # noqa: E402
from .tables import (collect_results, curve_groups, figure3_runs, figure4_runs, figure_datasets,  # noqa: E402
                     figure_outputs, other_settings, split_by_settings, synthetic)

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


SYNTHETIC_MARK = "SYNTHETIC DEMO DATA: not a result"
STAMP_SIZE = 7  # points: the provenance line under every figure
CURVE_POINTS = 200  # points per run and curve at most (means over windows of iterations)


# --- writing ------------------------------------------------------------------------------
def watermark(fig) -> None:
    """A faint diagonal "SYNTHETIC" across the figure (outside the layout: it moves nothing)."""
    width, height = (72 * x for x in fig.get_size_inches())  # points: the watermark fits inside the figure
    mark = fig.text(0.5, 0.5, "SYNTHETIC", ha="center", va="center", rotation=25, fontweight="bold", color="#b00020",
                    fontsize=min(72, 0.16 * width, 0.25 * height), alpha=0.12, transform=fig.transFigure, zorder=100)
    mark.set_in_layout(False)


def add_footer(fig, synthetic: bool, stamp: str) -> None:
    """Under everything the figure holds (legends below the axes included), at its left edge: on
    synthetic data the mark in red, then `stamp` (report.stamp.describe) in small grey type,
    wrapped to the figure's width."""
    renderer = fig.canvas.get_renderer()
    for legend in fig.legends:  # pinned where they are: saving with bbox_inches="tight" would move a
        box = legend.get_window_extent(renderer).transformed(fig.transFigure.inverted())  # figure legend
        legend.set_bbox_to_anchor(box, transform=fig.transFigure)  # to the bottom of the cropped area
        legend.set_loc("center")
    bottom = min(fig.get_tightbbox(renderer).y0 / fig.get_size_inches()[1], 0.0)
    lines = []
    if synthetic:
        lines.append((SYNTHETIC_MARK, {"fontsize": 9, "fontweight": "bold", "color": "#b00020"}))
    if stamp:
        width = 72 * fig.get_size_inches()[0]
        wrapped = textwrap.wrap(stamp, max(40, int(width / (STAMP_SIZE * 0.55))))
        lines.append(("\n".join(wrapped), {"fontsize": STAMP_SIZE, "color": "#666666"}))
    below = 4.0  # points under the content
    for text, style in lines:
        fig.text(0.0, bottom, text, ha="left", va="top", **style,
                 transform=offset_copy(fig.transFigure, fig=fig, y=-below, units="points"))
        below += (text.count("\n") + 1) * style["fontsize"] * 1.25 + 3


def save(fig, path: Path, dpi: int = 110, synthetic: bool = False, stamp: str = "") -> Path:
    """The figure as a PNG, atomically: `stamp` under it and in its Description metadata, and on
    synthetic data the watermark and the mark (above the stamp)."""
    if synthetic:
        watermark(fig)
    add_footer(fig, synthetic, stamp)
    metadata = {"Description": stamp or None, "Warning": SYNTHETIC_MARK if synthetic else None}
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                    metadata={k: v for k, v in metadata.items() if v})
    plt.close(fig)
    return Path(path)


def placeholder(path: Path, message: str, synthetic: bool = False, stamp: str = "") -> Path:
    """A PNG that says why the figure could not be drawn (the report shows it in place)."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    return save(fig, path, synthetic=synthetic, stamp=stamp)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- bar charts and curves ----------------------------------------------------------------
def bar_chart(groups: dict[str, list[tuple[str, list[float], float | None]]], title: str, path: Path,
              synthetic: bool = False, stamp: str = "") -> Path:
    """One panel per group (two per row); per entry (label, our Dice per seed, paper Dice) two bars.

    Ours is the mean with the std over seeds as error bar; a result of one seed has no std (the
    tables print "± –") and draws no error bar, rather than a zero-length one that would read as
    no spread. A missing result draws no bar and is labelled "missing" on the axis. The legend
    stands above the panels, clear of the bars.
    """
    ncols = min(2, len(groups))
    nrows = -(-len(groups) // ncols)
    widest = max(len(entries) for entries in groups.values())
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * (0.6 * widest + 1.5), 3.0 * nrows), squeeze=False,
                             sharey=True)
    several = any(len(v) > 1 for entries in groups.values() for _, v, _ in entries)
    ours_label = "ours (mean ± std over seeds)" if several else "ours (one seed)"
    for ax, (name, entries) in zip(axes.flat, groups.items()):
        x = np.arange(len(entries))
        ours = np.array([np.mean(v) if v else np.nan for _, v, _ in entries])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else np.nan for _, v, _ in entries])
        paper = np.array([np.nan if p is None else p for _, _, p in entries])
        ax.bar(x - 0.2, ours, 0.4, yerr=std, label=ours_label, color="tab:blue", capsize=2)
        ax.bar(x + 0.2, paper, 0.4, label="paper", color="tab:gray")
        ax.set_xticks(x, [label + ("\n(missing)" if not v else "") for label, v, _ in entries], rotation=45, ha="right",
                      fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 100)
        ax.set_ylabel("Dice (%)")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, y=1.0 + 0.35 / fig.get_figheight() + 0.02)
    return save(fig, path, synthetic=synthetic, stamp=stamp)


def binned(rows: list[dict], key: str, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of `key` over log rows as at most `points` means over consecutive windows
    of rows, each at the window's last iteration (every row when there are few)."""
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return np.array([], dtype=int), np.array([], dtype=float)
    t = np.array([r["t"] for r in rows])
    v = np.array([r[key] for r in rows], dtype=float)
    window = -(-len(rows) // points)
    ends = np.minimum(np.arange(window, len(rows) + window, window), len(rows)) - 1
    sums = np.add.reduceat(v, np.arange(0, len(rows), window))
    counts = np.diff(np.append(np.arange(0, len(rows), window), len(rows)))
    return t[ends], sums / counts


RunLogs = dict[int, tuple[list[dict], list[dict]]]  # seed -> (log.jsonl rows, val.jsonl rows)


def training_curves(groups: dict[str, list[tuple[str, RunLogs]]], path: Path, synthetic: bool = False,
                    stamp: str = "") -> Path:
    """Small multiples: one row of two panels per group of runs (training loss; validation Dice),
    one colour per run (its label), one line per seed; the legend beside each row."""
    if not any(log or val for entries in groups.values() for _, logs in entries for log, val in logs.values()):
        return placeholder(path, "training curves: no training log yet", synthetic, stamp)
    fig, axes = plt.subplots(len(groups), 2, figsize=(9.5, 2.0 * len(groups) + 0.3), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for (name, entries), (ax_loss, ax_val) in zip(groups.items(), axes):
        for i, (label, logs) in enumerate(entries):
            colour = f"C{i % 10}"
            for j, (seed, (log, val)) in enumerate(sorted(logs.items())):
                t, loss = binned(log, "loss")
                ax_loss.plot(t + 1, loss, styles[j % len(styles)], color=colour, lw=1, label=label if j == 0 else None)
                if val:
                    ax_val.plot([r["t"] + 1 for r in val], [100 * r["val_dice"] for r in val], styles[j % len(styles)],
                                marker=".", ms=3, color=colour, lw=1)
        ax_loss.set_title(f"{name}: training loss", fontsize=9)
        ax_val.set_title(f"{name}: validation Dice (%)", fontsize=9)
        for ax, what in ((ax_loss, "no training log yet"), (ax_val, "no validation yet")):
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if not any(len(line.get_xdata()) for line in ax.lines):  # a setting none of whose runs has begun
                ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=8, color="grey", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
        ax_val.legend(*ax_loss.get_legend_handles_labels(), fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5),
                      frameon=False, ncol=1 + (len(entries) > 8))
    seeds = max(len(logs) for entries in groups.values() for _, logs in entries)
    note = "iteration; loss: mean over windows of iterations" + ("; one line style per seed" if seeds > 1 else "")
    for ax in axes[-1]:
        ax.set_xlabel(note if ax is axes[-1][0] else "iteration", fontsize=8)
    fig.tight_layout()
    return save(fig, path, synthetic=synthetic, stamp=stamp)


def curve_rows(groups: dict[str, list[tuple[str, RunLogs]]]) -> tuple[str, str]:
    """The curves as two TSV tables for `dvc plots show` (long format: step, value, setting, run, seed):
    the training loss (binned as in the figure) and the validation Dice (%)."""
    loss, val = ["step\tloss\tsetting\trun\tseed"], ["step\tdice\tsetting\trun\tseed"]
    for name, entries in groups.items():
        for label, logs in entries:
            for seed, (log, val_rows) in sorted(logs.items()):
                loss += [f"{t + 1}\t{v:.6g}\t{name}\t{label}\t{seed}" for t, v in zip(*binned(log, "loss"))]
                val += [f"{r['t'] + 1}\t{100 * r['val_dice']:.4f}\t{name}\t{label}\t{seed}" for r in val_rows]
    return "\n".join(loss) + "\n", "\n".join(val) + "\n"


# --- loss terms ---------------------------------------------------------------------------
LOG_BOOKKEEPING = ("t", "lr", "time")  # engine/trainer.py: iteration, learning rate, when its step returned
WEIGHTED = ("unsup", "con")  # what the ramped weight multiplies: Method.semi_supervised's term, UGPCL's consistency


def with_weighted(rows: list[dict]) -> list[dict]:
    """The log rows, each with `weight×unsup` (UGPCL: `weight×con`) = weight * term of that iteration
    added: what the ramped consistency term adds to the loss. Left out where the weight is 0 (the
    term is off, as in MT before its gate), so that a log-scale axis has no zero to show."""
    out = []
    for row in rows:
        weight = row.get("weight")
        extra = {f"weight×{k}": weight * row[k] for k in WEIGHTED if weight and row.get(k) is not None}
        out.append({**row, **extra} if extra else row)
    return out


def not_losses() -> set[str]:
    """Every registered method's `diagnostics`: logged numbers that are not losses."""
    return {name for cls in methods.registry().values() for name in cls.diagnostics}


def loss_term_names(rows: list[dict]) -> list[str]:
    """The loss terms in log rows: every numeric key but the trainer's bookkeeping and what a
    registered method declares not to be a loss (`Method.diagnostics`), the total `loss` first, the
    others in the order they first appear (a registered method's own terms included, with no change
    here)."""
    skip = {*LOG_BOOKKEEPING, *not_losses()}
    names = dict.fromkeys(k for row in rows for k, v in row.items()
                          if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool))
    return sorted(names, key=lambda k: k != "loss")


def term_curves(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each loss term of one run's log rows, the weighted consistency term included (`with_weighted`),
    as (iterations, values) binned as `binned`."""
    rows = with_weighted(rows)
    return {term: binned(rows, term) for term in loss_term_names(rows)}


def loss_terms(groups: dict[str, list[tuple[str, RunLogs]]], path: Path, synthetic: bool = False,
               stamp: str = "") -> Path:
    """Small multiples: one panel per run (a row per group, a column per run), each logged loss term
    of that run against the iteration (`term_curves`); one colour per term across the figure, one
    line style per seed; log-scale y in a panel whose values are all positive.

    The ramped consistency weight is not drawn itself: its product with the term it multiplies
    is (`weight×unsup`, see `with_weighted`), so every line is a loss at the scale the total sees,
    except fixed hyper-parameter factors (UGPCL's tf, rotation and contrast weights), which are
    not logged. For checking each term's magnitude when the ordering differs from the paper's.
    """
    curves = {(name, label): {seed: term_curves(log) for seed, (log, _) in sorted(logs.items())}
              for name, entries in groups.items() for label, logs in entries}
    terms = list(dict.fromkeys(k for run in curves.values() for seed in run.values() for k in seed))
    if not terms:
        return placeholder(path, "loss terms: no training log yet", synthetic, stamp)
    palette = [f"C{i}" for i in range(10) if i != 7]  # no grey: it draws the seeds' line styles in the legend
    colours = {"loss": "black", **{k: palette[i % len(palette)] for i, k in enumerate(k for k in terms if k != "loss")}}
    widths = {k: 1.6 if k == "loss" else 1.0 for k in terms}
    ncols = max(len(entries) for entries in groups.values())
    fig, axes = plt.subplots(len(groups), ncols, figsize=(2.3 * ncols, 1.9 * len(groups) + 0.6), squeeze=False)
    styles = ["-", "--", ":", "-."]
    for row_axes, (name, entries) in zip(axes, groups.items()):
        for ax, (label, _) in zip(row_axes, entries):
            drawn = [np.array([])]
            for j, by_term in enumerate(curves[name, label].values()):
                for term, (t, v) in by_term.items():
                    ax.plot(t + 1, v, styles[j % len(styles)], color=colours[term], lw=widths[term])
                    drawn.append(v)
            values = np.concatenate(drawn)
            if values.size and (values > 0).all():
                ax.set_yscale("log")
            elif not values.size:
                ax.text(0.5, 0.5, "no log yet", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{name}: {label}", fontsize=8)
            ax.tick_params(which="both", labelsize=7)
            ax.grid(alpha=0.3)
        for ax in row_axes[len(entries):]:
            ax.axis("off")
        row_axes[0].set_ylabel("loss term", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=8)
    fig.tight_layout()
    seeds = sorted({seed for run in curves.values() for seed in run})
    handles = [plt.Line2D([], [], color=colours[k], lw=widths[k], label=k) for k in terms]
    if len(seeds) > 1:
        handles += [plt.Line2D([], [], ls=styles[j % len(styles)], color="grey", lw=1, label=f"seed {seed}")
                    for j, seed in enumerate(seeds)]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(handles), 2 * ncols),
               fontsize=8, frameon=False, title_fontsize=8,
               title="means over windows of iterations; log scale where every value is positive")
    return save(fig, path, synthetic=synthetic, stamp=stamp)


def loss_term_rows(groups: dict[str, list[tuple[str, RunLogs]]]) -> str:
    """The loss terms as one TSV table for `dvc plots show` (long format: step, value, term, setting,
    run, seed), as `loss_terms` draws them."""
    lines = ["step\tvalue\tterm\tsetting\trun\tseed"]
    for name, entries in groups.items():
        for label, logs in entries:
            for seed, (log, _) in sorted(logs.items()):
                for term, (t, v) in term_curves(log).items():
                    lines += [f"{i + 1}\t{x:.6g}\t{term}\t{name}\t{label}\t{seed}" for i, x in zip(t, v)]
    return "\n".join(lines) + "\n"


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
            path: Path, synthetic: bool = False, stamp: str = "") -> Path:
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
    return save(fig, path, synthetic=synthetic, stamp=stamp)


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


def figure4(panels: dict[str, tuple[np.ndarray, np.ndarray] | None], class_names: list[str], path: Path,
            synthetic: bool = False, stamp: str = "") -> Path:
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
    return save(fig, path, synthetic=synthetic, stamp=stamp)


# --- everything, from the study's runs ----------------------------------------------------
def _load(run, cfg: dict, device):
    """The run's first seed, loaded, or None if it has not finished or was trained with other
    settings than `cfg`'s (tables.other_settings: the report leaves it out)."""
    seed = cfg["experiments"]["seeds"][0]
    run_dir = run.run_dir(cfg, seed)
    ckpt = run_dir / "checkpoints" / f"{cfg['evaluation']['checkpoint']}.pt"
    if not ckpt.is_file() or other_settings(cfg, run, seed):
        return None
    return load_run(run_dir, cfg["evaluation"]["checkpoint"], device=device)


def _results(cfg: dict) -> dict:
    """The finished run-seeds trained with `cfg`'s settings, as the report's tables take them."""
    return split_by_settings(cfg, collect_results(cfg))[0]


def _figure_inputs(cfg: dict, prepared, runs: dict, slices: int, device):
    """The validation slices a figure shows (`pick_slices`) and its runs loaded (None: not finished)."""
    index = pick_slices(prepared.val.labels, slices)
    loaded = {name: _load(run, cfg, device) if run else None for name, run in runs.items()}
    return prepared.val.images[index], prepared.val.labels[index], loaded


def _stamp(results: dict, runs, cfg: dict, first_seed: bool = False) -> str:
    """stamp.describe of the finished seeds of `runs` (Run objects; None: not in the matrix)."""
    seeds = cfg["experiments"]["seeds"][:1] if first_seed else None
    return provenance.describe(provenance.finished_runs(results, [r.id for r in runs if r], seeds))


def make_figure3(cfg: dict, prepared, path: Path, device, results: dict | None = None) -> Path:
    runs = figure3_runs(cfg)
    stamp = _stamp(_results(cfg) if results is None else results, runs.values(), cfg, first_seed=True)
    if prepared is None or all(r is None for r in runs.values()):
        return placeholder(path, "Figure 3 needs the prepared ACDC data and the ACDC-136 runs of MT, CPS and UGPCL",
                           synthetic(cfg), stamp)
    images, labels, loaded = _figure_inputs(cfg, prepared, runs, FIGURE3_SLICES, device)
    predictions = {method: None if run is None else predict_slices(run.net, images, device=device)
                   for method, run in loaded.items()}
    return figure3(images, labels, predictions, prepared.class_names, path, synthetic(cfg), stamp)


def make_figure4(cfg: dict, prepared, path: Path, device, results: dict | None = None) -> Path:
    runs = figure4_runs(cfg)
    stamp = _stamp(_results(cfg) if results is None else results, runs.values(), cfg, first_seed=True)
    if prepared is None or all(r is None for r in runs.values()):
        return placeholder(path, "Figure 4 needs the prepared ACDC data and the Table 2 runs of rows 4, 6 and 7",
                           synthetic(cfg), stamp)
    images, labels, loaded = _figure_inputs(cfg, prepared, runs, FIGURE4_SLICES, device)
    panels = {}
    for name, run in loaded.items():
        if run is None:
            panels[name] = None
            continue
        stage = run.cfg["methods"]["ugpcl"]["embed_stage"]
        feats, grid = stage_features(run.method.model, images, labels, EMBED_STAGES[stage], device)
        pick = sample_pixels(grid, FIGURE4_PIXELS_PER_CLASS)
        panels[f"{name}, {stage}"] = (tsne(feats[pick]), grid[pick])
    return figure4(panels, prepared.class_names, path, synthetic(cfg), stamp)


def make_figures(cfg: dict, device: str = "auto") -> dict[str, Path]:
    """Write every figure of figure_outputs(cfg); return them."""
    torch_device = pick_device(device)
    files = figure_outputs(cfg)
    # runs still training are drawn as far as they got; finished ones trained with other settings
    # than cfg's are left out, as the report's tables leave them out
    results, other = split_by_settings(cfg, collect_results(cfg))
    logs: dict[str, RunLogs] = {}
    for run in distinct_runs(cfg):
        dirs = {seed: run.run_dir(cfg, seed) for seed in cfg["experiments"]["seeds"]}
        logs[run.id] = {seed: ([], []) if (run.id, seed) in other else (read_jsonl(d / "log.jsonl"),
                                                                        read_jsonl(d / "val.jsonl"))
                        for seed, d in dirs.items()}
    curves, table1_curves = curve_groups(cfg), curve_groups(cfg, ablations=False)
    groups = {name: [(label, logs[run.id]) for label, run in entries] for name, entries in curves.items()}
    training_curves(groups, files["curves"], synthetic(cfg),
                    _stamp(results, [run for entries in curves.values() for _, run in entries], cfg))
    loss, val = curve_rows(groups)
    write_text(files["curves_loss"], loss)
    write_text(files["curves_val"], val)
    table1 = {name: [(label, logs[run.id]) for label, run in entries] for name, entries in table1_curves.items()}
    loss_terms(table1, files["loss_terms"], synthetic(cfg),
               _stamp(results, [run for entries in table1_curves.values() for _, run in entries], cfg))
    write_text(files["curves_terms"], loss_term_rows(table1))
    shown = figure_datasets(cfg)  # the paper's figures are on ACDC: its dataset in this study, if any

    def prepared(figure: str):
        path = prepared_path(cfg, shown[figure]) if shown[figure] else None
        return load_prepared(path) if path and path.is_file() else None

    make_figure3(cfg, prepared("figure3"), files["figure3"], torch_device, results)
    make_figure4(cfg, prepared("figure4"), files["figure4"], torch_device, results)
    return files
