"""Readers: YOLO txt, COCO json, Pascal VOC xml -> one record type; problems counted, good records kept."""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oracle import ultralytics
from yolofreeze.data import (DatasetNotFoundError, check_dataset, detect_format, format_report, label_path,
                             read_coco, read_dataset, read_image_size, read_voc, read_yolo)

from dataset_files import NAMES, SPEC, truncated_jpeg, voc_xml, write_coco, write_image, write_voc, write_yolo  # noqa: F401


def _by_name(info):
    return {split: {r.path.stem: r for r in records} for split, records in info.splits.items()}


@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_each_format_reads_the_synthetic_dataset_exactly(tmp_path, fmt):
    source = {"yolo": write_yolo, "coco": write_coco, "voc": write_voc}[fmt](tmp_path)
    info = read_dataset(source)
    assert info.format == fmt and detect_format(source) == fmt
    assert info.names == NAMES
    background = {"yolo": "empty_label", "coco": "image_without_label", "voc": "empty_label"}[fmt]
    assert info.problems.counts == {background: 1}, info.problems.format()  # image c has no boxes
    records = _by_name(info)
    for split, items in SPEC.items():
        assert sorted(records[split]) == sorted(s[0] for s in items)
        for stem, (w, h), boxes, classes, flags in items:
            record = records[split][stem]
            assert (record.width, record.height) == (w, h)
            assert record.boxes.dtype == np.float32 and record.classes.dtype == np.int64 and record.flags.dtype == bool
            np.testing.assert_allclose(record.boxes, np.array(boxes, np.float64).reshape(-1, 4), atol=1e-3)
            assert record.classes.tolist() == classes
            if fmt != "yolo":  # YOLO txt has no ignore flag
                assert record.flags.tolist() == flags


def test_three_formats_give_the_same_records(tmp_path):
    infos = [read_yolo(write_yolo(tmp_path / "y")), read_coco(write_coco(tmp_path / "c")),
             read_voc(write_voc(tmp_path / "v"))]
    reference = _by_name(infos[0])
    for info in infos[1:]:
        other = _by_name(info)
        assert other.keys() == reference.keys()
        for split in reference:
            assert other[split].keys() == reference[split].keys()
            for stem, a in reference[split].items():
                b = other[split][stem]
                assert (a.width, a.height) == (b.width, b.height)
                np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
                np.testing.assert_array_equal(a.classes, b.classes)


def test_coco_category_ids_map_to_sorted_contiguous_indices(tmp_path):
    info = read_coco(write_coco(tmp_path, category_ids=(90, 2, 40), names=["x", "y", "z"]))
    # sorted ids 2 (y), 40 (z), 90 (x) -> indices 0, 1, 2
    assert info.category_ids == [2, 40, 90]
    assert info.names == ["y", "z", "x"]
    a = _by_name(info)["train"]["a"]
    assert a.classes.tolist() == [2, 1]  # category 90 -> 2, category 40 -> 1
    assert [r.image_id for r in info.splits["train"]] == [100, 101, 102]


def test_label_path_replaces_the_last_images_component():
    assert label_path(Path("/d/images/x/images/train/a.b.jpg")) == Path("/d/images/x/labels/train/a.b.txt")
    assert label_path(Path("/d/pics/a.png")) == Path("/d/pics/a.txt")


