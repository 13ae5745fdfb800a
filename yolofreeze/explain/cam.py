"""Class-activation maps of a detector: where the evidence for each detection sits in the image.

For one image: letterbox it as the reference does → run the model in eval mode with gradients on, unfused (fusing
Conv and BatchNorm would remove the hooked modules), keeping the outputs of the chosen blocks (forward hooks) →
post-process the decoded output ``(1, 4 + nc, A)`` → for every kept detection, the scalar it is explained by
(``target``: its class score, the sum of its four box coordinates, or both) → the gradient of that scalar with
respect to each kept output (``torch.autograd.grad`` on the graph kept alive, so nothing detaches and nothing
accumulates between detections) → one map per block → each normalised to [0, 1], resized to the letterboxed input,
averaged over the blocks and normalised again → mapped back through the letterbox to the original image's pixels
(the same affine map ``x_input = x_original * gain + pad`` that :func:`yolofreeze.boxes.unletterbox_boxes` inverts
for boxes), so the padding never appears in a result.

Methods, for activations ``A (C, h, w)`` and gradients ``G`` of the same shape:

- ``gradcam`` (Selvaraju et al., 2017): channel weights ``w_c = mean_ij G_cij``; map ``ReLU(sum_c w_c A_c)``.
- ``gradcam++`` (Chattopadhay et al., 2018): ``alpha_cij = G² / (2 G² + sum_ij A_cij G³)`` (0 where the denominator
  is 0), ``w_c = sum_ij alpha_cij ReLU(G_cij)``; map ``ReLU(sum_c w_c A_c)``.
- ``eigencam`` (Muhammad & Yeasin, 2020), no gradient: the activations as ``h*w`` points in ``C`` dimensions,
  centred per channel, projected on their first principal direction (first right-singular vector); the sign of a
  singular vector is arbitrary, so it is chosen to make the projection's largest-magnitude value positive; map
  ``ReLU(projection)``.

A map that is constant (a target with no gradient, a uniform activation) normalises to all zeros, never NaN.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..boxes import unletterbox_boxes, xywh2xyxy
from ..evaluation.detect import letterboxed_input
from ..evaluation.postprocess import postprocess
from ..model import YOLO

METHODS = ("gradcam", "gradcam++", "eigencam")
TARGETS = ("class", "box", "all")


def normalise(cam: torch.Tensor) -> torch.Tensor:
    """``cam`` min-max scaled to [0, 1] over its last two dimensions; a constant map becomes zeros."""
    low = cam.amin(dim=(-2, -1), keepdim=True)
    span = cam.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (cam - low) / span.clamp(min=torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM map ``(h, w)`` (not normalised) from ``activations`` and ``gradients`` ``(C, h, w)``."""
    weights = gradients.mean(dim=(1, 2))
    return torch.relu(torch.einsum("c,chw->hw", weights, activations))


