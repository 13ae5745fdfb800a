"""resolve_dataset: paths, case-insensitive registered names, helpful errors, the generated demo dataset."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from yolofreeze.data import registry
from yolofreeze.data import (COCO80_NAMES, DEMO_NAMES, DatasetNotFoundError, ensure_demo_dataset, read_yolo,
                             resolve_dataset, write_demo_dataset)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    """Run from an empty folder with YOLOFREEZE_DATASETS pointing at an empty base."""
    base = tmp_path / "base"
    base.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(base))
    monkeypatch.chdir(work)
    monkeypatch.setattr(registry, "PROJECT_ROOT", work / "checkout")  # no datasets beside a checkout either
    return base


@pytest.mark.parametrize("name, folder, url", [
    ("inspLAD", "InsPLAD-det", "https://github.com/andreluizbvs/InsPLAD"),
    ("COCO", "coco", "https://cocodataset.org"),
    ("coco8", "coco8", "coco8"),
])
def test_missing_named_dataset_error_lists_places_layout_and_download(empty_env, name, folder, url):
    with pytest.raises(DatasetNotFoundError) as caught:
        resolve_dataset(name)
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    assert str(empty_env / folder) in message
    assert str((Path.cwd() / "datasets" / folder)) in message
    assert url in message and "Expected layout" in message


def test_unknown_name_error_mentions_registered_names(empty_env):
    with pytest.raises(DatasetNotFoundError, match="insplad") as caught:
        resolve_dataset("no-such-data")
    assert "demo" in str(caught.value)


def _tiny_coco(root: Path) -> None:
    """Two images in train/ and val/ with one box each; categories 5 'insulator', 9 'damper'."""
    (root / "annotations").mkdir(parents=True)
    for i, split in enumerate(("train", "val")):
        (root / split).mkdir()
        Image.new("RGB", (40, 30), (i * 50, 80, 120)).save(root / split / f"{split}.jpg")
        data = {"images": [{"id": 1, "file_name": f"{split}.jpg", "width": 40, "height": 30}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [2, 3, 10, 12], "iscrowd": 0}],
                "categories": [{"id": 5, "name": "insulator"}, {"id": 9, "name": "damper"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@pytest.mark.parametrize("spelling", ["insplad", "InsPLAD", "INSPLAD", "inspLAD"])
def test_insplad_is_found_under_the_datasets_base_whatever_the_case(empty_env, spelling):
    _tiny_coco(empty_env / "InsPLAD-det")
    info = resolve_dataset(spelling)
    assert info.format == "coco" and info.names == ["insulator", "damper"] and info.category_ids == [5, 9]
    assert [r.classes.tolist() for r in info.splits["val"]] == [[1]]
    np.testing.assert_allclose(info.splits["train"][0].boxes, [[2, 3, 12, 15]])


def test_named_dataset_is_found_under_local_datasets_folder(empty_env, monkeypatch):
    monkeypatch.delenv("YOLOFREEZE_DATASETS")
    _tiny_coco(Path("datasets") / "coco")
    assert resolve_dataset("coco").root == (Path.cwd() / "datasets" / "coco").resolve()


@pytest.mark.parametrize("cwd", ["checkout", "elsewhere"])
def test_coco8_from_the_workplace_folder_with_coco_names(cwd, shared_data, monkeypatch, tmp_path):
    monkeypatch.delenv("YOLOFREEZE_DATASETS", raising=False)
    monkeypatch.chdir(REPO if cwd == "checkout" else tmp_path)
    info = resolve_dataset("CoCo8")
    assert info.root == (shared_data / "coco8").resolve()
    assert info.names == list(COCO80_NAMES) and len(info.names) == 80
    assert {s: len(r) for s, r in info.splits.items()} == {"train": 4, "val": 4}


def test_paths_win_and_yaml_or_folder_both_work(shared_data):
    by_yaml = resolve_dataset(shared_data / "cplid-dev" / "data.yaml")
    by_folder = resolve_dataset(str(shared_data / "cplid-dev"))
    assert by_yaml.names == by_folder.names == ["insulator", "defect"]
    assert [r.path for r in by_yaml.splits["val"]] == [r.path for r in by_folder.splits["val"]]


def test_demo_is_generated_once_readable_and_clean(empty_env, tmp_path):
    info = resolve_dataset("Demo")
    root = empty_env / "demo"
    assert info.root == root.resolve() and info.names == list(DEMO_NAMES)
    assert {s: len(r) for s, r in info.splits.items()} == {"train": 256, "val": 64}
    assert info.problems.total() == 0
    records = [r for s in info.splits.values() for r in s]
    assert all((r.width, r.height) == (160, 160) and 1 <= len(r.boxes) <= 8 for r in records)
    sides = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in records])
    assert sides.min() >= 0.12 * 160 - 1 and sides.max() <= 0.35 * 160 + 1  # 12-35 % of the side
    assert 3.5 <= len(sides) / len(records) <= 4.5  # about 4 objects per image
    counts = np.bincount(np.concatenate([r.classes for r in info.splits["train"]]), minlength=3)
    assert counts.min() >= 300  # every class well represented
    cut = write_demo_dataset(tmp_path / "cut", n_train=3, n_val=1).parent  # a smaller cut, as other tests use
    cut_files = [f.relative_to(cut) for f in cut.glob("*/*/*")]  # images/<split>/*.jpg, labels/<split>/*.txt
    assert len(cut_files) == 2 * (3 + 1)
    assert all((cut / f).read_bytes() == (root / f).read_bytes() for f in cut_files)  # the full set's first ones
    stamp = (root / "data.yaml").stat().st_mtime_ns
    resolve_dataset("DEMO")
    assert (root / "data.yaml").stat().st_mtime_ns == stamp  # not regenerated


def test_demo_boxes_enclose_their_coloured_shape(tmp_path):
    info = read_yolo(write_demo_dataset(tmp_path, n_train=6, n_val=1))
    hue_channel = {0: 0, 1: 1, 2: 2}  # rectangle red, ellipse green, triangle blue
    for record in info.splits["train"]:
        pixels = np.asarray(Image.open(record.path).convert("RGB"), np.int32)
        for (x1, y1, x2, y2), cls in zip(record.boxes.round().astype(int), record.classes):
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2  # inside rectangle, ellipse and (half-width) triangle
            centre = pixels[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
            assert centre.argmax() == hue_channel[int(cls)], (record.path, cls, centre)


def test_demo_generation_is_deterministic(tmp_path):
    a, b = (write_demo_dataset(tmp_path / name, n_train=20, n_val=5).parent for name in "ab")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 1 + 2 * (20 + 5)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    c = write_demo_dataset(tmp_path / "c", seed=1, n_train=1, n_val=0).parent
    label = Path("labels") / "train" / "train_0000.txt"
    assert (a / label).read_text() != (c / label).read_text()


def test_stale_demo_is_regenerated_but_foreign_folder_is_kept(tmp_path):
    root = tmp_path / "demo"
    yaml_path = ensure_demo_dataset(root)
    (root / ".yolofreeze-demo").unlink()
    next(root.glob("labels/train/*.txt")).unlink()
    assert ensure_demo_dataset(root) == yaml_path
    assert len(list(root.glob("labels/train/*.txt"))) == 256
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_demo_dataset(foreign)
    assert (foreign / "thesis.tex").read_text() == "keep me"


def test_check_cli_prints_the_summary_and_errors_clearly(shared_data, tmp_path, monkeypatch, capsys):
    from yolofreeze.check import main as check_main

    assert check_main([str(shared_data / "cplid-dev" / "data.yaml")]) == 0
    out = capsys.readouterr().out
    assert "insulator" in out and "defect" in out and "problems (0)" in out
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert check_main(["InsPLAD"]) == 2
    err = capsys.readouterr().err
    assert "InsPLAD-det" in err and len(err.splitlines()) == 1
