"""Which parameters train: the one place the trainer asks.

A :class:`FreezePlan` names the frozen blocks (``model.N``) of a :class:`yolofreeze.model.YOLO`, built by
:meth:`FreezePlan.parse` from what ``--freeze`` accepts: ``N`` freezes blocks ``0 … N-1``; several numbers
(``0 3 5``) or ranges (``0-3,5``) freeze exactly those blocks; presets name the layer-freezing paper's strategies:
``fr1`` (4 blocks), ``fr2`` (9), ``fr3`` (everything but the detection head: 22 on YOLOv8, 23 on YOLOv10),
``backbone`` (10 on YOLOv8, 11 on YOLOv10; note ``fr2`` leaves SPPF trainable) and ``none``. Frozen means ``requires_grad=False`` *and* left out of the optimiser (no momentum
buffers, no weight decay). Batch-norm layers inside frozen blocks stay in eval mode while the rest trains, so
their running statistics stay those of the checkpoint (the current reference's behaviour). The DFL projection
is always fixed (built without gradients).

Batch-norm in frozen blocks follows ``frozen_bn``: ``"eval"`` (default, the current reference: running statistics
fixed, re-applied after every ``model.train()``) or ``"train"`` (statistics keep updating from the training
batches, like older reference releases and the YOLOv10 authors' trainer; the affine weights stay frozen).
:meth:`FreezePlan.audit` is the per-block record printed before training and saved as ``freeze_audit.json``;
:meth:`FreezePlan.digest` and :func:`verify_digests` are its integrity proof: SHA-256 of every frozen tensor at the
start, checked after every epoch, so a frozen tensor that moved fails the run and is named.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

import torch
from torch import nn

from .model import YOLO

_BLOCK = re.compile(r"^model\.(\d+)\.")
PRESETS = ("none", "fr1", "fr2", "fr3", "backbone")
BN_MODES = ("eval", "train")


def block_of(name: str) -> int | None:
    """The block index of a state-dict / parameter name (``"model.9.cv1.conv.weight"`` → 9), None outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class FreezePlan:
    """Frozen block indices of a model with ``n_blocks`` blocks (the last one, the head, always trains), and the
    batch-norm policy of the frozen blocks (``"eval"`` or ``"train"``)."""

    frozen: frozenset[int]
    n_blocks: int
    frozen_bn: str = "eval"

    def __post_init__(self):
        if self.frozen_bn not in BN_MODES:
            raise ValueError(f"--frozen-bn {self.frozen_bn!r}: choose one of {', '.join(BN_MODES)}")

    def with_frozen_bn(self, mode: str) -> FreezePlan:
        """The same blocks with batch-norm policy ``mode``."""
        return replace(self, frozen_bn=mode)

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
    def parse(cls, spec: str | int | list[str], model: YOLO, frozen_bn: str = "eval") -> FreezePlan:
        """The plan for a ``--freeze`` value: a count ``"9"``, a preset (``fr1`` … ``none``), or block lists and
        ranges (``["0", "3", "5"]``, ``"0-3,5"``; a single number alone is a count).

        Raises ValueError (one line, with the model's block count) for unknown words, blocks out of range, or a
        plan that freezes the head.
        """
        words = [spec] if isinstance(spec, (str, int)) else list(spec)
        words = [w for word in words for w in str(word).replace(",", " ").split()]
        n_blocks = len(model.blocks)
        if len(words) == 1 and words[0].isdigit():
            return cls.first(int(words[0]), model).with_frozen_bn(frozen_bn)
        if len(words) == 1 and words[0].lower() in PRESETS:
            return cls.first(_preset_count(words[0].lower(), model), model).with_frozen_bn(frozen_bn)
        blocks = set()
        for word in words:
            blocks.update(_block_range(word, model))
        head = n_blocks - 1
        if head in blocks:
            raise ValueError(f"--freeze {' '.join(words)}: block {head} is {model.arch}'s detection head; it must "
                             f"train (freeze at most blocks 0-{head - 1})")
        return cls(frozenset(blocks), n_blocks, frozen_bn)

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
        """``model.train()``, then (``frozen_bn="eval"``) batch-norm layers of frozen blocks back to eval."""
        model.train()
        if self.frozen_bn == "train":
            return model
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
        statistics = "stay fixed" if self.frozen_bn == "eval" else "keep updating (--frozen-bn train)"
        return (f"frozen: blocks {self.label} of {model.arch} ({frozen:,} of {total:,} parameters, "
                f"{100 * frozen / total:.1f}%); their batch-norm statistics {statistics}")

    def digest(self, model: YOLO) -> dict[str, str]:
        """SHA-256 (hex) of the bytes of every frozen parameter and, with ``frozen_bn="eval"``, every buffer of a
        frozen block (batch-norm running statistics), keyed by state-dict name."""
        parameters = {name for name, _ in model.named_parameters()}
        digests = {}
        for name, tensor in model.state_dict().items():
            if block_of(name) in self.frozen and (name in parameters or self.frozen_bn == "eval"):
                data = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                digests[name] = hashlib.sha256(data).hexdigest()
        return digests

    def audit(self, model: YOLO) -> dict:
        """The per-block record of this plan: ``{"arch", "frozen_blocks", "frozen_bn", "blocks": [rows],
        "totals"}``; a row is ``{index, module, part, params, state ("frozen"/"trainable"), bn}`` where ``bn`` is
        the batch-norm mode during training (``"eval"``, ``"train"``, or ``"-"`` for a block without any)."""
        rows = []
        for info in model.blocks:
            block = model.model[info.index]
            has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())
            frozen = info.index in self.frozen
            rows.append({"index": info.index, "module": info.module, "part": info.part,
                         "params": sum(p.numel() for p in block.parameters()),
                         "state": "frozen" if frozen else "trainable",
                         "bn": (self.frozen_bn if frozen else "train") if has_bn else "-"})
        total = sum(r["params"] for r in rows)
        frozen_params = sum(r["params"] for r in rows if r["state"] == "frozen")
        return {"arch": model.arch, "frozen_blocks": sorted(self.frozen), "frozen_bn": self.frozen_bn,
                "blocks": rows, "totals": {"params": total, "frozen_params": frozen_params,
                                           "trainable_params": total - frozen_params,
                                           "frozen_percent": round(100 * frozen_params / total, 2)}}


