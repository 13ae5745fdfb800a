"""Decoded model output → detections.

Input everywhere: ``pred (B, 4 + nc, A)`` from the model in eval mode (xywh boxes in input pixels,
sigmoid scores). Output: one ``(N, 6)`` tensor per image, rows ``(x1, y1, x2, y2, score, class)``,
sorted by score, at most ``max_det`` rows.

* YOLOv8: confidence filter → class-aware NMS (torchvision) → ``max_det``.
* YOLOv10, one-to-one branch (default): NMS-free: top-``max_det`` (anchor, class) pairs, then the confidence filter.
* YOLOv10, one-to-many branch (``YOLO.use_v10_head("one2many")``): as YOLOv8.
"""
from __future__ import annotations

import torch
import torchvision

from ..boxes import xywh2xyxy

MAX_WH = 7680  # class offset for class-aware NMS: larger than any image side, so classes never overlap
MAX_NMS = 30000  # boxes kept (highest scores first) before NMS


def nms(pred: torch.Tensor, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, multi_label: bool = False
        ) -> list[torch.Tensor]:
    """YOLOv8 post-processing of ``pred (B, 4 + nc, A)``: per image, keep scores > ``conf``, run NMS per class,
    keep ``max_det``. Returns per image ``(N, 6)``: ``x1, y1, x2, y2`` (input pixels), score, class.

    ``multi_label`` keeps every (box, class) pair above ``conf`` (used for mAP evaluation);
    otherwise each box keeps only its best class.
    """
    nc = pred.shape[1] - 4
    out = []
    for image in pred.transpose(1, 2):  # (A, 4 + nc)
        image = image[image[:, 4:].amax(1) > conf]
        boxes, scores = xywh2xyxy(image[:, :4]), image[:, 4:4 + nc]
        if multi_label:
            i, j = torch.where(scores > conf)
            det = torch.cat((boxes[i], scores[i, j, None], j[:, None].float()), 1)
        else:
            best, j = scores.max(1, keepdim=True)
            det = torch.cat((boxes, best, j.float()), 1)[best.view(-1) > conf]
        if det.shape[0] > MAX_NMS:
            det = det[det[:, 4].argsort(descending=True)[:MAX_NMS]]
        offsets = det[:, 5:6] * MAX_WH
        keep = torchvision.ops.nms(det[:, :4] + offsets, det[:, 4], iou)[:max_det]
        out.append(det[keep])
    return out


def topk(pred: torch.Tensor, conf: float = 0.25, max_det: int = 300) -> list[torch.Tensor]:
    """YOLOv10 NMS-free post-processing of ``pred (B, 4 + nc, A)``: the ``max_det`` best (anchor, class) scores,
    then ``score > conf``. Returns per image ``(N, 6)`` as :func:`nms` does.

    First the ``k = min(max_det, A)`` anchors with the highest best-class score are kept, then the
    top ``k`` of their ``k * nc`` (anchor, class) scores; an anchor may appear with several classes.
    """
    b, channels, anchors = pred.shape
    nc = channels - 4
    k = min(max_det, anchors)
    boxes, scores = xywh2xyxy(pred[:, :4].transpose(1, 2)), pred[:, 4:].transpose(1, 2)  # (B, A, 4), (B, A, nc)
    anchor_idx = scores.amax(-1).topk(k, dim=-1).indices  # (B, k)
    scores = scores.gather(1, anchor_idx[..., None].expand(-1, -1, nc))  # (B, k, nc)
    best, flat_idx = scores.flatten(1).topk(k, dim=-1)  # (B, k)
    labels = flat_idx % nc
    picked = anchor_idx.gather(1, flat_idx // nc)
    boxes = boxes.gather(1, picked[..., None].expand(-1, -1, 4))
    det = torch.cat((boxes, best[..., None], labels[..., None].float()), -1)  # (B, k, 6)
    return [image[image[:, 4] > conf] for image in det]


def postprocess(pred: torch.Tensor, nms_free: bool, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                multi_label: bool = False) -> list[torch.Tensor]:
    """Pick the post-processing the output needs: :func:`topk` when ``nms_free`` (``YOLO.nms_free``: YOLOv10's
    one-to-one branch), else :func:`nms`."""
    if nms_free:
        return topk(pred, conf=conf, max_det=max_det)
    return nms(pred, conf=conf, iou=iou, max_det=max_det, multi_label=multi_label)
