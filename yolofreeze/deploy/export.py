"""ONNX export of a detector, and INT8 static post-training quantisation of the export.

The exported model takes what the ecosystem's exports take and returns the eval-mode forward:

- input ``images``: ``(B, 3, H, W)`` float32 (float16 with ``half``), RGB, letterboxed, scaled to [0, 1];
- output ``output0``: ``(B, 4 + nc, A)``, boxes xywh in input pixels, sigmoid class scores, ``A`` anchors over the
  pyramid (YOLOv10: the branch chosen with ``use_v10_head`` before export).

Convolutions and batch norms are fused first. Static exports fix ``B`` and ``H = W = imgsz``; ``dynamic`` leaves
batch, height and width free (multiples of 32). The model's facts go into the ONNX ``metadata_props`` as strings,
the ecosystem's keys (``names`` as a dict literal, ``stride``, ``imgsz``, ``batch``, ``task``, ``description``,
``date``, ``version``) plus ours (:data:`OWN_KEYS`), so runners of either kind can read them.

INT8 (:func:`quantize_int8`): onnxruntime's static quantisation in QDQ format, per-channel weights, activations
calibrated on images given by the caller; the head's decode stays in float (:func:`decode_nodes`).
"""
from __future__ import annotations

import copy
import datetime
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..data.records import IMAGE_ERRORS
from ..evaluation.detect import letterboxed_input
from ..host import available_memory
from ..model import YOLO
from . import require

INPUT, OUTPUT = "images", "output0"
DEFAULT_OPSET = 17  # read by TensorRT 8.6+, OpenVINO 2023+ and every current onnxruntime
OWN_KEYS = ("format", "arch", "nc", "v10_head", "half", "dynamic", "yolofreeze_version", "source", "source_sha256")
FORMAT = "yolofreeze-onnx"
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION = "minmax"  # chosen by measured mAP (benchmarks/bench_export.py)
CALIBRATION_MEMORY_SHARE = 0.5  # of the available memory, at most, for the activations a histogram method records


def metadata(model: YOLO, imgsz: int, batch: int, dynamic: bool, half: bool, source: str = "",
             source_sha256: str = "") -> dict[str, str]:
    """The ``metadata_props`` of an export of ``model`` (every value a string)."""
    return {"description": f"yolofreeze {model.arch}" + (f" from {Path(source).name}" if source else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "version": __version__, "task": "detect", "stride": str(int(model.stride.max())),
            "batch": str(batch), "imgsz": str([imgsz, imgsz]), "names": str(dict(enumerate(model.names))),
            "format": FORMAT, "arch": model.arch, "nc": str(model.nc),
            "v10_head": model.head.eval_branch if model.is_v10 else "", "half": str(half), "dynamic": str(dynamic),
            "yolofreeze_version": __version__, "source": str(source), "source_sha256": source_sha256}


def export_onnx(model: YOLO, path: str | Path, imgsz: int = 640, batch: int = 1, dynamic: bool = False,
                half: bool = False, opset: int = DEFAULT_OPSET, source: str = "", source_sha256: str = "") -> Path:
    """Write ``model`` (left untouched: a fused copy is exported) as an ONNX file at ``path`` (atomically).

    Args:
        imgsz: the square input side of a static export, and the traced size of a dynamic one (multiple of 32).
        batch: the batch of a static export.
        dynamic: batch, height and width free.
        half: float16 weights, input and output (onnxruntime's float16 conversion of the float32 graph).
        source, source_sha256: the checkpoint exported, recorded in the metadata.
    """
    onnx = require("onnx")
    if imgsz <= 0 or imgsz % 32:
        raise ValueError(f"imgsz {imgsz} is not a positive multiple of 32")
    fused = copy.deepcopy(model).cpu().float().eval().fuse()
    x = torch.zeros(batch, 3, imgsz, imgsz)
    axes = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "anchors"}} if dynamic else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        traced = Path(tmp) / "traced.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python values it records as constants
            torch.onnx.export(fused, (x,), str(traced), input_names=[INPUT], output_names=[OUTPUT],
                              opset_version=opset, dynamic_axes=axes, dynamo=False)
        proto = onnx.load(str(traced))
        if half:  # traced in float32 (PyTorch's CPU kernels), then weights, input and output cast to float16
            proto = require("onnxruntime.transformers.float16").convert_float_to_float16(proto, keep_io_types=False)
            graph = require("onnxruntime.transformers.onnx_model").OnnxModel(proto)
            graph.topological_sort()  # the conversion appends the casts it adds; ONNX wants producers first
            proto = graph.model
        set_metadata(proto, metadata(model, imgsz, batch, dynamic, half, source, source_sha256))
        onnx.checker.check_model(proto)
        partial = Path(tmp) / "model.onnx"
        onnx.save(proto, str(partial))
        os.replace(partial, path)
    return path


