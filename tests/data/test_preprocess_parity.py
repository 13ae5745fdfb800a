"""Preprocessing parity: our batches hold the pixels, shapes and letterbox geometry of the oracle's own dataset.

Both sides load the same files from a YOLO layout: the oracle with its ``YOLODataset`` (augmentation off)
and its ``collate_fn``, we with ``read_yolo`` + ``build_dataloader``. Validation path: rect batches; train
path: square ``imgsz``. Images are matched by file, batch by batch.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oracle import ultralytics
from yolofreeze.data import build_dataloader, read_image_size, read_yolo
from yolofreeze.data.loader import load_image

# (width, height) as stored; imgsz 320 and 640 see them smaller, equal and larger, in every aspect
SIZES = {
    "small_landscape": (200, 150), "small_portrait": (150, 260), "square_320": (320, 320),
    "wide_320": (320, 180), "portrait_640": (480, 640), "landscape_640": (640, 427), "large_4x3": (1000, 750),
    "odd_517x333": (517, 333), "strip_wide": (1200, 90), "strip_tall": (70, 900), "square_777": (777, 777),
    "odd_portrait": (301, 479),
    # equal aspect ratios, different sizes: which batch each lands in depends on how ties are sorted
    "tie_4x3_a": (400, 300), "tie_4x3_b": (160, 120), "tie_4x3_c": (800, 600), "tie_1x1_a": (240, 240),
    "tie_1x1_b": (96, 96), "tie_3x4_a": (300, 400), "tie_3x4_b": (120, 160),
}
ORIENTATION_6 = "rotated_exif6"  # stored 640x480, EXIF "rotate 90° clockwise": displayed 480x640


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """``(height, width, 3)`` uint8: colour gradients, a few solid shapes and noise (real high-frequency content)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, 127 + 120 * np.sin(x / 7.0 + y / 11.0)], -1)
    for _ in range(4):
        x1, y1 = rng.integers(0, width - 4), rng.integers(0, height - 4)
        x2, y2 = x1 + rng.integers(3, max(4, width // 3)), y1 + rng.integers(3, max(4, height // 3))
        image[y1:y2, x1:x2] = rng.integers(0, 256, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _labels(seed: int) -> str:
    """Two YOLO label rows (class cx cy w h, normalised), well inside the image."""
    rng = np.random.default_rng(seed)
    rows = [(k, *rng.uniform(0.3, 0.7, 2), *rng.uniform(0.1, 0.4, 2)) for k in range(2)]
    return "".join(f"{k} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for k, cx, cy, w, h in rows)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A YOLO layout ``images/val`` + ``labels/val`` with the ``SIZES`` images (JPEG and PNG) and an EXIF-6 JPEG."""
    root = tmp_path_factory.mktemp("parity")
    images, labels = root / "images" / "val", root / "labels" / "val"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for seed, (name, (w, h)) in enumerate(SIZES.items()):
        suffix = ".png" if seed % 3 == 2 else ".jpg"
        Image.fromarray(_picture(w, h, seed)).save(images / f"{name}{suffix}", quality=90)
        (labels / f"{name}.txt").write_text(_labels(seed))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_picture(640, 480, 99)).save(images / f"{ORIENTATION_6}.jpg", quality=90, exif=exif.tobytes())
    (labels / f"{ORIENTATION_6}.txt").write_text(_labels(99))
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames:\n  0: a\n  1: b\n")
    return root


@pytest.fixture(scope="module")
def cplid_val(tmp_path_factory) -> Path:
    """The real cplid-dev val images and labels, copied into a private YOLO layout (the oracle writes caches)."""
    source = Path(__file__).resolve().parents[3] / "shared" / "data" / "cplid-dev"
    if not source.is_dir():
        pytest.skip(f"real test data not found at {source}")
    root = tmp_path_factory.mktemp("cplid")
    for kind in ("images", "labels"):
        shutil.copytree(source / kind / "val", root / kind / "val")
    (root / "data.yaml").write_text("path: .\nval: images/val\nnames:\n  0: insulator\n  1: defect\n")
    return root


def oracle_batches(root: Path, imgsz: int, batch: int, rect: bool) -> list[dict]:
    """The oracle's validation-mode dataset (no augmentation) over ``root/images/val``, collated by its collate_fn."""
    ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    dataset = YOLODataset(img_path=str(root / "images" / "val"), imgsz=imgsz, batch_size=batch, augment=False,
                          hyp=get_cfg(), rect=rect, cache=False, stride=32, pad=0.5,
                          data={"names": {0: "a", 1: "b"}, "nc": 2, "channels": 3}, task="detect")
    return [dataset.collate_fn([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
            for start in range(0, len(dataset), batch)]


def our_batches(root: Path, imgsz: int, batch: int, rect: bool) -> tuple[list, list]:
    """Our loader's batches over the same split, and its records."""
    records = read_yolo(root / "data.yaml").splits["val"]
    return list(build_dataloader(records, imgsz=imgsz, batch=batch, rect=rect, pin_memory=False)), records


def compare(root: Path, imgsz: int, batch: int, rect: bool) -> int:
    """Assert batch-by-batch parity with the oracle; returns the largest pixel difference seen."""
    ours, records = our_batches(root, imgsz, batch, rect)
    theirs = oracle_batches(root, imgsz, batch, rect)
    assert len(ours) == len(theirs)
    worst = 0
    for mine, ref in zip(ours, theirs, strict=True):
        assert not mine.failed
        files = [str(records[m.index].path) for m in mine.meta]
        assert sorted(files) == sorted(ref["im_file"])  # same images in the same batch ...
        assert mine.images.shape == ref["img"].shape  # ... with the same batch shape
        for b, (meta, path) in enumerate(zip(mine.meta, files, strict=True)):
            j = list(ref["im_file"]).index(path)
            worst = max(worst, int((mine.images[b].int() - ref["img"][j].int()).abs().max()))
            assert meta.orig_shape == tuple(ref["ori_shape"][j])
            (gain_y, gain_x), (pad_x, pad_y) = ref["ratio_pad"][j]
            np.testing.assert_allclose(meta.ratio, (gain_x, gain_y), rtol=1e-12)
            assert meta.pad == (pad_x, pad_y)
            target = mine.targets[mine.targets[:, 0] == b]
            torch.testing.assert_close(target[:, 1], ref["cls"][ref["batch_idx"] == j].view(-1))
            torch.testing.assert_close(target[:, 2:], ref["bboxes"][ref["batch_idx"] == j], atol=2e-5, rtol=0)
    assert worst <= 1, f"largest pixel difference {worst} grey levels"
    return worst


@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize("rect", [True, False], ids=["val-rect", "train-square"])
def test_batches_equal_the_oracle_on_synthetic_images(synthetic, imgsz, rect):
    compare(synthetic, imgsz, batch=3, rect=rect)


@pytest.mark.parametrize("imgsz", [320, 640])
@pytest.mark.parametrize("rect", [True, False], ids=["val-rect", "train-square"])
def test_batches_equal_the_oracle_on_cplid_val(cplid_val, imgsz, rect):
    compare(cplid_val, imgsz, batch=8, rect=rect)


def test_exif_orientation_6_gives_the_rotated_size_and_the_oracles_pixels(synthetic):
    path = synthetic / "images" / "val" / f"{ORIENTATION_6}.jpg"
    with Image.open(path) as stored:
        assert stored.size == (640, 480)
    assert read_image_size(path) == (480, 640)  # (width, height) as displayed
    image, orig_hw = load_image(path, 320)
    assert orig_hw == (640, 480) and image.shape == (320, 240, 3)
    ultralytics()
    from ultralytics.data.utils import exif_size
    from ultralytics.utils.patches import imread

    with Image.open(path) as stored:
        assert exif_size(stored) == (480, 640)
    full, _ = load_image(path, 640)
    reference = imread(str(path))[..., ::-1]  # the oracle's decode, BGR -> RGB
    assert full.shape == reference.shape and np.abs(full.astype(int) - reference).max() <= 1
    # the reader sizes it (and scales its normalised labels) as displayed; batch pixels: see the tests above
    record = next(r for r in read_yolo(synthetic / "data.yaml").splits["val"] if r.path == path)
    assert (record.width, record.height) == (480, 640)
