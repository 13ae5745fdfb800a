"""The channels-last layout (``--channels-last``): the NCHW step's maths, up to float rounding, measured against a
float64 step as the truth.

The NCHW step is bit-identical to the reference loop's (tests/training/test_optim.py). The channels-last step
sums in another order, and PyTorch's CPU batch-norm in training mode accumulates its channels-last statistics
less precisely (on a (8, 32, 160, 160) map: running variance 1.1e-5 relative off the float64 value, NCHW 6.8e-8).
So one real step (8 cplid-dev photos, the real loss, the oracle-trained weights, 320 px) is compared with the
same step in float64: with nothing frozen the channels-last gradient is 2.8e-4 of its norm off (NCHW 6.4e-6;
with the weights a CI run's oracle training gave, 3.9e-3: the error grows where a channel's mean is large
against its spread, which the single-pass statistics cancel badly),
with the first 9 blocks frozen (their batch-norm in eval, the large maps no longer reduced in training mode)
1.1e-5 (NCHW 9e-7); the loss parts 8e-6 at most. Far below the step-to-step noise of SGD, but not float
precision, which is why NCHW is the default."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from yolofreeze.data import resolve_dataset
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.training.loss import build_loss
from yolofreeze.training.optim import TrainConfig
from yolofreeze.training.trainer import Trainer
from yolofreeze.weights.checkpoints import load_checkpoint, load_model

# (freeze, layout) -> bound on |gradient - float64 gradient| / |float64 gradient| (measured: see the docstring)
GRADIENT_BOUNDS = {("0", "nchw"): 2e-5, ("0", "nhwc"): 1e-2, ("9", "nchw"): 2e-5, ("9", "nhwc"): 1e-4}


@pytest.fixture(scope="module")
def cplid(shared_data):
    info = resolve_dataset(shared_data / "cplid-dev" / "data.yaml")
    return replace(info, splits={"train": info.splits["train"][:16], "val": info.splits["val"][:8]})


def _trainer(cplid, weights, run_dir, freeze: str = "0", **levers) -> Trainer:
    model = load_model(weights)
    run_dir.mkdir()
    cfg = TrainConfig(epochs=1, batch=8, nbs=8, imgsz=320, seed=0, patience=0)
    return Trainer(model, cplid, cfg, run_dir, FreezePlan.parse(freeze, model), workers=0, progress=False,
                   grad_norms=False, **levers)


def _float64_step(weights, freeze: str, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The loss parts and gradients of the step in float64 (NCHW): the truth both layouts are measured against."""
    model = load_model(weights).double()
    plan = FreezePlan.parse(freeze, model)
    plan.apply(model)
    plan.set_train_mode(model)
    total, parts = build_loss(model, {})(model(batch.images.double() / 255), batch.targets,
                                         tuple(batch.images.shape[-2:]))
    total.backward()
    return ({k: float(v) for k, v in parts.items()},
            {n: p.grad for n, p in model.named_parameters() if p.grad is not None})


def _relative(grads: dict[str, torch.Tensor], truth: dict[str, torch.Tensor]) -> float:
    assert grads.keys() == truth.keys() and truth
    gap = torch.cat([(grads[n].double() - t).flatten() for n, t in truth.items()]).norm()
    return float(gap / torch.cat([t.flatten() for t in truth.values()]).norm())


@pytest.mark.parametrize("freeze", ["0", "9"])
def test_a_step_in_either_layout_is_within_its_bound_of_the_float64_step(freeze, cplid, cplid_oracle_weights,
                                                                        tmp_path):
    gaps = {}
    for layout in ("nchw", "nhwc"):
        trainer = _trainer(cplid, cplid_oracle_weights, tmp_path / layout, freeze, channels_last=layout == "nhwc",
                           fold_frozen=False)
        weight = trainer.model.model[0].conv.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) != weight.is_contiguous()
        assert weight.is_contiguous() == (layout == "nchw")
        trainer.plan.set_train_mode(trainer.model)
        batch = next(iter(trainer.loader))
        if layout == "nchw":
            truth_parts, truth = _float64_step(cplid_oracle_weights, freeze, batch)
        parts = trainer.train_step(batch, 0, 0)
        for name, value in truth_parts.items():
            assert float(parts[name]) == pytest.approx(value, rel=1e-4), name
        grads = {n: p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
        gaps[layout] = _relative(grads, truth)
        assert gaps[layout] <= GRADIENT_BOUNDS[freeze, layout], layout
    assert gaps["nhwc"] != gaps["nchw"]  # the layouts did run different kernels


def test_a_channels_last_run_writes_nchw_checkpoints(cplid, cplid_oracle_weights, tmp_path):
    trainer = _trainer(cplid, cplid_oracle_weights, tmp_path / "run", "9", channels_last=True)
    trainer.fit()
    ckpt = load_checkpoint(trainer.run_dir / "weights" / "last.pt")
    tensors = [*ckpt["state_dict"].values(), *ckpt["train"]["model"].values()]
    assert any(t.ndim == 4 for t in tensors)
    assert all(t.is_contiguous() for t in tensors)
