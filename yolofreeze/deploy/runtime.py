"""Run an exported ONNX detector with onnxruntime behind the interface evaluation and prediction use for a
:class:`~yolofreeze.model.YOLO`: ``detector(x (B, 3, H, W) float in [0, 1]) -> (B, 4 + nc, A)`` decoded predictions,
plus ``names``, ``nc``, ``stride``, ``nms_free``, ``device`` and ``eval()``. :func:`load_detector` opens a ``.onnx``
file as an :class:`OnnxDetector` and anything else as a PyTorch model.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import torch

from ..model import YOLO, inference_copy
from ..weights.checkpoints import load_model
from . import require
from .export import INPUT

ONNX_SUFFIX = ".onnx"


class OnnxDetector:
    """An ONNX detector (ours, or any export with the ecosystem's input, output and metadata) in onnxruntime.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime's intra-op threads (None: its default, all cores).
        names: class names when the file's metadata has none (else they must agree in number with the output).
        imgsz: the input size when the metadata has none (dynamic exports: the default evaluation size).

    A static export runs only at its own input size: ``fixed_shape`` is ``(H, W)`` and ``fixed_batch`` its batch
    (larger batches run in chunks, a short last chunk padded); a dynamic one takes any multiple of 32.
    """

    def __init__(self, path: str | Path, threads: int | None = None, names: list[str] | None = None,
                 imgsz: int | None = None):
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{path} is not a model onnxruntime can run: {str(error).splitlines()[0]}") from error
        self.path = path
        self.meta = self.session.get_modelmeta().custom_metadata_map
        model_input = self.session.get_inputs()[0]
        if model_input.name != INPUT or len(model_input.shape) != 4:
            raise ValueError(f"{path}: expected one input {INPUT!r} (B, 3, H, W), found {model_input.name!r} "
                             f"{model_input.shape}")
        self.input_dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
        batch, _, height, width = model_input.shape
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.fixed_shape = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        self.names = self._names(names)
        self.nc = len(self.names)
        self.stride = torch.tensor([float(self.meta.get("stride", 32))])
        self.arch = self.meta.get("arch", "")
        self.nms_free = self.meta.get("v10_head") == "one2one"
        self.imgsz = self._imgsz(imgsz)
        self.device = torch.device("cpu")
        channels = self.session.get_outputs()[0].shape[1]
        if isinstance(channels, int) and channels != 4 + self.nc:
            raise ValueError(f"{path}: the output has {channels} channels, 4 + {self.nc} classes expected")

    def _names(self, given: list[str] | None) -> list[str]:
        if "names" in self.meta:
            table = ast.literal_eval(self.meta["names"])  # literals only: a dict {index: name}
            return [str(table[k]) for k in sorted(table)]
        if given:
            return list(given)
        raise ValueError(f"{self.path} has no class names in its metadata (not exported by yolofreeze or the "
                         f"ecosystem's exporter): give them with --names a,b,c")

    def _imgsz(self, given: int | None) -> int:
        if self.fixed_shape is not None:
            if given is not None and given != max(self.fixed_shape):
                raise ValueError(f"{self.path} was exported for {self.fixed_shape[0]}x{self.fixed_shape[1]} input, "
                                 f"not --imgsz {given}: export again with --dynamic or that --imgsz")
            return max(self.fixed_shape)
        if given is not None:
            return given
        if "imgsz" in self.meta:
            return int(max(ast.literal_eval(self.meta["imgsz"])))
        raise ValueError(f"{self.path} has no input size in its metadata: give it with --imgsz")

    def eval(self) -> OnnxDetector:
        """For the PyTorch interface: an ONNX model is always in inference mode."""
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded predictions ``(B, 4 + nc, A)`` float32 for the input ``x (B, 3, H, W)`` in [0, 1]."""
        if self.fixed_shape is not None and tuple(x.shape[-2:]) != self.fixed_shape:
            raise ValueError(f"{self.path} takes {self.fixed_shape[0]}x{self.fixed_shape[1]} input, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        images = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        chunk = self.fixed_batch or len(images)
        outputs = []
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            short = chunk - len(part)
            if short:
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
            out = self.session.run(None, {INPUT: part})[0]
            outputs.append(out[:len(out) - short])
        return torch.from_numpy(np.concatenate(outputs).astype(np.float32, copy=False))


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix)."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


def load_detector(path: str | Path, v10_head: str = "one2one", device: str = "cpu", threads: int | None = None,
                  imgsz: int | None = None, names: list[str] | None = None) -> YOLO | OnnxDetector:
    """A ``.onnx`` file as an :class:`OnnxDetector` (``v10_head`` and ``device`` are fixed by the export; the CPU
    provider runs it), anything else through :func:`~yolofreeze.weights.checkpoints.load_model` on ``device``, as
    its :func:`~yolofreeze.model.inference_copy` (batch-norm folded, channels-last)."""
    if is_onnx(path):
        return OnnxDetector(path, threads=threads, names=names, imgsz=imgsz)
    return inference_copy(load_model(path).use_v10_head(v10_head).to(device))


def default_threads() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
