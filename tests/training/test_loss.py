"""The training loss equals the oracle's on identical predictions and targets: v8 (its ``v8DetectionLoss``, what its
trainer builds for YOLOv8) and v10 (its ``E2EDetectLoss``, the paper's dual assignment); total, each part and the
gradient with respect to the raw maps. Also the assigner, the target padding and the box geometry on their own."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from oracle import build_oracle, ultralytics
from yolofreeze.boxes import boxes_to_distances, ciou, expand_to_min_size, iou, xywh2xyxy, xyxy2xywh
from yolofreeze.training.loss import (GAINS, DetectionLoss, DualAssignmentLoss, assign, build_loss,
                             distribution_focal_loss, pad_targets)
from yolofreeze.model import build_model
from yolofreeze.nn.head import dist2bbox, make_anchors

RTOL = 1e-4

# name: (image H, W), boxes per image, box side range as a fraction of the image
BATCHES = {
    "crowded": ((256, 320), [5, 0, 35], (0.08, 0.6)),  # 35 overlapping boxes in one image, none in another
    "empty": ((192, 256), [0, 0], (0.1, 0.5)),
    "tiny": ((320, 192), [12, 3], (0.01, 0.08)),  # sides of 2-25 px: widened to 16 px when choosing candidates
}


def random_targets(gen: torch.Generator, counts: list[int], nc: int, sides: tuple[float, float]) -> torch.Tensor:
    """Loader-style ``(M, 6)`` ``[image, class, cx, cy, w, h]`` normalised, boxes inside the image, some on its edge."""
    rows = []
    for image, n in enumerate(counts):
        wh = torch.rand(n, 2, generator=gen) * (sides[1] - sides[0]) + sides[0]
        centre = wh / 2 + torch.rand(n, 2, generator=gen) * (1 - wh)
        centre[: n // 4, 0] = wh[: n // 4, 0] / 2  # touching the left edge
        cls = torch.randint(0, nc, (n, 1), generator=gen).float()
        rows.append(torch.cat((torch.full((n, 1), float(image)), cls, centre, wh), 1))
    return torch.cat(rows)


@functools.cache
def oracle_model(arch: str, nc: int) -> torch.nn.Module:
    return build_oracle(arch, seed=7, nc=nc).train()


def oracle_args(**gains: float):
    """Hyperparameters the way the oracle's trainer attaches them to its model (``model.args``)."""
    ultralytics()
    from ultralytics.cfg import get_cfg

    return get_cfg(overrides=gains)


def oracle_criterion(model: torch.nn.Module, v10: bool):
    """v8: what the oracle's trainer builds (``init_criterion``); v10: its ``E2EDetectLoss``, the paper's loss
    (its trainer builds ``E2ELoss`` with decaying one-to-many weight and top-7 instead)."""
    ultralytics()
    from ultralytics.utils.loss import E2EDetectLoss

    return E2EDetectLoss(model) if v10 else model.init_criterion()


def raw_maps(arch: str, nc: int, image_hw: tuple[int, int], batch: int, noise: float, seed: int):
    """The oracle model's train-mode output on random images, plus Gaussian noise on every logit, as our per-level
    leaf maps ``(B, 64 + nc, H_i, W_i)`` (a list; for v10 a dict of two lists)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        out = oracle_model(arch, nc)(torch.rand(batch, 3, *image_hw, generator=gen))

    def to_maps(branch: dict) -> list[torch.Tensor]:
        flat = torch.cat((branch["boxes"], branch["scores"]), 1)
        flat = flat + noise * torch.randn(flat.shape, generator=gen)
        sizes = [f.shape[-2:] for f in branch["feats"]]
        levels = flat.split([h * w for h, w in sizes], 2)
        return [lv.reshape(batch, -1, h, w).clone().requires_grad_() for lv, (h, w) in zip(levels, sizes)]

    return {k: to_maps(v) for k, v in out.items()} if "one2one" in out else to_maps(out)


def oracle_preds(maps: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our maps as the oracle head's train-mode dict (``boxes (B, 64, A)``, ``scores (B, nc, A)``, ``feats``)."""
    flat = torch.cat([m.flatten(2) for m in maps], 2)
    return {"boxes": flat[:, :64], "scores": flat[:, 64:], "feats": maps}


