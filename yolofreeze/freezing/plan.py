"""Which parameters train: the one place the trainer asks.

A :class:`FreezePlan` names the frozen blocks (``model.N``) of a :class:`yolofreeze.model.YOLO`, built by
:meth:`FreezePlan.parse` from what ``--freeze`` accepts: ``N`` freezes blocks ``0 … N-1``; several numbers
(``0 3 5``) or ranges (``0-3,5``) freeze exactly those blocks; presets name the layer-freezing paper's strategies:
``fr1`` (4 blocks), ``fr2`` (9), ``fr3`` (everything but the detection head: 22 on YOLOv8, 23 on YOLOv10),
``backbone`` (10 on YOLOv8, 11 on YOLOv10; note ``fr2`` leaves SPPF trainable) and ``none``; ``auto`` (or
``auto:fr1``, from a given prefix) starts there and lets the trainer freeze more as blocks stop learning
(:mod:`yolofreeze.freezing.auto`; each decision becomes a phase, :meth:`FreezePlan.with_phase`). Frozen means ``requires_grad=False`` *and* left out of the optimiser (no momentum
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
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from ..model import PARTS, YOLO
from .auto import AutoRule

_BLOCK = re.compile(r"^model\.(\d+)\.")
PRESETS = ("none", "fr1", "fr2", "fr3", "backbone")
AUTO = "auto"
BN_MODES = ("eval", "train")
REST = "rest"  # the --lr-mult label of blocks no entry names (multiplier 1)


def always_fixed(name: str) -> bool:
    """Parameters no plan ever trains: the DFL projection (``model.22.dfl.conv.weight``), fixed by design."""
    return ".dfl." in name


def block_of(name: str) -> int | None:
    """The block index of a state-dict / parameter name (``"model.9.cv1.conv.weight"`` → 9), None outside blocks."""
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


class LrSplit(NamedTuple):
    """Per-part learning-rate multipliers (``--lr-mult``): ``labels`` are ``(label, multiplier)`` in group order,
    ``label_of(name)`` the label of a parameter (dotted state-dict name)."""

    labels: tuple[tuple[str, float], ...]
    label_of: Callable[[str], str]



@dataclass(frozen=True)
class FreezePlan:
    """Frozen block indices of a model with ``n_blocks`` blocks (the last one, the head, always trains), the
    batch-norm policy of the frozen blocks (``"eval"`` or ``"train"``), learning-rate multipliers per block set
    (``lr_mult``: ``(label, blocks, multiplier)``, from ``--lr-mult``) and the progressive-unfreezing schedule
    (``unfreeze``: ``(after_epochs, frozen_blocks)``, from ``--unfreeze``; ``frozen`` holds until the first).
    With ``auto`` (``--freeze auto``) the phases are not known at the start: each decision of the rule appends one
    (:meth:`with_phase`)."""

    frozen: frozenset[int]
    n_blocks: int
    frozen_bn: str = "eval"
    lr_mult: tuple[tuple[str, tuple[int, ...], float], ...] = ()
    unfreeze: tuple[tuple[int, tuple[int, ...]], ...] = ()
    auto: AutoRule | None = None

    def __post_init__(self):
        if self.frozen_bn not in BN_MODES:
            raise ValueError(f"--frozen-bn {self.frozen_bn!r}: choose one of {', '.join(BN_MODES)}")

    def to_dict(self) -> dict:
        """Plain lists and numbers (for checkpoints and ``args.yaml``); :meth:`from_dict` reads it back."""
        return {"frozen": sorted(self.frozen), "n_blocks": self.n_blocks, "frozen_bn": self.frozen_bn,
                "lr_mult": [[label, list(blocks), m] for label, blocks, m in self.lr_mult],
                "unfreeze": [[epochs, list(blocks)] for epochs, blocks in self.unfreeze],
                "auto": self.auto.to_dict() if self.auto else None}

    @classmethod
    def from_dict(cls, data: dict) -> FreezePlan:
        """The plan :meth:`to_dict` wrote (a plan recorded before ``auto`` existed has none)."""
        return cls(frozenset(data["frozen"]), data["n_blocks"], data["frozen_bn"],
                   tuple((label, tuple(blocks), float(m)) for label, blocks, m in data["lr_mult"]),
                   tuple((int(epochs), tuple(blocks)) for epochs, blocks in data["unfreeze"]),
                   AutoRule.from_dict(data["auto"]) if data.get("auto") else None)

    def with_auto(self, model: YOLO, interval: str = "1", maximum: str = "backbone",
                  threshold: str = "median", warmup: str = "skip") -> FreezePlan:
        """The plan with the adaptive rule of ``--auto-interval``, ``--auto-max`` (a preset ``fr2``, ``backbone``,
        ``fr3`` or a block count: the prefix never grows past it), ``--auto-threshold`` (``median`` or a number)
        and ``--auto-warmup`` (``skip`` or ``relative``; :mod:`yolofreeze.freezing.auto`).

        Raises ValueError for a malformed value, a ceiling past the head or below the frozen prefix, or a plan
        whose frozen blocks are not a prefix ``0 … k-1``.
        """
        start = len(self.frozen)
        if self.frozen != frozenset(range(start)):
            raise ValueError(f"--freeze auto:{self.label}: auto freezes a prefix 0 … k-1; start from a count or a "
                             f"preset (auto:fr1, auto:4)")
        word = str(maximum).strip().lower()
        if word in PRESETS:
            ceiling = _preset_count(word, model)
        elif word.isdigit():
            ceiling = int(word)
        else:
            raise ValueError(f"--auto-max {maximum}: a block count or one of fr2, backbone, fr3")
        head = self.n_blocks - 1
        if ceiling > head:
            raise ValueError(f"--auto-max {maximum}: {model.arch}'s blocks are 0-{head} and {head} is the detection "
                             f"head, which must train: at most {head} (fr3)")
        if ceiling < start:
            raise ValueError(f"--auto-max {maximum} ({ceiling} blocks) is below the starting prefix {self.label}")
        return replace(self, auto=AutoRule.parse(interval, threshold, ceiling, warmup))

    def with_phase(self, first_epoch: int, frozen: Iterable[int]) -> FreezePlan:
        """The plan with one more phase: blocks ``frozen`` from ``first_epoch`` (0-based) on (how an adaptive
        decision enters the plan).

        Raises ValueError when ``first_epoch`` is not after the last phase's start.
        """
        if first_epoch <= self.phases()[-1][0]:
            raise ValueError(f"a phase from epoch {first_epoch + 1} must start after the last one "
                             f"(epoch {self.phases()[-1][0] + 1})")
        return replace(self, unfreeze=self.unfreeze + ((first_epoch, tuple(sorted(frozen))),))

    def with_unfreeze(self, spec: str, model: YOLO) -> FreezePlan:
        """The plan with the schedule ``--unfreeze spec``: ``"10:fr1,20:none"`` = after 10 epochs freeze what
        ``--freeze fr1`` freezes, after 20 nothing. Each part after ``E:`` takes any ``--freeze`` form (``5:0-3,7``).

        Raises ValueError for a malformed entry, epochs not strictly increasing from 1, or a bad freeze part.
        """
        schedule, previous = [], 0
        for entry in re.split(r"[,\s]+(?=\d+:)", spec.strip()):
            match = re.fullmatch(r"(\d+):(.+)", entry.strip())
            if match is None:
                raise ValueError(f"--unfreeze {spec}: expected EPOCHS:FREEZE entries like 10:fr1,20:none")
            epochs = int(match.group(1))
            if epochs <= previous:
                raise ValueError(f"--unfreeze {spec}: the epochs must increase from 1 ({epochs} after {previous})")
            phase = FreezePlan.parse(match.group(2), model, flag="--unfreeze")
            schedule.append((epochs, tuple(sorted(phase.frozen))))
            previous = epochs
        return replace(self, unfreeze=tuple(schedule))

    def with_lr_mult(self, spec: str, model: YOLO) -> FreezePlan:
        """The plan with ``--lr-mult spec``: ``"backbone=0.1,neck=0.5,head=1"`` (parts) or ``"0-9=0.1,10=0.5"``
        (block ranges) multiply the learning rate of those blocks' parameters (the whole schedule, warm-up too);
        blocks no entry names keep 1 (label ``rest``).

        Raises ValueError for a malformed entry, a multiplier that is not a positive number, or overlapping entries.
        """
        entries, taken = [], {}
        for entry in [e for e in re.split(r"[,\s]+", spec.strip()) if e]:
            key, _, value = entry.partition("=")
            try:
                multiplier = float(value)
            except ValueError:
                multiplier = math.nan
            if not multiplier > 0 or not math.isfinite(multiplier):
                raise ValueError(f"--lr-mult {entry!r}: expected PART=MULTIPLIER or BLOCKS=MULTIPLIER with a positive "
                                 f"number, e.g. backbone=0.1 or 0-9=0.1 (to stop a part training, freeze it)")
            if key in PARTS:
                blocks = tuple(b.index for b in model.blocks if b.part == key)
            else:
                blocks = tuple(_block_range(key, model, flag="--lr-mult"))
            overlap = sorted(set(blocks) & set(taken))
            if overlap:
                raise ValueError(f"--lr-mult {spec}: block {overlap[0]} is named by both {taken[overlap[0]]} and {key}")
            taken.update({b: key for b in blocks})
            entries.append((key, blocks, multiplier))
        rest = tuple(b for b in range(self.n_blocks) if b not in taken)
        if entries and rest:
            entries.append((REST, rest, 1.0))
        return replace(self, lr_mult=tuple(entries))

    def check_schedule(self, epochs: int) -> None:
        """Raise ValueError when an ``--unfreeze`` phase starts after the last of ``epochs`` epochs."""
        if self.unfreeze and self.unfreeze[-1][0] >= epochs:
            raise ValueError(f"--unfreeze: the phase after {self.unfreeze[-1][0]} epochs is never reached in a "
                             f"{epochs}-epoch run")

    def lr_split(self) -> LrSplit | None:
        """The optimiser's per-label groups (:func:`yolofreeze.training.optim.param_groups`), None without ``lr_mult``."""
        if not self.lr_mult:
            return None
        label_of_block = {b: label for label, blocks, _ in self.lr_mult for b in blocks}
        return LrSplit(tuple((label, m) for label, _, m in self.lr_mult),
                       lambda name: label_of_block[block_of(name)])

    def lr_multiplier(self, block: int) -> float:
        """The learning-rate multiplier of ``block`` (1 without ``--lr-mult``)."""
        return next((m for _, blocks, m in self.lr_mult if block in blocks), 1.0)

    def phases(self) -> list[tuple[int, frozenset[int]]]:
        """``(first epoch, 0-based; frozen blocks)`` of each phase of training: the start, then each unfreeze."""
        return [(0, self.frozen)] + [(epochs, frozenset(blocks)) for epochs, blocks in self.unfreeze]

    def at(self, epoch: int) -> FreezePlan:
        """The plan in force during ``epoch`` (0-based): this one's blocks and policies, the schedule applied."""
        frozen = [blocks for first, blocks in self.phases() if first <= epoch][-1]
        return replace(self, frozen=frozen, unfreeze=())

    def with_frozen_bn(self, mode: str) -> FreezePlan:
        """The same blocks with batch-norm policy ``mode``."""
        return replace(self, frozen_bn=mode)

    @classmethod
    def build(cls, freeze: str | int | list[str], model: YOLO, frozen_bn: str = "eval", unfreeze: str | None = None,
              lr_mult: str | None = None, epochs: int | None = None,
              auto: tuple[str, ...] = ("1", "backbone", "median", "skip")) -> FreezePlan:
        """The whole plan of a run from its flags: ``--freeze`` (:meth:`parse`; ``auto`` or ``auto:START``), the
        ``auto`` options (``--auto-interval``, ``--auto-max``, ``--auto-threshold``, ``--auto-warmup``: :meth:`with_auto`),
        ``--frozen-bn``, ``--unfreeze`` (:meth:`with_unfreeze`, checked against ``epochs`` when given) and
        ``--lr-mult`` (:meth:`with_lr_mult`). The one way a run's plan is made (train.py, the study's dry run).

        Raises ValueError for ``auto`` with ``--unfreeze`` (the rule makes the phases), besides the checks of each
        part."""
        words = [w for word in ([freeze] if isinstance(freeze, (str, int)) else freeze)
                 for w in str(word).replace(",", " ").split()]
        adaptive = len(words) == 1 and (words[0].lower() == AUTO or words[0].lower().startswith(AUTO + ":"))
        if adaptive and unfreeze:
            raise ValueError(f"--freeze {words[0]} decides when blocks freeze; leave out --unfreeze {unfreeze}")
        plan = cls.parse(words[0].partition(":")[2] or "0", model, frozen_bn) if adaptive else cls.parse(
            freeze, model, frozen_bn)
        if adaptive:
            plan = plan.with_auto(model, *auto)
        if unfreeze:
            plan = plan.with_unfreeze(unfreeze, model)
            if epochs is not None:
                plan.check_schedule(epochs)
        return plan.with_lr_mult(lr_mult, model) if lr_mult else plan

    @classmethod
    def prefix(cls, count: int, model: YOLO, flag: str = "--freeze") -> FreezePlan:
        """Freeze blocks ``0 … count-1`` (``--freeze count``); 0 freezes nothing.

        Raises ValueError when ``count`` would freeze the head (the message gives the block count).
        """
        n_blocks = len(model.blocks)
        if not 0 <= count < n_blocks:
            raise ValueError(f"{flag} {count}: {model.arch} has {n_blocks} blocks (0-{n_blocks - 1}); freeze at "
                             f"most {n_blocks - 1} so that the head trains")
        return cls(frozenset(range(count)), n_blocks)

    @classmethod
    def parse(cls, spec: str | int | list[str], model: YOLO, frozen_bn: str = "eval",
              flag: str = "--freeze") -> FreezePlan:
        """The plan for a ``--freeze`` value: a count ``"9"``, a preset (``fr1`` … ``none``), or block lists and
        ranges (``["0", "3", "5"]``, ``"0-3,5"``; a single number alone is a count).

        Raises ValueError (one line, with the model's block count) for unknown words, blocks out of range, or a
        plan that freezes the head.
        """
        words = [spec] if isinstance(spec, (str, int)) else list(spec)
        words = [w for word in words for w in str(word).replace(",", " ").split()]
        n_blocks = len(model.blocks)
        if any(w.lower().startswith(AUTO) for w in words):
            raise ValueError(f"{flag} {' '.join(words)}: auto is a whole plan (--freeze auto or auto:fr1), not a "
                             f"phase")
        if len(words) == 1 and words[0].isdigit():
            return cls.prefix(int(words[0]), model, flag).with_frozen_bn(frozen_bn)
        if len(words) == 1 and words[0].lower() in PRESETS:
            return cls.prefix(_preset_count(words[0].lower(), model), model, flag).with_frozen_bn(frozen_bn)
        blocks = set()
        for word in words:
            blocks.update(_block_range(word, model, flag))
        head = n_blocks - 1
        if head in blocks:
            raise ValueError(f"{flag} {' '.join(words)}: block {head} is {model.arch}'s detection head; it must "
                             f"train (freeze at most blocks 0-{head - 1})")
        return cls(frozenset(blocks), n_blocks, frozen_bn)

    @property
    def label(self) -> str:
        """Short text of the frozen blocks: ``"none"``, ``"0-8"`` or ``"0, 3, 5"``."""
        return blocks_label(self.frozen)

    def trainable(self, name: str) -> bool:
        """Whether the parameter ``name`` (e.g. ``"model.3.conv.weight"``) trains under this plan."""
        return block_of(name) not in self.frozen

    def apply(self, model: YOLO) -> YOLO:
        """``requires_grad=False`` on every parameter of a frozen block, True on the others (but never on the
        :func:`always_fixed` ones); returns ``model``."""
        for name, param in model.named_parameters():
            param.requires_grad_(self.trainable(name) and not always_fixed(name))
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
        "totals", "unfreeze", "lr_mult"}``; a row is ``{index, module, part, params, state ("frozen"/"trainable"),
        bn, lr_mult}`` where ``bn`` is the batch-norm mode during training (``"eval"``, ``"train"``, or ``"-"``
        for a block without any). ``unfreeze`` lists the later phases ``{"after_epochs", "frozen_blocks"}``,
        ``lr_mult`` the ``--lr-mult`` groups ``{"label", "blocks", "multiplier"}``, ``auto`` the adaptive rule
        (:meth:`AutoRule.to_dict`) or None."""
        rows = []
        for info in model.blocks:
            block = model.model[info.index]
            has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules())
            frozen = info.index in self.frozen
            rows.append({"index": info.index, "module": info.module, "part": info.part,
                         "params": sum(p.numel() for p in block.parameters()),
                         "state": "frozen" if frozen else "trainable",
                         "bn": (self.frozen_bn if frozen else "train") if has_bn else "-",
                         "lr_mult": self.lr_multiplier(info.index)})
        total = sum(r["params"] for r in rows)
        frozen_params = sum(r["params"] for r in rows if r["state"] == "frozen")
        return {"arch": model.arch, "frozen_blocks": sorted(self.frozen), "frozen_bn": self.frozen_bn,
                "blocks": rows, "totals": {"params": total, "frozen_params": frozen_params,
                                           "trainable_params": total - frozen_params,
                                           "frozen_percent": round(100 * frozen_params / total, 2)},
                "unfreeze": [{"after_epochs": e, "frozen_blocks": list(b)} for e, b in self.unfreeze],
                "lr_mult": [{"label": label, "blocks": list(b), "multiplier": m} for label, b, m in self.lr_mult],
                "auto": self.auto.to_dict() if self.auto else None}


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
    lr = bool(audit.get("lr_mult"))
    lines = [f"{'block':>5}  {'module':<12} {'part':<9} {'params':>11}  {'state':<9} {'bn':<5}"
             + (" lr x" if lr else "")]
    for r in audit["blocks"]:
        lines.append(f"{r['index']:>5}  {r['module']:<12} {r['part']:<9} {r['params']:>11,}  {r['state']:<9} "
                     f"{r['bn']:<5}" + (f" {r['lr_mult']:g}" if lr else ""))
    t = audit["totals"]
    lines.append(f"{audit['arch']}: {t['frozen_params']:,} of {t['params']:,} parameters frozen "
                 f"({t['frozen_percent']:.2f}%), {t['trainable_params']:,} train; frozen batch-norm: "
                 f"{audit['frozen_bn']}")
    if audit.get("auto"):
        lines.append(AutoRule.from_dict(audit["auto"]).describe())
    for phase in audit.get("unfreeze", []):
        lines.append(f"after epoch {phase['after_epochs']}: frozen blocks become "
                     f"{blocks_label(phase['frozen_blocks'])} (newly trainable parameters start with fresh optimiser state)")
    return "\n".join(line.rstrip() for line in lines)


def blocks_label(frozen, separator: str = ", ") -> str:
    """``"none"``, ``"0-8"`` or ``"0, 3, 5"`` (``separator`` between the numbers) for a set of block indices."""
    blocks = sorted(frozen)
    if not blocks:
        return "none"
    if blocks == list(range(blocks[0], blocks[-1] + 1)):
        return f"{blocks[0]}-{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])
    return separator.join(map(str, blocks))


def _preset_count(preset: str, model: YOLO) -> int:
    """Leading blocks a preset freezes on ``model``."""
    backbone = sum(1 for b in model.blocks if b.part == "backbone")
    return {"none": 0, "fr1": 4, "fr2": 9, "fr3": len(model.blocks) - 1, "backbone": backbone}[preset]


def _block_range(word: str, model: YOLO, flag: str = "--freeze") -> range:
    """``"5"`` → block 5, ``"0-3"`` → blocks 0…3; ValueError naming the valid range otherwise."""
    n_blocks = len(model.blocks)
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", word)
    if match is None:
        expected = (f"a part ({', '.join(PARTS)}) or a block range like 0-9" if flag == "--lr-mult" else
                    f"a block count, block numbers or ranges like 0-3,5, or one of {', '.join(PRESETS)}")
        raise ValueError(f"{flag} {word!r}: expected {expected}")
    first, last = int(match.group(1)), int(match.group(2) or match.group(1))
    if first > last or last >= n_blocks:
        raise ValueError(f"{flag} {word}: {model.arch} has {n_blocks} blocks (0-{n_blocks - 1})")
    return range(first, last + 1)
