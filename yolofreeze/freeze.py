"""Which parameters train: the one place the trainer asks.

A :class:`FreezePlan` names the frozen blocks (``model.N``) of a :class:`yolofreeze.model.YOLO`. ``--freeze N``
freezes blocks ``0 … N-1``. Frozen means ``requires_grad=False`` *and* left out of the optimiser (no momentum
buffers, no weight decay). Batch-norm layers inside frozen blocks stay in eval mode while the rest trains, so
their running statistics stay those of the checkpoint (the current reference's behaviour). The DFL projection
is always fixed (built without gradients).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from .model import YOLO

_BLOCK = re.compile(r"^model\.(\d+)\.")


def block_of(name: str) -> int | None:
    """The block index of a state-dict / parameter name (``"model.9.cv1.conv.weight"`` → 9), None outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class FreezePlan:
    """Frozen block indices of a model with ``n_blocks`` blocks (the last one, the head, always trains)."""

    frozen: frozenset[int]
    n_blocks: int

    @classmethod
    def first(cls, count: int, model: YOLO) -> FreezePlan:
        """Freeze blocks ``0 … count-1`` (``--freeze count``); 0 freezes nothing.

        Raises ValueError when ``count`` would freeze the head (the message gives the block count).
        """
        n_blocks = len(model.blocks)
        if not 0 <= count < n_blocks:
            raise ValueError(f"--freeze {count}: {model.arch} has {n_blocks} blocks (0-{n_blocks - 1}); freeze at "
                             f"most {n_blocks - 1} so that the head trains")
        return cls(frozenset(range(count)), n_blocks)

    def trainable(self, name: str, param: nn.Parameter | None = None) -> bool:
        """Whether the parameter ``name`` (e.g. ``"model.3.conv.weight"``) trains under this plan."""
        return block_of(name) not in self.frozen

    def apply(self, model: YOLO) -> YOLO:
        """Set ``requires_grad=False`` on every parameter of a frozen block; returns ``model``."""
        for name, param in model.named_parameters():
            if not self.trainable(name):
                param.requires_grad_(False)
        return model

    def set_train_mode(self, model: YOLO) -> YOLO:
        """``model.train()``, then batch-norm layers of frozen blocks back to eval (fixed running statistics)."""
        model.train()
        for index in self.frozen:
            for module in model.model[index].modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return model

    def frozen_parameters(self, model: YOLO) -> int:
        """Number of parameter values in frozen blocks."""
        return sum(p.numel() for n, p in model.named_parameters() if not self.trainable(n))

    def describe(self, model: YOLO) -> str:
        """One line: which blocks are frozen and how many parameters that is."""
        total = sum(p.numel() for p in model.parameters())
        if not self.frozen:
            return f"nothing frozen: all {total:,} parameters of {model.arch} train"
        frozen = self.frozen_parameters(model)
        blocks = sorted(self.frozen)
        listing = f"{blocks[0]}-{blocks[-1]}" if blocks == list(range(blocks[0], blocks[-1] + 1)) else \
            ", ".join(map(str, blocks))
        return (f"frozen: blocks {listing} of {model.arch} ({frozen:,} of {total:,} parameters, "
                f"{100 * frozen / total:.1f}%); their batch-norm statistics stay fixed")
