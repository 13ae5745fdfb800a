"""pycocotools evaluation: sanity values, agreement with pycocotools used directly, format independence, oracle parity
(mAP, and the reference-style precision / recall at the best-F1 confidence)."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import PROJECT_ROOT
from oracle import build_oracle, save_release, ultralytics
from dataset_files import write_coco, write_voc, write_yolo
from yolofreeze import load_model
from yolofreeze.data import read_coco, read_voc, read_yolo, resolve_dataset, to_coco_gt
from yolofreeze.evaluation.evaluate import EvalResult, evaluate, format_result, precision_recall_at_best_f1, score_split

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


def oracle_validator_map(weights, data_yaml, records, names, imgsz: int, out) -> tuple[EvalResult, float, float]:
    """The oracle validator's own detections (``save_json``), scored by the same pycocotools code as ours; and
    the validator's own mean precision and mean recall (``metrics/precision(B)``, ``metrics/recall(B)``)."""
    ultralytics()
    from ultralytics import YOLO as OracleYOLO

    metrics = OracleYOLO(str(weights)).val(data=str(data_yaml), imgsz=imgsz, batch=16, conf=0.001, iou=0.7,
                                           save_json=True, plots=False, device="cpu", project=str(out), name="v",
                                           verbose=False)
    stem_to_id = {r.path.stem: r.image_id for r in records}
    theirs = json.loads((out / "v" / "predictions.json").read_text())
    dets = [{"image_id": stem_to_id[str(d["image_id"])], "category_id": d["category_id"], "bbox": d["bbox"],
             "score": d["score"]} for d in theirs]
    return score_split(to_coco_gt(records, names), dets), float(metrics.box.mp), float(metrics.box.mr)


def pseudo_labelled_val(weights, source, imgsz: int, root) -> Path:
    """cplid-dev val images labelled with the oracle predictor's own confident boxes (at most 5 per image)."""
    ultralytics()
    from ultralytics import YOLO as OracleYOLO

    (root / "images" / "val").mkdir(parents=True)
    for image in source.iterdir():  # copies: the oracle's validator follows links to the real labels
        (root / "images" / "val" / image.name).write_bytes(image.read_bytes())
    (root / "labels" / "val").mkdir(parents=True)
    for res in OracleYOLO(str(weights)).predict(str(source), conf=0.1, max_det=5, imgsz=imgsz, verbose=False,
                                                device="cpu"):
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                for c, (x, y, w, h) in zip(res.boxes.cls.tolist(), res.boxes.xywhn.tolist())]
        (root / "labels" / "val" / (Path(res.path).stem + ".txt")).write_text("\n".join(rows))
    data_yaml = root / "data.yaml"
    data_yaml.write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: insulator\n  1: defect\n")
    return data_yaml


@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize("labels", ["real", "pseudo"])
def test_evaluation_matches_the_oracle_validator(labels, imgsz, cplid_oracle_weights, shared_data, tmp_path):
    """A checkpoint the oracle trained on cplid-dev, at a shrinking (320) and an equal (640) size.

    ``real``: the val labels (weak but real signal at 320). ``pseudo``: the oracle predictor's own confident
    boxes as ground truth, so mAP is far from zero and every pixel of preprocessing shows in it.

    Precision and recall: ours read COCOeval's greedy matching, the validator's its own IoU-ordered matching
    (and full-precision scores, ours are rounded to 5 decimals in the COCO results). Measured on these four
    cases: |dP| <= 1.0e-5, |dR| = 0 (P 0.019-0.76, R 0.036-0.85), the same detections being true positives
    at the best-F1 confidence. 0.002 (as for mAP) still catches a wrong recipe: without the F1 smoothing,
    P and R move by 0.015 and 0.07 on the pseudo-labelled 320 case.
    """
    source = shared_data / "cplid-dev" / "images" / "val"
    if labels == "real":
        data_yaml = tmp_path / "data.yaml"
        data_yaml.write_text(f"path: {shared_data / 'cplid-dev'}\ntrain: images/train\nval: images/val\n"
                             "names:\n  0: insulator\n  1: defect\n")
    else:
        data_yaml = pseudo_labelled_val(cplid_oracle_weights, source, imgsz, tmp_path / "pseudo")
    info = read_yolo(data_yaml)
    records = info.splits["val"]
    ours = evaluate(load_model(cplid_oracle_weights), records, info.names, out_dir=tmp_path / "ours", imgsz=imgsz,
                    batch=16, progress=False)
    theirs, their_precision, their_recall = oracle_validator_map(cplid_oracle_weights, data_yaml, records,
                                                                 info.names, imgsz, tmp_path / "oracle")
    if labels == "pseudo":
        assert ours.instances > 40 and theirs.map50_95 > 0.3, theirs
    elif imgsz == 320:
        assert ours.instances == 40 and theirs.map50 > 0.03, theirs  # not a comparison between two zeros
    assert abs(ours.map50_95 - theirs.map50_95) <= 0.002, (ours, theirs)
    assert abs(ours.map50 - theirs.map50) <= 0.002, (ours, theirs)
    assert their_precision > 0.01 and their_recall > 0.03  # the validator's own numbers, not a pair of zeros
    assert abs(ours.precision - their_precision) <= 0.002, (ours.precision, their_precision)
    assert abs(ours.recall - their_recall) <= 0.002, (ours.recall, their_recall)
    assert f"P {ours.precision:.4f}  R {ours.recall:.4f}" in format_result(ours)


