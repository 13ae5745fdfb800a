"""pycocotools evaluation: sanity values, agreement with pycocotools used directly, format independence, oracle parity."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from oracle import build_oracle, save_release, ultralytics
from test_data_formats import write_coco, write_voc, write_yolo
from yolofreeze import load_model
from yolofreeze.data import read_coco, read_voc, read_yolo, resolve_dataset, to_coco_gt
from yolofreeze.evaluate import evaluate, score_split

import eval as eval_cli


def detections_from_gt(gt: dict, rng: np.random.Generator | None = None) -> list[dict]:
    """Ground truth as detections; with ``rng``: jitter boxes, drop some, add false positives, random scores."""
    dets = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        if rng is None:
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": [x, y, w, h],
                         "score": 1.0})
            continue
        if rng.random() < 0.2:
            continue
        dx, dy = rng.normal(0, 0.08, 2) * (w, h)
        dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                     "bbox": [x + dx, y + dy, w * rng.uniform(0.85, 1.15), h], "score": float(rng.uniform(0.2, 1))})
        if rng.random() < 0.3:  # a false positive of another class, overlapping
            other = gt["categories"][int(rng.integers(len(gt["categories"])))]["id"]
            dets.append({"image_id": ann["image_id"], "category_id": other, "bbox": [x + w / 3, y, w, h / 2],
                         "score": float(rng.uniform(0, 0.9))})
    return dets


def pycocotools_directly(gt: dict, dets: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        if cat_ids is not None:
            e.params.catIds = cat_ids
        e.evaluate(), e.accumulate(), e.summarize()
    return e.stats


@pytest.fixture
def cplid_val(shared_data):
    info = read_yolo(shared_data / "cplid-dev" / "data.yaml")
    return info, to_coco_gt(info.splits["val"], info.names)


def test_ground_truth_as_predictions_scores_one(cplid_val):
    _, gt = cplid_val
    result = score_split(gt, detections_from_gt(gt))
    assert result.map50_95 == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert all(c.ap50_95 == pytest.approx(1.0) for c in result.per_class)
    assert [c.instances for c in result.per_class] == [28, 12]  # counted from the label files' rows below
    assert sum(c.instances for c in result.per_class) == len(gt["annotations"])


def test_perturbed_predictions_score_what_pycocotools_gives(cplid_val):
    _, gt = cplid_val
    dets = detections_from_gt(gt, np.random.default_rng(7))
    result = score_split(gt, dets)
    stats = pycocotools_directly(gt, dets)
    assert 0.05 < result.map50_95 < 0.95
    assert (result.map50_95, result.map50, result.map75, result.ar100) == pytest.approx(
        (stats[0], stats[1], stats[2], stats[8]), abs=1e-12)
    for cls in result.per_class:
        cat = next(c["id"] for c in gt["categories"] if c["name"] == cls.name)
        alone = pycocotools_directly(gt, [d for d in dets if d["category_id"] == cat], cat_ids=[cat])
        assert (cls.ap50_95, cls.ap50) == pytest.approx((alone[0], alone[1]), abs=1e-12)


def test_no_detections_scores_zero(cplid_val):
    _, gt = cplid_val
    result = score_split(gt, [])
    assert result.map50_95 == 0 and [c.instances for c in result.per_class] == [28, 12]


SPEC = {split: [(f"{split[0]}{i}", (96 + 8 * i, 64 + 4 * i),
                  [[4.0 + i, 6.5, 40.0 + i, 50.0], [50.0, 2.0 + i, 90.0, 30.0], [20.0, 30.0, 60.0 + i, 60.0]],
                  [i % 3, (i + 1) % 3, 2], [False, False, False]) for i in range(n)]
        for split, n in (("train", 2), ("val", 6))}


def test_same_dataset_in_three_formats_gives_the_same_map(tmp_path):
    names = ["damper", "defect", "insulator"]
    infos = {"yolo": read_yolo(write_yolo(tmp_path / "yolo", SPEC, names)),
             "coco": read_coco(write_coco(tmp_path / "coco", SPEC, names)),
             "voc": read_voc(write_voc(tmp_path / "voc", SPEC, names), names=names)}
    scores = {}
    for fmt, info in infos.items():
        records = info.splits["val"]
        gt = to_coco_gt(records, info.names, info.category_ids)
        by_name = {r.path.stem: r.image_id for r in records}
        dets = []
        for stem in sorted(by_name):  # the same perturbed detections, expressed in each format's ids
            rng = np.random.default_rng(int(stem[1:]))
            record = next(r for r in records if r.path.stem == stem)
            for (x1, y1, x2, y2), cls in zip(record.boxes.tolist(), record.classes.tolist()):
                shift = rng.normal(0, 3)
                dets.append({"image_id": by_name[stem], "category_id": gt["categories"][cls]["id"],
                             "bbox": [x1 + shift, y1, x2 - x1, y2 - y1], "score": float(rng.uniform())})
        scores[fmt] = score_split(gt, dets).map50_95
    assert 0.1 < scores["yolo"] < 0.99
    assert scores["coco"] == pytest.approx(scores["yolo"], abs=1e-9)
    assert scores["voc"] == pytest.approx(scores["yolo"], abs=1e-9)


def test_evaluation_matches_the_oracle_validator(shared_data, tmp_path):
    """Same weights, same images; ground truth = the oracle's own confident predictions, so mAP is far from 0."""
    ultralytics()
    from ultralytics import YOLO as OracleYOLO

    source = shared_data / "cplid-dev" / "images" / "val"
    net = build_oracle("yolov8n", nc=2)
    for name, p in net.named_parameters():
        if "cv3." in name and name.endswith("2.bias"):
            p.data.fill_(0.0)
    weights = save_release(net, tmp_path / "w.pt")
    data = tmp_path / "pseudo"
    (data / "images").mkdir(parents=True)
    (data / "images" / "val").symlink_to(source, target_is_directory=True)
    (data / "labels" / "val").mkdir(parents=True)
    for res in OracleYOLO(str(weights)).predict(str(source), conf=0.5, max_det=10, imgsz=640, verbose=False, device="cpu"):
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                for c, (x, y, w, h) in zip(res.boxes.cls.tolist(), res.boxes.xywhn.tolist())]
        (data / "labels" / "val" / (res.path.rsplit("/", 1)[1].rsplit(".", 1)[0] + ".txt")).write_text("\n".join(rows))
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images/val\nval: images/val\nnames:\n  0: a\n  1: b\n")

    info = read_yolo(data / "data.yaml")
    records = info.splits["val"]
    ours = evaluate(load_model(weights), records, info.names, out_dir=tmp_path / "ours", batch=16, progress=False)

    OracleYOLO(str(weights)).val(data=str(data / "data.yaml"), imgsz=640, batch=16, conf=0.001, iou=0.7,
                                 save_json=True, plots=False, device="cpu", project=str(tmp_path / "ov"), name="v",
                                 verbose=False)
    stem_to_id = {r.path.stem: r.image_id for r in records}
    theirs_json = json.loads((tmp_path / "ov" / "v" / "predictions.json").read_text())
    theirs_dets = [{"image_id": stem_to_id[str(d["image_id"])], "category_id": d["category_id"], "bbox": d["bbox"],
                    "score": d["score"]} for d in theirs_json]
    theirs = score_split(to_coco_gt(records, info.names), theirs_dets)
    assert ours.instances > 20, (ours, theirs)
    assert ours.map50_95 > 0.3
    assert abs(ours.map50_95 - theirs.map50_95) <= 0.005
    assert abs(ours.map50 - theirs.map50) <= 0.01  # measured 0.008: JPEG decoders differ by ±1 grey level


def test_eval_cli_on_demo_writes_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path / "datasets"))
    weights = save_release(build_oracle("yolov10n", nc=3), tmp_path / "w.pt")
    out = tmp_path / "eval"
    assert eval_cli.main(["--weights", str(weights), "--data", "DEMO", "--out", str(out), "--imgsz", "320",
                          "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "mAP@50:95" in printed and "rectangle" in printed and "ms inference" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"map50_95", "map50", "map75", "ar100", "per_class", "speed_ms"} <= set(metrics)
    assert metrics["images"] == len(resolve_dataset("demo").splits["val"])
    assert isinstance(json.loads((out / "predictions.json").read_text()), list)


def test_eval_cli_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert eval_cli.main(["--weights", "missing.pt", "--data", "insplad"]) == 1
    err = capsys.readouterr().err
    assert "InsPLAD" in err and str(tmp_path) in err
    weights = save_release(build_oracle("yolov8n"), tmp_path / "coco80.pt")
    assert eval_cli.main(["--weights", str(weights), "--data", "demo", "--workers", "0"]) == 1
    err = capsys.readouterr().err  # an unnamed 80-class model can only be matched by index: counts differ
    assert "the model has 80 classes" in err and "the dataset 3 (rectangle, ellipse, triangle)" in err
