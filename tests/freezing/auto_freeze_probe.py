"""A tiny ``--freeze auto`` run, in-process or as a ``torchrun`` script:
``python -m torch.distributed.run --nproc_per_node 2 tests/freezing/auto_freeze_probe.py OUT_DIR DATA_YAML``
(each rank writes ``OUT_DIR/auto_<rank>.json``: the phases it applied, what required gradients in each epoch and a
digest of its final parameters; rank 0 also the run folder ``OUT_DIR/run``).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from yolofreeze import build_model  # noqa: E402
from yolofreeze.data import read_dataset  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan, block_of  # noqa: E402
from yolofreeze.training.optim import TrainConfig  # noqa: E402
from yolofreeze.training.trainer import Trainer  # noqa: E402

# 16 images, batches of 4 (2 per process under 2-process DDP), one step per batch, no warm-up: 4 steps an epoch.
CONFIG = TrainConfig(epochs=3, batch=4, nbs=4, imgsz=64, warmup_epochs=0)
# Every block's r is far below this: the first decision (after 2 intervals, i.e. epoch 2) freezes up to the ceiling.
AUTO = ("1", "fr1", "1e6")


class Recording(Trainer):
    """Notes the blocks whose parameters require gradients at the start of each epoch (1-based)."""

    def train_epoch(self, epoch):
        self.trainable = getattr(self, "trainable", {})
        self.trainable[epoch + 1] = sorted({block_of(n) for n, p in self.model.named_parameters() if p.requires_grad})
        return super().train_epoch(epoch)


def run(out_dir: Path, data_yaml: Path) -> dict:
    torch.manual_seed(0)
    data = read_dataset(data_yaml, "yolo")
    model = build_model("yolov8n", names=data.names)
    run_dir = out_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = FreezePlan.build("auto", model, auto=AUTO)
    trainer = Recording(model, data, CONFIG, run_dir, plan, workers=0, progress=False, grad_norms=False)
    trainer.fit()
    weights = hashlib.sha256(b"".join(p.detach().contiguous().numpy().tobytes()  # parameters: each process's
                                      for p in trainer.model.parameters())).hexdigest()  # BN statistics differ
    return {"phases": [[first, sorted(blocks)] for first, blocks in trainer.freeze_plan.phases()],
            "trainable": trainer.trainable, "weights": weights}


if __name__ == "__main__":
    out, data_path = Path(sys.argv[1]), Path(sys.argv[2])
    record = run(out, data_path)
    (out / f"auto_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))
