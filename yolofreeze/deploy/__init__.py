"""Deployment: ONNX export (fp32, fp16, INT8) and the onnxruntime runner that evaluation and prediction use.

Needs the ``export`` extra (``pip install -e .[export]``: onnx, onnxruntime); :func:`require` names it when missing.
"""
from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "pip install -e .[export]  (or: pip install onnx onnxruntime)"


class MissingExtraError(ValueError):
    """A feature's optional dependencies are not installed (one line that says how to install them)."""


def require(module: str) -> ModuleType:
    """Import ``module`` (``"onnx"``, ``"onnxruntime"`` …) or raise :class:`MissingExtraError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(f"ONNX export and inference need {module.split('.')[0]}, which is not installed: "
                                f"{EXTRA}") from error
