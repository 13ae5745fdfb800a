"""The predict CLI on real photos: drawn images and a detections JSON in original-image coordinates."""
from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from oracle import build_oracle, save_release
from yolofreeze.predict import main as predict_main


def test_predict_writes_images_and_json(shared_data, tmp_path, capsys):
    oracle = build_oracle("yolov10n")
    for name, p in oracle.named_parameters():
        if "cv3." in name and name.endswith("2.bias"):
            p.data.fill_(0.0)  # sigmoid(0) = 0.5: random weights then give confident boxes everywhere
    weights = save_release(oracle, tmp_path / "w.pt")
    source = shared_data / "coco8" / "images" / "val"
    out = tmp_path / "pred"
    assert predict_main(["--weights", str(weights), "--source", str(source), "--out", str(out),
                         "--imgsz", "320", "--max-det", "7"]) == 0
    assert "4 images" in capsys.readouterr().out
    results = json.loads((out / "detections.json").read_text())
    assert len(results) == 4
    for entry in results:
        width, height = Image.open(entry["image"]).size
        assert 0 < len(entry["detections"]) <= 7
        for det in entry["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert det["score"] > 0.25 and det["class_name"] == oracle.names[det["class_id"]]
        drawn = Image.open(out / (entry["image"].rsplit("/", 1)[1]))
        assert drawn.size == (width, height)


def test_predict_missing_source_is_clear(tmp_path, capsys):
    assert predict_main(["--weights", "x.pt", "--source", str(tmp_path / "nope")]) == 2
    assert "source not found" in capsys.readouterr().err


def test_label_of_a_box_at_the_top_edge_is_drawn_inside_the_image(tmp_path):
    from yolofreeze.evaluation.detect import draw_detections

    path = tmp_path / "grey.png"
    Image.new("RGB", (200, 120), (128, 128, 128)).save(path)
    det = torch.tensor([[10.0, 0.0, 90.0, 60.0, 0.9, 0.0], [120.0, 50.0, 199.0, 110.0, 0.8, 1.0]])
    drawn = draw_detections(path, det, ["insulator", "defect"])
    def white_pixels(box):
        """Pixels of the white label text (anti-aliased) in ``box``."""
        return int((np.asarray(drawn.crop(box)).min(-1) > 230).sum())

    assert white_pixels((12, 2, 80, 18)) > 10  # the label's text, inside the box just below the top edge
    assert white_pixels((122, 30, 199, 50)) > 10  # room above this box: its label sits above it
    assert drawn.getpixel((30, 25)) == (128, 128, 128)  # and nothing else is painted inside the first box
