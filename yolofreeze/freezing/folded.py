"""The frozen prefix folded for speed: a separate inference copy of blocks ``0 … k-1`` with every batch-norm folded
into its convolution, which computes what the model's own prefix computes, up to float rounding.

When blocks ``0 … k-1`` are frozen with their batch-norm in eval mode, each of them is a fixed function in
training: no parameter there takes a gradient, no running statistic moves, and the images do not need a gradient
either, so autograd records nothing before block ``k``. Folding ``bn(conv(x))`` into one convolution
(``w' = w γ / sqrt(var + eps)``, ``b' = β + (b - mean) γ / sqrt(var + eps)``: :meth:`YOLO.fuse`) then removes one
pass over every frozen activation map without changing the maths. The trainer runs :class:`FoldedPrefix` on the
images and the model from block ``k`` on its :class:`PrefixOutputs` — the same path as the frozen-prefix cache,
which builds its entries with the same copy.

The copy is separate so the model keeps the checkpoint's tensors: the audit's digests, the EMA and the saved
weights are the unfolded ones. The trainer makes a new copy at the start of every epoch (milliseconds), so a
resumed run or a new freeze phase never runs a stale one.

Exactness: the folded convolution rounds differently from a convolution followed by a batch-norm. On the
oracle-trained cplid-dev yolov8n, 8 val photos, prefixes of 1, 4, 9, 15 and 22 blocks, 320 and 640 px, NCHW and
channels-last, the folded outputs differ from the unfolded ones by at most 2.3e-6 of the largest output magnitude
(4e-7 after one block, 1-2e-6 from block 9 on); :data:`FOLD_TOLERANCE` is the bound the tests hold it to
(``tests/freezing/test_folded_prefix.py``). ``--no-fold-frozen`` runs the unfolded blocks instead.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..model import YOLO, PrefixOutputs
from ..weights.checkpoints import tensor_bytes
from .plan import FreezePlan

FOLD_TOLERANCE = 1e-5  # bound on |folded - unfolded| / max |unfolded| of the prefix outputs (fp32; measured 2.3e-6)


def foldable_length(plan: FreezePlan) -> int:
    """How many leading blocks ``plan`` (one phase) lets fold: ``k`` when blocks ``0 … k-1`` are frozen with
    batch-norm in eval mode (the longest such run from block 0), 0 otherwise (nothing frozen at block 0, or
    ``--frozen-bn train``, whose statistics move every step). The head is never folded (it always trains)."""
    if plan.frozen_bn != "eval":
        return 0
    length = 0
    while length in plan.frozen and length < plan.n_blocks - 1:
        length += 1
    return length


def memory_format_of(model: YOLO) -> torch.memory_format:
    """``torch.channels_last`` when the model's first convolution weight is laid out channels-last (the trainer's
    default), else ``torch.contiguous_format``."""
    weight = next(m.weight for m in model.modules() if isinstance(m, nn.Conv2d))
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class FoldedPrefix:
    """Blocks ``0 … stop-1`` of ``model``, copied and folded (Conv+BN → Conv, RepVGGDW branches merged), in eval mode
    without gradients, laid out as the model is (:func:`memory_format_of`).

    Call with images ``(B, 3, H, W)`` in [0, 1]; returns the :class:`PrefixOutputs` the model runs from block
    ``stop`` on (:meth:`YOLO.boundary`): block index → ``(B, C_i, H / s_i, W / s_i)``, computed without autograd.
    Only the prefix's tensors are copied; the model is not touched.

    Raises ValueError unless ``1 <= stop < len(model.blocks)``.
    """

    def __init__(self, model: YOLO, stop: int):
        model.boundary(stop)  # checks the range
        self.memory_format = memory_format_of(model)
        later = {id(module): nn.Identity() for module in model.model[stop:]}  # not copied: never run here
        self.model = copy.deepcopy(model, memo=later).fuse().eval().requires_grad_(False)
        self.model.to(memory_format=self.memory_format)
        self.stop = stop

    def __call__(self, images: torch.Tensor) -> PrefixOutputs:
        return self.model.prefix_outputs(images.contiguous(memory_format=self.memory_format), self.stop)

    def tensor_bytes(self) -> int:
        """Bytes of the copy's weights and buffers (what folding costs in memory)."""
        return tensor_bytes([*self.model.parameters(), *self.model.buffers()])


__all__ = ["FOLD_TOLERANCE", "FoldedPrefix", "foldable_length", "memory_format_of"]
