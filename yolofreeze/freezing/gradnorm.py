"""Gradient L2 norms per optimiser step: of each block, each part (backbone / neck / head) and the whole model.

The norms are those of the gradients the optimiser applies. :func:`yolofreeze.training.optim.optimizer_step` hands them
to :meth:`GradNormMonitor.record` (its ``on_norms`` hook) after AMP unscaling, after the gradients of the
nominal batch were summed over the accumulated batches and after DDP averaged them across processes, and before
clipping: the per-tensor norms it passes are the ones clipping uses, so the total recorded *is* the value
``clip_grad_norm_`` returns. (Hooks on the parameters, e.g. ``register_post_accumulate_grad_hook``, fire on every
accumulated batch, before DDP's averaging and before unscaling, so they would see other gradients.)

A block's norm is ``sqrt(sum of its parameters' squared gradient norms)``; a part's and the total combine blocks
the same way. Frozen blocks have no gradient and no row. Rows go to ``grad_norms.csv`` (``step, epoch, block,
part, norm``; part rows have block ``all``, the total row block ``all`` and part ``total``).

How much a norm varies is given two ways, both a coefficient of variation ``std / mean`` (population std, warm-up
included, finite norms only), named in every report:

- **CV over steps** (``cv``): over every optimiser step's norm. It measures the step-to-step noise of the
  mini-batch gradient as much as any trend.
- **CV over epochs** (``cv_epochs``), this project's reading of the layer-freezing paper's: over the per-epoch
  means of the norm, one value per epoch. It measures the trend across training (scratch's norms travel far as it
  learns, fine-tuning's stay near their start) rather than the mini-batch noise. The paper's method text was not
  reachable from here; this reading rests on what it reports (CVs of 87-99% from scratch and 16-35% for
  fine-tuning, a per-strategy L2-norm curve over training) and on what a user of the reference's trainer can
  record (its hooks run per batch and per epoch).
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model import PARTS, YOLO

COLUMNS = ("step", "epoch", "block", "part", "norm")
ALL = "all"
TOTAL = "total"


class GradNormMonitor:
    """Collects per-step gradient norms of ``model`` (the un-wrapped model, not its DDP wrapper).

    Rows stay in memory until :meth:`flush` appends them to ``grad_norms.csv`` (once per epoch, rank 0).
    """

    def __init__(self, model: YOLO) -> None:
        self.block_of = {}
        for info in model.blocks:
            for param in model.model[info.index].parameters():
                self.block_of[id(param)] = info.index
        self.part_of = {info.index: info.part for info in model.blocks}
        self.rows: list[tuple[int, int, str, str, float]] = []
        self._layout: tuple[tuple[int, ...], torch.Tensor, list[int]] | None = None

    def _blocks_of(self, params: list[nn.Parameter]) -> tuple[torch.Tensor, list[int]]:
        """For ``params``: the position of each one's block among the blocks present ``(P,)``, and those blocks."""
        key = tuple(id(p) for p in params)
        if self._layout is None or self._layout[0] != key:
            blocks = sorted({self.block_of[id(p)] for p in params})
            position = {block: k for k, block in enumerate(blocks)}
            index = torch.tensor([position[self.block_of[id(p)]] for p in params])
            self._layout = (key, index, blocks)
        return self._layout[1], self._layout[2]

    @torch.no_grad()
    def record(self, params: list[nn.Parameter], norms: list[torch.Tensor], total: torch.Tensor, step: int,
               epoch: int) -> None:
        """Add the rows of optimiser step ``step`` (1-based) in ``epoch`` (1-based).

        Args:
            params: the parameters with a gradient, in model order.
            norms: their gradients' L2 norms, 0-d tensors.
            total: the L2 norm of all of them together (what clipping uses).
        """
        if not params:
            return
        index, blocks = self._blocks_of(params)
        squares = torch.stack(norms).double().cpu() ** 2
        block_norms = torch.zeros(len(blocks), dtype=torch.float64).index_add_(0, index, squares).sqrt().tolist()
        part_squares = defaultdict(float)
        for block, norm in zip(blocks, block_norms):
            self.rows.append((step, epoch, str(block), self.part_of[block], norm))
            part_squares[self.part_of[block]] += norm * norm
        for part in PARTS:
            if part in part_squares:
                self.rows.append((step, epoch, ALL, part, math.sqrt(part_squares[part])))
        self.rows.append((step, epoch, ALL, TOTAL, float(total)))

    def epoch_means(self) -> dict[str, float]:
        """Mean over the held steps of the total and each part's norm (finite values only; NaN when none):
        the ``grad_norm/*`` columns of ``results.csv``."""
        values = defaultdict(list)
        for _, _, block, part, norm in self.rows:
            if block == ALL and math.isfinite(norm):
                values[part].append(norm)
        return {f"grad_norm/{name}": float(np.mean(values[name])) if values[name] else math.nan
                for name in (TOTAL, *PARTS)}

    def block_norms(self) -> dict[int, list[float]]:
        """The held steps' norms per block: block index → one norm per optimiser step, in step order."""
        norms = defaultdict(list)
        for _, _, block, _, norm in self.rows:
            if block != ALL:
                norms[int(block)].append(norm)
        return dict(norms)

    def flush(self, path: Path) -> None:
        """Append the held rows to ``path`` (header first when new) and forget them."""
        new = not path.is_file()
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(COLUMNS)
            writer.writerows((step, epoch, block, part, f"{norm:.9g}") for step, epoch, block, part, norm in self.rows)
        self.rows.clear()