def test_yolo_problems_are_counted_and_good_records_survive(tmp_path):
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    for stem in ("good", "neg", "cls", "empty", "nolabel", "dup", "clip", "out", "badrow"):
        write_image(images / f"{stem}.jpg", (100, 50))
    write_image(images / "dup.png", (100, 50))  # same stem as dup.jpg -> same label file
    truncated_jpeg(images / "trunc.jpg")
    (labels / "good.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n")
    (labels / "neg.txt").write_text("0 0.5 0.5 -0.2 0.4\n1 0.5 0.5 0.2 0.2\n")
    (labels / "cls.txt").write_text("2 0.5 0.5 0.2 0.4\n0 0.5 0.5 0.2 0.2\n")
    (labels / "empty.txt").write_text("")
    (labels / "dup.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "clip.txt").write_text("0 0.98 0.5 0.1 0.2\n")  # x from 93 to 103 on a 100 px wide image
    (labels / "out.txt").write_text("0 1.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")
    (labels / "badrow.txt").write_text("0 0.5 0.5\n1 0.5 0.5 0.2 0.2\n")
    (labels / "trunc.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    write_image(tmp_path / "images" / "val" / "v.jpg", (100, 50))  # no labels/val folder at all
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")

    info = read_yolo(tmp_path / "data.yaml")

    assert dict(info.problems.counts) == {
        "degenerate_box": 1, "unknown_class": 1, "unreadable_image": 1, "empty_label": 1, "image_without_label": 1,
        "duplicate_image": 1, "label_without_image": 1, "missing_label_dir": 1, "clipped_box": 1, "outside_box": 1,
        "bad_annotation": 1}
    assert any("trunc.jpg" in e for e in info.problems.examples["unreadable_image"])
    assert any("orphan.txt" in e for e in info.problems.examples["label_without_image"])
    records = _by_name(info)
    assert sorted(records["train"]) == ["badrow", "clip", "cls", "dup", "empty", "good", "neg", "nolabel", "out"]
    assert records["train"]["dup"].path.suffix == ".jpg"  # first in sorted order kept
    np.testing.assert_allclose(records["train"]["good"].boxes, [[40, 15, 60, 35], [20, 10, 30, 15]], atol=1e-4)
    np.testing.assert_allclose(records["train"]["clip"].boxes, [[93, 20, 100, 30]], atol=1e-4)
    survivors = {stem: records["train"][stem].classes.tolist() for stem in ("neg", "cls", "out", "badrow")}
    assert survivors == {"neg": [1], "cls": [0], "out": [1], "badrow": [1]}
    assert len(records["train"]["empty"].boxes) == 0 and len(records["train"]["nolabel"].boxes) == 0
    assert list(records["val"]) == ["v"] and len(records["val"]["v"].boxes) == 0
    report = format_report(check_dataset(info))
    assert re.search(r"^a\s+4\s+0$", report, re.M) and re.search(r"^b\s+4\s+0$", report, re.M)
    assert re.search(r"^missing_label_dir\s+1 ", report, re.M)


def test_yolo_yaml_with_only_nc_names_classes_like_the_reference_and_accepts_txt_lists(tmp_path):
    write_yolo(tmp_path)
    (tmp_path / "train.txt").write_text("./images/train/a.jpg\nimages/train/b.jpg\n")
    (tmp_path / "only.yaml").write_text(f"path: {tmp_path}\ntrain: train.txt\nval: [images/val]\nnc: 3\n")
    info = read_yolo(tmp_path / "only.yaml")
    ultralytics()
    from ultralytics.data.utils import check_det_dataset

    assert info.names == list(check_det_dataset(str(tmp_path / "only.yaml"))["names"].values())
    assert [r.path.stem for r in info.splits["train"]] == ["a", "b"]
    assert len(info.splits["val"]) == 1


@pytest.mark.parametrize("body, message", [
    ("", "needs 'names'"),  # neither names nor nc: the class count is never guessed from the labels
    ("names:\n", "needs 'names'"),
    ("names: []\n", "'names' is empty"),
    ("names: [a, b, c]\nnc: 2\n", "3 entries but 'nc' is 2"),
    ("nc: two\n", "must be a positive whole number"),
    ("nc: 2.5\n", "must be a positive whole number"),
    ("names: abc\n", "must be a list"),
])
def test_yolo_yaml_must_name_or_count_its_classes(tmp_path, body, message):
    write_yolo(tmp_path)
    (tmp_path / "bad.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\n{body}")
    with pytest.raises(ValueError, match=re.escape(message)):
        read_yolo(tmp_path / "bad.yaml")
    assert read_yolo(tmp_path / "bad.yaml", names=["p", "q", "r"]).names == ["p", "q", "r"]  # given names suffice


def test_yolo_folder_without_yaml_or_names_infers_the_class_count_with_a_warning(tmp_path, caplog):
    write_yolo(tmp_path)
    (tmp_path / "data.yaml").unlink()
    info = read_yolo(tmp_path)
    assert info.names == ["class_0", "class_1", "class_2"]  # largest class id in SPEC is 2
    assert "inferred from the labels" in caplog.text


def test_yolo_yaml_with_gaps_in_names_or_missing_split_is_rejected(tmp_path):
    write_yolo(tmp_path)
    (tmp_path / "gaps.yaml").write_text("path: .\ntrain: images/train\nnames: {0: a, 2: c}\n")
    with pytest.raises(ValueError, match="without gaps"):
        read_yolo(tmp_path / "gaps.yaml")
    (tmp_path / "missing.yaml").write_text("path: .\ntrain: images/train\nval: images/nowhere\nnames: [a]\n")
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        read_yolo(tmp_path / "missing.yaml")


def test_coco_problems_are_counted_and_good_records_survive(tmp_path):
    extra_images = {"train": [{"id": 200, "file_name": "ghost.jpg", "width": 10, "height": 10},  # file missing
                              {"id": 201, "file_name": "a.jpg", "width": 64, "height": 48},  # duplicate name
                              {"id": 202, "file_name": "big.jpg", "width": 99, "height": 99}]}  # size wrong
    write_image(tmp_path / "train" / "big.jpg", (30, 20))
    extra_annotations = {"train": [
        {"id": 50, "image_id": 101, "category_id": 3, "bbox": [5, 5, -3, 10], "iscrowd": 0},  # negative width
        {"id": 51, "image_id": 101, "category_id": 99, "bbox": [5, 5, 3, 10], "iscrowd": 0},  # unknown category
        {"id": 52, "image_id": 101, "category_id": 3, "bbox": [5, 5, 3], "iscrowd": 0},  # malformed bbox
        {"id": 53, "image_id": 999, "category_id": 3, "bbox": [5, 5, 3, 3], "iscrowd": 0},  # unknown image
        {"id": 54, "image_id": 202, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1}]}
    info = read_coco(write_coco(tmp_path, extra_images=extra_images, extra_annotations=extra_annotations))
    assert dict(info.problems.counts) == {
        "unreadable_image": 1, "duplicate_image": 1, "size_mismatch": 1, "degenerate_box": 1, "unknown_class": 1,
        "bad_annotation": 1, "label_without_image": 1, "image_without_label": 1}  # c.jpg has no annotations
    records = _by_name(info)["train"]
    assert sorted(records) == ["a", "b", "big", "c"]
    assert (records["big"].width, records["big"].height) == (30, 20)
    assert records["big"].flags.tolist() == [True] and records["big"].classes.tolist() == [1]
    np.testing.assert_allclose(records["b"].boxes, [[0, 0, 40, 72]])


def test_coco_accepts_images_split_folder_and_year_suffix(tmp_path):
    write_coco(tmp_path)
    for split in ("train", "val"):
        (tmp_path / "annotations" / f"instances_{split}.json").rename(
            tmp_path / "annotations" / f"instances_{split}2017.json")
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / split).rename(tmp_path / "images" / f"{split}2017")
    info = read_dataset(tmp_path)
    assert sorted(info.splits) == ["train", "val"]
    assert info.splits["val"][0].path.parent == tmp_path / "images" / "val2017"
    assert info.problems.counts == {"image_without_label": 1}


def test_voc_problems_are_counted_and_good_records_survive(tmp_path):
    write_voc(tmp_path, split_lists=False)
    ann, jpg = tmp_path / "Annotations", tmp_path / "JPEGImages"
    (ann / "neg.xml").write_text(voc_xml("neg", (50, 50), [("insulator", 0, (30, 5, 10, 20)),
                                                            ("defect", 1, (2, 2, 20, 20))]))
    write_image(jpg / "neg.jpg", (50, 50))
    (ann / "orphan.xml").write_text(voc_xml("orphan", (50, 50), [("insulator", 0, (1, 1, 5, 5))]))
    write_image(jpg / "noxml.jpg", (50, 50))
    (ann / "broken.xml").write_text("<annotation><object>")
    write_image(jpg / "broken.jpg", (50, 50))
    (ann / "alien.xml").write_text(voc_xml("alien", (50, 50), [("bird", 0, (1, 1, 5, 5))]))
    write_image(jpg / "alien.jpg", (50, 50))
    truncated_jpeg(jpg / "trunc.jpg")
    (ann / "trunc.xml").write_text(voc_xml("trunc", (64, 64), [("insulator", 0, (1, 1, 5, 5))]))

    info = read_voc(tmp_path, names=NAMES)

    assert dict(info.problems.counts) == {"degenerate_box": 1, "label_without_image": 1, "image_without_label": 1,
                                          "bad_annotation": 1, "unknown_class": 1, "unreadable_image": 1,
                                          "empty_label": 1}  # c.xml has no objects
    records = {r.path.stem: r for split in info.splits.values() for r in split}
    assert sorted(records) == ["a", "alien", "b", "c", "d", "neg", "noxml"]
    assert records["neg"].classes.tolist() == [1] and records["neg"].flags.tolist() == [True]
    np.testing.assert_allclose(records["neg"].boxes, [[1, 1, 19, 19]])  # xml (2, 2, 20, 20), each minus 1
    # deterministic split of the 10 sorted ids (a alien b broken c d neg noxml orphan trunc): 5th and 10th to val;
    # trunc is unreadable, broken and orphan are skipped
    assert [r.path.stem for r in info.splits["val"]] == ["c"]
    assert [r.path.stem for r in info.splits["train"]] == ["a", "alien", "b", "d", "neg", "noxml"]


def test_voc_collects_sorted_names_and_reports_duplicate_ids(tmp_path):
    write_voc(tmp_path)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("d\nd\n")
    info = read_voc(tmp_path)
    assert info.names == sorted(NAMES)
    assert info.problems.counts == {"duplicate_image": 1, "empty_label": 1}
    d = info.splits["val"][0]
    assert [info.names[c] for c in d.classes] == [NAMES[c] for c in SPEC["val"][0][3]]


def test_image_size_check_rejects_truncated_files_but_accepts_trailing_bytes(tmp_path):
    with pytest.raises(OSError):
        read_image_size(truncated_jpeg(tmp_path / "t.jpg"))
    padded = write_image(tmp_path / "p.jpg", (30, 20))
    padded.write_bytes(padded.read_bytes() + b"camera trailer" * 50)
    assert read_image_size(padded) == (30, 20)
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    with pytest.raises(OSError):
        read_image_size(empty)


def test_check_decode_finds_corrupt_pixels_and_split_overlap(tmp_path):
    write_yolo(tmp_path)
    png = write_image(tmp_path / "images" / "val" / "z.png", (64, 64), seed=3)
    data = bytearray(png.read_bytes())
    data[data.find(b"IDAT") + 40] ^= 0xFF  # header and IEND intact, compressed pixels broken
    png.write_bytes(bytes(data))
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: [images/val, pair.txt]\nnames: [x, y, z]\n")
    (tmp_path / "pair.txt").write_text("images/train/a.jpg\n")
    info = read_yolo(tmp_path / "data.yaml")
    assert info.problems.counts["image_without_label"] == 1  # z.png has no label; its header reads fine
    report = check_dataset(info, decode=True)
    assert report.bad_paths == [png]
    assert report.problems.counts["split_overlap"] == 1
    assert report.splits["train"].images == 3 and report.splits["val"].images == 3
    assert report.splits["train"].instances.tolist() == [1, 1, 1]
    assert report.splits["train"].images_without_boxes == 1
    assert png not in [r.path for r in info.without(report.bad_paths).splits["val"]]


def _count_label_rows(label_dir: Path) -> int:
    return sum(1 for f in label_dir.glob("*.txt") for line in f.read_text().splitlines() if line.strip())


def test_cplid_dev_reads_with_its_image_and_box_counts(shared_data):
    root = shared_data / "cplid-dev"
    info = read_dataset(root / "data.yaml")
    assert info.names == ["insulator", "defect"]
    assert {s: len(r) for s, r in info.splits.items()} == {"train": 80, "val": 20}
    for split in ("train", "val"):
        expected = _count_label_rows(root / "labels" / split)
        assert sum(len(r.boxes) for r in info.splits[split]) == expected
    assert sum(len(r.boxes) for s in info.splits.values() for r in s) == 188
    record = info.splits["val"][0]
    with Image.open(record.path) as image:
        assert image.size == (record.width, record.height)
    rows = np.loadtxt(root / "labels" / "val" / f"{record.path.stem}.txt", ndmin=2)
    w, h = record.width, record.height
    expected = np.stack([(rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                         (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h], 1)
    np.testing.assert_allclose(record.boxes, np.clip(expected, 0, [w, h, w, h]), atol=1e-3)


def test_coco8_reads_with_its_image_and_box_counts(shared_data):
    root = shared_data / "coco8"
    info = read_dataset(root)
    assert {s: len(r) for s, r in info.splits.items()} == {"train": 4, "val": 4}
    total = sum(_count_label_rows(root / "labels" / s) for s in ("train", "val"))
    assert sum(len(r.boxes) for s in info.splits.values() for r in s) == total == 30
    assert info.problems.total() == 0


def test_hostile_label_content_is_reported_never_raised(tmp_path):
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    for stem in ("rows", "binary"):
        write_image(images / f"{stem}.jpg", (20, 10))
    (labels / "rows.txt").write_text("nan 0.5 0.5 0.2 0.2\n1.5 0.5 0.5 0.2 0.2\nx y z w h\n0 inf 0.5 0.2 0.2\n"
                                     "1 0.5 0.5 0.5 0.5 extra\n  \n1 0.5 0.5 0.5 0.5\n")
    (labels / "binary.txt").write_bytes(b"\xff\xfe\x00garbage\x80")
    info = read_yolo(tmp_path, names=["a", "b"])
    assert dict(info.problems.counts) == {"bad_annotation": 5, "degenerate_box": 1}
    rows = _by_name(info)["train"]
    assert rows["rows"].classes.tolist() == [1] and len(rows["binary"].boxes) == 0
    np.testing.assert_allclose(rows["rows"].boxes, [[5, 2.5, 15, 7.5]])


def test_voc_size_mismatch_and_odd_fields(tmp_path):
    write_image(tmp_path / "JPEGImages" / "a.jpg", (30, 20))
    (tmp_path / "Annotations").mkdir()
    xml = voc_xml("a", (300, 200), [("x", 0, (1, 1, 10, 10)), ("x", 0, (2, 2, 12, 12))])
    xml = xml.replace("<difficult>0</difficult>", "<difficult>inf</difficult>", 1)
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    info = read_voc(tmp_path, val_fraction=0.0)
    assert dict(info.problems.counts) == {"size_mismatch": 1, "bad_annotation": 1}
    record = info.splits["train"][0]
    assert (record.width, record.height) == (30, 20) and info.splits["val"] == []
    np.testing.assert_allclose(record.boxes, [[1, 1, 11, 11]])  # xml (2, 2, 12, 12), each minus 1


def _oracle_label_rows(image: Path, label: Path, nc: int):
    """The reference's own reading of one YOLO label file: ``(K, 5)`` rows ``cls cx cy w h``, or None if rejected."""
    ultralytics()
    from ultralytics.data.utils import verify_image_label

    return verify_image_label((str(image), str(label), "", False, nc, 0, 0, False))[1]


def test_yolo_polygon_rows_become_their_bounding_boxes_like_the_reference(tmp_path):
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    labels.mkdir(parents=True)
    for stem in ("poly", "mixed", "oddpoly"):
        write_image(images / f"{stem}.jpg", (100, 50))
    # quadrilateral: x in {0.1, 0.5, 0.4, 0.05}, y in {0.2, 0.1, 0.9, 0.6}
    # triangle: x in {0.6, 0.9, 0.7}, y in {0.5, 0.5, 1.0}
    (labels / "poly.txt").write_text("1 0.1 0.2 0.5 0.1 0.4 0.9 0.05 0.6\n0 0.6 0.5 0.9 0.5 0.7 1.0\n")
    (labels / "mixed.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.5 0.1 0.4 0.9\n")  # box and polygon rows
    (labels / "oddpoly.txt").write_text("0 0.6 0.5 0.9 0.5 0.7 1.0\n0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n")  # 7 numbers
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a, b]\n")

    info = read_yolo(tmp_path / "data.yaml")

    records = _by_name(info)["train"]
    expected = [[0.05 * 100, 0.1 * 50, 0.5 * 100, 0.9 * 50], [0.6 * 100, 0.5 * 50, 0.9 * 100, 1.0 * 50]]
    np.testing.assert_allclose(records["poly"].boxes, expected, atol=1e-4)
    assert records["poly"].classes.tolist() == [1, 0]
    oracle = _oracle_label_rows(images / "poly.jpg", labels / "poly.txt", nc=2)
    ours = np.array([[(x1 + x2) / 200, (y1 + y2) / 100, (x2 - x1) / 100, (y2 - y1) / 50]
                     for x1, y1, x2, y2 in records["poly"].boxes.tolist()])
    np.testing.assert_allclose(ours, oracle[:, 1:], atol=1e-6)
    # a file mixing box and polygon rows is ambiguous: the reference rejects the image, so do we
    assert "mixed" not in records
    assert _oracle_label_rows(images / "mixed.jpg", labels / "mixed.txt", nc=2) is None
    assert any("mixes 1 box rows and 1 polygon rows" in e for e in info.problems.examples["bad_annotation"])
    # a polygon row with an odd coordinate count is a bad row; the file's other rows are kept
    np.testing.assert_allclose(records["oddpoly"].boxes, [expected[1]], atol=1e-4)
    assert info.problems.counts["bad_annotation"] == 2


def _reference_voc_convert_box():
    """``convert_box(size, (xmin, xmax, ymin, ymax)) -> (cx, cy, w, h)`` normalised: the function the reference's
    VOC.yaml download script uses to turn VOC xml into YOLO labels, taken from the installed oracle's yaml."""
    import ast

    import yaml

    ul = ultralytics()
    script = yaml.safe_load((Path(ul.__file__).parent / "cfg" / "datasets" / "VOC.yaml").read_text())["download"]
    convert_box = next(node for node in ast.walk(ast.parse(script))
                       if isinstance(node, ast.FunctionDef) and node.name == "convert_box")
    namespace: dict = {}
    exec(compile(ast.Module(body=[convert_box], type_ignores=[]), "VOC.yaml", "exec"), namespace)
    return namespace["convert_box"]


def test_voc_boxes_follow_the_reference_conversion(tmp_path):
    size = (80, 50)
    bndboxes = [(11, 21, 60, 40), (1, 1, 80, 50), (5.5, 2, 7.5, 9)]  # xmin, ymin, xmax, ymax (VOC, 1-based)
    write_image(tmp_path / "JPEGImages" / "a.jpg", size)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(voc_xml("a", size, [("x", 0, b) for b in bndboxes]))
    record = read_voc(tmp_path, val_fraction=0.0).splits["train"][0]

    # the reference's formula, as documented in its VOC.yaml: centre (min + max) / 2 - 1, size max - min
    w, h = size
    by_formula = [[((x0 + x1) / 2 - 1) - (x1 - x0) / 2, ((y0 + y1) / 2 - 1) - (y1 - y0) / 2,
                   ((x0 + x1) / 2 - 1) + (x1 - x0) / 2, ((y0 + y1) / 2 - 1) + (y1 - y0) / 2]
                  for x0, y0, x1, y1 in bndboxes]
    np.testing.assert_allclose(record.boxes, np.clip(by_formula, 0, [w, h, w, h]), atol=1e-5)
    assert by_formula[0] == [10, 20, 59, 39]  # every coordinate one pixel smaller
    # and the reference's own function, normalised, back to pixels of this image
    convert_box = _reference_voc_convert_box()
    for (x0, y0, x1, y1), box in zip(bndboxes, record.boxes.tolist()):
        cx, cy, bw, bh = convert_box(size, [x0, x1, y0, y1])
        theirs = np.clip([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 0, [w, h] * 2)
        np.testing.assert_allclose(box, theirs, atol=1e-5)
