"""Figures (matplotlib, files only, no window): a run's ``results.png`` from ``results.csv`` and ``grad_norms.png``
from ``grad_norms.csv``; a study's ``study_<dataset>_<model>.png`` and ``cams_<dataset>_<model>.png``."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works headless, on CI and over ssh
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from .evaluation.detect import open_original  # noqa: E402
from .freezing.gradnorm import ALL, TOTAL, block_epoch_means, read_grad_norms, summarize_grad_norms  # noqa: E402
from .model import PARTS  # noqa: E402
from .training.runs import read_results  # noqa: E402

# (panel title, columns, y label) of results.png, in reading order.
RESULTS_PANELS = (
    ("box loss", ("train/box_loss", "val/box_loss"), "loss"),
    ("classification loss", ("train/cls_loss", "val/cls_loss"), "loss"),
    ("distribution focal loss", ("train/dfl_loss", "val/dfl_loss"), "loss"),
    ("precision and recall", ("metrics/precision(B)", "metrics/recall(B)"), "fraction"),
    ("mAP (pycocotools)", ("metrics/mAP50(B)", "metrics/mAP50-95(B)"), "mAP"),
    ("learning rate", ("lr/pg0", "lr/pg1", "lr/pg2"), "lr"),
)


def plot_results(csv_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Draw losses, precision/recall, mAP and learning rates per epoch from ``results.csv``.

    Args:
        csv_path: a run's ``results.csv``.
        out_path: the PNG to write; default ``results.png`` beside the csv.

    Returns:
        The PNG's path.
    """
    csv_path = Path(csv_path)
    out_path = Path(out_path) if out_path else csv_path.with_name("results.png")
    results = read_results(csv_path)
    epochs = results.get("epoch", [])
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (title, columns, ylabel) in zip(axes.flat, RESULTS_PANELS):
        for column in columns:
            ax.plot(epochs, results.get(column, [float("nan")] * len(epochs)), marker="o", markersize=3,
                    label=column)
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{csv_path.parent.name}: {len(epochs)} epochs")
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_grad_norms(csv_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Draw ``grad_norms.csv``: the total and per-part gradient L2 norm per optimiser step (log scale, epoch
    starts marked), each trained block's mean norm with its coefficient of variation, and the blocks x epochs heat
    map of the mean norms (:func:`draw_block_heat_map`).

    Args:
        csv_path: a run's ``grad_norms.csv``.
        out_path: the PNG to write; default ``grad_norms.png`` beside the csv.

    Returns:
        The PNG's path.
    """
    csv_path = Path(csv_path)
    out_path = Path(out_path) if out_path else csv_path.with_name("grad_norms.png")
    every_row = read_grad_norms(csv_path)
    rows = [r for r in every_row if r["block"] == ALL]
    fig, axes = plt.subplot_mosaic([["curves", "curves"], ["blocks", "heat"]], figsize=(15, 9),
                                   constrained_layout=True)
    curves, blocks = axes["curves"], axes["blocks"]
    for part in (TOTAL, *PARTS):
        points = [(r["step"], r["norm"]) for r in rows if r["part"] == part]
        if points:
            steps, norms = zip(*points)
            curves.plot(steps, norms, label=part, linewidth=2.0 if part == TOTAL else 1.2,
                        color="black" if part == TOTAL else None)
    first_steps = {}
    for r in rows:
        first_steps.setdefault(r["epoch"], r["step"])
    for epoch, step in first_steps.items():
        if epoch > 1:
            curves.axvline(step, color="grey", alpha=0.25, linewidth=0.8)
    curves.set(title="gradient L2 norm per optimiser step (before clipping; grey: epoch starts)",
               xlabel="optimiser step", ylabel="L2 norm", yscale="log")
    curves.grid(alpha=0.3, which="both")
    if curves.get_legend_handles_labels()[0]:  # nothing to label when no step was recorded (all skipped)
        curves.legend()
    summary = summarize_grad_norms(csv_path)
    per_block = [(int(key.split()[1]), s) for key, s in summary.items() if key.startswith("block ")]
    if per_block:
        indices = [index for index, _ in per_block]
        blocks.bar(indices, [s["mean"] for _, s in per_block], color="tab:blue")
        for index, s in per_block:
            blocks.annotate(f"{100 * s['cv']:.0f}%", (index, s["mean"]), ha="center", va="bottom", fontsize=7)
        blocks.set_xticks(indices)
    blocks.set(title="mean norm per trained block (labels: coefficient of variation)", xlabel="block",
               ylabel="mean L2 norm", yscale="log")
    blocks.grid(alpha=0.3, axis="y")
    draw_block_heat_map(axes["heat"], fig, *block_epoch_means(every_row))
    fig.suptitle(f"{csv_path.parent.name}: gradient norms")
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def draw_block_heat_map(ax, fig, blocks: list[int], epochs: list[int], means, limits: tuple[float, float] | None = None,
                        title: str = "mean gradient norm per block and epoch (blank: frozen)") -> None:
    """Blocks x epochs of the mean gradient norm (log colour scale, ``limits`` or the data's; blank where a block was
    frozen): which blocks still learn, epoch by epoch."""
    ax.set(title=title, xlabel="epoch", ylabel="block")
    finite = means[np.isfinite(means) & (means > 0)] if len(blocks) else []
    if not len(finite):
        return
    low, high = limits or (float(finite.min()), float(finite.max()))
    image = ax.imshow(np.ma.masked_invalid(means), aspect="auto", cmap="viridis", origin="lower",
                      norm=LogNorm(vmin=low, vmax=high), interpolation="nearest")
    ax.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
    step = max(1, len(epochs) // 20)
    ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    fig.colorbar(image, ax=ax, label="L2 norm")


def plot_study(rows: list[dict], out_path: str | Path, title: str) -> Path:
    """One dataset and model of a study, one colour per strategy: mAP@50 against peak memory, the total gradient
    norm per optimiser step, and mAP@50 per epoch; an adaptive run's freezes as dotted lines in its colour (on the
    step it was decided, and between the epoch it was decided after and the first frozen one).

    Args:
        rows: :func:`yolofreeze.study.report.collect_row` rows (``strategy``, ``map50``, ``peak_memory_mb``,
            ``memory_source`` and the ``series`` of each run).
        out_path: the PNG to write.
        title: the figure's title (dataset and model).

    Returns:
        The PNG's path.
    """
    out_path = Path(out_path)
    fig, (trade_off, norms, curves) = plt.subplots(1, 3, figsize=(18, 5.2), constrained_layout=True)
    colours = plt.get_cmap("tab10")
    source = next((r["memory_source"] for r in rows if r["memory_source"]), "peak memory")
    for k, row in enumerate(rows):
        colour, series = colours(k % 10), row["series"]
        if row["map50"] == row["map50"] and row["peak_memory_mb"] == row["peak_memory_mb"]:  # not NaN
            trade_off.scatter(row["peak_memory_mb"], row["map50"], s=70, color=colour, label=row["strategy"])
            trade_off.annotate(row["strategy"], (row["peak_memory_mb"], row["map50"]), textcoords="offset points",
                               xytext=(6, 4), fontsize=9)
        if series["grad_steps"]:
            norms.plot(series["grad_steps"], series["grad_total"], color=colour, linewidth=1.2, markersize=3,
                       marker="o" if len(series["grad_steps"]) <= 50 else None, label=row["strategy"])
        if series["epochs"]:
            curves.plot(series["epochs"], series["map50"], color=colour, marker="o", markersize=3,
                        label=row["strategy"])
        for step, epoch in zip(series.get("freeze_steps", []), series.get("freeze_epochs", []), strict=True):
            norms.axvline(step, color=colour, linestyle=":", linewidth=1.5)
            curves.axvline(epoch - 0.5, color=colour, linestyle=":", linewidth=1.5)
            curves.annotate(f"{row['strategy']} freezes", (epoch - 0.5, 0.02), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=8, color=colour, xytext=(3, 0), textcoords="offset points")
    trade_off.set(title="accuracy against memory (best epoch)", xlabel=f"peak memory, MiB ({source})",
                  ylabel="mAP@50 (pycocotools)")
    norms.set(title="total gradient L2 norm per step (before clipping)", xlabel="optimiser step",
              ylabel="L2 norm", yscale="log")
    curves.set(title="mAP@50 per epoch (EMA weights, val split)", xlabel="epoch", ylabel="mAP@50")
    for ax in (trade_off, norms, curves):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def plot_cam_grid(images: list, maps: dict[str, list], out_path: str | Path, title: str) -> Path:
    """Class-activation maps side by side: one row per image, one column per strategy, each cell the photo with
    that run's map (jet, half transparent) and the image's ground-truth boxes (white); "no detection" where the run
    found nothing.

    Args:
        images: ``ImageRecord``s (``path``, ``boxes (N, 4)`` xyxy original pixels).
        maps: per strategy, one ``(H0, W0)`` map in [0, 1] (or None) per image.
        out_path: the PNG to write.
        title: the figure's title.
    """
    out_path = Path(out_path)
    strategies = list(maps)
    fig, axes = plt.subplots(len(images), len(strategies), figsize=(2.6 * len(strategies), 2.2 * len(images)),
                             squeeze=False, constrained_layout=True)
    for i, record in enumerate(images):
        photo = np.asarray(open_original(record.path))
        for j, strategy in enumerate(strategies):
            ax = axes[i][j]
            ax.imshow(photo)
            cam = maps[strategy][i]
            if cam is None:
                ax.text(0.5, 0.5, "no detection", transform=ax.transAxes, ha="center", color="white",
                        bbox={"facecolor": "black", "alpha": 0.6})
            else:
                ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            for x1, y1, x2, y2 in record.boxes.tolist():
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(strategy)
            if j == 0:
                ax.set_ylabel(record.path.name, fontsize=7)
    fig.suptitle(f"{title}: Grad-CAM of each run's top detection (white: ground truth)")
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def plot_study_blocks(rows: list[dict], out_path: str | Path, title: str) -> Path:
    """One heat map per run (blocks x epochs of the mean gradient norm, one colour scale for all): which blocks
    each strategy still trains, and how hard. ``rows`` carry ``series["block_norms"]``: ``(blocks, epochs,
    means)`` from :func:`yolofreeze.freezing.gradnorm.block_epoch_means`."""
    out_path = Path(out_path)
    shown = [r for r in rows if r["series"].get("block_norms")]
    values = np.concatenate([r["series"]["block_norms"][2].ravel() for r in shown]) if shown else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    limits = (float(values.min()), float(values.max())) if len(values) else None
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(3.2 * max(1, len(shown)), 5.5), squeeze=False,
                             constrained_layout=True)
    every = sorted({b for r in shown for b in r["series"]["block_norms"][0]})  # the same rows in every panel
    for ax, row in zip(axes[0], shown):
        blocks, epochs, means = row["series"]["block_norms"]
        padded = np.full((len(every), len(epochs)), np.nan)
        padded[[every.index(b) for b in blocks]] = means
        draw_block_heat_map(ax, fig, every, epochs, padded, limits=limits, title=row["strategy"])
    fig.suptitle(f"{title}: mean gradient L2 norm per block and epoch (blank: frozen or no parameters)")
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path

