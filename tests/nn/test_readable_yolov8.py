"""The hand-written YOLOv8 (yolofreeze.nn.yolov8) is the yaml-built model: same state dict, same outputs."""
from __future__ import annotations

import pytest
import torch

from yolofreeze.model import build_model
from yolofreeze.nn.yolov8 import YOLOv8


def trained_looking_yaml_model(scale: str, nc: int = 80):
    """A yaml-built yolov8 in eval mode whose batch-norms are not at their init (seeded): random affine terms,
    running stats of one batch. Activations then keep their scale through the 23 blocks, so a wiring mistake
    changes the output by O(1), not by 1e-6 as with the init's unit running variances."""
    model = build_model(f"yolov8{scale}", nc=nc)
    generator = torch.Generator().manual_seed(0)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momentum = norms[0].momentum
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.empty(bn.num_features).uniform_(0.5, 1.5, generator=generator))
            bn.bias.copy_(torch.randn(bn.num_features, generator=generator) * 0.2)
            bn.momentum = 1.0  # the next train-mode pass sets the running stats to its batch's
        model.train()(torch.rand(2, 3, 64, 64, generator=generator))
    for bn in norms:
        bn.momentum = momentum
    return model.eval()


def readable_with(state_dict: dict[str, torch.Tensor], scale: str, nc: int = 80) -> YOLOv8:
    model = YOLOv8(scale, nc=nc).eval()
    model.load_state_dict(state_dict)
    return model


def image_batch() -> torch.Tensor:
    return torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("nc", [80, 3])
@pytest.mark.parametrize("scale", list("nsmlx"))
def test_state_dict_keys_order_and_shapes_equal_the_yaml_model(scale, nc):
    readable, yaml_built = YOLOv8(scale, nc=nc).state_dict(), build_model(f"yolov8{scale}", nc=nc).state_dict()
    assert [(k, v.shape) for k, v in readable.items()] == [(k, v.shape) for k, v in yaml_built.items()]


@pytest.mark.parametrize("scale", ["n", "s"])
def test_same_weights_give_identical_outputs_in_train_and_eval_mode(scale):
    yaml_built = trained_looking_yaml_model(scale)
    readable = readable_with(yaml_built.state_dict(), scale)
    x = image_batch()
    assert torch.equal(readable.model[22].stride, yaml_built.stride)
    with torch.no_grad():
        assert torch.equal(readable(x), yaml_built(x))
        readable.train()  # batch statistics; both models update their running stats alike
        yaml_built.train()
        maps, expected = readable(x), yaml_built(x)
    assert [m.shape for m in maps] == [(2, 64 + 80, 160 // s, 224 // s) for s in (8, 16, 32)]
    assert all(torch.equal(m, e) for m, e in zip(maps, expected, strict=True))


def test_one_changed_weight_changes_the_output():
    """The comparison above can fail: one neck tensor that differs shows in the decoded output."""
    yaml_built = trained_looking_yaml_model("n")
    weights = yaml_built.state_dict()
    weights["model.12.cv2.bn.bias"] = weights["model.12.cv2.bn.bias"] + 0.5  # the top-down C2f that makes n4
    readable = readable_with(weights, "n")
    x = image_batch()
    with torch.no_grad():
        assert (readable(x) - yaml_built(x)).abs().max() > 1e-3