def read_grad_norms(path: str | Path) -> list[dict]:
    """``grad_norms.csv`` as rows ``{"step": int, "epoch": int, "block": "N" or "all", "part": str, "norm": float}``."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "block": r["block"], "part": r["part"],
                 "norm": float(r["norm"])} for r in csv.DictReader(f)]


def coefficient_of_variation(values: Sequence[float]) -> float:
    """``std / mean`` of ``values`` (population std); NaN when there are none or the mean is not positive."""
    if len(values) == 0:
        return math.nan
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    return float(array.std()) / mean if mean > 0 else math.nan


def epoch_means(epochs: Sequence[int], norms: Sequence[float]) -> list[float]:
    """The mean of ``norms`` per epoch, in epoch order (``epochs[i]`` is the epoch of ``norms[i]``)."""
    by_epoch = defaultdict(list)
    for epoch, norm in zip(epochs, norms):
        by_epoch[epoch].append(norm)
    return [float(np.mean(by_epoch[e])) for e in sorted(by_epoch)]


def summarize_grad_norms(path: str | Path) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (population) and both coefficients of variation (module docstring) of the total
    (key ``"total"``), each part (``"backbone"`` …) and each block (``"block 12"``), finite norms only.

    Returns ``{key: {"mean", "std", "cv", "cv_epochs", "steps", "epochs"}}`` in the order total, parts, blocks.
    """
    series = defaultdict(list)
    for row in read_grad_norms(path):
        if math.isfinite(row["norm"]):
            key = row["part"] if row["block"] == ALL else f"block {row['block']}"
            series[key].append((row["epoch"], row["norm"]))
    order = [TOTAL, *PARTS] + sorted((k for k in series if k.startswith("block ")), key=lambda k: int(k.split()[1]))
    summary = {}
    for key in order:
        if series[key]:
            epochs, norms = zip(*series[key])
            per_epoch = epoch_means(epochs, norms)
            summary[key] = {"mean": float(np.mean(norms)), "std": float(np.std(norms)),
                            "cv": coefficient_of_variation(norms), "cv_epochs": coefficient_of_variation(per_epoch),
                            "steps": len(norms), "epochs": len(per_epoch)}
    return summary


def block_epoch_means(rows: list[dict]) -> tuple[list[int], list[int], np.ndarray]:
    """Each block's mean gradient norm per epoch from the rows of ``grad_norms.csv`` (:func:`read_grad_norms`):
    ``(blocks, epochs, means (B, E))``, NaN where a block had no finite norm in an epoch (frozen then, or without
    parameters)."""
    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for row in rows:
        if row["block"] != ALL and math.isfinite(row["norm"]):
            sums[(int(row["block"]), row["epoch"])].append(row["norm"])
    blocks = sorted({b for b, _ in sums})
    epochs = sorted({e for _, e in sums})
    means = np.full((len(blocks), len(epochs)), np.nan)
    for (block, epoch), values in sums.items():
        means[blocks.index(block), epochs.index(epoch)] = float(np.mean(values))
    return blocks, epochs, means


def format_grad_norm_summary(summary: dict[str, dict[str, float]]) -> str:
    """The total and per-part lines of :func:`summarize_grad_norms` as a small text table (CVs in %)."""
    lines = [f"{'gradient L2 norm':<16} {'mean':>10} {'std':>10} {'CV steps':>9} {'CV epochs':>10} {'steps':>6}"]
    for key in (TOTAL, *PARTS):
        if key in summary:
            s = summary[key]
            lines.append(f"{key:<16} {s['mean']:>10.4g} {s['std']:>10.4g} {100 * s['cv']:>8.1f}% "
                         f"{100 * s['cv_epochs']:>9.1f}% {s['steps']:>6}")
    return "\n".join(lines)
