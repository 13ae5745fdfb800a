"""What deployment costs and keeps for one checkpoint: its float32 and INT8 ONNX exports side by side.

:func:`measure_int8` exports a checkpoint (static, batch 1, Conv+BN fused), quantises it (:func:`quantize_int8`,
calibrated on training images), and measures both files the same way: mAP on the val split (pycocotools, square
``imgsz`` letterbox, the only input a static export takes), file size, and latency per image in onnxruntime at
batch 1 on one thread (a stand-in for an edge core) and on every core this process may use (:func:`ms_per_image`:
the forward only, median over repeated calls after warm-up).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import resolve_dataset
from ..evaluation.detect import letterboxed_input
from ..evaluation.evaluate import evaluate
from ..weights.checkpoints import load_model
from ..weights.releases import sha256_of
from .export import DEFAULT_CALIBRATION, calibration_images, export_onnx, quantize_int8
from .runtime import OnnxDetector, default_threads

REPEATS = 20


def ms_per_image(run: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int = REPEATS,
                 warmup: int = 3) -> float:
    """Median milliseconds of ``run(x)`` for a batch-1 ``x (1, 3, H, W)`` over ``repeats`` calls after ``warmup``
    calls."""
    with torch.inference_mode():
        for _ in range(warmup):
            run(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure_int8(weights: str | Path, data: str, imgsz: int, folder: str | Path, calib: int = 200,
                 method: str = DEFAULT_CALIBRATION, repeats: int = REPEATS) -> dict:
    """Export ``weights`` to ``folder/best.onnx`` and ``folder/best.int8.onnx`` (calibrated on ``calib`` images of
    ``data``'s train split with ``method``) and measure both.

    Returns a dict: ``fp32_map50``, ``fp32_map50_95``, ``int8_map50``, ``int8_map50_95``, ``int8_drop`` (float32
    minus INT8 mAP@50:95), ``fp32_mb``, ``int8_mb``, ``fp32_ms_1``, ``int8_ms_1`` (one thread), ``fp32_ms_all``,
    ``int8_ms_all`` (``threads`` threads), ``threads``, ``imgsz``, ``calibration`` and the checkpoint's
    ``source_sha256``.
    """
    weights, folder = Path(weights), Path(folder)
    info = resolve_dataset(data)
    val = info.splits.get("val")
    if not val:
        raise ValueError(f"{data} has no val split to evaluate the exports on")
    train = info.splits.get("train") or val
    model = load_model(weights)
    digest = sha256_of(weights)
    fp32 = export_onnx(model, folder / "best.onnx", imgsz, source=str(weights), source_sha256=digest)
    images, _ = calibration_images([r.path for r in train], imgsz, calib)
    if not images:
        raise ValueError(f"no readable calibration image in {data}'s train split")
    int8 = quantize_int8(fp32, folder / "best.int8.onnx", images, method)
    x = letterboxed_input(val[0].path, imgsz, torch.device("cpu"), square=True).x
    cores = default_threads()
    found = {"imgsz": imgsz, "threads": cores, "calibration": f"{method}, {len(images)} images",
             "source_sha256": digest}
    for name, path in (("fp32", fp32), ("int8", int8)):
        result = evaluate(OnnxDetector(path, threads=cores), val, info.names, imgsz=imgsz, batch=8, progress=False)
        found |= {f"{name}_map50": result.map50, f"{name}_map50_95": result.map50_95,
                  f"{name}_mb": path.stat().st_size / 2**20,
                  f"{name}_ms_1": ms_per_image(OnnxDetector(path, threads=1), x, repeats),
                  f"{name}_ms_all": ms_per_image(OnnxDetector(path, threads=cores), x, repeats)}
    found["int8_drop"] = found["fp32_map50_95"] - found["int8_map50_95"]
    return found
