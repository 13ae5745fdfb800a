"""FreezePlan: exactly the named blocks are frozen, for every form of --freeze, on YOLOv8 and YOLOv10."""
from __future__ import annotations

import json

import pytest
import torch

from yolofreeze import build_model
from yolofreeze.freezing.plan import FreezePlan
from yolofreeze.training.loss import build_loss
from yolofreeze.training.optim import TrainConfig, build_optimizer, optimizer_step

# Facts of the architectures (README's table): yolov8 has 23 blocks, 10 in the backbone; yolov10 24 and 11.
SPECS = {
    "yolov8n": [("9", range(9)), (["0", "3", "5"], [0, 3, 5]), ("0-3,5", [0, 1, 2, 3, 5]), ("fr1", range(4)),
                ("fr2", range(9)), ("fr3", range(22)), ("backbone", range(10)), ("none", []), ("0", [])],
    "yolov10n": [("9", range(9)), (["2-4", "7"], [2, 3, 4, 7]), ("fr1", range(4)), ("fr2", range(9)),
                 ("fr3", range(23)), ("backbone", range(11)), ("none", [])],
}
CASES = [(arch, spec, set(blocks)) for arch, cases in SPECS.items() for spec, blocks in cases]


@pytest.fixture(scope="module")
def models():
    return {arch: build_model(arch, nc=3) for arch in SPECS}


@pytest.mark.parametrize("arch, spec, expected", CASES, ids=[f"{a}-{s}" for a, s, _ in CASES])
def test_exactly_the_named_blocks_are_frozen(arch, spec, expected):
    model = build_model(arch, nc=3)
    plan = FreezePlan.parse(spec, model)
    plan.apply(model)
    assert plan.frozen == expected
    for name, param in model.named_parameters():
        block = int(name.split(".")[1])
        dfl = ".dfl." in name
        assert param.requires_grad == (block not in expected and not dfl), name
    frozen_count = sum(p.numel() for n, p in model.named_parameters() if int(n.split(".")[1]) in expected)
    assert plan.frozen_parameters(model) == frozen_count


@pytest.mark.parametrize("arch, spec, message", [
    ("yolov8n", "23", "has 23 blocks (0-22)"),
    ("yolov8n", "0-30", "has 23 blocks (0-22)"),
    ("yolov8n", ["0", "22"], "block 22 is yolov8n's detection head"),
    ("yolov10n", "24", "has 24 blocks (0-23)"),
    ("yolov10n", "fr9", "one of none, fr1, fr2, fr3, backbone"),
    ("yolov8n", "3-1", "has 23 blocks"),
])
def test_impossible_plans_are_refused_with_the_block_count(arch, spec, message, models):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FreezePlan.parse(spec, models[arch])


def test_optimiser_holds_no_state_for_frozen_parameters():
    torch.manual_seed(0)
    model = build_model("yolov8n", nc=2)
    plan = FreezePlan.parse("fr2", model)
    plan.apply(model)
    plan.set_train_mode(model)
    optimizer = build_optimizer(model, TrainConfig(batch=2, nbs=2), plan.trainable)
    frozen = {id(p) for n, p in model.named_parameters() if not plan.trainable(n)}
    assert frozen and not frozen & {id(p) for g in optimizer.param_groups for p in g["params"]}
    x = torch.rand(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 0, 0.3, 0.6, 0.2, 0.2]])
    total, _ = build_loss(model)(model(x), targets, (64, 64))
    total.backward()
    optimizer_step(model, optimizer, None)
    assert optimizer.state and not frozen & {id(p) for p in optimizer.state}
    assert all(p.grad is None for n, p in model.named_parameters() if not plan.trainable(n))


def test_frozen_batchnorm_stays_in_eval_mode_after_train():
    model = build_model("yolov8n", nc=2)
    plan = FreezePlan.parse("0-2", model)
    plan.set_train_mode(model)
    for index, block in enumerate(model.model):
        for module in block.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                assert module.training == (index > 2), index


def test_inspect_prints_the_audit_of_a_preset(capsys):
    from yolofreeze.inspect import main as inspect_main
    from yolofreeze.model import block_table
    assert inspect_main(["yolov10s", "--freeze", "fr2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {int(line.split()[0]): line.split() for line in lines[1:-1]}
    assert [i for i, r in rows.items() if "frozen" in r] == list(range(9))
    assert rows[9][1] == "SPPF" and "trainable" in rows[9]  # fr2 leaves SPPF trainable
    table = block_table(build_model("yolov10s"))
    frozen = sum(r["params"] for r in table[:9])
    assert f"{frozen:,} of {sum(r['params'] for r in table):,} parameters frozen" in lines[-1]
    assert lines[-1].endswith("frozen batch-norm: eval")


@pytest.mark.parametrize("frozen_bn", ["eval", "train"])
def test_frozen_tensors_do_not_move_in_a_real_run(frozen_bn, tmp_path):
    from yolofreeze.data import DEMO_NAMES, read_dataset, write_demo_dataset
    from yolofreeze.training.trainer import Trainer
    data = read_dataset(write_demo_dataset(tmp_path / "demo", n_train=16, n_val=4, size=128), "yolo")
    torch.manual_seed(0)
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse("0-8", model, frozen_bn)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch=8, nbs=8, imgsz=128, warmup_epochs=0)
    trainer = Trainer(model, data, cfg, tmp_path / "run", plan, workers=0, progress=False)
    (tmp_path / "run").mkdir()
    trainer.fit()
    end = trainer.model.state_dict()
    for key, value in start.items():
        block = int(key.split(".")[1])
        moved = not torch.equal(value, end[key])
        if block >= 9 and key.endswith(("conv.weight", "bn.running_mean")) and ".dfl." not in key:
            assert moved, key  # the trainable part did train
        if block < 9 and key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert moved == (frozen_bn == "train"), key
        elif block < 9:
            assert not moved, key
    audit = json.loads((tmp_path / "run" / "freeze_audit.json").read_text())
    [phase] = audit["integrity"]["phases"]
    assert phase["verified_after_epochs"] == [1] and audit["frozen_bn"] == frozen_bn
    assert phase["first_epoch"] == 1 and phase["frozen_blocks"] == list(range(9))
    buffers = [k for k in phase["digests"] if k.endswith("running_mean")]
    assert bool(buffers) == (frozen_bn == "eval")  # eval mode also proves the BN statistics stayed


def test_a_frozen_tensor_that_moves_fails_the_run_and_is_named(tmp_path):
    from yolofreeze.data import DEMO_NAMES, read_dataset, write_demo_dataset
    from yolofreeze.freezing.plan import FrozenTensorChanged
    from yolofreeze.training.trainer import Trainer
    data = read_dataset(write_demo_dataset(tmp_path / "demo", n_train=8, n_val=2, size=128), "yolo")
    model = build_model("yolov8n", names=list(DEMO_NAMES))
    plan = FreezePlan.parse("fr1", model)
    (tmp_path / "run").mkdir()
    trainer = Trainer(model, data, TrainConfig(epochs=1, batch=8, nbs=8, imgsz=128), tmp_path / "run", plan,
                      workers=0, progress=False)

    def bug(module, inputs):  # a fault: something writes into a frozen weight during training
        with torch.no_grad():
            model.model[3].conv.weight[0, 0, 0, 0] += 1e-3

    model.model[5].register_forward_pre_hook(bug)  # a trainable block: it runs (the frozen prefix runs folded)
    with pytest.raises(FrozenTensorChanged, match=r"1 frozen tensor\(s\) changed by the end of epoch 1: "
                                                  r"model\.3\.conv\.weight$"):
        trainer.fit()