def gradcam_plus_plus(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map ``(h, w)`` (not normalised) from ``activations`` and ``gradients`` ``(C, h, w)``."""
    squared, cubed = gradients ** 2, gradients ** 3
    denominator = 2 * squared + activations.sum(dim=(1, 2), keepdim=True) * cubed
    alpha = torch.where(denominator != 0, squared / torch.where(denominator != 0, denominator, 1), 0)
    weights = (alpha * torch.relu(gradients)).sum(dim=(1, 2))
    return torch.relu(torch.einsum("c,chw->hw", weights, activations))


def eigencam(activations: torch.Tensor) -> torch.Tensor:
    """EigenCAM map ``(h, w)`` (not normalised): the centred activations ``(C, h, w)`` projected on their first
    principal direction, signed so that the largest-magnitude value is positive."""
    channels, h, w = activations.shape
    points = activations.reshape(channels, h * w).T.double()
    points = points - points.mean(dim=0)
    _, _, vh = torch.linalg.svd(points, full_matrices=False)
    projection = points @ vh[0]
    if projection[projection.abs().argmax()] < 0:
        projection = -projection
    return projection.reshape(h, w).to(activations.dtype)


@dataclass
class Explained:
    """The maps of one image: ``detections (N, 6)`` (``x1, y1, x2, y2`` in original pixels, score, class), one
    ``maps[k] (H0, W0)`` float32 in [0, 1] per detection (original pixels), and the letterbox that was undone."""

    detections: torch.Tensor
    maps: list[np.ndarray]
    gain: tuple[float, float]
    pad: tuple[float, float]


class _Kept:
    """Forward hooks that keep the outputs of ``model.model[i]`` for ``layers``; removed by :meth:`remove`."""

    def __init__(self, model: YOLO, layers: Sequence[int]) -> None:
        self.outputs: dict[int, torch.Tensor] = {}
        self.handles = [model.model[i].register_forward_hook(self._keeper(i)) for i in layers]

    def _keeper(self, index: int):
        def keep(module, inputs, output):
            self.outputs[index] = output
        return keep

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def default_layers(model: YOLO) -> list[int]:
    """The blocks the detection head reads (P3, P4, P5 of the neck: 15, 18, 21 on YOLOv8; 16, 19, 22 on YOLOv10)."""
    return model.sources(len(model.blocks) - 1)


def anchor_of(pred: torch.Tensor, detection: torch.Tensor) -> int:
    """The anchor (column of ``pred (4 + nc, A)``, one image's decoded output) a post-processed ``detection``
    ``(6,)`` in input pixels came from: the one whose box and class score it carries (exactly, as post-processing
    copies them)."""
    boxes = xywh2xyxy(pred[:4].T)
    scores = pred[4 + int(detection[5])]
    distance = (boxes - detection[:4]).abs().sum(1) + (scores - detection[4]).abs()
    return int(distance.argmin())


def target_value(pred: torch.Tensor, anchor: int, cls: int, target: str) -> torch.Tensor:
    """The scalar a detection's map explains, from ``pred (4 + nc, A)``: its class score (``"class"``), the sum of
    its xywh box coordinates in input pixels (``"box"``), or both summed (``"all"``)."""
    if target not in TARGETS:
        raise ValueError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    score, box = pred[4 + cls, anchor], pred[:4, anchor].sum()
    return {"class": score, "box": box, "all": score + box}[target]


def unletterbox_map(cam: torch.Tensor, gain: tuple[float, float], pad: tuple[float, float],
                    orig_hw: tuple[int, int]) -> torch.Tensor:
    """A map ``(H, W)`` on the letterboxed input → ``(H0, W0)`` on the original image: each original pixel centre
    ``(x + 0.5, y + 0.5)`` is sampled (bilinear) at ``x_input = x * gain + pad`` — padding is never sampled."""
    height, width = cam.shape
    h0, w0 = orig_hw
    xs = (torch.arange(w0, dtype=torch.float64) + 0.5) * gain[0] + pad[0]
    ys = (torch.arange(h0, dtype=torch.float64) + 0.5) * gain[1] + pad[1]
    grid = torch.stack(torch.meshgrid(2 * xs / width - 1, 2 * ys / height - 1, indexing="xy"), -1)
    sampled = F.grid_sample(cam[None, None].double(), grid[None], mode="bilinear", align_corners=False,
                            padding_mode="border")
    return sampled[0, 0].float()


def check_request(model: YOLO, layers: Sequence[int], method: str, target: str) -> None:
    """Raise ValueError (one line) for an unknown method or target, or a block that is not before the head."""
    if method not in METHODS:
        raise ValueError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise ValueError(f"--target {target}: choose one of {', '.join(TARGETS)}")
    bad = [i for i in layers if not 0 <= i < len(model.blocks) - 1]
    if bad or not layers:
        raise ValueError(f"--layers {bad[0] if bad else ''}: {model.arch}'s blocks before the head are "
                         f"0-{len(model.blocks) - 2}")


def _combine(per_layer: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Maps ``(h, w)`` of several blocks → one ``size`` map in [0, 1]: each normalised, resized (bilinear), then
    averaged and normalised again."""
    resized = [F.interpolate(normalise(m)[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
               for m in per_layer]
    return normalise(torch.stack(resized).mean(0))


def layer_maps(model: YOLO, x: torch.Tensor, layers: Sequence[int], method: str, target: str, conf: float,
               iou: float = 0.7, max_det: int = 300) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Detections ``(N, 6)`` in input pixels of one letterboxed image ``x (1, 3, H, W)`` in [0, 1], and for each
    its map ``(H, W)`` in [0, 1] on the input: per block the method's map, normalised, resized (bilinear) to the
    input, averaged over ``layers`` and normalised again.

    Raises ValueError for an unknown method or target, or a block index outside the model.
    """
    check_request(model, layers, method, target)
    model.eval()
    kept = _Kept(model, layers)
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)  # so that every hooked output is part of a graph
            pred = model(x)
            pred = pred[0] if isinstance(pred, (tuple, list)) else pred
            detections = postprocess(pred.detach(), model.nms_free, conf=conf, iou=iou, max_det=max_det)[0]
            outputs = [kept.outputs[i] for i in layers]
            if method == "eigencam":  # no gradient, no target: one map serves every detection
                shared = _combine([torch.relu(eigencam(a[0].detach())) for a in outputs], x.shape[-2:])
                maps = [shared] * len(detections)
            else:
                combine = gradcam if method == "gradcam" else gradcam_plus_plus
                maps = []
                for row in detections:
                    value = target_value(pred[0], anchor_of(pred[0].detach(), row), int(row[5]), target)
                    grads = torch.autograd.grad(value, outputs, retain_graph=True, allow_unused=True)
                    maps.append(_combine([combine(a[0].detach(), torch.zeros_like(a[0]) if g is None else g[0])
                                          for a, g in zip(outputs, grads, strict=True)], x.shape[-2:]))
    finally:
        kept.remove()
    return detections.detach(), maps


def explain_image(model: YOLO, path, imgsz: int = 640, layers: Sequence[int] | None = None,
                  method: str = "gradcam", target: str = "class", conf: float = 0.25, iou: float = 0.7,
                  max_det: int = 300) -> Explained:
    """The detections of an image file and their maps on the original image (see :func:`layer_maps`)."""
    image = letterboxed_input(path, imgsz, next(model.parameters()).device)
    detections, maps = layer_maps(model, image.x, list(layers) if layers else default_layers(model), method,
                                  target, conf, iou, max_det)
    detections = detections.cpu().clone()
    detections[:, :4] = unletterbox_boxes(detections[:, :4], image.gain, image.pad, image.orig_hw)
    originals = [normalise(unletterbox_map(m.cpu(), image.gain, image.pad, image.orig_hw)).numpy() for m in maps]
    return Explained(detections, originals, image.gain, image.pad)


def peak(cam: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the map's maximum (pixels)."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(x), int(y)


def energy_in_boxes(cam: np.ndarray, boxes: Sequence[Sequence[float]]) -> float:
    """The fraction of the map's mass inside the union of ``boxes`` (xyxy pixels; a pixel counts when its centre
    is inside); 0 for an all-zero map."""
    total = float(cam.sum())
    if total <= 0:
        return 0.0
    h, w = cam.shape
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    inside = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        inside |= (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    return float(cam[inside].sum()) / total
