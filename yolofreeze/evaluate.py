"""Evaluate a detector on a dataset split with pycocotools.

Data flow: records → letterboxed rectangular batches → model (eval mode) → NMS / top-k → boxes mapped back
to original-image pixels → COCO results (``predictions.json``) → ``COCOeval`` (bbox) against the split's
ground truth converted to COCO format in memory (whatever the source format).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from .boxes import unletterbox_boxes
from .data import ImageRecord, build_dataloader, to_coco_gt
from .model import YOLO
from .postprocess import postprocess

LOGGER = logging.getLogger(__name__)


@dataclass
class ClassAP:
    """Per-class result: instances and images in the ground truth (ignored boxes excluded), AP@50:95 and AP@50."""

    name: str
    images: int
    instances: int
    ap50_95: float
    ap50: float


@dataclass
class EvalResult:
    """Metrics of one evaluation; ``speed_ms`` per image: preprocess, inference, postprocess."""

    map50_95: float
    map50: float
    map75: float
    ar100: float
    per_class: list[ClassAP]
    speed_ms: dict[str, float] = field(default_factory=dict)
    images: int = 0
    instances: int = 0

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_records(model: YOLO, records: Sequence[ImageRecord], category_ids: Sequence[int], imgsz: int = 640,
                    batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                    workers: int = 0, progress: bool = True) -> tuple[list[dict], dict[str, float], list[int]]:
    """Run ``model`` over ``records``: COCO-format detections, the time per image in ms, and the indices of
    the records whose image could not be read (they get no detections).

    Each detection is ``{"image_id", "category_id", "bbox": [x, y, w, h] (original pixels), "score"}``;
    class index ``k`` is written as ``category_ids[k]``. YOLOv8 uses multi-label NMS (every class
    above ``conf`` may keep a box, as mAP evaluation expects); YOLOv10 uses the top-k of its one-to-one head.
    """
    model.eval()
    device = next(model.parameters()).device
    loader = build_dataloader(records, imgsz=imgsz, batch=batch, rect=True, workers=workers,
                              stride=max(32, int(model.stride.max())))
    results, failed, totals = [], [], {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    start = time.perf_counter()
    for images, _, metas, unread in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        failed.extend(unread)
        if not metas:
            continue
        x = images.to(device, non_blocking=True).float() / 255
        _sync(device)
        t1 = time.perf_counter()
        pred = model(x)
        _sync(device)
        t2 = time.perf_counter()
        detections = postprocess(pred, model.is_v10, conf=conf, iou=iou, max_det=max_det, multi_label=True)
        for det, meta in zip(detections, metas):
            det = det.cpu()
            boxes = unletterbox_boxes(det[:, :4], meta.ratio, meta.pad, meta.orig_shape)
            boxes[:, 2:] -= boxes[:, :2]
            image_id = int(records[meta.index].image_id)
            for (x0, y0, w, h), score, cls in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
                results.append({"image_id": image_id, "category_id": int(category_ids[int(cls)]),
                                "bbox": [round(x0, 3), round(y0, 3), round(w, 3), round(h, 3)],
                                "score": round(score, 5)})
        t3 = time.perf_counter()
        totals["preprocess"] += t1 - start
        totals["inference"] += t2 - t1
        totals["postprocess"] += t3 - t2
        start = time.perf_counter()
    n = max(len(records), 1)
    return results, {k: v * 1000 / n for k, v in totals.items()}, failed


def coco_scores(gt: dict, detections: list[dict]) -> tuple[np.ndarray, np.ndarray | None]:
    """Score ``detections`` against ``gt`` with pycocotools (bbox).

    Returns ``stats (12,)`` (the standard COCOeval summary: [0] AP@50:95, [1] AP@50, [2] AP@75,
    [8] AR@100 …) and ``precision (T=10, R=101, K, A=4, M=3)`` (None when there is no detection).
    """
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; library code must not
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not detections:
            return np.zeros(12), None
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats), evaluator.eval["precision"]


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0


def score_split(gt: dict, detections: list[dict]) -> EvalResult:
    """pycocotools metrics plus the per-class AP table for one split's ground truth and detections."""
    stats, precision = coco_scores(gt, detections)
    per_class = []
    for k, category in enumerate(gt["categories"]):
        anns = [a for a in gt["annotations"] if a["category_id"] == category["id"] and not a["iscrowd"]]
        ap50_95 = ap50 = 0.0
        if precision is not None:
            ap50_95 = _mean_valid(precision[:, :, k, 0, -1])
            ap50 = _mean_valid(precision[0, :, k, 0, -1])
        per_class.append(ClassAP(category["name"], len({a["image_id"] for a in anns}), len(anns), ap50_95, ap50))
    return EvalResult(float(max(stats[0], 0)), float(max(stats[1], 0)), float(max(stats[2], 0)),
                      float(max(stats[8], 0)), per_class, images=len(gt["images"]),
                      instances=sum(c.instances for c in per_class))


def evaluate(model: YOLO, records: Sequence[ImageRecord], names: Sequence[str],
             category_ids: Sequence[int] | None = None, out_dir: str | Path | None = None, imgsz: int = 640,
             batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300, workers: int = 0,
             save_gt: bool = False, progress: bool = True) -> EvalResult:
    """Evaluate ``model`` on ``records``; writes ``predictions.json`` (and ``ground_truth.json``) to ``out_dir``."""
    if model.nc != len(names):
        raise ValueError(f"the model predicts {model.nc} classes but the dataset has {len(names)} "
                         f"({', '.join(names[:5])}…): evaluate a model trained for this dataset")
    gt = to_coco_gt(records, names, category_ids)
    ids = [c["id"] for c in gt["categories"]]
    detections, speed, failed = predict_records(model, records, ids, imgsz, batch, conf, iou, max_det, workers,
                                                progress)
    if failed:
        LOGGER.warning("%d images could not be read and have no detections: %s", len(failed),
                       ", ".join(str(records[i].path) for i in failed[:5]))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "predictions.json").write_text(json.dumps(detections))
        if save_gt:
            (out_dir / "ground_truth.json").write_text(json.dumps(gt))
    result = score_split(gt, detections)
    result.speed_ms = speed
    return result


def format_result(result: EvalResult) -> str:
    """The metrics and per-class table as text (classes sorted as in the dataset)."""
    lines = [f"{'class':<22} {'images':>7} {'instances':>9} {'AP50-95':>8} {'AP50':>8}",
             f"{'all':<22} {result.images:>7} {result.instances:>9} {result.map50_95:>8.4f} {result.map50:>8.4f}"]
    for c in result.per_class:
        lines.append(f"{c.name[:22]:<22} {c.images:>7} {c.instances:>9} {c.ap50_95:>8.4f} {c.ap50:>8.4f}")
    lines.append(f"mAP@50:95 {result.map50_95:.4f}  mAP@50 {result.map50:.4f}  mAP@75 {result.map75:.4f}  "
                 f"AR@100 {result.ar100:.4f}")
    if result.speed_ms:
        s = result.speed_ms
        lines.append(f"speed per image: {s['preprocess']:.1f} ms preprocess, {s['inference']:.1f} ms inference, "
                     f"{s['postprocess']:.1f} ms postprocess")
    return "\n".join(lines)
