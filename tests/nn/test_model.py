"""Model building: official parameter counts, keys, shapes, forward contracts, block table, fusion, bias init."""
from __future__ import annotations

import pytest
import torch

from oracle import V8_NAMES, V10_NAMES, build_oracle
from yolofreeze import block_table, build_model
from yolofreeze.model import MODELS_DIR


@pytest.mark.parametrize("name", V8_NAMES + V10_NAMES)
def test_keys_shapes_and_counts_equal_oracle(name):
    ours, theirs = build_model(name).state_dict(), build_oracle(name).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_published_parameter_counts():
    # The numbers printed on the model cards of the official releases.
    assert sum(p.numel() for p in build_model("yolov8n").parameters()) == 3_157_200
    assert sum(p.numel() for p in build_model("yolov10n").parameters()) == 2_775_520


def test_yaml_path_and_nc_override():
    model = build_model(MODELS_DIR / "yolov10s.yaml", nc=17)
    assert model.nc == 17 and model.arch == "yolov10s" and len(model.names) == 17
    assert model.state_dict()["model.23.one2one_cv3.0.2.bias"].shape == (17,)
    assert build_model("models/yolov8s.yaml").arch == "yolov8s"  # scale from the name, spec from yolov8.yaml
    family = build_model("models/yolov10.yaml", nc=17)  # no scale named: the smallest, with a warning
    assert family.arch == "yolov10n" and family.nc == 17
    assert build_model(MODELS_DIR / "yolov8.yaml").arch == "yolov8n"


def test_unknown_spec_errors_clearly():
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        build_model("yolov9z")


@pytest.mark.parametrize("name", ["yolov8n", "yolov10n"])
def test_train_mode_gives_raw_maps_and_eval_mode_decoded_xywh_and_sigmoid_scores(name):
    model = build_model(name, nc=3)
    x = torch.rand(2, 3, 96, 160)
    model.train()
    raw = model(x)
    levels = raw["one2many"] if name == "yolov10n" else raw
    assert [tuple(t.shape) for t in levels] == [(2, 64 + 3, 96 // s, 160 // s) for s in (8, 16, 32)]
    model.eval()
    with torch.no_grad():
        out = model(x)
    anchors = sum((96 // s) * (160 // s) for s in (8, 16, 32))
    assert out.shape == (2, 4 + 3, anchors)
    assert out[:, 4:].min() >= 0 and out[:, 4:].max() <= 1  # sigmoid scores
    assert out[:, 0].max() <= 160 + 1e-3 * 160 and out[:, 2].min() >= 0


def test_v10_one2one_branch_is_detached_from_backbone():
    model = build_model("yolov10n", nc=2).train()
    raw = model(torch.rand(1, 3, 64, 64))
    sum(t.sum() for t in raw["one2one"]).backward()
    assert model.model[0].conv.weight.grad is None  # no gradient reached the backbone
    assert model.model[23].one2one_cv2[0][0].conv.weight.grad is not None


def test_bias_init_equals_oracle():
    ours, theirs = build_model("yolov10n").state_dict(), build_oracle("yolov10n").state_dict()
    last_layers = [key for key in ours if key.startswith("model.23.") and key.endswith("2.bias")]
    assert len(last_layers) == 12  # box and class outputs, 3 levels, one-to-many and one-to-one branches
    for key in last_layers:
        assert torch.allclose(ours[key], theirs[key]), key


@pytest.mark.parametrize("name", ["yolov8s", "yolov10s", "yolov10l"])  # yolov10s/l contain RepVGGDW (large kernel)
def test_fusion_leaves_outputs_unchanged(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        before = model(x)
        model.fuse()
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # boxes compared in units of the input width (float32 spacing at ~500 px is 3e-5 px), scores directly
    scale = torch.tensor([128.0] * 4 + [1.0] * (before.shape[1] - 4)).view(1, -1, 1)
    assert ((before - after) / scale).abs().max().item() <= 1e-5


def test_block_table_matches_real_shapes():
    model = build_model("yolov10n").eval()
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: shapes.__setitem__(i, tuple(out.shape[1:])))
             for i, m in enumerate(model.model[:-1])]
    with torch.no_grad():
        model(torch.zeros(1, 3, 640, 640))
    for h in hooks:
        h.remove()
    rows = block_table(model, 640)
    assert [r["index"] for r in rows] == list(range(24))
    for r in rows[:-1]:
        assert r["output"] == "x".join(map(str, shapes[r["index"]]))
    assert [r["part"] for r in rows].count("backbone") == 11 and rows[-1]["part"] == "head"
    assert rows[-1]["output"] == "84x8400"
    assert sum(r["params"] for r in rows) == 2_775_520
