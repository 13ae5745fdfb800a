"""Figures of a run (matplotlib, files only, no window): ``results.png`` from ``results.csv``."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works headless, on CI and over ssh
import matplotlib.pyplot as plt  # noqa: E402

from .runs import read_results  # noqa: E402

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
