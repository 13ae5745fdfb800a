"""Progressive unfreezing (--unfreeze) and per-part learning rates (--lr-mult): the trainable set changes at the
right epochs, newly trainable parameters start with fresh optimiser state, every phase is in the audit with its
digests, a run interrupted at either phase boundary resumes to the same weights, and each group trains at the
learning rate asked for."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from yolofreeze import build_model
from yolofreeze.data import read_dataset, write_demo_dataset
from yolofreeze.freezing.plan import FreezePlan, block_of
from yolofreeze.training.optim import GROUPS, TrainConfig, apply_schedule, lr_at
from yolofreeze.training.runs import read_results
from yolofreeze.training.trainer import Trainer

from watched_trainer import Watched, assert_same_run, killed_then_resumed  # beside this file (rootdir imports)

# 16 images, batches of 4, one step per batch, no warm-up: 4 SGD steps per epoch.
CONFIG = TrainConfig(epochs=3, batch=4, nbs=4, imgsz=64, warmup_epochs=0)
SCHEDULE = "1:fr1,2:none"  # with --freeze fr3: the head alone, then blocks 4-22, then everything
PARTS = {**{b: "backbone" for b in range(10)}, **{b: "neck" for b in range(10, 22)}, 22: "head"}  # yolov8 facts
WITH_WEIGHTS = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 16, 18, 19, 21, 22}  # yolov8 blocks that have parameters


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return read_dataset(write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=16, n_val=4,
                                           size=64), "yolo")


def make_trainer(data, run_dir: Path, stop_after=None) -> Watched:
    torch.manual_seed(0)
    model = build_model("yolov8n", names=data.names)
    plan = FreezePlan.parse("fr3", model).with_unfreeze(SCHEDULE, model)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Watched(model, data, CONFIG, run_dir, plan, workers=0, progress=False)
    trainer.stop_after = stop_after
    return trainer


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    trainer = make_trainer(data, tmp_path_factory.mktemp("runs") / "full")
    trainer.fit()
    return trainer


def test_unfreeze_schedule_parses_to_phases():
    model = build_model("yolov10n", nc=3)
    plan = FreezePlan.parse("fr3", model).with_unfreeze("10:fr1, 20:0-2,5 30:none", model)
    assert plan.phases() == [(0, frozenset(range(23))), (10, frozenset(range(4))), (20, frozenset({0, 1, 2, 5})),
                             (30, frozenset())]
    assert [plan.at(e).frozen for e in (0, 9, 10, 19, 20, 29, 30, 99)] == [
        frozenset(range(23))] * 2 + [frozenset(range(4))] * 2 + [frozenset({0, 1, 2, 5})] * 2 + [frozenset()] * 2
    assert FreezePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(ValueError, match="never reached in a 30-epoch run"):
        plan.check_schedule(30)


def test_trainable_set_changes_at_the_right_epochs_with_fresh_state(uninterrupted):
    seen = uninterrupted.seen
    trainable = {1: {22}, 2: set(range(4, 23)) & WITH_WEIGHTS, 3: WITH_WEIGHTS}
    for epoch, blocks in trainable.items():
        assert seen[epoch]["requires_grad"] == blocks, epoch
        assert seen[epoch]["in_optimizer"] == blocks, epoch
        assert seen[epoch]["exactly"], epoch  # every parameter that requires a gradient is in the optimiser
        assert seen[epoch]["moved"] == blocks, epoch  # exactly the trainable blocks trained
    # newly trainable parameters join with no optimiser state; the head keeps its momentum
    assert seen[1]["with_state"] == set()
    assert seen[2]["with_state"] == {22}
    assert seen[3]["with_state"] == trainable[2]


def test_every_phase_is_in_the_audit_with_its_digests(uninterrupted):
    audit = json.loads(uninterrupted.audit_path.read_text())
    assert audit["frozen_blocks"] == list(range(22))
    assert audit["unfreeze"] == [{"after_epochs": 1, "frozen_blocks": [0, 1, 2, 3]},
                                 {"after_epochs": 2, "frozen_blocks": []}]
    phases = audit["integrity"]["phases"]
    assert [(p["first_epoch"], p["frozen_blocks"], p["verified_after_epochs"]) for p in phases] == [
        (1, list(range(22)), [1]), (2, [0, 1, 2, 3], [2]), (3, [], [3])]
    assert {block_of(k) for k in phases[1]["digests"]} == {0, 1, 2, 3}
    for name, digest in phases[1]["digests"].items():  # still frozen: the same bytes as at the start
        assert phases[0]["digests"][name] == digest, name
    assert phases[2]["digests"] == {}


def test_memory_json_measures_every_phase_and_reports_the_largest(uninterrupted):
    memory = json.loads((uninterrupted.run_dir / "memory.json").read_text())
    params = dict(uninterrupted.model.named_parameters())
    phases = memory["phases"]
    assert [p["first_epoch"] for p in phases] == [1, 2, 3]
    assert [p["frozen_blocks"] for p in phases] == [list(range(22)), [0, 1, 2, 3], []]
    for phase in phases:
        trainable = 4 * sum(p.numel() for n, p in params.items()
                            if block_of(n) not in phase["frozen_blocks"] and ".dfl." not in n)
        assert phase["gradients_bytes"] == phase["optimizer_state_bytes"] == trainable
    totals = [p["estimated_total_bytes"] for p in phases]
    saved = [p["saved_activations_bytes"] for p in phases]
    assert totals[0] < totals[1] < totals[2] and saved[0] < saved[1] < saved[2]
    assert memory["estimated_total_bytes"] == totals[2] and memory["frozen_blocks"] == []


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_run_interrupted_at_a_phase_boundary_resumes_to_the_same_weights(stop_after, data, uninterrupted,
                                                                           tmp_path):
    resumed = killed_then_resumed(partial(make_trainer, data, tmp_path / "run"), stop_after)
    assert set(resumed.seen) == set(range(stop_after + 1, 4))
    assert_same_run(resumed, uninterrupted)


def test_lr_mult_groups_train_at_the_asked_rates(data, tmp_path):
    torch.manual_seed(0)
    model = build_model("yolov8n", names=data.names)
    plan = FreezePlan.parse("fr1", model).with_lr_mult("backbone=0.1,neck=0.5,head=1", model)
    cfg = TrainConfig(epochs=2, batch=4, nbs=4, imgsz=64, warmup_epochs=1)
    (tmp_path / "run").mkdir()
    trainer = Trainer(model, data, cfg, tmp_path / "run", plan, workers=0, progress=False)
    groups = trainer.optimizer.param_groups
    assert [(g["label"], g["name"], g["lr_mult"]) for g in groups] == [
        (label, kind, mult) for label, mult in (("backbone", 0.1), ("neck", 0.5), ("head", 1.0)) for kind in GROUPS]
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for param in group["params"]:
            assert PARTS[block_of(names[id(param)])] == group["label"], names[id(param)]
            assert block_of(names[id(param)]) >= 4  # fr1: blocks 0-3 are frozen and in no group
    for iteration, epoch in ((0, 0), (2, 0), (5, 1)):  # warm-up (4 iterations) and after
        apply_schedule(trainer.optimizer, iteration, epoch, cfg, trainer.nb)
        for group in groups:
            expected = lr_at(iteration, epoch, cfg, trainer.nb, bias=group["name"] == "bias") * group["lr_mult"]
            assert group["lr"] == pytest.approx(expected, rel=1e-12), (iteration, group["label"], group["name"])
    trainer.fit()
    rows = read_results(tmp_path / "run" / "results.csv")
    for label, mult in (("backbone", 0.1), ("neck", 0.5), ("head", 1.0)):
        assert rows[f"lr/{label}"] == pytest.approx([mult * lr for lr in rows["lr/pg0"]], rel=1e-5), label


def test_lr_mult_block_ranges_leave_the_rest_at_one():
    model = build_model("yolov10n", nc=3)
    plan = FreezePlan.parse("none", model).with_lr_mult("0-10=0.1", model)
    assert plan.lr_mult == (("0-10", tuple(range(11)), 0.1), ("rest", tuple(range(11, 24)), 1.0))
    assert [row["lr_mult"] for row in plan.audit(model)["blocks"]] == [0.1] * 11 + [1.0] * 13
    split = plan.lr_split()
    assert split.label_of("model.10.attn.qkv.conv.weight") == "0-10"
    assert split.label_of("model.23.cv2.0.0.conv.weight") == "rest"
