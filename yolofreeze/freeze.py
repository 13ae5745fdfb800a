"""Which parameters train: the one place the trainer asks.

A :class:`FreezePlan` names the frozen blocks (``model.N``) of a :class:`yolofreeze.model.YOLO`, built by
:meth:`FreezePlan.parse` from what ``--freeze`` accepts: ``N`` freezes blocks ``0 … N-1``; several numbers
(``0 3 5``) or ranges (``0-3,5``) freeze exactly those blocks; presets name the layer-freezing paper's strategies:
``fr1`` (4 blocks), ``fr2`` (9), ``fr3`` (everything but the detection head: 22 on YOLOv8, 23 on YOLOv10),
``backbone`` (10 on YOLOv8, 11 on YOLOv10; note ``fr2`` leaves SPPF trainable) and ``none``. Frozen means ``requires_grad=False`` *and* left out of the optimiser (no momentum
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
PRESETS = ("none", "fr1", "fr2", "fr3", "backbone")


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

    @classmethod
    def parse(cls, spec: str | int | list[str], model: YOLO) -> FreezePlan:
        """The plan for a ``--freeze`` value: a count ``"9"``, a preset (``fr1`` … ``none``), or block lists and
        ranges (``["0", "3", "5"]``, ``"0-3,5"``; a single number alone is a count).

        Raises ValueError (one line, with the model's block count) for unknown words, blocks out of range, or a
        plan that freezes the head.
        """
        words = [spec] if isinstance(spec, (str, int)) else list(spec)
        words = [w for word in words for w in str(word).replace(",", " ").split()]
        n_blocks = len(model.blocks)
        if len(words) == 1 and words[0].isdigit():
            return cls.first(int(words[0]), model)
        if len(words) == 1 and words[0].lower() in PRESETS:
            return cls.first(_preset_count(words[0].lower(), model), model)
        blocks = set()
        for word in words:
            blocks.update(_block_range(word, model))
        head = n_blocks - 1
        if head in blocks:
            raise ValueError(f"--freeze {' '.join(words)}: block {head} is {model.arch}'s detection head; it must "
                             f"train (freeze at most blocks 0-{head - 1})")
        return cls(frozenset(blocks), n_blocks)

    @property
    def label(self) -> str:
        """Short text of the frozen blocks: ``"none"``, ``"0-8"`` or ``"0, 3, 5"``."""
        blocks = sorted(self.frozen)
        if not blocks:
            return "none"
        if blocks == list(range(blocks[0], blocks[-1] + 1)):
            return f"{blocks[0]}-{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])
        return ", ".join(map(str, blocks))

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
        return (f"frozen: blocks {self.label} of {model.arch} ({frozen:,} of {total:,} parameters, "
                f"{100 * frozen / total:.1f}%); their batch-norm statistics stay fixed")


def _preset_count(preset: str, model: YOLO) -> int:
    """Leading blocks a preset freezes on ``model``."""
    backbone = sum(1 for b in model.blocks if b.part == "backbone")
    return {"none": 0, "fr1": 4, "fr2": 9, "fr3": len(model.blocks) - 1, "backbone": backbone}[preset]


def _block_range(word: str, model: YOLO) -> range:
    """``"5"`` → block 5, ``"0-3"`` → blocks 0…3; ValueError naming the valid range otherwise."""
    n_blocks = len(model.blocks)
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
    if match is None:
        raise ValueError(f"--freeze {word!r}: expected a block count, block numbers or ranges like 0-3,5, or one "
                         f"of {', '.join(PRESETS)}")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if first > last or last >= n_blocks:
        raise ValueError(f"--freeze {word}: {model.arch} has {n_blocks} blocks (0-{n_blocks - 1})")
    return range(first, last + 1)
