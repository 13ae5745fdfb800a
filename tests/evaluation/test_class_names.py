"""Class names line up wherever a model meets a dataset: remap by name, score the shared classes, refuse disjoint sets.

End-to-end cases run the real ``evaluate()`` on the cplid-dev val images written in each layout (YOLO txt,
COCO json, Pascal VOC xml). The ground truth is the oracle's own confident predictions of the checkpoint under
test (classes ``insulator, defect``), so the same-order mAP is far from 0 and a class mix-up cannot hide.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import eval as eval_cli
from conftest import SHARED_DATA
from oracle import build_oracle, save_release, ultralytics
from dataset_files import write_coco, write_voc, write_yolo
from yolofreeze import load_model
from yolofreeze.data import read_dataset, to_coco_gt
from yolofreeze.evaluation.evaluate import evaluate, score_split
from yolofreeze.names import match_class_names

MODEL_NAMES = ["insulator", "defect"]
FORMATS = ["yolo", "coco", "voc"]
EVAL = {"imgsz": 320, "batch": 10, "workers": 0, "progress": False, "max_det": 5000}  # max_det never binds


# ----------------------------------------------------------------------------------------------- the pure rules


def test_same_names_in_the_same_order_need_nothing():
    match = match_class_names(MODEL_NAMES, [" Insulator", "DEFECT "])  # case and surrounding spaces ignored
    assert match.model_to_data == (0, 1) and match.scored == (0, 1) and match.message == ""


def test_same_names_in_another_order_are_remapped_and_said():
    match = match_class_names(MODEL_NAMES, ["defect", "insulator"])
    assert match.model_to_data == (1, 0) and match.scored == (0, 1) and not match.partial
    assert "another order" in match.message and "insulator 0->1" in match.message and "defect 1->0" in match.message


def test_partial_overlap_keeps_the_shared_classes_and_lists_the_rest():
    match = match_class_names(["person", "car", "dog"], ["bird", "car", "person", "tree"])
    assert match.model_to_data == (2, 1, None)
    assert match.scored == (1, 2) and match.unscored == (0, 3) and match.dropped == (2,) and match.partial
    assert "share 2 classes" in match.message
    assert "model classes not in the dataset (their detections dropped): dog" in match.message
    assert "dataset classes the model does not know (left out of the scoring): bird, tree" in match.message
    assert "\n" not in match.message


def test_disjoint_names_are_a_one_line_error_naming_both_sets_and_the_flag():
    with pytest.raises(ValueError) as error:
        match_class_names(MODEL_NAMES, ["bird", "cat"])
    text = str(error.value)
    assert "insulator, defect" in text and "bird, cat" in text and "--ignore-names" in text and "\n" not in text
    match = match_class_names(MODEL_NAMES, ["bird", "cat"], ignore_names=True)
    assert match.model_to_data == (0, 1) and "matched by index" in match.message
    with pytest.raises(ValueError, match="the model has 2 classes .* and the dataset 3"):
        match_class_names(MODEL_NAMES, ["bird", "cat", "dog"], ignore_names=True)


def test_names_are_matched_exactly_apart_from_case_and_outer_spaces():
    with pytest.raises(ValueError, match="share no name"):
        match_class_names(["traffic light"], ["traffic_light"])
    with pytest.raises(ValueError, match="dataset class names repeat .*: car"):
        match_class_names(["car"], ["Car", "car "])


def test_placeholder_names_are_matched_by_index_and_said():
    match = match_class_names(["0", "1"], ["defect", "insulator"])  # an unnamed model: nothing to match by name
    assert match.model_to_data == (0, 1) and "placeholders" in match.message
    assert match_class_names(["class0", "class1"], ["class_0", "class_1"]).model_to_data == (0, 1)
    with pytest.raises(ValueError, match="matched by index, but the model has 80 classes"):
        match_class_names([f"class{i}" for i in range(80)], MODEL_NAMES)
    with pytest.raises(ValueError, match="share no name"):  # "1", "0" is not the placeholder sequence
        match_class_names(["1", "0"], MODEL_NAMES)


def test_per_class_table_follows_category_ids_not_their_sorted_positions():
    """COCOeval sorts categories by id: with ids [17, 4] the table must still put each AP under its own class."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)]
    boxes = {17: [10, 10, 30, 40], 4: [50, 50, 20, 20]}
    annotations = [{"id": len(images) * i + k + 1, "image_id": image["id"], "category_id": cid, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0}
                   for i, image in enumerate(images) for k, (cid, box) in enumerate(boxes.items())]
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": 17, "name": "seventeen"}, {"id": 4, "name": "four"}]}
    perfect_17 = [{"image_id": a["image_id"], "category_id": 17, "bbox": a["bbox"], "score": 0.9}
                  for a in annotations if a["category_id"] == 17]
    result = score_split(gt, perfect_17)
    assert [(c.name, c.ap50_95, c.ap50) for c in result.per_class] == [("seventeen", 1.0, 1.0), ("four", 0.0, 0.0)]
    assert result.map50_95 == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 2-class checkpoint (insulator, defect) and 10 cplid-dev val images labelled by its own predictions.

    The labels of each class are the oracle's five best boxes of that class per image, so both classes are
    present, each scores well against its own labels and badly against the other's.
    Returns ``(weights, items)``: items are ``(stem, image, (w, h), boxes xyxy px, class names)``.
    """
    if not SHARED_DATA.is_dir():  # conftest's shared_data is function-scoped; same rule, module scope
        pytest.skip(f"real test data not found at {SHARED_DATA} (present in the workplace and in CI)")
    ultralytics()
    from ultralytics import YOLO as OracleYOLO

    folder = tmp_path_factory.mktemp("labelled")
    net = build_oracle("yolov8n", nc=2)
    for name, p in net.named_parameters():  # class biases 0: scores near 0.5 instead of near 0
        if "cv3." in name and name.endswith("2.bias"):
            p.data.fill_(0.0)
    net.names = dict(enumerate(MODEL_NAMES))
    weights = save_release(net, folder / "w.pt")
    source = folder / "images"
    source.mkdir()
    for image in sorted((SHARED_DATA / "cplid-dev" / "images" / "val").glob("*.jpg"))[::2]:  # 10 of 20 images
        (source / image.name).symlink_to(image)
    oracle = OracleYOLO(str(weights))
    labels: dict[Path, tuple[tuple[int, int], list, list]] = {}
    for k, class_name in enumerate(MODEL_NAMES):
        for res in oracle.predict(str(source), conf=0.25, max_det=5, imgsz=320, classes=[k], verbose=False,
                                  device="cpu"):
            size, boxes, names = labels.setdefault(Path(res.path), ((res.orig_shape[1], res.orig_shape[0]), [], []))
            boxes += res.boxes.xyxy.tolist()
            names += [class_name] * len(res.boxes)
    items = [(image.stem, image, size, boxes, names) for image, (size, boxes, names) in sorted(labels.items())]
    counts = {n: sum(names.count(n) for *_, names in items) for n in MODEL_NAMES}
    assert min(counts.values()) >= 20, counts  # 5 per image and class unless fewer pass conf
    return weights, items


def write_layout(fmt: str, root: Path, items, names: list[str], rename: dict[str, str] | None = None) -> Path:
    """Write ``items`` as a val split in layout ``fmt`` with class list ``names``; ``rename`` relabels boxes."""
    rename = rename or {}
    spec = {"val": [(stem, size, boxes, [names.index(rename.get(n, n)) for n in box_names], [False] * len(boxes))
                    for stem, _, size, boxes, box_names in items]}
    images = {stem: image for stem, image, *_ in items}
    if fmt == "yolo":
        return write_yolo(root, spec, names, images=images)
    if fmt == "coco":  # ids ascend with the order of names, listed shuffled in the json
        return write_coco(root, spec, names, category_ids=[4 + 13 * k for k in range(len(names))], images=images)
    return write_voc(root, spec, names, images=images)


def read_layout(fmt: str, source: Path, names: list[str]):
    """Read the layout back; VOC gets the class order only when it is not the sorted one VOC defaults to."""
    given = names if fmt == "voc" and names != sorted(names) else None
    info = read_dataset(source, names=given)
    assert info.names == names
    return info


def run(model, info, **kwargs):
    return evaluate(model, info.splits["val"], info.names, info.category_ids, **{**EVAL, **kwargs})


@pytest.fixture(scope="module")
def model(labelled):
    return load_model(labelled[0])


@pytest.fixture(scope="module")
def same_order(labelled, model, tmp_path_factory):
    """Per format: the dataset in the model's own class order, and its evaluation (predictions kept)."""
    out = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(f"same-{fmt}")
        info = read_layout(fmt, write_layout(fmt, root / "data", labelled[1], MODEL_NAMES), MODEL_NAMES)
        out[fmt] = info, run(model, info, out_dir=root / "eval"), root / "eval" / "predictions.json"
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_names_in_another_order_score_as_in_the_model_order(fmt, labelled, model, same_order, tmp_path):
    _, same, _ = same_order[fmt]
    assert same.class_match == "" and same.map50_95 > 0.3
    other_names = ["defect", "insulator"]
    info = read_layout(fmt, write_layout(fmt, tmp_path, labelled[1], other_names), other_names)

    remapped = run(model, info)

    assert (remapped.map50_95, remapped.map50, remapped.map75, remapped.ar100) == pytest.approx(
        (same.map50_95, same.map50, same.map75, same.ar100), abs=1e-9)
    by_name = {c.name: c for c in same.per_class}
    for c in remapped.per_class:
        assert (c.instances, c.ap50_95, c.ap50) == pytest.approx(
            (by_name[c.name].instances, by_name[c.name].ap50_95, by_name[c.name].ap50), abs=1e-9)
    assert "another order" in remapped.class_match and "insulator 0->1" in remapped.class_match
    # matching by index on purpose gives the old, broken number: classes swapped
    swapped = run(model, info, ignore_names=True)
    assert swapped.map50_95 < same.map50_95 / 2 and "--ignore-names" in swapped.class_match