def set_metadata(proto, values: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of the ONNX ``proto`` with ``values``."""
    del proto.metadata_props[:]
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` (without loading its weights into onnxruntime)."""
    onnx = require("onnx")
    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def decode_nodes(proto) -> list[str]:
    """The nodes of the head's decode in an exported graph: everything in the head's scope outside its convolution
    branches (the per-level concatenation, DFL softmax and expectation, anchors, box arithmetic, sigmoid, final
    concat). Quantising them breaks detectors (the DFL expectation and the box coordinates need more than 8 bits),
    so INT8 keeps them in float. The head is the last block: its nodes are named ``/model.<last>/…``."""
    scopes = {node.name.split("/")[1] for node in proto.graph.node if node.name.startswith("/model.")}
    head = f"model.{max(int(scope.split('.')[1]) for scope in scopes)}"
    branches = tuple(f"/{head}/{name}" for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"))
    return [node.name for node in proto.graph.node
            if node.name.startswith(f"/{head}/") and not node.name.startswith(branches)]


class _Calibration:
    """onnxruntime's calibration reader: one ``{INPUT: (1, 3, H, W) float32}`` per image, then None."""

    def __init__(self, images: Iterable[np.ndarray]):
        self._images = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {INPUT: image}


def quantize_int8(onnx_path: str | Path, out_path: str | Path, calibration: Sequence[np.ndarray],
                  method: str = DEFAULT_CALIBRATION) -> Path:
    """Static INT8 quantisation of the float32 export at ``onnx_path`` into ``out_path`` (atomically).

    QDQ format (quantise/dequantise pairs around int8 convolutions, which onnxruntime's CPU provider fuses),
    per-channel symmetric int8 weights, uint8 activations (int8 ones ran slower than float32 on an x86 CPU) whose
    ranges come from running ``calibration`` (images ``(1, 3, H, W)`` float32 in [0, 1], preprocessed as the
    model's input) with ``method``: ``minmax`` (observed range: two numbers per tensor and image), ``entropy``
    (KL-optimal clipping) or ``percentile`` (99.999th). The histogram methods hold every activation of every image at
    once in onnxruntime (its option to merge in chunks drops the chunks in onnxruntime 1.32): such a request needing
    more than :data:`CALIBRATION_MEMORY_SHARE` of the available memory (:func:`activation_bytes` x images) is
    refused (ValueError) before it starts. The head's decode
    (:func:`decode_nodes`) stays in float. The metadata is kept; ``format`` gains ``int8`` and ``calibration``.
    """
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    if not calibration:
        raise ValueError("INT8 quantisation needs at least one calibration image")
    values = read_metadata(onnx_path)
    if values.get("half") == "True":
        raise ValueError(f"{onnx_path} has float16 weights: quantise a float32 export")
    methods = {"minmax": quantization.CalibrationMethod.MinMax, "entropy": quantization.CalibrationMethod.Entropy,
               "percentile": quantization.CalibrationMethod.Percentile}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # shapes inferred and constants folded first, as onnxruntime asks: fewer nodes, all biases initializers
        quantization.shape_inference.quant_pre_process(str(onnx_path), str(prepared))
        proto = onnx.load(str(prepared))
        per_image, free = max(activation_bytes(proto), 1), available_memory()
        fits = int(CALIBRATION_MEMORY_SHARE * free // per_image)
        if method != "minmax" and len(calibration) > fits:
            raise ValueError(f"--calib-method {method} keeps every activation of every calibration image in memory: about "
                             f"{per_image * len(calibration) / 2**30:.1f} GiB for {len(calibration)} images at this "
                             f"size, more than {CALIBRATION_MEMORY_SHARE:.0%} of the {free / 2**30:.1f} GiB "
                             f"available; use fewer images (--calib {max(fits, 1)} fits) or minmax")
        quantization.quantize_static(
            str(prepared), str(quantized), _Calibration(calibration), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, calibrate_method=methods[method],
            nodes_to_exclude=decode_nodes(proto))
        result = onnx.load(str(quantized))
        set_metadata(result, {**values, "format": f"{FORMAT}-int8", "calibration": f"{method}, {len(calibration)} "
                                                                                   f"images"})
        onnx.save(result, str(Path(tmp) / "final.onnx"))
        os.replace(Path(tmp) / "final.onnx", out_path)
    return out_path


def activation_bytes(proto) -> int:
    """Bytes of one input's float32 intermediate tensors in a shape-inferred ONNX model (what calibration records)."""
    onnx = require("onnx")
    total = 0
    for info in proto.graph.value_info:
        tensor = info.type.tensor_type
        dims = [d.dim_value for d in tensor.shape.dim]
        if tensor.elem_type == onnx.TensorProto.FLOAT and dims and all(d > 0 for d in dims):
            total += 4 * math.prod(dims)
    return total


def calibration_images(paths: Sequence[Path], imgsz: int, count: int, seed: int = 0
                       ) -> tuple[list[np.ndarray], list[Path]]:
    """Up to ``count`` of ``paths`` (a seeded sample, the same for every call) as model inputs
    ``(1, 3, imgsz, imgsz)`` float32 in [0, 1], letterboxed square as evaluation does a static export's input;
    also the unreadable ones (skipped)."""
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    images, unreadable = [], []
    for k in sorted(order.tolist()):
        try:
            images.append(letterboxed_input(paths[k], imgsz, torch.device("cpu"), square=True).x.numpy())
        except IMAGE_ERRORS:
            unreadable.append(paths[k])
    return images, unreadable
