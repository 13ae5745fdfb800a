"""TensorBoard event files of a run (the ``tensorboard`` extra: ``pip install -e .[tensorboard]``).

Per epoch, in the run folder (``tensorboard --logdir runs/train``): every ``results.csv`` column as a scalar under
the same name (losses, precision / recall / mAP, ``lr/*`` per group, ``grad_norm/*`` per part and in total,
``memory/*``, ``frozen_blocks``, ``epoch_seconds``; NaN values are left out), and the gradient norms of each block as
a histogram over the epoch's optimiser steps (``grad_norms/block_NN``). A resumed run appends a new event file to the
same folder; TensorBoard reads them as one run.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

EXTRA = "pip install -e .[tensorboard]  (or: pip install tensorboard)"


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which ``torch.utils.tensorboard`` writes through) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class RunBoard:
    """Writes a run's epochs to TensorBoard event files in ``run_dir`` (opened at the first epoch written)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._writer = None

    def epoch(self, epoch: int, row: dict[str, float], block_norms: dict[int, list[float]]) -> None:
        """Epoch ``epoch`` (1-based): ``row`` (a ``results.csv`` row) as scalars, ``block_norms`` (block → the norms
        of its gradients at each optimiser step of the epoch) as histograms."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        for name, value in row.items():
            if name != "epoch" and math.isfinite(value):
                self._writer.add_scalar(name, value, epoch)
        for block, norms in sorted(block_norms.items()):
            finite = np.asarray([n for n in norms if math.isfinite(n)], np.float64)
            if finite.size:
                self._writer.add_histogram(f"grad_norms/block_{block:02d}", finite, epoch)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (again: nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
