"""The folded frozen prefix: a Conv+BN-folded inference copy of blocks 0..k-1 gives the unfolded prefix's outputs
within the stated bound, leaves the model's tensors (and the audit's digests) alone, and a training run with it
trains as one without it."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from yolofreeze.data import build_dataloader, resolve_dataset
from yolofreeze.freezing.folded import FOLD_TOLERANCE, FoldedPrefix, foldable_length, memory_format_of
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.model import build_model
from yolofreeze.training.optim import TrainConfig
from yolofreeze.training.runs import read_results
from yolofreeze.training.trainer import Trainer
from yolofreeze.weights.checkpoints import load_model


@pytest.fixture(scope="module")
def cplid(shared_data):
    """16 train and 8 val images of cplid-dev."""
    info = resolve_dataset(shared_data / "cplid-dev" / "data.yaml")
    return replace(info, splits={"train": info.splits["train"][:16], "val": info.splits["val"][:8]})


@pytest.fixture(scope="module")
def photos(cplid) -> torch.Tensor:
    """``(8, 3, 320, 320)`` letterboxed cplid-dev val photos in [0, 1]."""
    batch = next(iter(build_dataloader(cplid.splits["val"], 320, 8, workers=0)))
    return batch.images.float() / 255


def _relative_gap(reference: dict[int, torch.Tensor], folded: dict[int, torch.Tensor]) -> float:
    """Largest ``|folded - reference|`` over the largest ``|reference|``, over every output block."""
    assert folded.keys() == reference.keys()
    return max(float((folded[i] - reference[i]).abs().max() / reference[i].abs().max()) for i in reference)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("stop", [1, 4, 9, 15, 22])
def test_folded_prefix_outputs_are_the_unfolded_ones_within_the_stated_bound(stop, memory_format,
                                                                           cplid_oracle_weights, photos):
    model = load_model(cplid_oracle_weights).to(memory_format=memory_format)
    plan = FreezePlan.prefix(stop, model)
    plan.apply(model)
    plan.set_train_mode(model)  # frozen blocks' batch-norm in eval, the rest in train
    before = copy.deepcopy(model.state_dict())
    digests = plan.digest(model)

    reference = model.prefix_outputs(photos, stop)
    folded = FoldedPrefix(model, stop)
    outputs = folded(photos)

    assert outputs.start == stop and sorted(outputs.outputs) == model.boundary(stop)
    gap = _relative_gap(reference.outputs, outputs.outputs)
    assert 0 < gap <= FOLD_TOLERANCE  # folded: not the same code path, and within the bound
    assert not any(t.requires_grad for t in outputs.outputs.values())
    assert all(t.is_contiguous(memory_format=memory_format) for t in outputs.outputs.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and plan.digest(model) == digests
    assert all(not isinstance(m, torch.nn.BatchNorm2d) for m in folded.model.model[:stop].modules())
    prefix_bytes = sum(t.numel() * t.element_size() for block in model.model[:stop]
                       for t in [*block.parameters(), *block.buffers()] if t.dtype.is_floating_point)
    assert folded.tensor_bytes() <= prefix_bytes  # only the prefix is copied (folding drops the BN tensors)


def test_the_copy_follows_the_model_layout():
    model = build_model("yolov8n", nc=2)
    assert memory_format_of(model) == torch.contiguous_format
    assert memory_format_of(model.to(memory_format=torch.channels_last)) == torch.channels_last
    folded = FoldedPrefix(model, 4)
    assert folded.memory_format == torch.channels_last
    assert folded.model.model[0].conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("freeze, bn, expected", [
    ("9", "eval", 9), ("fr3", "eval", 22), ("0 1 3", "eval", 2), ("1-4", "eval", 0), ("0", "eval", 0),
    ("9", "train", 0)])
def test_what_folds_is_the_leading_run_of_frozen_blocks_with_eval_batch_norm(freeze, bn, expected):
    model = build_model("yolov8n", nc=2)
    assert foldable_length(FreezePlan.parse(freeze.split(), model, bn)) == expected


def test_a_stop_outside_the_model_is_refused():
    model = build_model("yolov8n", nc=2)
    for stop in (0, len(model.blocks)):
        with pytest.raises(ValueError, match="can start at blocks"):
            FoldedPrefix(model, stop)


def _fit(cplid, weights, run_dir, **levers) -> tuple[list[torch.Tensor], dict, Trainer, list]:
    """Two epochs of fr2 at 160 px from ``weights`` (each epoch's frozen tensors checked against the audit's
    digests by ``fit``); per-step losses, results.csv, the trainer and the folded prefix each step ran."""
    model = load_model(weights)
    cfg = TrainConfig(epochs=2, batch=8, nbs=8, imgsz=160, seed=0, patience=0)
    run_dir.mkdir()
    trainer = Trainer(model, cplid, cfg, run_dir, FreezePlan.parse("fr2", model), workers=0, progress=False,
                      grad_norms=False, **levers)
    losses, step, folds = [], trainer.train_step, []

    def recorded(batch, epoch, index):
        folds.append(trainer.folded)
        parts = step(batch, epoch, index)
        losses.append(torch.stack([parts[k] for k in ("box", "cls", "dfl")]))
        return parts
    trainer.train_step = recorded
    trainer.fit()
    return losses, read_results(run_dir / "results.csv"), trainer, folds


def test_training_with_the_folded_prefix_trains_as_without_it(cplid, cplid_oracle_weights, tmp_path):
    folded, folded_rows, trainer, folds = _fit(cplid, cplid_oracle_weights, tmp_path / "folded")
    plain, plain_rows, _, unfolded = _fit(cplid, cplid_oracle_weights, tmp_path / "plain", fold_frozen=False)

    assert all(f is not None and f.stop == 9 for f in folds) and len({id(f) for f in folds}) == 2  # one per epoch
    assert all(f is None for f in unfolded)
    steps = torch.stack(folded), torch.stack(plain)
    assert len(steps[0]) == 2 * trainer.nb
    assert float(((steps[0] - steps[1]).abs() / steps[1].abs()).max()) <= 1e-4
    for column in ("val/box_loss", "val/cls_loss", "val/dfl_loss"):
        assert folded_rows[column] == pytest.approx(plain_rows[column], rel=1e-4), column
