"""Training loss of YOLOv8 and YOLOv10: task-aligned assignment, then a CIoU box loss, a BCE classification loss
and a distribution focal loss (DFL).

Shapes used throughout: ``B`` images, ``A`` anchors over all pyramid levels, ``G`` ground-truth boxes per image
after padding (the most any image of the batch has), ``nc`` classes, ``R = reg_max`` distribution bins per side.

Scaling follows the reference trainer, so logged values compare with its ``results.csv``:

- every part is normalised by the sum of the target scores of the batch (at least 1) and multiplied by its gain
  (``box`` 7.5, ``cls`` 0.5, ``dfl`` 1.5); these are the logged ``box_loss``, ``cls_loss``, ``dfl_loss``;
- the total used for ``backward()`` is ``B * (box + cls + dfl)``.

YOLOv10 (consistent dual assignment): the one-to-many branch (top-10) and the one-to-one branch (top-1) are each
scored by the same :class:`DetectionLoss` and summed, parts and total alike.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..boxes import boxes_to_distances, ciou, expand_to_min_size, xywh2xyxy
from ..nn.head import DFL, dist2bbox, make_anchors

GAINS = {"box": 7.5, "cls": 0.5, "dfl": 1.5}  # the reference's hyperparameter names and defaults


class Assignment(NamedTuple):
    """What each anchor is trained towards.

    Attributes:
        target_boxes: ``(B, A, 4)`` xyxy pixels, the assigned ground-truth box (meaningless where not foreground).
        target_scores: ``(B, A, nc)`` soft one-hot: at the assigned class, the anchor's alignment normalised so that
            the best-aligned anchor of each ground truth gets that ground truth's best IoU; 0 elsewhere.
        foreground: ``(B, A)`` bool, anchors assigned to a ground truth.
        target_index: ``(B, A)`` long, index of the assigned ground truth in ``G`` (0 where not foreground).
    """

    target_boxes: torch.Tensor
    target_scores: torch.Tensor
    foreground: torch.Tensor
    target_index: torch.Tensor


@torch.no_grad()
def assign(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, anchor_points: torch.Tensor, gt_labels: torch.Tensor,
           gt_boxes: torch.Tensor, gt_mask: torch.Tensor, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
           min_size: float = 16.0, eps: float = 1e-9) -> Assignment:
    """Task-aligned assignment (TOOD, Feng et al. 2021) as the reference trainer does it.

    1. Candidates of a ground truth: anchors whose centre lies strictly inside its box, the box first widened
       to ``min_size`` pixels on each short side (the reference uses its second stride, 16 px).
    2. Alignment of a candidate: ``score ** alpha * CIoU ** beta``, with the predicted score of the ground truth's
       class and the CIoU (clamped at 0) of the predicted box with the ground-truth box.
    3. Positives of a ground truth: its ``topk`` best-aligned anchors that are candidates.
    4. An anchor positive for several ground truths goes to the one (among all it is a candidate of) it overlaps
       most.
    5. Target scores: alignment normalised per ground truth (see :class:`Assignment`).

    Args:
        pred_scores: ``(B, A, nc)`` class probabilities (after sigmoid).
        pred_boxes: ``(B, A, 4)`` predicted xyxy boxes, pixels.
        anchor_points: ``(A, 2)`` anchor centres ``(x, y)``, pixels.
        gt_labels: ``(B, G)`` long class of each ground truth.
        gt_boxes: ``(B, G, 4)`` xyxy pixels.
        gt_mask: ``(B, G)`` bool, True for real ground truths, False for padding.
        topk: positives per ground truth (10 one-to-many, 1 one-to-one).
        alpha, beta: exponents of the classification and localisation terms of the alignment.
        min_size: pixels, the smallest box side used for choosing candidates.
        eps: guards the normalisation against a ground truth with zero alignment everywhere.
    """
    batch, num_anchors, nc = pred_scores.shape
    if gt_boxes.shape[1] == 0:
        return Assignment(pred_boxes.new_zeros(batch, num_anchors, 4), pred_scores.new_zeros(batch, num_anchors, nc),
                          pred_scores.new_zeros(batch, num_anchors, dtype=torch.bool),
                          pred_scores.new_zeros(batch, num_anchors, dtype=torch.long))
    candidates = candidate_mask(anchor_points, gt_boxes, min_size) & gt_mask[..., None]
    alignment, overlaps = alignment_metrics(pred_scores, pred_boxes, gt_labels, gt_boxes, candidates, alpha, beta)
    positives = top_aligned(alignment, topk) & candidates
    positives = keep_best_overlap(positives, overlaps)
    foreground = positives.any(1)
    target_index = positives.byte().max(1).indices  # max(dim) is ~10x argmax(dim) over a middle dim on CPU
    target_boxes = gt_boxes.gather(1, target_index[..., None].expand(-1, -1, 4))
    target_labels = gt_labels.gather(1, target_index)
    strength = normalised_alignment(alignment, overlaps, positives, eps) * foreground
    target_scores = torch.zeros_like(pred_scores).scatter_(-1, target_labels[..., None], strength[..., None])
    return Assignment(target_boxes, target_scores, foreground, target_index)


def candidate_mask(anchor_points: torch.Tensor, gt_boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """``(B, G, A)`` bool: anchor ``(A, 2)`` strictly inside gt box ``(B, G, 4)`` widened to ``min_size`` (pixels)."""
    boxes = expand_to_min_size(gt_boxes, min_size)[:, :, None]  # (B, G, 1, 4)
    return boxes_to_distances(anchor_points, boxes).amin(-1) > 1e-9


def alignment_metrics(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, gt_labels: torch.Tensor,
                      gt_boxes: torch.Tensor, candidates: torch.Tensor, alpha: float, beta: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment ``score ** alpha * overlap ** beta`` and overlap ``max(CIoU, 0)``, each ``(B, G, A)``, 0 off the
    ``candidates`` ``(B, G, A)``. Computed for the candidate pairs only (a few per cent of all pairs)."""
    image, gt, anchor = candidates.nonzero(as_tuple=True)
    overlap = ciou(gt_boxes[image, gt], pred_boxes[image, anchor]).clamp(min=0)
    score = pred_scores[image, anchor, gt_labels[image, gt]]
    alignment = torch.zeros(candidates.shape, dtype=pred_scores.dtype, device=pred_scores.device)
    overlaps = torch.zeros(candidates.shape, dtype=pred_boxes.dtype, device=pred_boxes.device)
    alignment[image, gt, anchor] = score.pow(alpha) * overlap.pow(beta)
    overlaps[image, gt, anchor] = overlap
    return alignment, overlaps


