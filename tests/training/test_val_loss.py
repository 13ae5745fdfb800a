"""Validation loss: the model's eval-mode pass gives detections and train-format maps at once, and ``evaluate`` with
a criterion reports the mean over batches of each loss part, equal to the oracle's own loss on the same letterboxed
batches (v8: what its trainer builds; v10: its ``E2EDetectLoss``, the paper's dual loss our ``DualAssignmentLoss``
matches, see test_loss.py)."""
from __future__ import annotations

import copy

import pytest
import torch

from oracle import build_oracle, save_release, ultralytics
from test_loss import oracle_args, oracle_criterion
from yolofreeze import load_model
from yolofreeze.data import build_dataloader, read_yolo
from yolofreeze.evaluation.evaluate import evaluate, format_result
from yolofreeze.training.loss import build_loss
from yolofreeze.model import build_model

IMGSZ, BATCH, IMAGES = 256, 4, 10  # three rectangular batches (4, 4, 2 images)
RTOL = 1e-4


@pytest.fixture
def cplid_val_subset(shared_data):
    info = read_yolo(shared_data / "cplid-dev" / "data.yaml")
    return info.names, info.splits["val"][:IMAGES]


def oracle_val_losses(oracle: torch.nn.Module, records, v10: bool) -> dict[str, float]:
    """The oracle model in eval mode on our loader's batches (the same tensors ``evaluate`` feeds ours), its loss
    on its own raw head output per batch, summed over batches and divided by their number, as its validator does."""
    oracle.eval()
    oracle.args = oracle_args()
    criterion = oracle_criterion(oracle, v10)
    loader = build_dataloader(records, imgsz=IMGSZ, batch=BATCH, rect=True, stride=32)
    sums, batches = torch.zeros(3), 0
    with torch.no_grad():
        for images, targets, _, failed in loader:
            assert not failed
            preds = oracle(images.float() / 255)
            batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}
            sums += torch.stack(list(criterion(preds, batch)[1].values()))
            batches += 1
    assert batches == 3
    return dict(zip(("box", "cls", "dfl"), (sums / batches).tolist()))


def assert_same_losses(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert set(ours) == {"box", "cls", "dfl"}
    for name, value in theirs.items():
        assert value > 0, (name, theirs)  # every part has ground truth to score
        assert ours[name] == pytest.approx(value, rel=RTOL), (name, ours, theirs)


def test_v8_val_loss_matches_the_oracle(cplid_oracle_weights, cplid_val_subset):
    names, records = cplid_val_subset
    model = load_model(cplid_oracle_weights)
    result = evaluate(model, records, names, imgsz=IMGSZ, batch=BATCH, progress=False, criterion=build_loss(model))
    oracle = ultralytics().YOLO(str(cplid_oracle_weights)).model
    assert_same_losses(result.losses, oracle_val_losses(oracle, records, v10=False))
    assert result.map50 > 0 and "validation loss: box" in format_result(result) and "ms loss" in format_result(result)
    assert evaluate(model, records, names, imgsz=IMGSZ, batch=BATCH, progress=False).losses == {}


def test_v10_val_loss_matches_the_oracle(cplid_val_subset, tmp_path):
    names, records = cplid_val_subset
    oracle = build_oracle("yolov10n", seed=3, nc=2)
    model = load_model(save_release(oracle, tmp_path / "v10.pt"))  # placeholder names: matched by index
    result = evaluate(model, records, names, imgsz=IMGSZ, batch=BATCH, progress=False, criterion=build_loss(model))
    reference = copy.deepcopy(oracle).half().float()  # the weights exactly as stored in the release (fp16)
    assert_same_losses(result.losses, oracle_val_losses(reference, records, v10=True))


def test_val_loss_needs_the_dataset_classes_in_order(cplid_val_subset):
    names, records = cplid_val_subset
    model = build_model("yolov8n", nc=2, names=list(reversed(names)))
    with pytest.raises(ValueError, match="validation loss needs the model's classes"):
        evaluate(model, records, names, imgsz=IMGSZ, progress=False, criterion=build_loss(model))


@pytest.mark.parametrize("arch", ["yolov8n", "yolov10n"])
def test_head_in_two_steps_gives_the_eval_output_and_its_train_format_maps(arch):
    model = build_model(arch, nc=3).eval()
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    branches = ["one2one", "one2many"] if arch == "yolov10n" else [None]
    with torch.no_grad():
        if arch == "yolov10n":  # a fresh one-to-one branch is a copy of the one-to-many one: set it apart
            for level in model.head.one2one_cv3:
                level[-1].bias.add_(1.0)
        for branch in branches:
            if branch:
                model.use_v10_head(branch)
            maps = model.head.maps(model.head_inputs(x))
            decoded = model.head.decode_maps(maps)
            assert torch.equal(decoded, model(x))
            levels = maps[branch] if branch else maps
            assert [tuple(m.shape) for m in levels] == [(2, 64 + 3, 96 // s, 128 // s) for s in (8, 16, 32)]
            assert torch.equal(model.head.decode(levels), decoded)
    if arch == "yolov10n":
        assert set(maps) == {"one2many", "one2one"}
        assert not torch.equal(maps["one2many"][0], maps["one2one"][0])
