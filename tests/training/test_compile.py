"""``--compile``: the training forward/backward through torch.compile trains as the eager step does.

Compiling takes a minute or more on CPU (yolov8n, C++ kernels), so one short run: 3 steps at 64 px with the first
9 blocks frozen (the folded prefix stays eager; the trainable part is compiled). Skipped, with the reason, where
the compiler Inductor needs is missing."""
from __future__ import annotations

import pytest
import torch

from yolofreeze.data import resolve_dataset, write_demo_dataset
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.model import build_model
from yolofreeze.training.optim import TrainConfig
from yolofreeze.training.trainer import Trainer, compile_unavailable, seed_everything

REASON = compile_unavailable("cpu")


def _fit(data, run_dir, compile: bool) -> tuple[torch.Tensor, Trainer]:
    seed_everything(0)
    model = build_model("yolov8n", names=data.names)
    run_dir.mkdir()
    cfg = TrainConfig(epochs=1, batch=4, nbs=4, imgsz=64, seed=0, patience=0)
    trainer = Trainer(model, data, cfg, run_dir, FreezePlan.parse("9", model), workers=0, progress=False,
                      grad_norms=False, compile=compile)
    losses, step = [], trainer.train_step

    def recorded(batch, epoch, index):
        parts = step(batch, epoch, index)
        losses.append(torch.stack([parts[k] for k in ("box", "cls", "dfl")]))
        return parts
    trainer.train_step = recorded
    trainer.fit()
    return torch.stack(losses), trainer


@pytest.mark.skipif(REASON is not None, reason=f"torch.compile cannot work here: {REASON}")
def test_a_compiled_epoch_trains_as_the_eager_one(tmp_path):
    data = resolve_dataset(write_demo_dataset(tmp_path / "demo", n_train=12, n_val=4, size=64))
    compiled, trainer = _fit(data, tmp_path / "compiled", compile=True)
    eager, _ = _fit(data, tmp_path / "eager", compile=False)

    assert isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule)
    assert len(compiled) == len(eager) == 3
    assert torch.isfinite(compiled).all()
    # fused kernels: rounding only; measured against the largest loss (a tiny box loss of 0.002 moved 2e-4 of itself)
    assert float((compiled - eager).abs().max()) <= 1e-4 * float(eager.abs().max())
    assert (trainer.run_dir / "weights" / "last.pt").is_file()


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    assert "'no-such-c++-compiler' is not on PATH" in compile_unavailable("cpu")
