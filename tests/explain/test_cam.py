"""Class-activation maps: Grad-CAM on a network whose answer is known, parity with pytorch-grad-cam (GradCAM,
GradCAM++, EigenCAM) on a trained detector, EigenCAM as the first principal component from ``torch.linalg.svd``,
the letterbox mapping for a landscape and a portrait image, constant maps without NaN, and the command's
``cam.json`` for YOLOv8 and YOLOv10 with bad input refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolofreeze.boxes import unletterbox_boxes
from yolofreeze.data.loader import letterbox_from_original, load_image
from yolofreeze.evaluation.postprocess import postprocess
from yolofreeze.explain.cam import (anchor_of, eigencam, energy_in_boxes, explain_image, gradcam, layer_maps,
                                   normalise, unletterbox_map)
from yolofreeze.weights.checkpoints import load_model, random_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
IMGSZ = 256


def test_gradcam_puts_the_mass_where_the_score_comes_from():
    """Two channels of activations: channel 0 lights region R, channel 1 region S; the score reads channel 0 only
    (through a conv, so the gradient flows as in a network). The map is R: all its mass there, none in S."""
    x = torch.zeros(1, 2, 16, 16)
    x[0, 0, 2:6, 9:14] = 1.0  # R
    x[0, 1, 10:15, 1:5] = 1.0  # S
    block = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        block.weight.copy_(torch.eye(2)[:, :, None, None])
    activations = block(x)
    score = (activations[0, 0] * torch.linspace(0.5, 1.5, 16)).sum()  # depends on channel 0 only
    gradients, = torch.autograd.grad(score, activations)
    cam = normalise(gradcam(activations[0].detach(), gradients[0])).numpy()
    assert energy_in_boxes(cam, [[9, 2, 14, 6]]) == pytest.approx(1.0)
    assert cam[10:15, 1:5].sum() == 0 and cam[2:6, 9:14].min() == pytest.approx(1.0)


def test_a_constant_map_normalises_to_zeros_not_nan():
    assert torch.equal(normalise(torch.full((4, 5), 3.0)), torch.zeros(4, 5))
    assert torch.equal(normalise(gradcam(torch.ones(3, 4, 4), torch.zeros(3, 4, 4))), torch.zeros(4, 4))
    assert energy_in_boxes(np.zeros((4, 4)), [[0, 0, 2, 2]]) == 0.0


def test_eigencam_is_the_first_principal_component():
    torch.manual_seed(0)
    activations = torch.randn(8, 1, 1) * torch.randn(1, 6, 7) + 0.1 * torch.randn(8, 6, 7)
    points = activations.reshape(8, -1).T.double()
    centred = points - points.mean(0)
    _, _, vh = torch.linalg.svd(centred)
    expected = (centred @ vh[0]).reshape(6, 7)
    ours = eigencam(activations).double()
    sign = 1.0 if expected.flatten()[expected.abs().argmax()] > 0 else -1.0
    torch.testing.assert_close(ours, sign * expected, rtol=1e-5, atol=1e-5)
    assert ours.flatten()[ours.abs().argmax()] > 0  # signed so that the strongest response is positive


@pytest.mark.parametrize("orig_hw", [(90, 160), (160, 90)], ids=["landscape", "portrait"])
def test_a_box_on_the_input_lands_on_the_same_box_in_original_pixels(orig_hw):
    image = np.zeros((*orig_hw, 3), np.uint8)
    canvas, gain, pad = letterbox_from_original(image, orig_hw, 64)
    box = torch.tensor([[12.0, 16.0, 40.0, 44.0]])  # input pixels, inside the content area
    cam = torch.zeros(canvas.shape[:2])
    cam[16:44, 12:40] = 1.0
    mapped = unletterbox_map(cam, gain, pad, orig_hw).numpy()
    assert mapped.shape == orig_hw
    x1, y1, x2, y2 = unletterbox_boxes(box, gain, pad, orig_hw)[0].tolist()
    margin = 2 / min(gain)  # bilinear sampling blurs the edge over about one input pixel
    ys, xs = np.mgrid[0:orig_hw[0], 0:orig_hw[1]] + 0.5
    inside = (xs > x1 + margin) & (xs < x2 - margin) & (ys > y1 + margin) & (ys < y2 - margin)
    outside = (xs < x1 - margin) | (xs > x2 + margin) | (ys < y1 - margin) | (ys > y2 + margin)
    assert inside.sum() > 100 and outside.sum() > 100
    assert mapped[inside].min() == pytest.approx(1.0) and mapped[outside].max() == pytest.approx(0.0)
    assert energy_in_boxes(mapped, [[x1, y1, x2, y2]]) > 0.97


@pytest.fixture(scope="module")
def cplid_model(cplid_oracle_weights):
    return load_model(cplid_oracle_weights).eval()


@pytest.fixture(scope="module")
def cplid_image(shared_data) -> torch.Tensor:
    path = sorted((shared_data / "cplid-dev" / "images" / "val").glob("*.jpg"))[0]
    resized, hw = load_image(path, IMGSZ)
    canvas, _, _ = letterbox_from_original(resized, hw, IMGSZ)
    return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].float() / 255


def test_gradcam_equals_pytorch_grad_cam_on_a_trained_detector(cplid_model, cplid_image):
    from pytorch_grad_cam import GradCAM

    layer = 15
    detections, ours = layer_maps(cplid_model, cplid_image, [layer], "gradcam", "class", conf=0.01)
    assert len(detections) >= 3  # a trained model: real detections, the top one is explained
    with torch.no_grad():
        pred = cplid_model(cplid_image)[0]
    top = detections[0]
    anchor, cls = anchor_of(pred, top), int(top[5])
    assert pred[4 + cls, anchor] == pytest.approx(float(top[4]))
    with GradCAM(model=cplid_model, target_layers=[cplid_model.model[layer]]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=cplid_image, targets=[lambda out: out[4 + cls, anchor]])[0])
    assert ours[0].shape == theirs.shape == cplid_image.shape[-2:]
    assert (ours[0] - theirs).abs().max().item() <= 1e-5


def test_eigencam_projection_equals_pytorch_grad_cam_up_to_its_arbitrary_sign(cplid_model, cplid_image):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    kept = {}
    handle = cplid_model.model[18].register_forward_hook(lambda m, i, o: kept.update(out=o.detach()))
    try:
        with torch.no_grad():
            cplid_model(cplid_image)
    finally:
        handle.remove()
    ours = eigencam(kept["out"][0])
    theirs = torch.from_numpy(get_2d_projection(kept["out"].numpy())[0])
    sign = 1.0 if (ours * theirs).sum() > 0 else -1.0
    scale = ours.abs().max()
    assert ((ours - sign * theirs).abs().max() / scale).item() <= 1e-4


def test_gradcam_plus_plus_equals_pytorch_grad_cam_where_its_epsilon_is_negligible(cplid_model, cplid_image):
    """pytorch-grad-cam adds 1e-6 to the denominator of alpha = g² / (2 g² + sum(A) g³); ours follows the formula
    without it. With the target scaled by 1e4 (g² ~ 1e-2 and more) the epsilon no longer matters and both agree."""
    from pytorch_grad_cam import GradCAMPlusPlus

    from yolofreeze.explain.cam import gradcam_plus_plus

    layer, scale = 15, 1e4
    kept = {}
    handle = cplid_model.model[layer].register_forward_hook(lambda m, i, o: kept.update(out=o))
    try:
        pred = cplid_model(cplid_image)[0]
    finally:
        handle.remove()
    detections = postprocess(pred[None].detach(), False, conf=0.01)[0]
    anchor, cls = anchor_of(pred.detach(), detections[0]), int(detections[0][5])
    gradients, = torch.autograd.grad(pred[4 + cls, anchor] * scale, kept["out"])
    ours = normalise(gradcam_plus_plus(kept["out"][0].detach(), gradients[0]))
    ours = torch.nn.functional.interpolate(ours[None, None], size=cplid_image.shape[-2:], mode="bilinear",
                                           align_corners=False)[0, 0]
    with GradCAMPlusPlus(model=cplid_model, target_layers=[cplid_model.model[layer]]) as cam:
        theirs = cam(input_tensor=cplid_image, targets=[lambda out: out[4 + cls, anchor] * scale])[0]
    assert (normalise(ours) - torch.from_numpy(theirs)).abs().max().item() <= 1e-4


def test_the_command_writes_maps_and_cam_json_for_v8_and_v10(cplid_oracle_weights, shared_data, tmp_path):
    images = shared_data / "cplid-dev" / "images" / "val"
    v10 = save_checkpoint(random_model("yolov10n", names=["insulator", "defect"], seed=0), tmp_path / "v10.pt")
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for label, weights, extra in (("v8", cplid_oracle_weights, ["--conf", "0.05", "--max-det", "4"]),
                                  ("v10", v10, ["--conf", "0.0001", "--max-det", "2", "--method", "eigencam"])):
        out = tmp_path / label
        done = subprocess.run([sys.executable, "-m", "yolofreeze.cam", "--weights", str(weights), "--source",
                               str(sorted(images.glob("*.jpg"))[0]), "--imgsz", str(IMGSZ), "--out", str(out),
                               *extra], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        records = json.loads((out / "cam.json").read_text())
        assert records, label
        for record in records:
            assert set(record) == {"image", "box", "class", "score", "method", "layers", "peak", "energy_in_box"}
            assert record["class"] in ("insulator", "defect") and 0 <= record["energy_in_box"] <= 1
            assert record["layers"] == ([15, 18, 21] if label == "v8" else [16, 19, 22])
        assert (out / f"{sorted(images.glob('*.jpg'))[0].stem}_cam.jpg").stat().st_size > 5_000


def test_per_detection_maps_are_in_original_pixels_and_follow_their_box(cplid_model, shared_data):
    path = sorted((shared_data / "cplid-dev" / "images" / "val").glob("*.jpg"))[0]
    explained = explain_image(cplid_model, path, IMGSZ, [15, 18, 21], "gradcam", "class", conf=0.05)
    h0, w0 = load_image(path, IMGSZ)[1]
    assert len(explained.maps) == len(explained.detections) > 0
    for cam, row in zip(explained.maps, explained.detections.tolist(), strict=True):
        assert cam.shape == (h0, w0) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        assert np.isfinite(cam).all()
        x1, y1, x2, y2 = row[:4]
        assert 0 <= x1 < x2 <= w0 and 0 <= y1 < y2 <= h0
    assert len({round(float(cam.sum()), 3) for cam in explained.maps}) > 1  # each detection its own map


def test_bad_layers_are_refused_with_one_line(tmp_path, shared_data):
    weights = save_checkpoint(random_model("yolov8n", nc=2, seed=0), tmp_path / "m.pt")
    image = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[0]
    for layers, message in (("22", "--layers 22: yolov8n's blocks before the head are 0-21"),
                            ("a,b", "--layers a,b: block numbers"),
                            ("15", "class-activation maps need the PyTorch model's gradients")):
        if layers == "15":  # an exported model has no blocks to hook: the .pt is needed
            weights = weights.with_suffix(".onnx")
            weights.write_bytes(b"not read")
        done = subprocess.run([sys.executable, "-m", "yolofreeze.cam", "--weights", str(weights), "--source",
                               str(image), "--layers", layers, "--conf", "0", "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
