"""Pure box geometry: format conversion and mapping boxes back through a letterbox. No nn.Module here.

Boxes are ``(..., 4)`` tensors in pixels unless said otherwise: ``xyxy`` = (x1, y1, x2, y2),
``xywh`` = (centre x, centre y, width, height).
"""
from __future__ import annotations

import torch


def xywh2xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre/size → corners."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((xy - wh / 2, xy + wh / 2), -1)


def unletterbox_boxes(boxes: torch.Tensor, gain: tuple[float, float], pad: tuple[float, float],
                      orig_hw: tuple[int, int]) -> torch.Tensor:
    """Map ``(N, 4)`` xyxy boxes from letterboxed-canvas pixels back to original-image pixels, clipped to the image."""
    out = boxes.clone()
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad[0]) / gain[0]).clamp(0, orig_hw[1])
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad[1]) / gain[1]).clamp(0, orig_hw[0])
    return out