def top_aligned(alignment: torch.Tensor, topk: int) -> torch.Tensor:
    """``(B, G, A)`` bool marking the ``topk`` anchors of largest ``alignment`` ``(B, G, A)`` for each ground truth."""
    best = alignment.topk(min(topk, alignment.shape[-1]), dim=-1).indices
    return torch.zeros_like(alignment, dtype=torch.bool).scatter_(-1, best, True)


def keep_best_overlap(positives: torch.Tensor, overlaps: torch.Tensor) -> torch.Tensor:
    """Anchors positive for more than one ground truth in ``positives`` ``(B, G, A)`` are given to the ground truth
    of largest overlap ``(B, G, A)`` instead; the result has at most one True per anchor."""
    contested = positives.sum(1, keepdim=True) > 1  # (B, 1, A)
    best = torch.zeros_like(positives).scatter_(1, overlaps.max(1, keepdim=True).indices, True)
    return torch.where(contested, best, positives)


def normalised_alignment(alignment: torch.Tensor, overlaps: torch.Tensor, positives: torch.Tensor,
                         eps: float) -> torch.Tensor:
    """``(B, A)``: each positive's alignment rescaled so its ground truth's best positive gets the ground truth's
    best positive overlap; inputs ``(B, G, A)``, ``positives`` with at most one True per anchor."""
    alignment, overlaps = alignment * positives, overlaps * positives
    best_alignment = alignment.amax(-1, keepdim=True)  # (B, G, 1)
    best_overlap = overlaps.amax(-1, keepdim=True)
    return (alignment * best_overlap / (best_alignment + eps)).amax(1)


