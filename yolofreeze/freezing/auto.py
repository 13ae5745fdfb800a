"""Adaptive freezing (``--freeze auto``): freeze the leading blocks whose gradients have stopped changing.

The rule is AutoFreeze's (Liu, Agarwal & Venkataraman, 2021, arXiv 2102.01386), adapted to a detector trained
with the reference recipe:

- **Measure.** Over an evaluation interval the gradients of every trainable block are added up as the optimiser
  applies them (the gradients :mod:`yolofreeze.freezing.gradnorm` records: unscaled, summed over the accumulated
  batches, averaged over DDP processes, before clipping). A block's measure ``G`` is the L2 norm of that sum
  divided by the number of batches in it: the norm of the block's mean per-batch gradient over the interval.
  The sum rather than the mean of per-step norms, because per-step norms are dominated by mini-batch noise, which
  does not fade as a block converges, while a sum keeps what the batches agree on. Per batch rather than per step,
  because during warm-up a step sums a growing number of batches (``accumulate`` rises from 1 to ``nbs / batch``).
- **Plasticity** of a block between the last two intervals of evidence: ``r = |G_prev - G_cur| / G_prev``.
- **Decision.** The threshold is the median of ``r`` over every block still trainable (``threshold=None``, as
  AutoFreeze) or a fixed number. The frozen prefix grows from its end through each block whose ``r`` is below the
  threshold and stops before the first one at or above it. Blocks without parameters (upsampling, concatenation)
  have nothing to learn and pass. The prefix never grows past the ceiling (``--auto-max``; default the backbone)
  and never shrinks: freezing goes front to back and is not undone.
- **Warm-up.** While the recipe's warm-up ramps the learning rate, momentum and accumulation, the gradients change
  because the schedule changes, not because a block is still learning. Default (``--auto-warmup skip``): an
  interval with a step inside the warm-up is not evidence. After warm-up, the learning rate only decays linearly;
  the measure is of gradients, not of updates (``lr x gradient``), so intervals at different learning rates compare
  like with like. ``--auto-warmup relative`` decides during warm-up too, on each block's *share* of the gradient
  (``G_b`` over the L2 combination of every trainable block's ``G`` in the same interval): a change the schedule
  makes to all blocks alike cancels, and what remains is a block changing relative to the rest. It lets a short
  run freeze early (a run of 8 epochs has 3 of warm-up); the measured cost and gain are in the README.
- **Evidence.** A decision needs ``min_intervals`` (2) intervals after warm-up: one value of ``r`` per block.
- **Interval.** One epoch by default (``--auto-interval 1``), N epochs (``3``) or N optimiser steps (``20s``).
  Decisions are taken at the end of an epoch from the intervals closed by then and take effect from the next
  epoch: the phase machinery (optimiser regroup, integrity digests, the frozen-prefix cache) works per epoch.

:func:`decide_freeze` is the rule, a pure function of the measures; :class:`GradientIntervals` is what the trainer
feeds at every optimiser step (its state goes into ``last.pt``, so a resumed run decides as an uninterrupted one).
Holding the sums costs one float32 copy of the trainable parameters.
"""
from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..model import YOLO

UNITS = ("epoch", "step")
WARMUP = ("skip", "relative")


@dataclass(frozen=True)
class AutoRule:
    """How ``--freeze auto`` decides: the ``ceiling`` (the prefix stays within blocks ``0 … ceiling-1``), the
    interval (``interval`` epochs or optimiser steps, ``unit``), the ``threshold`` on ``r`` (None: the median of
    the trainable blocks' ``r``) and the intervals of evidence a decision needs (``min_intervals``)."""

    ceiling: int
    interval: int = 1
    unit: str = "epoch"
    threshold: float | None = None
    min_intervals: int = 2
    warmup: str = "skip"

    def __post_init__(self):
        if self.warmup not in WARMUP:
            raise ValueError(f"--auto-warmup {self.warmup}: choose one of {', '.join(WARMUP)}")
        if self.unit not in UNITS or self.interval < 1 or self.min_intervals < 2 or self.ceiling < 0:
            raise ValueError(f"auto rule {self}: interval >= 1 in {'/'.join(UNITS)}, min_intervals >= 2, "
                             f"ceiling >= 0")
        if self.threshold is not None and not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"--auto-threshold {self.threshold}: a positive number or 'median'")

    @classmethod
    def parse(cls, interval: str, threshold: str, ceiling: int, warmup: str = "skip") -> AutoRule:
        """The rule from ``--auto-interval`` (``"1"``: epochs, ``"20s"``: optimiser steps), ``--auto-threshold``
        (``"median"`` or a positive number) and ``--auto-warmup`` (``skip`` or ``relative``); ``ceiling`` is already
        a block count.

        Raises ValueError (one line) for a malformed value.
        """
        match = re.fullmatch(r"\s*(\d+)\s*(s|steps?|e|epochs?)?\s*", str(interval))
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"--auto-interval {interval}: a number of epochs (1) or of optimiser steps (20s)")
        unit = "step" if (match.group(2) or "e").startswith("s") else "epoch"
        if str(threshold).strip().lower() == "median":
            value = None
        else:
            try:
                value = float(threshold)
            except ValueError:
                raise ValueError(f"--auto-threshold {threshold}: 'median' or a positive number like 0.2") from None
        return cls(ceiling, int(match.group(1)), unit, value, warmup=str(warmup).strip().lower())

    def to_dict(self) -> dict:
        """Plain values (checkpoints, ``args.yaml``, ``freeze_audit.json``)."""
        return {"ceiling": self.ceiling, "interval": self.interval, "unit": self.unit, "threshold": self.threshold,
                "min_intervals": self.min_intervals, "warmup": self.warmup}

    @classmethod
    def from_dict(cls, data: dict) -> AutoRule:
        """The rule :meth:`to_dict` wrote."""
        return cls(**data)

    def describe(self) -> str:
        """One line: ``"auto: every 1 epoch, threshold median of r, at most 10 blocks"``."""
        every = f"{self.interval} {self.unit}{'s' if self.interval > 1 else ''}"
        threshold = "median of r" if self.threshold is None else f"r < {self.threshold:g}"
        when = "after warm-up" if self.warmup == "skip" else "from the start on gradient shares"
        return (f"auto: decides every {every} {when} ({threshold}; {self.min_intervals} intervals of "
                f"evidence), at most blocks 0-{self.ceiling - 1}")


