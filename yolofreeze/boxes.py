"""Pure box geometry: format conversion, overlap measures, anchor distances and mapping boxes back through a
letterbox. No nn.Module here.

Boxes are ``(..., 4)`` tensors in pixels unless said otherwise: ``xyxy`` = (x1, y1, x2, y2),
``xywh`` = (centre x, centre y, width, height). Pairwise functions compare ``boxes1[i]`` with ``boxes2[i]``
(broadcasting over the leading dimensions), not every box with every box.
"""
from __future__ import annotations

import math

import torch


def xywh2xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre/size → corners."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((xy - wh / 2, xy + wh / 2), -1)


def xyxy2xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corners → centre/size."""
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:4]
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), -1)


def iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Intersection over union of paired xyxy boxes ``(..., 4)`` → ``(...)``; ``eps`` keeps empty unions finite."""
    return _iou_and_enclosure(boxes1, boxes2, eps)[0]


def ciou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU (Zheng et al. 2020) of paired xyxy boxes ``(..., 4)`` → ``(...)``, in [-1.5, 1].

    ``IoU - d² / c² - alpha * v`` with ``d`` the distance between the centres, ``c`` the diagonal of the
    smallest enclosing box, ``v = 4 / pi² * (atan(w1 / h1) - atan(w2 / h2))²`` the aspect-ratio mismatch and
    ``alpha = v / (1 - IoU + v)``. As in the paper, ``alpha`` is a weight, not differentiated through.
    Any consistent length unit works; ``eps`` (same unit, squared for ``c²``) only guards divisions.
    """
    overlap, enclosure = _iou_and_enclosure(boxes1, boxes2, eps)
    centre_distance_sq = (xyxy2xywh(boxes1)[..., :2] - xyxy2xywh(boxes2)[..., :2]).pow(2).sum(-1)
    diagonal_sq = (enclosure[..., 2:] - enclosure[..., :2]).pow(2).sum(-1) + eps
    aspect_gap = 4 / math.pi ** 2 * (_aspect_angle(boxes1) - _aspect_angle(boxes2)).pow(2)
    with torch.no_grad():
        alpha = aspect_gap / (1 - overlap + aspect_gap + eps)
    return overlap - centre_distance_sq / diagonal_sq - alpha * aspect_gap


def _aspect_angle(boxes: torch.Tensor) -> torch.Tensor:
    """``atan(w / h)`` of xyxy boxes ``(..., 4)`` → ``(...)``, also defined for zero heights (pi / 2)."""
    return torch.atan2(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])


def _iou_and_enclosure(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU ``(...)`` of paired xyxy boxes and their smallest enclosing xyxy box ``(..., 4)``."""
    inner_wh = (torch.minimum(boxes1[..., 2:], boxes2[..., 2:]) - torch.maximum(boxes1[..., :2], boxes2[..., :2]))
    intersection = inner_wh.clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).prod(-1)
    overlap = intersection / (area1 + area2 - intersection + eps)
    enclosure = torch.cat((torch.minimum(boxes1[..., :2], boxes2[..., :2]),
                           torch.maximum(boxes1[..., 2:], boxes2[..., 2:])), -1)
    return overlap, enclosure


def boxes_to_distances(points: torch.Tensor, boxes: torch.Tensor, max_distance: float | None = None) -> torch.Tensor:
    """Distances (left, top, right, bottom) ``(..., 4)`` from points ``(..., 2)`` to the sides of xyxy boxes
    ``(..., 4)``, same unit; negative when the point is outside. With ``max_distance`` they are clamped to
    ``[0, max_distance]``. The inverse of ``yolofreeze.nn.head.dist2bbox(..., xywh=False)``."""
    distances = torch.cat((points - boxes[..., :2], boxes[..., 2:4] - points), -1)
    return distances if max_distance is None else distances.clamp(0, max_distance)


def expand_to_min_size(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """xyxy boxes ``(..., 4)`` with every side shorter than ``min_size`` widened to it about the box centre."""
    centre_size = xyxy2xywh(boxes)
    return xywh2xyxy(torch.cat((centre_size[..., :2], centre_size[..., 2:].clamp(min=min_size)), -1))


def unletterbox_boxes(boxes: torch.Tensor, gain: tuple[float, float], pad: tuple[float, float],
                      orig_hw: tuple[int, int]) -> torch.Tensor:
    """Map ``(N, 4)`` xyxy boxes from letterboxed-canvas pixels back to original-image pixels, clipped to the image."""
    out = boxes.clone()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad[0]) / gain[0]).clamp(0, orig_hw[1])
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad[1]) / gain[1]).clamp(0, orig_hw[0])
    return out
