"""Evaluate a detector on a dataset split with pycocotools.

Data flow: records → letterboxed rectangular batches → model (eval mode) → NMS / top-k → boxes mapped back
to original-image pixels → COCO results (``predictions.json``) → ``COCOeval`` (bbox) against the split's
ground truth converted to COCO format in memory (whatever the source format).

The model's classes are lined up with the dataset's by name first (``names.match_class_names``): a model
whose names come in another order is remapped, classes only one side has are left out of the scoring.

Precision and recall (``results.csv``'s ``metrics/precision(B)``, ``metrics/recall(B)``) are read from COCOeval's own
matches at IoU 0.5 at the confidence where the smoothed mean F1 over classes is largest
(:func:`precision_recall_at_best_f1`); the README says how this differs from the reference's matching and by how much.

With a ``criterion`` (``loss.build_loss(model)``), the validation loss is also computed on the same forward
pass (the head's raw maps in eval mode, batch-norm running statistics): the mean over batches of each part,
as the reference's validator logs ``val/box_loss``, ``val/cls_loss``, ``val/dfl_loss``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..boxes import unletterbox_boxes
from ..data import Batch, ImageRecord, build_dataloader, to_coco_gt
from ..model import YOLO, PrefixOutputs, inference_copy
from ..names import match_class_names
from .postprocess import postprocess

LOGGER = logging.getLogger(__name__)

CONFIDENCE_GRID = np.linspace(0, 1, 1000)  # thresholds at which precision, recall and F1 are read
F1_SMOOTHING = 101  # box-filter width, in grid points (about a tenth of the grid), applied to the mean F1 curve
Criterion = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]  # (maps, targets (M, 6), (H, W))


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
    """Metrics of one evaluation; ``speed_ms`` per image: preprocess, inference, postprocess (and, from
    :func:`evaluate`, ``loss`` with a criterion and ``scoring``: pycocotools' matching and accumulation).

    ``per_class`` lists the scored classes in dataset order; ``class_match`` says how the model's classes were
    lined up with the dataset's (remap, classes left out, matched by index), empty when the names agree.
    ``unreadable`` lists the images that could not be read during the run: no detections, their objects count
    as missed (the score is never computed on a silently smaller set). ``precision`` and ``recall``: means over
    the classes with ground truth at the best-F1 confidence (module docstring). ``losses``: validation loss
    parts ``{"box", "cls", "dfl"}``, mean over batches, when a criterion was given, else empty.
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
    precision: float = 0.0
    recall: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> EvalResult:
        """The result back from its :meth:`to_dict` form (e.g. as stored in a checkpoint)."""
        return cls(**{**saved, "per_class": [ClassAP(**c) for c in saved["per_class"]]})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Predictions(NamedTuple):
    """What :func:`predict_records` returns.

    Attributes:
        detections: COCO results ``{"image_id", "category_id", "bbox": [x, y, w, h] (original pixels), "score"}``.
        speed_ms: ms per image: ``preprocess``, ``inference``, ``postprocess`` (and ``loss`` with a criterion).
        failed: indices of the records whose image could not be read (they get no detections).
        losses: with a criterion, the mean over batches of each loss part (``{"box", "cls", "dfl"}``), else empty.
    """

    detections: list[dict]
    speed_ms: dict[str, float]
    failed: list[int]
    losses: dict[str, float]


@torch.no_grad()
def predict_records(model: YOLO, records: Sequence[ImageRecord], category_ids: Sequence[int | None], imgsz: int = 640,
                    batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300,
                    workers: int = 0, progress: bool = True, criterion: Criterion | None = None,
                    batches: Iterable | None = None) -> Predictions:
    """Run ``model`` (switched to eval mode) over ``records``: detections, time per image, unreadable records and,
    with ``criterion``, the validation loss (see :class:`Predictions`). A :class:`YOLO` runs as a copy with every
    batch-norm folded into its convolution (``YOLO.fuse``, as the reference's validator does) and its weights and
    inputs in channels-last memory: the same numbers up to float rounding, faster (``benchmarks/bench_inference.py``,
    its ``unfused`` / ``inference`` rows).

    ``model``: a :class:`YOLO` or a runner with its inference interface (``model(x) -> (B, 4 + nc, A)``, ``nc``,
    ``stride``, ``nms_free``, ``device``, ``eval()``), e.g. :class:`yolofreeze.deploy.runtime.OnnxDetector`; one
    with a ``fixed_shape`` (a static export) gets square ``imgsz`` batches instead of rectangular ones.

    ``category_ids`` has one entry per model class: model class ``k`` is written as ``category_ids[k]``; a
    None entry drops the class before post-processing (its scores never compete for ``max_det``). YOLOv8 uses
    multi-label NMS (every class above ``conf`` may keep a box, as mAP evaluation expects); YOLOv10 uses the
    top-k of its one-to-one head.

    ``criterion`` (``loss.build_loss(model)``) is called per batch as ``criterion(maps, targets, (H, W))``
    with the model's train-format maps from the same forward pass and the loader's targets ``(M, 6)``
    ``[image, class, cx, cy, w, h]``, whose classes are the records' (dataset) classes: they must be the
    model's classes (:func:`evaluate` checks this).

    ``batches``: run the model on these instead of loading ``records``' images: the frozen-prefix outputs of the
    same images in the same rectangular batches (:meth:`yolofreeze.freezing.cache.FeatureCache.batches`; ``meta.index``
    refers to ``records``).
    """
    if len(category_ids) != model.nc:
        raise ValueError(f"need one category id (or None) per model class: {model.nc}, got {len(category_ids)}")
    kept = [k for k, cid in enumerate(category_ids) if cid is not None]
    kept_ids = [int(category_ids[k]) for k in kept]
    channels = None if len(kept) == model.nc else torch.tensor([0, 1, 2, 3] + [4 + k for k in kept])
    model.eval()
    if isinstance(model, YOLO):  # a copy with batch-norm folded into the convolutions, in channels-last memory
        model = inference_copy(model)
    device = model.device
    fixed = getattr(model, "fixed_shape", None)  # a static ONNX export takes square imgsz input only
    loader = batches if batches is not None else build_dataloader(
        records, imgsz=imgsz, batch=batch, rect=fixed is None, workers=workers, stride=max(32, int(model.stride.max())))
    results, failed, totals = [], [], {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    loss_sums: dict[str, torch.Tensor] = {}
    scored_batches = 0
    if criterion is not None:
        totals["loss"] = 0.0
    start = time.perf_counter()
    for loaded in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        failed.extend(loaded.failed)
        if not loaded.meta:
            continue
        if isinstance(loaded, Batch):
            x: torch.Tensor | PrefixOutputs = loaded.images.to(  # the uint8 batch rearranged: 4x fewer bytes
                device, non_blocking=True, memory_format=torch.channels_last).float() / 255
            shape = tuple(loaded.images.shape[-2:])
        else:  # cached outputs of the frozen prefix: the model runs from its first trainable block
            x, shape = loaded.prefix(device), loaded.shape
        _sync(device)
        t1 = time.perf_counter()
        if criterion is not None:  # the head in two steps: the raw maps for the loss, then decoded predictions
            maps = model.head.maps(model.head_inputs(x))
            pred = model.head.decode_maps(maps)
        else:
            pred = model(x)
        _sync(device)
        t2 = time.perf_counter()
        if criterion is not None:
            _, parts = criterion(maps, loaded.targets, shape)
            for name, value in parts.items():
                loss_sums[name] = loss_sums.get(name, 0) + value.detach()
            scored_batches += 1
            _sync(device)
            totals["loss"] += time.perf_counter() - t2
            t2 = time.perf_counter()
        if channels is not None:
            pred = pred.index_select(1, channels.to(pred.device))
        detections = postprocess(pred, model.nms_free, conf=conf, iou=iou, max_det=max_det, multi_label=True)
        for det, meta in zip(detections, loaded.meta):
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
    losses = {name: float(value) / scored_batches for name, value in loss_sums.items()}
    return Predictions(results, {k: v * 1000 / n for k, v in totals.items()}, failed, losses)


def _box_smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Moving average of ``values`` ``(n,)`` over an odd ``width``, the ends extended with their edge values."""
    half = width // 2
    padded = np.concatenate((np.full(half, values[0]), values, np.full(half, values[-1])))
    return np.convolve(padded, np.full(width, 1 / width), mode="valid")


def precision_recall_at_best_f1(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray,
                                n_gt: Mapping[int, int] | Sequence[int]) -> tuple[float, float]:
    """Mean precision and mean recall over the classes with ground truth, at the confidence of best mean F1.

    Per class ``c`` with ``n_gt[c] > 0``: its detections sorted by confidence give cumulative precision
    ``TP / (TP + FP)`` and recall ``TP / n_gt[c]``; both are read at each threshold of :data:`CONFIDENCE_GRID` by
    linear interpolation in the confidence (above the highest confidence: precision 1, recall 0; below the
    lowest: the final values); a class without detections has precision and recall 0 everywhere. The F1 curves
    are averaged over classes and smoothed (:data:`F1_SMOOTHING`); at its first maximum the per-class precision
    and recall are averaged. Detections of a class without ground truth are ignored.

    Args:
        tp: ``(N,)`` bool, detection ``i`` is a true positive.
        conf: ``(N,)`` confidences in [0, 1].
        pred_cls: ``(N,)`` class of each detection.
        n_gt: ground-truth count per class: a mapping class → count, or a sequence indexed by class.

    Returns:
        ``(precision, recall)``, each in [0, 1]; ``(0.0, 0.0)`` when no class has ground truth.
    """
    counts = dict(n_gt) if isinstance(n_gt, Mapping) else dict(enumerate(n_gt))
    classes = sorted(c for c, n in counts.items() if n > 0)
    if not classes:
        return 0.0, 0.0
    order = np.argsort(-np.asarray(conf, np.float64), kind="stable")
    tp, conf, pred_cls = np.asarray(tp, bool)[order], np.asarray(conf, np.float64)[order], np.asarray(pred_cls)[order]
    precision = np.zeros((len(classes), len(CONFIDENCE_GRID)))
    recall = np.zeros_like(precision)
    for row, cls in enumerate(classes):
        mine = pred_cls == cls
        if not mine.any():
            continue
        hits = np.cumsum(tp[mine])
        seen = np.arange(1, len(hits) + 1)
        # np.interp wants increasing sample points: read the curves against minus the confidence
        recall[row] = np.interp(-CONFIDENCE_GRID, -conf[mine], hits / counts[cls], left=0.0)
        precision[row] = np.interp(-CONFIDENCE_GRID, -conf[mine], hits / seen, left=1.0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    best = int(np.argmax(_box_smooth(f1.mean(0), F1_SMOOTHING)))
    return float(precision[:, best].mean()), float(recall[:, best].mean())


class Iou50Matches(NamedTuple):
    """COCOeval's matching at IoU 0.5 for area "all" (at most 100 detections per image and category), the
    detections it ignores (matched to an ignored ground truth) left out.

    Attributes:
        tp: ``(N,)`` bool, matched to a ground-truth box.
        conf: ``(N,)`` scores.
        category: ``(N,)`` category id of each detection.
        n_gt: category id → number of non-ignored ground-truth boxes, for every evaluated category.
    """

    tp: np.ndarray
    conf: np.ndarray
    category: np.ndarray
    n_gt: dict[int, int]


def _iou50_matches(evaluator: COCOeval) -> Iou50Matches:
    """Collect :class:`Iou50Matches` from ``evaluator.evalImgs`` (after ``evaluate()``), whose entries run over
    category, then area range, then image (None where an image has neither boxes nor detections of a category)."""
    params = evaluator.params
    threshold = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    n_images, n_areas, area = len(params.imgIds), len(params.areaRng), params.areaRngLbl.index("all")
    tp, conf, category, n_gt = [], [], [], {}
    for k, cat in enumerate(params.catIds):
        n_gt[cat] = 0
        first = (k * n_areas + area) * n_images
        for entry in evaluator.evalImgs[first:first + n_images]:
            if entry is None:
                continue
            kept = ~np.asarray(entry["dtIgnore"][threshold], bool)
            tp.append(np.asarray(entry["dtMatches"][threshold])[kept] > 0)
            conf.append(np.asarray(entry["dtScores"], np.float64)[kept])
            category.append(np.full(int(kept.sum()), cat))
            n_gt[cat] += int((~np.asarray(entry["gtIgnore"], bool)).sum())
    return Iou50Matches(_concat(tp, bool), _concat(conf, np.float64), _concat(category, np.int64), n_gt)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    """``np.concatenate(parts)``, or an empty array of ``dtype`` when there are no parts."""
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


class CocoScores(NamedTuple):
    """What :func:`coco_scores` returns.

    Attributes:
        stats: ``(12,)`` the standard COCOeval summary: [0] AP@50:95, [1] AP@50, [2] AP@75, [6-8] AR@1/10/100;
            the per-size entries ([3-5], [9-11]) are -1: only the "all" area range is evaluated (each range is
            scored on its own, so the others would only add 3x the matching time for numbers nothing reports).
        precision: per category id, its precision ``(T=10 IoU thresholds, R=101 recall points)`` for all areas
            and 100 detections per image (-1 where undefined); empty when there is no detection.
        matches: the true/false positives at IoU 0.5 (empty when there is no detection).
    """

    stats: np.ndarray
    precision: dict[int, np.ndarray]
    matches: Iou50Matches


def coco_scores(gt: dict, detections: list[dict], category_ids: Sequence[int] | None = None) -> CocoScores:
    """Score ``detections`` against ``gt`` with pycocotools (bbox), over ``category_ids`` (default: all of gt's)."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress; library code must not
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if not detections:
            empty = Iou50Matches(np.zeros(0, bool), np.zeros(0), np.zeros(0, np.int64), {})
            return CocoScores(np.zeros(12), {}, empty)
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        all_areas = evaluator.params.areaRngLbl.index("all")  # the per-size ranges would take 3x more time
        evaluator.params.areaRng = [evaluator.params.areaRng[all_areas]]
        evaluator.params.areaRngLbl = ["all"]
        if category_ids is not None:
            evaluator.params.catIds = sorted(int(c) for c in category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # (T, R, K, A, M); K follows params.catIds, which COCOeval sorts
    return CocoScores(np.asarray(evaluator.stats),
                      {cid: precision[:, :, k, 0, -1] for k, cid in enumerate(evaluator.params.catIds)},
                      _iou50_matches(evaluator))


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
    stats, precision, matches = coco_scores(gt, detections, [c["id"] for c in scored])
    per_class = []
    for category in scored:
        anns = [a for a in gt["annotations"] if a["category_id"] == category["id"] and not a["iscrowd"]]
        ap50_95 = ap50 = 0.0
        if category["id"] in precision:
            ap50_95 = _mean_valid(precision[category["id"]])
            ap50 = _mean_valid(precision[category["id"]][0])
        per_class.append(ClassAP(category["name"], len({a["image_id"] for a in anns}), len(anns), ap50_95, ap50))
    mean_precision, mean_recall = precision_recall_at_best_f1(*matches)
    return EvalResult(float(max(stats[0], 0)), float(max(stats[1], 0)), float(max(stats[2], 0)),
                      float(max(stats[8], 0)), per_class, images=len(gt["images"]),
                      instances=sum(c.instances for c in per_class), precision=mean_precision, recall=mean_recall)


def evaluate(model: YOLO, records: Sequence[ImageRecord], names: Sequence[str],
             category_ids: Sequence[int] | None = None, out_dir: str | Path | None = None, imgsz: int = 640,
             batch: int = 32, conf: float = 0.001, iou: float = 0.7, max_det: int = 300, workers: int = 0,
             save_gt: bool = False, progress: bool = True, ignore_names: bool = False,
             criterion: Criterion | None = None, batches: Iterable | None = None) -> EvalResult:
    """Evaluate ``model`` on ``records``; writes ``predictions.json`` (and ``ground_truth.json``) to ``out_dir``.

    ``names`` (and ``category_ids``, for COCO sources) describe the dataset's classes. The model's classes are
    matched to them by name (``match_class_names``; ``ignore_names`` matches by index on purpose): the
    result's ``class_match`` says what was remapped or left out (also logged at INFO level).
    ``criterion`` (``loss.build_loss(model)``): also compute the validation loss, ``result.losses``.
    ``batches``: cached frozen-prefix outputs to run on instead of the images (see :func:`predict_records`).

    Raises:
        ValueError: the model and the dataset share no class name (or, matching by index, the counts differ);
            a ``criterion`` while the model's classes are not the dataset's, in the same order (the loss is
            computed against the dataset's class indices).
    """
    match = match_class_names(model.names, names, ignore_names)
    if match.message:
        LOGGER.info("%s", match.message)
    if criterion is not None and list(match.model_to_data) != list(range(len(names))):
        raise ValueError(f"a validation loss needs the model's classes to be the dataset's in the same order "
                         f"({match.message}); give the model the dataset's classes first "
                         f"(yolofreeze.model.with_class_names)")
    gt = to_coco_gt(records, names, category_ids)
    ids = [c["id"] for c in gt["categories"]]
    model_ids = [None if d is None else ids[d] for d in match.model_to_data]
    detections, speed, failed, losses = predict_records(model, records, model_ids, imgsz, batch, conf, iou, max_det,
                                                        workers, progress, criterion, batches)
    if failed:
        LOGGER.warning("%d images could not be read; their objects count as missed: %s", len(failed),
                       ", ".join(str(records[i].path) for i in failed[:5]))
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "predictions.json").write_text(json.dumps(detections))
        if save_gt:
            (out_dir / "ground_truth.json").write_text(json.dumps(gt))
    started = time.perf_counter()
    result = score_split(gt, detections, [ids[d] for d in match.scored])
    result.speed_ms = {**speed, "scoring": (time.perf_counter() - started) * 1000 / max(len(records), 1)}
    result.class_match = match.message
    result.unreadable = [str(records[i].path) for i in failed]
    result.losses = losses
    return result


def format_result(result: EvalResult) -> str:
    """The metrics and per-class table as text (classes sorted as in the dataset)."""
    lines = [f"{'class':<22} {'images':>7} {'instances':>9} {'AP50-95':>8} {'AP50':>8}",
             f"{'all':<22} {result.images:>7} {result.instances:>9} {result.map50_95:>8.4f} {result.map50:>8.4f}"]
    for c in result.per_class:
        lines.append(f"{c.name[:22]:<22} {c.images:>7} {c.instances:>9} {c.ap50_95:>8.4f} {c.ap50:>8.4f}")
    lines.append(f"mAP@50:95 {result.map50_95:.4f}  mAP@50 {result.map50:.4f}  mAP@75 {result.map75:.4f}  "
                 f"AR@100 {result.ar100:.4f}  P {result.precision:.4f}  R {result.recall:.4f}")
    if result.losses:
        lines.append("validation loss: " + "  ".join(f"{name} {value:.4f}" for name, value in result.losses.items()))
    if result.speed_ms:
        s = result.speed_ms
        loss = f", {s['loss']:.1f} ms loss" if "loss" in s else ""
        scoring = f", {s['scoring']:.1f} ms scoring" if "scoring" in s else ""
        lines.append(f"speed per image: {s['preprocess']:.1f} ms preprocess, {s['inference']:.1f} ms inference"
                     f"{loss}, {s['postprocess']:.1f} ms postprocess{scoring}")
    if result.unreadable:
        lines.append(f"{len(result.unreadable)} images could not be read (no detections, their objects count as "
                     f"missed): {', '.join(result.unreadable[:5])}{' …' if len(result.unreadable) > 5 else ''}")
    return "\n".join(lines)
