"""Evaluate a detector on a dataset split with pycocotools.

Data flow: records → letterboxed rectangular batches → model (eval mode) → NMS / top-k → boxes mapped back
to original-image pixels → COCO results (``predictions.json``) → ``COCOeval`` (bbox) against the split's
ground truth converted to COCO format in memory (whatever the source format).

The model's classes are lined up with the dataset's by name first (``names.match_class_names``): a model
whose names come in another order is remapped, classes only one side has are left out of the scoring.
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
from .names import match_class_names
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
    """Metrics of one evaluation; ``speed_ms`` per image: preprocess, inference, postprocess.

    ``per_class`` lists the scored classes in dataset order; ``class_match`` says how the model's classes were
    lined up with the dataset's (remap, classes left out, matched by index), empty when the names agree.
    ``unreadable`` lists the images that could not be read during the run: no detections, their objects count
    as missed (the score is never computed on a silently smaller set).
    """

    map50_95: float
    map50: float
    map75: float
    ar100: float
    per_class: list[ClassAP]
    speed_ms: dict[str, float] = field(default_factory=dict)
    images: int = 0
    instances: int = 0
    class_match: str = ""
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_records(model: YOLO, records: Sequence[ImageRecord], category_ids: Sequence[int | None], imgsz: int = 640,
                    batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                    workers: int = 0, progress: bool = True) -> tuple[list[dict], dict[str, float], list[int]]:
    """Run ``model`` over ``records``: COCO-format detections, the time per image in ms, and the indices of
    the records whose image could not be read (they get no detections).

    Each detection is ``{"image_id", "category_id", "bbox": [x, y, w, h] (original pixels), "score"}``.
    ``category_ids`` has one entry per model class: model class ``k`` is written as ``category_ids[k]``; a
    None entry drops the class before post-processing (its scores never compete for ``max_det``). YOLOv8 uses
    multi-label NMS (every class above ``conf`` may keep a box, as mAP evaluation expects); YOLOv10 uses the
    top-k of its one-to-one head.
    """
    if len(category_ids) != model.nc:
        raise ValueError(f"need one category id (or None) per model class: {model.nc}, got {len(category_ids)}")
    kept = [k for k, cid in enumerate(category_ids) if cid is not None]
    kept_ids = [int(category_ids[k]) for k in kept]
    channels = None if len(kept) == model.nc else torch.tensor([0, 1, 2, 3] + [4 + k for k in kept])
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
        if channels is not None:
            pred = pred.index_select(1, channels.to(pred.device))
        detections = postprocess(pred, model.nms_free, conf=conf, iou=iou, max_det=max_det, multi_label=True)
        for det, meta in zip(detections, metas):
            det = det.cpu()
            boxes = unletterbox_boxes(det[:, :4], meta.ratio, meta.pad, meta.orig_shape)
            boxes[:, 2:] -= boxes[:, :2]
            image_id = int(records[meta.index].image_id)
            for (x0, y0, w, h), score, cls in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
                results.append({"image_id": image_id, "category_id": kept_ids[int(cls)],
                                "bbox": [round(x0, 3), round(y0, 3), round(w, 3), round(h, 3)],
                                "score": round(score, 5)})
        t3 = time.perf_counter()
        totals["preprocess"] += t1 - start
        totals["inference"] += t2 - t1
        totals["postprocess"] += t3 - t2
        start = time.perf_counter()
    n = max(len(records), 1)
    return results, {k: v * 1000 / n for k, v in totals.items()}, failed


def coco_scores(gt: dict, detections: list[dict], category_ids: Sequence[int] | None = None
                ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Score ``detections`` against ``gt`` with pycocotools (bbox), over ``category_ids`` (default: all of gt's).

    Returns ``stats (12,)`` (the standard COCOeval summary: [0] AP@50:95, [1] AP@50, [2] AP@75,
    [8] AR@100 …) and, per category id, its precision ``(T=10 IoU thresholds, R=101 recall points)`` for all
    areas and 100 detections per image (-1 where undefined); the dict is empty when there is no detection.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; library code must not
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not detections:
            return np.zeros(12), {}
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if category_ids is not None:
            evaluator.params.catIds = sorted(int(c) for c in category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); K follows params.catIds, which COCOeval sorts
    return np.asarray(evaluator.stats), {cid: precision[:, :, k, 0, -1]
                                         for k, cid in enumerate(evaluator.params.catIds)}


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else 0.0


def score_split(gt: dict, detections: list[dict], category_ids: Sequence[int] | None = None) -> EvalResult:
    """pycocotools metrics plus the per-class AP table for one split's ground truth and detections.

    Only the categories in ``category_ids`` (default: all of ``gt["categories"]``) are scored and listed;
    the table follows the order of ``gt["categories"]``.
    """
    wanted = None if category_ids is None else {int(c) for c in category_ids}
    scored = [c for c in gt["categories"] if wanted is None or c["id"] in wanted]
    stats, precision = coco_scores(gt, detections, [c["id"] for c in scored])
    per_class = []
    for category in scored:
        anns = [a for a in gt["annotations"] if a["category_id"] == category["id"] and not a["iscrowd"]]
        ap50_95 = ap50 = 0.0
        if category["id"] in precision:
            ap50_95 = _mean_valid(precision[category["id"]])
            ap50 = _mean_valid(precision[category["id"]][0])
        per_class.append(ClassAP(category["name"], len({a["image_id"] for a in anns}), len(anns), ap50_95, ap50))
    return EvalResult(float(max(stats[0], 0)), float(max(stats[1], 0)), float(max(stats[2], 0)),
                      float(max(stats[8], 0)), per_class, images=len(gt["images"]),
                      instances=sum(c.instances for c in per_class))


def evaluate(model: YOLO, records: Sequence[ImageRecord], names: Sequence[str],
             category_ids: Sequence[int] | None = None, out_dir: str | Path | None = None, imgsz: int = 640,
             batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300, workers: int = 0,
             save_gt: bool = False, progress: bool = True, ignore_names: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``records``; writes ``predictions.json`` (and ``ground_truth.json``) to ``out_dir``.

    ``names`` (and ``category_ids``, for COCO sources) describe the dataset's classes. The model's classes are
    matched to them by name (``match_class_names``; ``ignore_names`` matches by index on purpose): the
    result's ``class_match`` says what was remapped or left out (also logged at INFO level).

    Raises:
        ValueError: the model and the dataset share no class name (or, matching by index, the counts differ).
    """
    match = match_class_names(model.names, names, ignore_names)
    if match.message:
        LOGGER.info("%s", match.message)
    gt = to_coco_gt(records, names, category_ids)
    ids = [c["id"] for c in gt["categories"]]
    model_ids = [None if d is None else ids[d] for d in match.model_to_data]
    detections, speed, failed = predict_records(model, records, model_ids, imgsz, batch, conf, iou, max_det, workers,
                                                progress)
    if failed:
        LOGGER.warning("%d images could not be read; their objects count as missed: %s", len(failed),
                       ", ".join(str(records[i].path) for i in failed[:5]))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "predictions.json").write_text(json.dumps(detections))
        if save_gt:
            (out_dir / "ground_truth.json").write_text(json.dumps(gt))
    result = score_split(gt, detections, [ids[d] for d in match.scored])
    result.speed_ms = speed
    result.class_match = match.message
    result.unreadable = [str(records[i].path) for i in failed]
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
    if result.unreadable:
        lines.append(f"{len(result.unreadable)} images could not be read (no detections, their objects count as "
                     f"missed): {', '.join(result.unreadable[:5])}{' …' if len(result.unreadable) > 5 else ''}")
    return "\n".join(lines)
