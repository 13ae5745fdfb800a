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


def build_oracle(name: str | dict, seed: int = 0, nc: int = 80) -> torch.nn.Module:
    """The oracle's DetectionModel from its own yaml (a name such as ``"yolov8n"``, or a yaml dict), seeded,
    with randomised BN statistics and affine params.

    For the v8/v10 yaml rows, Ultralytics 8.4.190 builds SPPF.cv1 with SiLU, the form every released
    v8/v10 checkpoint (8.0-8.3 and THU-MIG) pickles (checked in test_convert_vintages.py).
    """
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    cfg = f"{name}.yaml" if isinstance(name, str) else copy.deepcopy(name)
    model = DetectionModel(cfg, nc=nc, verbose=False)
    randomise_batchnorm(model, seed + 1)
    return model


def randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm2d random running statistics and affine parameters (fresh ones are the identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


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


def _flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """Our per-level ``(B, no, H, W)`` maps → ``(B, no, A)``."""
    return torch.cat([m.flatten(2) for m in maps], 2)


def _oracle_raw(head_out: dict) -> torch.Tensor:
    """The oracle's ``{"boxes", "scores"}`` raw head output → ``(B, no, A)``."""
    return torch.cat((head_out["boxes"], head_out["scores"]), 1)


def max_output_differences(reference: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Run both models on ``x`` in eval and train mode; largest absolute difference per output.

    Keys: ``"eval"`` (decoded ``(B, 4 + nc, A)``; v10 from the one-to-one branch, decoded as xywh like
    ours) and ``"train"`` (v8 raw maps) or ``"train.one2many"`` / ``"train.one2one"`` (v10).
    Both models are left in train mode.
    """
    head = reference.model[-1]
    is_v10 = type(head).__name__ == "v10Detect"
    reference.eval(), ours.eval()
    with torch.no_grad():
        theirs_eval, theirs_raw = reference(x)
        if is_v10:
            end2end, head.end2end = head.end2end, False  # decode as xywh, like ours
            theirs_eval = head._inference(theirs_raw["one2one"])
            head.end2end = end2end
        mine_eval = ours(x)
        assert mine_eval.shape == theirs_eval.shape, (mine_eval.shape, theirs_eval.shape)
        out = {"eval": (mine_eval - theirs_eval).abs().max().item()}
        reference.train(), ours.train()
        theirs_train, mine_train = reference(x), ours(x)
    if is_v10:
        for branch in ("one2many", "one2one"):
            diff = _flatten_levels(mine_train[branch]) - _oracle_raw(theirs_train[branch])
            out[f"train.{branch}"] = diff.abs().max().item()
    else:
        out["train"] = (_flatten_levels(mine_train) - _oracle_raw(theirs_train)).abs().max().item()
    return out