def _pycocotools_one_category(gt: dict, detections: list[dict], category_id: int) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes([d for d in detections if d["category_id"] == category_id]), "bbox")
        evaluator.params.catIds = [category_id]
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_partial_overlap_scores_only_the_shared_class(fmt, labelled, model, same_order, tmp_path):
    same_info, same, predictions = same_order[fmt]
    names = ["defect", "bird"]  # insulator boxes relabelled bird: a class the model does not know
    info = read_layout(fmt, write_layout(fmt, tmp_path, labelled[1], names, rename={"insulator": "bird"}), names)

    partial = run(model, info)

    gt = to_coco_gt(same_info.splits["val"], same_info.names, same_info.category_ids)
    defect_id = gt["categories"][MODEL_NAMES.index("defect")]["id"]
    expected = _pycocotools_one_category(gt, json.loads(predictions.read_text()), defect_id)
    assert expected > 0.3  # scoring the unknown class too would halve it; scoring insulator boxes would sink it
    assert partial.map50_95 == pytest.approx(expected, abs=1e-9)
    assert [c.name for c in partial.per_class] == ["defect"]
    assert partial.instances == next(c.instances for c in same.per_class if c.name == "defect")
    assert "(their detections dropped): insulator" in partial.class_match
    assert "(left out of the scoring): bird" in partial.class_match