def synthetic_detections(seed: int, n_gt: list[int], per_class: list[int], conf_ranges: list[tuple[float, float]]):
    """Untied confidences (uniform in each class's range); per class, true positives (at most its ground-truth
    count) likelier at high confidence.

    Returns ``tp (N,)``, ``conf (N,)``, ``pred_cls (N,)`` and ``target_cls (sum(n_gt),)``."""
    rng = np.random.default_rng(seed)
    tp, conf, cls = [], [], []
    for c, (gts, dets, conf_range) in enumerate(zip(n_gt, per_class, conf_ranges)):
        scores = rng.uniform(*conf_range, dets)
        likely = rng.random(dets) < scores  # more often right when confident
        hits = np.flatnonzero(likely)[:gts] if gts else []
        flags = np.zeros(dets, bool)
        flags[hits] = True
        tp.append(flags), conf.append(scores), cls.append(np.full(dets, c))
    conf = np.concatenate(conf)
    assert len(np.unique(conf)) == len(conf)
    target_cls = np.repeat(np.arange(len(n_gt)), n_gt)
    return np.concatenate(tp), conf, np.concatenate(cls), target_cls


def oracle_mean_precision_recall(tp, conf, pred_cls, target_cls) -> tuple[float, float]:
    """The oracle's ``ap_per_class`` on IoU-0.5 flags: mean precision and recall over classes (``mp``, ``mr``)."""
    ultralytics()
    from ultralytics.utils.metrics import ap_per_class

    _, _, p, r, *_ = ap_per_class(tp[:, None].astype(float), conf, pred_cls, target_cls)
    return float(p.mean()), float(r.mean())


ANY = (0.0, 1.0)
PR_CASES = {  # name: ground truth per class, detections per class, confidence range per class
    "four classes": ([50, 30, 12, 5], [220, 90, 40, 30], [ANY] * 4),
    "class without detections": ([20, 9, 14], [80, 0, 50], [ANY] * 3),
    "class without ground truth": ([25, 0, 7], [60, 40, 30], [ANY] * 3),
    "few confident detections": ([6, 3], [5, 2], [(0.6, 0.95)] * 2),
    "one class": ([40], [150], [(0.001, 0.9)]),
    "a class only below the best threshold": ([30, 10], [60, 20], [(0.3, 1.0), (0.0, 0.02)]),
}


@pytest.mark.parametrize("case", list(PR_CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_precision_recall_at_best_f1_matches_the_oracle(case, seed):
    n_gt, per_class, conf_ranges = PR_CASES[case]
    tp, conf, pred_cls, target_cls = synthetic_detections(seed, n_gt, per_class, conf_ranges)
    theirs = oracle_mean_precision_recall(tp, conf, pred_cls, target_cls)
    order = np.random.default_rng(seed + 10).permutation(len(tp))  # input order does not matter
    ours = precision_recall_at_best_f1(tp[order], conf[order], pred_cls[order], n_gt)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert 0 < ours[0] <= 1 and 0 < ours[1] <= 1
    by_id = precision_recall_at_best_f1(tp, conf, pred_cls + 7, {c + 7: n for c, n in enumerate(n_gt)})
    assert by_id == pytest.approx(ours, abs=1e-12)  # classes named by any id (COCO category ids)


def test_precision_recall_read_cocoeval_matches_at_iou_50_without_ignored_boxes():
    """A detection on a crowd box is neither right nor wrong and the crowd box is not counted; a box found at
    IoU 0.6 (a miss at 0.75) is a hit. The flags below are what IoU 0.5 matching gives, written by hand."""
    def box(ann_id: int, cat: int, xywh: list[float], crowd: int = 0) -> dict:
        return {"id": ann_id, "image_id": 1, "category_id": cat, "bbox": xywh, "area": xywh[2] * xywh[3],
                "iscrowd": crowd}

    gt = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}],
          "categories": [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}],
          "annotations": [box(1, 3, [10, 10, 40, 40]), box(2, 3, [100, 100, 60, 60], crowd=1),
                          box(3, 5, [10, 120, 50, 50]), box(4, 5, [120, 10, 30, 30])]}
    dets = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 40, 40], "score": 0.9},  # hit
            {"image_id": 1, "category_id": 3, "bbox": [105, 105, 40, 40], "score": 0.8},  # on the crowd box
            {"image_id": 1, "category_id": 5, "bbox": [60, 60, 30, 30], "score": 0.7},  # nothing there
            {"image_id": 1, "category_id": 5, "bbox": [10, 120, 50, 30], "score": 0.6}]  # IoU 0.6 with box 3
    result = score_split(gt, dets)
    expected = oracle_mean_precision_recall(np.array([True, False, True]), np.array([0.9, 0.7, 0.6]),
                                            np.array([3, 5, 5]), np.array([3, 5, 5]))
    assert (result.precision, result.recall) == pytest.approx(expected, abs=1e-9)
    assert 0.5 < result.precision < 1 and result.recall == pytest.approx(0.75)


