"""Fine-tuning on other classes: with_class_names keeps every weight it can, remaps classes by name."""
from __future__ import annotations

import pytest
import torch

from yolofreeze.model import build_model, with_class_names

X = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))


def seeded(name: str, names: list[str]):
    torch.manual_seed(0)
    model = build_model(name, names=names)
    with torch.no_grad():  # class biases away from the shared prior, so every class channel differs
        for key, value in model.state_dict().items():
            if "cv3" in key and key.endswith("2.bias"):
                value.copy_(torch.linspace(-3, 1, len(value)))
    return model.eval()


@pytest.mark.parametrize("arch", ["yolov8s", "yolov10n"])
def test_same_names_in_another_order_is_a_pure_remap(arch):
    old = seeded(arch, ["insulator", "defect", "damper"])
    transfer = with_class_names(old, ["damper", "Insulator ", "defect"])
    new = transfer.model.eval()
    with torch.no_grad():
        before, after = old(X), new(X)
    assert torch.equal(after[:, :4], before[:, :4])  # boxes untouched
    for new_class, old_class in enumerate([2, 0, 1]):
        assert torch.equal(after[:, 4 + new_class], before[:, 4 + old_class])
    assert transfer.fresh_classes == [] and transfer.fresh_tensors == []
    assert "damper (was 2)" in transfer.message()


def test_new_classes_get_fresh_outputs_only():
    old = seeded("yolov8s", ["insulator", "defect"])
    transfer = with_class_names(old, ["defect", "bird_nest", "damper"])
    new = transfer.model.eval()
    old_state, new_state = old.state_dict(), new.state_dict()
    changed = [k for k in new_state
               if new_state[k].shape != old_state[k].shape or not torch.equal(new_state[k], old_state[k])]
    assert changed and all(".cv3." in k and k.endswith(("2.weight", "2.bias")) for k in changed)
    with torch.no_grad():
        before, after = old(X), new(X)
    assert torch.equal(after[:, 4], before[:, 5])  # defect kept
    assert not torch.equal(after[:, 5], before[:, 4]) and not torch.equal(after[:, 5], before[:, 5])
    assert transfer.kept == {"defect": 1} and transfer.fresh_classes == ["bird_nest", "damper"]
    assert "bird_nest, damper" in transfer.message()


def test_a_class_branch_whose_width_depends_on_nc_is_reinitialised_and_said():
    """yolov8n's class branch is max(64, min(nc, 100)) wide: 80 for COCO, 64 for two classes."""
    old = build_model("yolov8n")
    transfer = with_class_names(old, ["person", "insulator"])
    old_state, new_state = old.state_dict(), transfer.model.state_dict()
    assert transfer.fresh_tensors and all(".cv3." in k for k in transfer.fresh_tensors)
    for key in new_state:
        if ".cv3." not in key:
            assert torch.equal(new_state[key], old_state[key]), key
    assert transfer.kept == {} and transfer.fresh_classes == ["person", "insulator"]
    assert "model.22.cv3.0" in transfer.message()