def pad_targets(targets: torch.Tensor, batch_size: int, image_hw: tuple[int, int], nc: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loader targets → per-image padded tensors.

    Args:
        targets: ``(M, 6)`` rows ``[image index, class, cx, cy, w, h]`` with the box normalised to the image size.
        batch_size: ``B``.
        image_hw: ``(H, W)`` pixels of the batch's images.
        nc: classes; a class outside ``[0, nc)`` or an image index outside ``[0, B)`` raises ValueError.

    Returns:
        labels ``(B, G)`` long, boxes ``(B, G, 4)`` xyxy pixels and mask ``(B, G)`` bool (False for padding), with
        ``G`` the most boxes any image has; each image keeps its boxes in their order in ``targets``.
    """
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be (M, 6) rows [image, class, cx, cy, w, h], got {tuple(targets.shape)}")
    image, cls = targets[:, 0].long(), targets[:, 1].long()
    for name, values, end in (("image indices", image, batch_size), ("classes", cls, nc)):
        if len(values) and (values.min() < 0 or values.max() >= end):
            raise ValueError(f"target {name} must lie in [0, {end}), got {int(values.min())}..{int(values.max())}")
    counts = torch.bincount(image, minlength=batch_size)
    order = torch.sort(image, stable=True).indices
    image, cls, rows = image[order], cls[order], targets[order]
    slot = torch.arange(len(image), device=targets.device) - (counts.cumsum(0) - counts)[image]
    most = int(counts.max()) if len(image) else 0
    height, width = image_hw
    scale = rows.new_tensor([width, height, width, height])
    labels = torch.zeros(batch_size, most, dtype=torch.long, device=targets.device)
    boxes = torch.zeros(batch_size, most, 4, dtype=torch.float32, device=targets.device)
    mask = torch.zeros(batch_size, most, dtype=torch.bool, device=targets.device)
    labels[image, slot] = cls
    boxes[image, slot] = xywh2xyxy(rows[:, 2:6].float() * scale)
    mask[image, slot] = True
    return labels, boxes, mask


def distribution_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DFL (Li et al. 2020): ``(N, 4, R)`` bin logits and ``(N, 4)`` target distances in bins, in ``[0, R - 1)``
    → ``(N,)``. Per side, cross-entropy against the two bins around the target, weighted by closeness (a target of
    2.3 is 70 % bin 2, 30 % bin 3); the mean over the four sides."""
    log_probs = logits.log_softmax(-1)
    left = targets.long()
    right_weight = targets - left
    log_left = log_probs.gather(-1, left[..., None]).squeeze(-1)
    log_right = log_probs.gather(-1, left[..., None] + 1).squeeze(-1)
    return -(log_left * (1 - right_weight) + log_right * right_weight).mean(-1)


def _scaled(parts: dict[str, torch.Tensor], batch_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(B * sum of parts, detached parts)``: the reference's backward total and logged values."""
    return sum(parts.values()) * batch_size, {name: value.detach() for name, value in parts.items()}


class DetectionLoss:
    """YOLOv8 loss: task-aligned assignment with ``topk`` positives per ground truth, then box, cls and dfl parts.

    Call with the train-mode output (list of ``L`` maps ``(B, 4 * R + nc, H_i, W_i)``), the loader's targets
    ``(M, 6)`` (see :func:`pad_targets`) and the image size ``(H, W)`` pixels; returns ``(total, parts)``:
    ``total`` the scalar to back-propagate, ``B * (box + cls + dfl)``, and ``parts`` a dict ``{"box", "cls", "dfl"}``
    of detached 0-d tensors, each normalised by the target-score sum and multiplied by its gain (what the reference
    logs as ``box_loss``, ``cls_loss``, ``dfl_loss``). Computed in float32 whatever the maps' dtype.

    Args:
        nc: classes.
        strides: ``(L,)`` pixels per cell of each level, e.g. ``(8, 16, 32)``.
        reg_max: ``R``, bins per box side.
        gains: ``{"box", "cls", "dfl"}`` multipliers; missing keys take :data:`GAINS`.
        topk: positives per ground truth in the assignment.
    """

    def __init__(self, nc: int, strides: tuple[float, ...], reg_max: int = 16, gains: Mapping[str, float] | None = None,
                 topk: int = 10, alpha: float = 0.5, beta: float = 6.0):
        self.nc, self.strides, self.reg_max = nc, tuple(float(s) for s in strides), reg_max
        self.gains = {name: float((gains or {}).get(name, default)) for name, default in GAINS.items()}
        self.topk, self.alpha, self.beta = topk, alpha, beta
        self.min_size = self.strides[1] if len(self.strides) > 1 else self.strides[0]
        self.integral = DFL(reg_max)

    def __call__(self, maps: list[torch.Tensor], targets: torch.Tensor, image_hw: tuple[int, int]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return _scaled(self.parts(maps, targets, image_hw), maps[0].shape[0])

    def parts(self, maps: list[torch.Tensor], targets: torch.Tensor, image_hw: tuple[int, int]
              ) -> dict[str, torch.Tensor]:
        """Differentiable ``{"box", "cls", "dfl"}`` 0-d tensors, gains applied, not multiplied by ``B``."""
        box_logits, cls_logits = self.flatten(maps, image_hw)  # (B, A, 4R), (B, A, nc)
        points, strides = make_anchors(maps, self.strides)  # (A, 2) grid units, (A, 1) pixels
        points, strides = points.float(), strides.float()
        distances = self.integral.to(box_logits.device)(box_logits.transpose(1, 2)).transpose(1, 2)  # (B, A, 4) grid
        pred_boxes = dist2bbox(distances, points, xywh=False)  # (B, A, 4) grid units
        labels, gt_boxes, gt_mask = pad_targets(targets.to(box_logits.device), len(box_logits), image_hw, self.nc)
        match = assign(cls_logits.detach().sigmoid(), pred_boxes.detach() * strides, points * strides, labels,
                       gt_boxes, gt_mask, self.topk, self.alpha, self.beta, self.min_size)
        score_sum = match.target_scores.sum().clamp(min=1)
        cls = F.binary_cross_entropy_with_logits(cls_logits, match.target_scores, reduction="sum") / score_sum
        fg = match.foreground
        weight = match.target_scores.sum(-1)[fg]  # (N,) for the N foreground anchors
        target_boxes = match.target_boxes / strides  # grid units
        box = ((1 - ciou(pred_boxes[fg], target_boxes[fg])) * weight).sum() / score_sum
        target_distances = boxes_to_distances(points, target_boxes, self.reg_max - 1.01)  # the right bin stays < R
        bins = box_logits[fg].view(-1, 4, self.reg_max)
        dfl = (distribution_focal_loss(bins, target_distances[fg]) * weight).sum() / score_sum
        losses = {"box": box, "cls": cls, "dfl": dfl}
        return {name: value * self.gains[name] for name, value in losses.items()}

    def flatten(self, maps: list[torch.Tensor], image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-level maps → box logits ``(B, A, 4 R)`` and class logits ``(B, A, nc)``, float32; checks the shapes."""
        channels = 4 * self.reg_max + self.nc
        if len(maps) != len(self.strides) or any(m.ndim != 4 or m.shape[1] != channels for m in maps):
            raise ValueError(f"expected {len(self.strides)} maps (B, {channels}, H, W), got "
                             f"{[tuple(m.shape) for m in maps]}")
        height, width = maps[0].shape[-2:]
        if (height * self.strides[0], width * self.strides[0]) != tuple(image_hw):
            raise ValueError(f"image size {tuple(image_hw)} does not match the first map "
                             f"{height}x{width} at stride {self.strides[0]:g}")
        flat = torch.cat([m.flatten(2) for m in maps], 2).float().transpose(1, 2)  # (B, A, 4R + nc)
        return flat.split((4 * self.reg_max, self.nc), -1)


class DualAssignmentLoss:
    """YOLOv10 consistent dual assignment: :class:`DetectionLoss` on the one-to-many branch (``topk`` 10) plus the
    same loss on the one-to-one branch (``topk`` 1), parts and total summed; equal weights, as in the paper.

    Call with ``{"one2many": maps, "one2one": maps}``, targets and image size; returns ``(total, parts)`` as
    :class:`DetectionLoss`, each part the sum of the two branches' parts.
    """

    def __init__(self, nc: int, strides: tuple[float, ...], reg_max: int = 16, gains: Mapping[str, float] | None = None,
                 one2many_topk: int = 10, one2one_topk: int = 1):
        self.branches = {"one2many": DetectionLoss(nc, strides, reg_max, gains, topk=one2many_topk),
                         "one2one": DetectionLoss(nc, strides, reg_max, gains, topk=one2one_topk)}

    def __call__(self, outputs: Mapping[str, list[torch.Tensor]], targets: torch.Tensor, image_hw: tuple[int, int]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(outputs, Mapping) or set(outputs) != set(self.branches):
            raise ValueError(f"expected a dict with keys {sorted(self.branches)} (YOLOv10 train-mode output)")
        per_branch = [loss.parts(outputs[name], targets, image_hw) for name, loss in self.branches.items()]
        parts = {name: sum(p[name] for p in per_branch) for name in GAINS}
        return _scaled(parts, outputs["one2many"][0].shape[0])


def build_loss(model, hyp: Mapping[str, float] | None = None) -> DetectionLoss | DualAssignmentLoss:
    """The loss for a :class:`yolofreeze.model.YOLO`: :class:`DualAssignmentLoss` for YOLOv10, else
    :class:`DetectionLoss`; gains read from ``hyp`` (keys ``box``, ``cls``, ``dfl``; others ignored)."""
    gains = {name: hyp[name] for name in GAINS if name in hyp} if hyp else None
    kind = DualAssignmentLoss if model.is_v10 else DetectionLoss
    return kind(model.nc, tuple(model.stride.tolist()), model.head.reg_max, gains)