class Interval(NamedTuple):
    """One closed evaluation interval: when it ended (``epoch`` 1-based, ``step`` the optimiser steps taken so
    far), whether a step of it fell inside the warm-up, and each trainable block's measure ``G``."""

    epoch: int
    step: int
    warmup: bool
    measures: dict[int, float]

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "warmup": self.warmup,
                "measures": [[block, g] for block, g in sorted(self.measures.items())]}

    @classmethod
    def from_dict(cls, data: dict) -> Interval:
        return cls(data["epoch"], data["step"], data["warmup"], {int(b): float(g) for b, g in data["measures"]})


@dataclass(frozen=True)
class Decision:
    """What :func:`decide_freeze` concluded: the prefix before and after (blocks ``0 … n-1``), the threshold used
    (None when no ``r`` was computed), the evidence per candidate block (``{"block", "measures": [G_prev, G_cur],
    "r", "below"}``, ``measures`` and ``r`` None for a block without parameters) and the reason in words."""

    prefix_before: int
    prefix_after: int
    threshold: float | None
    evidence: tuple[dict, ...]
    reason: str

    @property
    def changed(self) -> bool:
        """Whether the prefix grew."""
        return self.prefix_after > self.prefix_before

    def to_dict(self) -> dict:
        return {"prefix_before": self.prefix_before, "prefix_after": self.prefix_after, "threshold": self.threshold,
                "evidence": [dict(e) for e in self.evidence], "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict) -> Decision:
        return cls(data["prefix_before"], data["prefix_after"], data["threshold"], tuple(data["evidence"]),
                   data["reason"])


def plasticity(previous: float, current: float) -> float:
    """``|previous - current| / previous``: the relative change of a block's measure (inf from a zero measure to a
    non-zero one, 0 when both are zero)."""
    if previous > 0:
        return abs(previous - current) / previous
    return 0.0 if current == 0 else math.inf


def decide_freeze(history: Sequence[Interval], prefix: int, rule: AutoRule) -> Decision:
    """The frozen prefix after the intervals of ``history`` (oldest first), when blocks ``0 … prefix-1`` are frozen
    now (see the module docstring for the rule).

    Returns the unchanged prefix, with the reason, during warm-up, with fewer than ``rule.min_intervals`` intervals
    of evidence, or at the ceiling.
    """
    evidence = [interval for interval in history if rule.warmup == "relative" or not interval.warmup]
    if prefix >= rule.ceiling:
        return Decision(prefix, prefix, None, (), f"the prefix is at the ceiling ({rule.ceiling} blocks)")
    if len(evidence) < rule.min_intervals:
        waiting = "warm-up: no decision while the learning rate ramps" if history and history[-1].warmup else (
            f"{len(evidence)} of {rule.min_intervals} intervals of evidence after warm-up")
        return Decision(prefix, prefix, None, (), waiting)
    previous, current = evidence[-2].measures, evidence[-1].measures
    trainable = sorted(b for b in set(previous) & set(current) if b >= prefix)
    if rule.warmup == "relative":
        previous, current = (_shares(measures, trainable) for measures in (previous, current))
    ratios = {b: plasticity(previous[b], current[b]) for b in trainable}
    if not ratios:
        return Decision(prefix, prefix, None, (), "no trainable block has measures in both intervals")
    threshold = statistics.median(ratios.values()) if rule.threshold is None else rule.threshold
    rows, after, stopped = [], prefix, False
    for block in range(prefix, rule.ceiling):
        r = ratios.get(block)
        below = r is None or r < threshold
        rows.append({"block": block, "measures": [previous[block], current[block]] if r is not None else None,
                     "r": r, "below": below})
        if not stopped and below:
            after = block + 1
        stopped = stopped or not below
    if after == prefix:
        reason = f"block {prefix} is still plastic (r {ratios.get(prefix, math.nan):.3g} >= {threshold:.3g})"
    elif after == rule.ceiling:
        reason = f"blocks {prefix}-{after - 1} have r below {threshold:.3g}; the ceiling stops the prefix"
    else:
        reason = (f"blocks {prefix}-{after - 1} have r below {threshold:.3g}; block {after} is still plastic "
                  f"(r {ratios[after]:.3g})")
    return Decision(prefix, after, threshold, tuple(rows), reason)


def _shares(measures: dict[int, float], blocks: Sequence[int]) -> dict[int, float]:
    """Each of ``blocks``' measure over the L2 combination of all of theirs (0 when every one is 0)."""
    total = math.sqrt(sum(measures[b] ** 2 for b in blocks))
    return {b: measures[b] / total if total > 0 else 0.0 for b in blocks}


class GradientIntervals:
    """The per-interval gradient sums of the trainable blocks of ``model``, closed into :class:`Interval` records.

    The trainer calls :meth:`add` at every optimiser step (with the parameters whose gradients the optimiser
    applies) and :meth:`end_epoch` after each epoch; :attr:`history` feeds :func:`decide_freeze`.
    """

    def __init__(self, model: YOLO, rule: AutoRule) -> None:
        self.rule = rule
        self.name_of = {id(p): name for name, p in model.named_parameters()}
        self.block_of = {f"model.{info.index}.{name}": info.index for info in model.blocks
                         for name, _ in model.model[info.index].named_parameters()}
        self.sums: dict[str, torch.Tensor] = {}
        self.batches = self.steps = self.total_steps = 0
        self.warmup = False
        self.history: list[Interval] = []
        self.undecided = False  # an interval closed since the last decision

    @torch.no_grad()
    def add(self, params: Sequence[nn.Parameter], batches: int, warming: bool, epoch: int) -> None:
        """Add the gradients of one optimiser step (``params``: the parameters the step applies, with their
        ``.grad``) that summed ``batches`` batches, in ``epoch`` (1-based); ``warming``: the step is inside the
        warm-up. With an interval in steps, the interval closes here when it is full."""
        for param in params:
            name = self.name_of[id(param)]
            grad = param.grad.detach().float()
            if name in self.sums:
                self.sums[name] += grad
            else:
                self.sums[name] = grad.clone()
        self.batches += batches
        self.steps += 1
        self.total_steps += 1
        self.warmup = self.warmup or warming
        if self.rule.unit == "step" and self.steps >= self.rule.interval:
            self.close(epoch)

    def end_epoch(self, epoch: int) -> bool:
        """After ``epoch`` (1-based): close the interval when it ends here (epoch intervals); return whether an
        interval closed since the last call, i.e. whether there is new evidence to decide on."""
        if self.rule.unit == "epoch" and epoch % self.rule.interval == 0:
            self.close(epoch)
        closed, self.undecided = self.undecided, False
        return closed

    def close(self, epoch: int) -> None:
        """Close the current interval into :attr:`history` (nothing when it holds no step)."""
        if not self.steps:
            return
        squares: dict[int, float] = {}
        for name, total in self.sums.items():
            block = self.block_of[name]
            squares[block] = squares.get(block, 0.0) + float(torch.linalg.vector_norm(total, dtype=torch.float64)) ** 2
        measures = {block: math.sqrt(s) / self.batches for block, s in squares.items()}
        self.history.append(Interval(epoch, self.total_steps, self.warmup, measures))
        self.sums, self.batches, self.steps, self.warmup = {}, 0, 0, False
        self.undecided = True

    def state_dict(self) -> dict:
        """Everything needed to continue (tensors on the CPU and plain values; ``weights_only``-loadable)."""
        return {"sums": {name: t.detach().cpu().clone() for name, t in self.sums.items()}, "batches": self.batches,
                "steps": self.steps, "total_steps": self.total_steps, "warmup": self.warmup,
                "history": [i.to_dict() for i in self.history], "undecided": self.undecided}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        """Continue from :meth:`state_dict`."""
        self.sums = {name: t.to(device) for name, t in state["sums"].items()}
        self.batches, self.steps, self.total_steps = state["batches"], state["steps"], state["total_steps"]
        self.warmup, self.undecided = state["warmup"], state["undecided"]
        self.history = [Interval.from_dict(i) for i in state["history"]]


def format_decisions(decisions: Sequence[dict]) -> str:
    """The decision timeline of ``freeze_audit.json`` (``{"epoch", "step", "prefix_before", "prefix_after", …}``)
    as one line per freeze: ``"after epoch 4 (step 16): froze blocks 0-8"``; a line when nothing froze."""
    lines = [f"after epoch {d['epoch']} (step {d['step']}): froze blocks {d['prefix_before']}-{d['prefix_after'] - 1}"
             f" (frozen from epoch {d['epoch'] + 1}: 0-{d['prefix_after'] - 1})" for d in decisions
             if d["prefix_after"] > d["prefix_before"]]
    return "\n".join(lines) or "auto: no block froze"