@pytest.mark.parametrize("fmt", FORMATS)
def test_disjoint_names_fail_before_inference_unless_matched_by_index(fmt, labelled, model, same_order, tmp_path):
    names = ["bird", "cat"]  # insulator -> bird, defect -> cat: the model's order under other names
    info = read_layout(fmt, write_layout(fmt, tmp_path / "data", labelled[1], names,
                                         rename={"insulator": "bird", "defect": "cat"}), names)
    with pytest.raises(ValueError, match=r"\(insulator, defect\) and the dataset's \(bird, cat\) share no name"):
        run(model, info, out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()

    by_index = run(model, info, ignore_names=True)

    assert by_index.map50_95 == pytest.approx(same_order[fmt][1].map50_95, abs=1e-9)
    assert "--ignore-names: classes matched by index" in by_index.class_match


def test_eval_cli_ignore_names_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path / "datasets"))
    net = build_oracle("yolov8n", nc=3)
    net.names = {0: "circle", 1: "square", 2: "star"}  # the demo set has rectangle, ellipse, triangle
    weights = save_release(net, tmp_path / "w.pt")
    args = ["--weights", str(weights), "--data", "demo", "--imgsz", "160", "--workers", "0", "--out", str(tmp_path)]
    assert eval_cli.main(args) != 0
    assert "share no name" in capsys.readouterr().err
    assert eval_cli.main(args + ["--ignore-names"]) == 0
    assert "classes: --ignore-names: classes matched by index" in capsys.readouterr().out
    assert np.isfinite(json.loads((tmp_path / "metrics.json").read_text())["map50_95"])
