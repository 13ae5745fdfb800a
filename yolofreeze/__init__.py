"""yolofreeze: readable pure-PyTorch YOLOv8 / YOLOv10 for studying layer freezing in transfer learning.

The public names are imported on first use, so that ``python -m yolofreeze.convert`` and the other
module CLIs start without importing themselves twice.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["FreezePlan", "TrainConfig", "Trainer", "YOLO", "block_table", "build_model", "load_model",
           "save_checkpoint"]
_HOME = {"FreezePlan": "freezing.plan", "TrainConfig": "training.optim", "Trainer": "training.trainer", "YOLO": "model",
         "block_table": "model", "build_model": "model", "load_model": "weights.checkpoints",
         "save_checkpoint": "weights.checkpoints"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'yolofreeze' has no attribute {name!r}")
