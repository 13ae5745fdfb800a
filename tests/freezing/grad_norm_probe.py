"""A short real run whose optimiser steps are watched from outside: before each step, the gradients' norms are
computed straight from ``.grad`` (per block, and the total as ``clip_grad_norm_`` reports it on copies).

Used in-process by tests/freezing/test_grad_norms.py and, for DDP, as a ``torchrun`` script:
``python -m torch.distributed.run --nproc_per_node 2 tests/freezing/grad_norm_probe.py OUT_DIR DATA_YAML``
(each rank writes ``OUT_DIR/probe_<rank>.json``; rank 0 the run folder ``OUT_DIR/run``).
"""
from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yolofreeze.training.trainer as train_module  # noqa: E402
from yolofreeze import build_model  # noqa: E402
from yolofreeze.data import read_dataset  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan, block_of  # noqa: E402
from yolofreeze.training.optim import TrainConfig  # noqa: E402

# 16 images in batches of 2 summed over 4 batches per step (nbs 8), no warm-up: accumulation from the first step.
CONFIG = TrainConfig(epochs=2, batch=2, nbs=8, imgsz=64, warmup_epochs=0)


def watch_steps(records: list[dict]):
    """An ``optimizer_step`` replacement that records the direct norms, then calls the real one."""
    real = train_module.optimizer_step

    def probe(model, optimizer, ema, scaler=None, on_norms=None):
        squares = defaultdict(float)
        copies = []
        for name, param in model.named_parameters():
            if param.grad is not None and param.requires_grad:
                squares[block_of(name)] += float(param.grad.double().pow(2).sum())
                copy = torch.zeros_like(param, requires_grad=True)
                copy.grad = param.grad.detach().clone()
                copies.append(copy)
        clip_total = float(torch.nn.utils.clip_grad_norm_(copies, max_norm=10.0))
        returned = real(model, optimizer, ema, scaler, on_norms)
        records.append({"blocks": {str(b): math.sqrt(v) for b, v in squares.items()},
                        "direct_total": math.sqrt(sum(squares.values())), "clip_total": clip_total,
                        "returned": returned})
        return returned
    return probe


def run(out_dir: Path, data_yaml: Path) -> list[dict]:
    """Train yolov8n (blocks 0-3 frozen) for ``CONFIG``; return the probe's records of this process."""
    records: list[dict] = []
    train_module.optimizer_step = watch_steps(records)
    torch.manual_seed(0)
    data = read_dataset(data_yaml, "yolo")
    model = build_model("yolov8n", names=data.names)
    run_dir = out_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = train_module.Trainer(model, data, CONFIG, run_dir, FreezePlan.parse("fr1", model), workers=0,
                                   progress=False)
    trainer.fit()
    return records


if __name__ == "__main__":
    out, data_path = Path(sys.argv[1]), Path(sys.argv[2])
    rows = run(out, data_path)
    (out / f"probe_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(rows))
