"""Post-processing equals the oracle's on the same tensors (v8 NMS, v10 top-k); letterbox mapping equals its scale_boxes."""
from __future__ import annotations

import pytest
import torch

from oracle import build_oracle, save_release, ultralytics
import numpy as np

from yolofreeze.boxes import unletterbox_boxes
from yolofreeze.data import letterbox_from_original
from yolofreeze.weights.checkpoints import convert_official
from yolofreeze.model import build_model
from yolofreeze.evaluation.postprocess import nms, postprocess


def confident_input(seed: int) -> torch.Tensor:
    """An image-like input; heads' class biases are raised so that some scores pass conf=0.25."""
    return torch.rand(2, 3, 160, 192, generator=torch.Generator().manual_seed(seed))


def raise_class_bias(model: torch.nn.Module, value: float) -> None:
    for name, p in model.named_parameters():
        if "cv3." in name and name.endswith("2.bias"):
            p.data.fill_(value)


def assert_same_detections(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> None:
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.shape[0] > 0
        assert torch.equal(a[:, 5], b[:, 5])
        assert (a[:, :4] - b[:, :4]).abs().max().item() <= 1e-3
        assert (a[:, 4] - b[:, 4]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("multi_label", [False, True])
def test_v8_nms_matches_oracle(tmp_path, multi_label):
    ultralytics()
    from ultralytics.utils.nms import non_max_suppression

    oracle = build_oracle("yolov8n")
    raise_class_bias(oracle, -0.5)
    ours = convert_official(save_release(oracle, tmp_path / "v8.pt")).eval()
    oracle = oracle.half().float().eval()
    x = confident_input(3)
    with torch.no_grad():
        theirs = non_max_suppression(oracle(x)[0], 0.25, 0.7, multi_label=multi_label, max_det=300)
        mine = nms(ours(x), conf=0.25, iou=0.7, max_det=300, multi_label=multi_label)
    assert_same_detections(mine, theirs)


@pytest.mark.parametrize("head", ["one2one", "one2many"])
def test_v10_heads_match_oracle(tmp_path, head):
    """one2one: NMS-free top-k (the paper's, our default); one2many: NMS, the installed reference's default."""
    ultralytics()
    from ultralytics.utils.nms import non_max_suppression

    oracle = build_oracle("yolov10n")
    raise_class_bias(oracle, -0.5)
    ours = convert_official(save_release(oracle, tmp_path / "v10.pt")).eval().use_v10_head(head)
    oracle = oracle.half().float().eval()
    oracle.model[-1].end2end = head == "one2one"
    x = confident_input(4)
    with torch.no_grad():
        theirs = non_max_suppression(oracle(x)[0], 0.25, 0.7, max_det=300, end2end=head == "one2one")
        mine = postprocess(ours(x), ours.nms_free, conf=0.25, iou=0.7, max_det=300)
    assert ours.nms_free == (head == "one2one")
    assert_same_detections(mine, theirs)


def test_v10_head_choice_is_checked():
    v8, v10 = build_model("yolov8n"), build_model("yolov10n")
    assert v8.use_v10_head("one2one") is v8 and not v8.nms_free
    with pytest.raises(ValueError, match="applies to YOLOv10"):
        v8.use_v10_head("one2many")
    with pytest.raises(ValueError, match="unknown YOLOv10 head"):
        v10.use_v10_head("both")


@pytest.mark.parametrize("orig_hw,target_hw", [((480, 640), (480, 640)), ((1080, 1920), (384, 640)),
                                               ((333, 517), (352, 544)), ((700, 300), (640, 288))])
def test_loader_letterbox_inverts_like_oracle_scale_boxes(orig_hw, target_hw):
    ultralytics()
    from ultralytics.utils.ops import scale_boxes

    boxes = torch.rand(50, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor(target_hw[::-1] * 2)
    boxes = torch.cat((boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])), 1)
    image = np.zeros((*orig_hw, 3), np.uint8)
    _, gain, pad = letterbox_from_original(image, orig_hw, max(target_hw), shape=target_hw)
    mine = unletterbox_boxes(boxes, gain, pad, orig_hw)
    theirs = scale_boxes(target_hw, boxes.clone(), orig_hw)
    assert (mine - theirs).abs().max().item() <= 1e-3
