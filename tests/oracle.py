"""Helpers to drive the Ultralytics test oracle (installed from requirements-dev.txt, never imported by yolofreeze)."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

_PIL_OPEN = Image.open  # Ultralytics replaces PIL.Image.open process-wide on import; tests put it back

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

V8_NAMES = [f"yolov8{s}" for s in "nsmlx"]
V10_NAMES = [f"yolov10{s}" for s in "nsmblx"]


def ultralytics():
    """Import the oracle, or fail loudly: parity tests must not be silently skipped in CI."""
    try:
        import ultralytics as ul
    except ImportError as err:  # pragma: no cover - dev requirements missing
        pytest.fail(f"the test oracle is not installed (pip install -r requirements-dev.txt): {err}")
    Image.open = _PIL_OPEN
    return ul


def build_oracle(name: str, seed: int = 0, nc: int = 80) -> torch.nn.Module:
    """The oracle's DetectionModel from its own yaml, seeded, with randomised BN statistics and affine params.

    Ultralytics 8.4 builds SPPF.cv1 without activation; every released v8/v10 checkpoint
    (8.0-8.3 and THU-MIG) pickles it with SiLU, so the oracle is put into that released form.
    """
    ultralytics()
    from ultralytics.nn.modules.block import SPPF
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"{name}.yaml", nc=nc, verbose=False)
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)
        if isinstance(m, SPPF):
            m.cv1.act = torch.nn.SiLU(inplace=True)
    return model


def save_release(model: torch.nn.Module, path: Path, use_ema: bool = True) -> Path:
    """Save the way Ultralytics ships a release: a training checkpoint passed through its strip_optimizer (fp16)."""
    ultralytics()
    from ultralytics.utils.torch_utils import strip_optimizer

    net = copy.deepcopy(model)
    net.args = {"imgsz": 640, "task": "detect"}
    ckpt = {"epoch": 3, "best_fitness": 0.5, "model": None if use_ema else net, "ema": net if use_ema else None,
            "updates": 10, "optimizer": None, "train_args": {"model": "x.yaml", "imgsz": 640}}
    torch.save(ckpt, path)
    strip_optimizer(path)
    return path