class FrozenTensorChanged(RuntimeError):
    """A tensor the plan froze changed during training."""


def verify_digests(expected: dict[str, str], actual: dict[str, str], when: str) -> None:
    """Raise :class:`FrozenTensorChanged` naming the frozen tensors whose digest differs (or vanished)."""
    changed = [name for name, digest in expected.items() if actual.get(name) != digest]
    if changed:
        raise FrozenTensorChanged(f"{len(changed)} frozen tensor(s) changed {when}: {', '.join(changed[:5])}"
                                  f"{' …' if len(changed) > 5 else ''}")


def format_audit(audit: dict) -> str:
    """:meth:`FreezePlan.audit` as an aligned text table with the totals underneath."""
    lines = [f"{'block':>5}  {'module':<12} {'part':<9} {'params':>11}  {'state':<9} bn"]
    for r in audit["blocks"]:
        lines.append(f"{r['index']:>5}  {r['module']:<12} {r['part']:<9} {r['params']:>11,}  {r['state']:<9} "
                     f"{r['bn']}")
    t = audit["totals"]
    lines.append(f"{audit['arch']}: {t['frozen_params']:,} of {t['params']:,} parameters frozen "
                 f"({t['frozen_percent']:.2f}%), {t['trainable_params']:,} train; frozen batch-norm: "
                 f"{audit['frozen_bn']}")
    return "\n".join(lines)


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