def leaves(maps) -> list[torch.Tensor]:
    return maps["one2many"] + maps["one2one"] if isinstance(maps, dict) else maps


def run_both(arch: str, nc: int, batch_name: str, noise: float, seed: int = 0, gains: dict | None = None):
    """Our loss and the oracle's on the same maps and targets: ``(ours, theirs)``, each
    ``(total, parts {"box", "cls", "dfl"}, gradients w.r.t. the maps)``."""
    image_hw, counts, sides = BATCHES[batch_name]
    targets = random_targets(torch.Generator().manual_seed(seed + 100), counts, nc, sides)
    maps = raw_maps(arch, nc, image_hw, len(counts), noise, seed)
    v10 = arch.startswith("yolov10")
    model = oracle_model(arch, nc)
    model.args = oracle_args(**(gains or {}))
    criterion = oracle_criterion(model, v10)
    batch = {"batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}
    preds = {k: oracle_preds(v) for k, v in maps.items()} if v10 else oracle_preds(maps)
    theirs_vector, their_items = criterion(preds, batch)
    theirs_total = theirs_vector.sum()  # what the oracle's trainer back-propagates
    their_parts = dict(zip(("box", "cls", "dfl"), their_items.values()))
    ours_loss = (DualAssignmentLoss if v10 else DetectionLoss)(nc, tuple(model.stride.tolist()), gains=gains)
    ours_total, our_parts = ours_loss(maps, targets, image_hw)
    return ((ours_total, our_parts, torch.autograd.grad(ours_total, leaves(maps))),
            (theirs_total, their_parts, torch.autograd.grad(theirs_total, leaves(maps))))


def assert_close_rel(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    assert ours.shape == theirs.shape, what
    diff = (ours.detach() - theirs.detach()).abs().item()
    assert diff <= RTOL * theirs.abs().item() + 1e-7, f"{what}: ours {ours.item()} theirs {theirs.item()}"


def assert_same_gradients(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> None:
    """Every gradient element within 1e-4 of the largest gradient magnitude (zero gradients stay zero)."""
    scale = max(g.abs().max().item() for g in theirs)
    assert scale > 0
    assert len(ours) == len(theirs) > 0
    for mine, ref in zip(ours, theirs, strict=True):
        assert (mine - ref).abs().max().item() <= RTOL * scale
        assert torch.equal(mine == 0, ref == 0)


@pytest.mark.parametrize("arch", ["yolov8n", "yolov10n"])
@pytest.mark.parametrize("nc", [2, 80])
@pytest.mark.parametrize("batch_name", list(BATCHES))
@pytest.mark.parametrize("noise", [0.0, 1.5], ids=["model", "perturbed"])
def test_loss_and_gradients_match_oracle(arch, nc, batch_name, noise):
    (total, parts, grads), (their_total, their_parts, their_grads) = run_both(arch, nc, batch_name, noise)
    assert_close_rel(total, their_total, "total")
    for name in ("box", "cls", "dfl"):
        assert_close_rel(parts[name], their_parts[name], name)
        assert not parts[name].requires_grad
    assert_same_gradients(grads, their_grads)
    if batch_name == "empty":
        assert parts["box"] == 0 and parts["dfl"] == 0 and parts["cls"] > 0
    else:
        assert parts["box"] > 0 and parts["dfl"] > 0


@pytest.mark.parametrize("arch", ["yolov8n", "yolov10n"])
def test_custom_gains_match_oracle(arch):
    gains = {"box": 2.0, "cls": 3.0, "dfl": 0.25}
    (total, parts, grads), (their_total, their_parts, their_grads) = run_both(arch, 2, "crowded", 1.0, 3, gains)
    assert_close_rel(total, their_total, "total")
    for name in gains:
        assert_close_rel(parts[name], their_parts[name], name)
    assert_same_gradients(grads, their_grads)


def test_total_is_batch_size_times_the_sum_of_parts():
    (total, parts, _), _ = run_both("yolov8n", 2, "crowded", 1.0)
    assert torch.allclose(total.detach(), 3 * sum(parts.values()), rtol=1e-6)


def test_v10_loss_is_the_sum_of_two_v8_losses_with_top10_and_top1():
    image_hw, counts, sides = BATCHES["crowded"]
    targets = random_targets(torch.Generator().manual_seed(5), counts, 2, sides)
    maps = raw_maps("yolov10n", 2, image_hw, len(counts), 1.0, 5)
    total, parts = DualAssignmentLoss(2, (8, 16, 32))(maps, targets, image_hw)
    many_total, many = DetectionLoss(2, (8, 16, 32), topk=10)(maps["one2many"], targets, image_hw)
    one_total, one = DetectionLoss(2, (8, 16, 32), topk=1)(maps["one2one"], targets, image_hw)
    assert torch.allclose(total, many_total + one_total)
    for name in GAINS:
        assert torch.allclose(parts[name], many[name] + one[name])
    assert not torch.allclose(many["box"], one["box"])


def assignment_inputs(seed: int, nc: int = 3):
    """Random but untied assigner inputs for a 256 x 320 image: scores, predicted boxes near their anchors (px),
    anchors (px) and padded ground truth (two images, 7 and 20 boxes)."""
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.zeros(1, 1, 256 // s, 320 // s) for s in (8, 16, 32)]
    points, strides = make_anchors(feats, torch.tensor([8.0, 16.0, 32.0]))
    anchors = points * strides
    scores = torch.rand(2, len(anchors), nc, generator=gen)
    distances = (torch.rand(2, len(anchors), 4, generator=gen) * 6 + 0.5) * strides
    boxes = dist2bbox(distances, anchors, xywh=False)
    targets = random_targets(gen, [7, 20], nc, (0.03, 0.5))
    labels, gt_boxes, mask = pad_targets(targets, 2, (256, 320), nc)
    return scores, boxes, anchors, labels, gt_boxes, mask


@pytest.mark.parametrize("topk", [10, 1])
def test_assignment_matches_oracle_assigner(topk):
    ultralytics()
    from ultralytics.utils.tal import TaskAlignedAssigner

    scores, boxes, anchors, labels, gt_boxes, mask = assignment_inputs(11)
    ours = assign(scores, boxes, anchors, labels, gt_boxes, mask, topk=topk)
    reference = TaskAlignedAssigner(topk=topk, num_classes=3, alpha=0.5, beta=6.0, stride=[8, 16, 32])
    _, their_boxes, their_scores, their_fg, their_index = reference(
        scores, boxes, anchors, labels[..., None].float(), gt_boxes, mask[..., None].float())
    fg = ours.foreground
    assert torch.equal(fg, their_fg) and fg.sum() >= mask.sum()
    assert torch.equal(ours.target_index[fg], their_index[fg])
    assert torch.equal(ours.target_boxes[fg], their_boxes[fg])
    assert torch.allclose(ours.target_scores, their_scores.float(), atol=1e-6)
    assert (ours.target_scores.sum(-1) > 0).sum() > 0 and torch.all(ours.target_scores[~fg] == 0)


def test_assignment_with_no_ground_truth_is_all_background():
    scores, boxes, anchors, labels, gt_boxes, mask = assignment_inputs(2)
    out = assign(scores, boxes, anchors, labels[:, :0], gt_boxes[:, :0], mask[:, :0])
    assert not out.foreground.any() and torch.all(out.target_scores == 0)
    assert out.target_scores.shape == scores.shape and out.target_boxes.shape == boxes.shape


def test_one_to_one_assignment_gives_each_ground_truth_at_most_one_anchor():
    scores, boxes, anchors, labels, gt_boxes, mask = assignment_inputs(4)
    out = assign(scores, boxes, anchors, labels, gt_boxes, mask, topk=1)
    for image in range(2):
        index = out.target_index[image][out.foreground[image]]
        assert len(index) == len(index.unique()) and len(index) > 0


def test_padding_matches_oracle_and_ignores_row_order():
    ultralytics()
    from ultralytics.utils.loss import v8DetectionLoss

    model = oracle_model("yolov8n", 2)
    model.args = oracle_args()
    targets = random_targets(torch.Generator().manual_seed(9), [3, 0, 6, 1], 2, (0.05, 0.4))
    labels, boxes, mask = pad_targets(targets, 4, (192, 256), 2)
    theirs = v8DetectionLoss(model).preprocess(targets, 4, torch.tensor([256.0, 192.0, 256.0, 192.0]))
    assert torch.equal(labels, theirs[..., 0].long()) and torch.equal(mask, theirs[..., 1:].sum(-1) > 0)
    assert torch.allclose(boxes, theirs[..., 1:], atol=1e-5)
    shuffled = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(1))]
    image = shuffled[:, 0]
    by_image = torch.cat([shuffled[image == i] for i in range(4)])
    assert all(torch.equal(a, b) for a, b in zip(pad_targets(shuffled, 4, (192, 256), 2),
                                                 pad_targets(by_image, 4, (192, 256), 2)))


def test_ciou_and_iou_match_oracle_values_and_gradients():
    ultralytics()
    from ultralytics.utils.metrics import bbox_iou

    gen = torch.Generator().manual_seed(0)
    a = xywh2xyxy(torch.rand(500, 4, generator=gen) * torch.tensor([40, 40, 20, 20]) + 0.5)
    b = xywh2xyxy(torch.rand(500, 4, generator=gen) * torch.tensor([40, 40, 20, 20]) + 0.5)
    b[:50] = a[:50]  # identical pairs
    assert torch.allclose(iou(a, b), bbox_iou(a, b, xywh=False).squeeze(-1), atol=1e-6)
    mine_in, their_in = a.clone().requires_grad_(), a.clone().requires_grad_()
    mine, theirs = ciou(mine_in, b), bbox_iou(their_in, b, xywh=False, CIoU=True).squeeze(-1)
    assert torch.allclose(mine, theirs, atol=1e-6) and mine.min() < 0 < mine.max()
    assert torch.allclose(mine[:50], torch.ones(50), atol=1e-6)
    mine.sum().backward(), theirs.sum().backward()
    assert torch.allclose(mine_in.grad, their_in.grad, atol=1e-5)


def test_ciou_equals_hand_computed_values():
    unit = torch.tensor([0.0, 0.0, 2.0, 2.0])
    shifted = torch.tensor([1.0, 0.0, 3.0, 2.0])  # IoU 1/3, centres 1 apart, enclosure diagonal² 9 + 4
    assert math.isclose(ciou(unit, shifted).item(), 1 / 3 - 1 / 13, rel_tol=1e-5)
    tall, wide = torch.tensor([0.0, 0.0, 1.0, 4.0]), torch.tensor([0.0, 0.0, 4.0, 1.0])
    v = 4 / math.pi ** 2 * (math.atan(0.25) - math.atan(4)) ** 2  # IoU 1/7, centres 1.5 apart in x and y
    expected = 1 / 7 - (1.5 ** 2 * 2) / 32 - v * v / (1 - 1 / 7 + v)
    assert math.isclose(ciou(tall, wide).item(), expected, rel_tol=1e-5)
    assert ciou(torch.tensor([0.0, 0.0, 0.0, 3.0]), torch.tensor([0.0, 0.0, 2.0, 0.0])).isfinite()


def test_box_conversions_are_inverse():
    boxes = torch.tensor([[1.0, 2.0, 5.0, 10.0], [-3.0, 0.5, 0.0, 0.75]])
    assert torch.allclose(xywh2xyxy(xyxy2xywh(boxes)), boxes)
    assert torch.equal(xyxy2xywh(boxes)[0], torch.tensor([3.0, 6.0, 4.0, 8.0]))
    points = torch.tensor([[2.0, 4.0], [-1.0, 0.6]])
    assert torch.allclose(dist2bbox(boxes_to_distances(points, boxes), points, xywh=False), boxes)
    assert torch.equal(boxes_to_distances(torch.tensor([0.0, 0.0]), boxes[0], 2.5), torch.tensor([0, 0, 2.5, 2.5]))


def test_small_boxes_are_widened_about_their_centre():
    boxes = torch.tensor([[10.0, 10.0, 14.0, 50.0], [0.0, 0.0, 30.0, 20.0]])
    assert torch.equal(expand_to_min_size(boxes, 16), torch.tensor([[4.0, 10.0, 20.0, 50.0], [0, 0, 30, 20]]))


def test_distribution_focal_loss_is_cross_entropy_on_the_two_nearest_bins():
    logits = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.full((3, 4), 2.25)
    expected = 0.75 * torch.nn.functional.cross_entropy(logits.view(-1, 16), torch.full((12,), 2), reduction="none") \
        + 0.25 * torch.nn.functional.cross_entropy(logits.view(-1, 16), torch.full((12,), 3), reduction="none")
    assert torch.allclose(distribution_focal_loss(logits, targets), expected.view(3, 4).mean(-1), atol=1e-6)


@pytest.mark.parametrize("arch", ["yolov8n", "yolov10n"])
def test_build_loss_trains_our_model(arch):
    model = build_model(arch, nc=3).train()
    loss = build_loss(model, {"box": 1.0, "cls": 2.0, "lr0": 0.01})
    assert isinstance(loss, DualAssignmentLoss if arch == "yolov10n" else DetectionLoss)
    first = loss.branches["one2one"] if arch == "yolov10n" else loss
    assert first.gains == {"box": 1.0, "cls": 2.0, "dfl": 1.5} and first.strides == (8.0, 16.0, 32.0)
    targets = random_targets(torch.Generator().manual_seed(0), [4, 2], 3, (0.1, 0.5))
    total, parts = loss(model(torch.rand(2, 3, 128, 160)), targets, (128, 160))
    total.backward()
    assert set(parts) == {"box", "cls", "dfl"} and total.isfinite()
    assert model.model[0].conv.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    loss = DetectionLoss(2, (8, 16, 32))
    maps = [torch.zeros(1, 66, 16 // s, 32 // s) for s in (1, 2, 4)]
    good = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.2]])
    with pytest.raises(ValueError, match=r"\(M, 6\)"):
        loss(maps, good[:, :5], (128, 256))
    with pytest.raises(ValueError, match="classes must lie in"):
        loss(maps, torch.tensor([[0, 2, 0.5, 0.5, 0.2, 0.2]]), (128, 256))
    with pytest.raises(ValueError, match="image indices must lie in"):
        loss(maps, torch.tensor([[1, 0, 0.5, 0.5, 0.2, 0.2]]), (128, 256))
    with pytest.raises(ValueError, match="does not match the first map"):
        loss(maps, good, (128, 128))
    with pytest.raises(ValueError, match=r"expected 3 maps \(B, 66, H, W\)"):
        loss([m[:, :65] for m in maps], good, (128, 256))
    with pytest.raises(ValueError, match="one2many"):
        DualAssignmentLoss(2, (8, 16, 32))(maps, good, (128, 256))