def test_precision_recall_without_ground_truth_is_zero():
    assert precision_recall_at_best_f1(np.ones(3, bool), np.array([0.9, 0.5, 0.2]), np.zeros(3), {0: 0}) == (0.0, 0.0)
    assert precision_recall_at_best_f1(np.zeros(0, bool), np.zeros(0), np.zeros(0), {0: 4}) == (0.0, 0.0)


def test_eval_cli_on_demo_writes_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path / "datasets"))
    weights = save_release(build_oracle("yolov10n", nc=3), tmp_path / "w.pt")
    out = tmp_path / "eval"
    assert eval_cli.main(["--weights", str(weights), "--data", "DEMO", "--out", str(out), "--imgsz", "320",
                          "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "mAP@50:95" in printed and "rectangle" in printed and "ms inference" in printed and "ms scoring" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"map50_95", "map50", "map75", "ar100", "precision", "recall", "per_class", "speed_ms"} <= set(metrics)
    assert set(metrics["speed_ms"]) == {"preprocess", "inference", "postprocess", "scoring"}
    assert all(value > 0 for value in metrics["speed_ms"].values())
    assert metrics["images"] == len(resolve_dataset("demo").splits["val"])
    assert isinstance(json.loads((out / "predictions.json").read_text()), list)


def test_eval_cli_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert eval_cli.main(["--weights", "missing.pt", "--data", "insplad"]) == 2
    err = capsys.readouterr().err
    assert "InsPLAD" in err and str(tmp_path) in err
    weights = save_release(build_oracle("yolov8n"), tmp_path / "coco80.pt")
    assert eval_cli.main(["--weights", str(weights), "--data", "demo", "--workers", "0"]) == 2
    err = capsys.readouterr().err  # an unnamed 80-class model can only be matched by index: counts differ
    assert "the model has 80 classes" in err and "the dataset 3 (rectangle, ellipse, triangle)" in err


def test_image_unreadable_mid_run_is_reported_and_counted_as_missed(shared_data, tmp_path, capsys):
    """A file that breaks after the dataset was read: listed in the result, its objects missed, no crash."""
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    source = shared_data / "cplid-dev"
    stems = sorted(p.stem for p in (source / "images" / "val").glob("*.jpg"))[:6]
    for stem in stems:
        (tmp_path / "images" / "val" / f"{stem}.jpg").write_bytes((source / "images" / "val" / f"{stem}.jpg").read_bytes())
        (tmp_path / "labels" / "val" / f"{stem}.txt").write_text((source / "labels" / "val" / f"{stem}.txt").read_text())
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\nval: images/val\nnames:\n  0: insulator\n  1: defect\n")
    info = read_yolo(tmp_path / "data.yaml")
    records = info.splits["val"]
    broken = records[2].path
    data = broken.read_bytes()
    broken.write_bytes(data[:200] + bytes(len(data) - 200))  # header intact, pixel data gone
    gt = to_coco_gt(records, info.names)
    model = load_model(save_release(build_oracle("yolov8n", nc=2), tmp_path / "w.pt"))
    result = evaluate(model, records, info.names, out_dir=tmp_path / "out", imgsz=320, batch=4, progress=False)
    assert result.unreadable == [str(broken)]
    assert result.images == len(records) and result.instances == len(gt["annotations"])
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert records[2].image_id not in {d["image_id"] for d in predictions}
    assert {d["image_id"] for d in predictions} <= {r.image_id for r in records}
    from yolofreeze.evaluation.evaluate import format_result
    assert "1 images could not be read" in format_result(result) and str(broken) in format_result(result)


def test_eval_cli_reports_dataset_problems_once(tmp_path):
    """A malformed label row is reported once, by the CLI, in words a user can act on (no Python names)."""
    source = write_yolo(tmp_path / "ds", SPEC, ["damper", "defect", "insulator"])
    label = next((tmp_path / "ds" / "labels" / "val").glob("*.txt"))
    label.write_text(label.read_text() + "\n7 oops\n")
    weights = save_release(build_oracle("yolov8n", nc=3), tmp_path / "w.pt")
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "eval.py"), "--weights", str(weights), "--data",
                             str(source), "--imgsz", "128", "--workers", "0", "--out", str(tmp_path / "out"),
                             "--ignore-names"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    everything = result.stdout + result.stderr
    assert everything.count("bad_annotation") == 1 and str(label) in everything
    assert "check_dataset()" not in everything
