"""Loader: letterbox geometry, rect batches, determinism, collate, cache, reduced JPEG decode, bad files."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from yolofreeze.data import (Augment, DetectionDataset, ImageRecord, build_dataloader, collate, letterbox, load_image,
                             read_dataset, rect_batch_shapes)

RED = (220, 30, 30)


def _picture(path: Path, size, box, fmt=None) -> ImageRecord:
    """Grey-noise image of ``size`` (w, h) with a solid red rectangle at ``box`` (xyxy px); its record."""
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = RED
    Image.fromarray(pixels).save(path, format=fmt, quality=95)
    return ImageRecord(path, size[0], size[1], np.array([box], np.float32), np.array([1]), np.array([False]), 1)


@pytest.fixture
def records(tmp_path):
    """Eight images of mixed aspect ratios, one red box each."""
    sizes = [(200, 100), (90, 160), (120, 120), (300, 80), (64, 200), (150, 110), (100, 150), (77, 55)]
    return [_picture(tmp_path / f"{i}.jpg", size, (size[0] // 4, size[1] // 3, size[0] // 2, size[1] // 2 + 10))
            for i, size in enumerate(sizes)]


def _to_original(targets: torch.Tensor, meta, shape) -> np.ndarray:
    """Test-side inverse: normalised cxcywh on the letterboxed image -> original-image xyxy pixels."""
    height, width = shape
    cx, cy, w, h = (targets[:, 2:6].double() * torch.tensor([width, height, width, height])).T.numpy()
    (rx, ry), (left, top) = meta.ratio, meta.pad
    return np.stack([(cx - w / 2 - left) / rx, (cy - h / 2 - top) / ry,
                     (cx + w / 2 - left) / rx, (cy + h / 2 - top) / ry], 1)


def test_letterbox_keeps_ratio_pads_grey_and_maps_points():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 150:190] = RED
    out, (rx, ry), (left, top) = letterbox(image, 64, shape=(64, 64))
    assert out.shape == (64, 64, 3) and (rx, ry) == (64 / 200, 32 / 100) and (left, top) == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    cx, cy = 170 * rx + left, 50 * ry + top  # centre of the red patch, mapped
    assert tuple(out[int(cy), int(cx)]) == RED
    out, ratio, pad = letterbox(image, 64, shape=(96, 64))
    assert out.shape == (96, 64, 3) and ratio == (64 / 200, 32 / 100) and pad == (0, 32)
    out, ratio, pad = letterbox(image, 64)  # default shape: resized size rounded up to the stride
    assert out.shape == (32, 64, 3) and pad == (0, 0)
    tall = np.zeros((90, 30, 3), np.uint8)
    out, ratio, pad = letterbox(tall, 64, stride=32)
    assert out.shape == (64, 32, 3) and pad == ((32 - round(30 * 64 / 90)) // 2, 0)


def test_dataset_targets_map_back_to_original_boxes_and_cover_the_red_patch(records):
    dataset = DetectionDataset(records, imgsz=96)
    for i in range(len(dataset)):
        image, targets, meta = dataset[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 96, 96)
        assert targets.shape == (1, 6) and targets[0, 1] == 1
        record = records[meta.index]
        assert meta.orig_shape == (record.height, record.width)
        np.testing.assert_allclose(_to_original(targets, meta, (96, 96)), record.boxes, atol=1e-3)
        cx, cy = (targets[0, 2:4] * 96).long().tolist()
        assert image[0, cy, cx] > 180 and image[1, cy, cx] < 80  # red where the target says


def test_rect_shapes_are_stride_multiples_and_fit_every_image():
    sizes = np.array([[480, 640], [640, 480], [500, 500], [300, 900], [900, 300], [426, 640], [640, 360]], float)
    order, shapes = rect_batch_shapes(sizes, 640, batch=3)
    aspect = sizes[:, 0] / sizes[:, 1]
    assert (np.diff(aspect[order]) >= 0).all()
    assert (shapes % 32 == 0).all()
    for start in range(0, len(order), 3):
        assert (shapes[start:start + 3] == shapes[start]).all()
        for h, w in sizes[order[start:start + 3]]:
            r = 640 / max(h, w)
            assert shapes[start, 0] >= round(h * r) and shapes[start, 1] >= round(w * r)
    # first batch: aspects 1/3, 0.666, 0.75 (all landscape) -> (ceil(0.75 * 640 / 32 + 0.5), ceil(20.5)) * 32
    np.testing.assert_array_equal(shapes[0], [512, 672])
    np.testing.assert_array_equal(shapes[-1], [672, 256])  # last: 900x300 alone -> (21, ceil(6.67 + .5)) * 32


def test_rect_loader_batches_share_a_shape_and_targets_still_map_back(records):
    loader = build_dataloader(records, imgsz=128, batch=3, rect=True)
    seen = []
    for images, targets, meta in loader:
        assert images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
        for b, m in enumerate(meta):
            boxes = _to_original(targets[targets[:, 0] == b], m, images.shape[2:])
            np.testing.assert_allclose(boxes, records[m.index].boxes, atol=1e-3)
            seen.append(m.index)
    assert sorted(seen) == list(range(len(records)))
    with pytest.raises(ValueError, match="shuffle"):
        build_dataloader(records, rect=True, shuffle=True)


def test_collate_fills_the_batch_index_column(records):
    dataset = DetectionDataset(records[:3], imgsz=64)
    samples = [dataset[i] for i in range(3)]
    samples[1] = samples[1]._replace(targets=torch.cat([samples[1].targets] * 3))
    batch = collate(samples)
    assert batch.images.shape == (3, 3, 64, 64)
    assert batch.targets[:, 0].tolist() == [0, 1, 1, 1, 2]
    assert (samples[1].targets[:, 0] == 0).all()  # samples themselves untouched


@pytest.mark.parametrize("workers", [0, 2])
def test_seeded_shuffle_is_reproducible(records, workers):
    def order(seed):
        loader = build_dataloader(records, imgsz=64, batch=3, shuffle=True, workers=workers, seed=seed)
        return [[m.index for m in batch.meta] for epoch in range(2) for batch in loader]

    first = order(7)
    assert first == order(7)
    assert first != order(8)
    assert first[:3] != first[3:]  # epochs differ


def test_cache_gives_identical_tensors(records):
    plain = DetectionDataset(records, imgsz=96, rect=True, batch_size=4)
    cached = DetectionDataset(records, imgsz=96, rect=True, batch_size=4, cache=True)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.targets, b.targets) and a.meta == b.meta


def test_reduced_jpeg_decode_same_shape_close_pixels(tmp_path, monkeypatch):
    record = _picture(tmp_path / "frame.jpg", (1920, 1080), (400, 300, 1200, 800))
    decoded_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size, *args):
        result = original_draft(self, mode, size, *args)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast, original = load_image(record.path, 640)
    assert decoded_sizes == [(960, 540)]  # libjpeg decoded at half scale, not full size
    full, _ = load_image(record.path, 640, reduced_decode=False)
    assert fast.shape == full.shape == (360, 640, 3) and original == (1080, 1920)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 4


def test_flagged_boxes_are_left_out_of_training_targets(records):
    record = records[0]
    two = ImageRecord(record.path, record.width, record.height, np.concatenate([record.boxes, [[1, 1, 20, 20]]]),
                      np.array([1, 0]), np.array([False, True]), 1)
    assert DetectionDataset([two], imgsz=64)[0].targets[:, 1].tolist() == [1.0]


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_image_at_load_time_is_skipped_and_counted(records, cache, caplog):
    broken = records[2].path
    broken.write_bytes(broken.read_bytes()[:200])
    dataset = DetectionDataset(records, imgsz=64, cache=cache)
    indices = [dataset[i].meta.index for i in range(len(dataset))]
    assert indices == [0, 1, 3, 3, 4, 5, 6, 7]
    assert dataset.failures == 1
    assert any("skipping unreadable image" in r.message for r in caplog.records)


def test_augmentation_is_off_by_default_and_flip_moves_boxes(records):
    plain = build_dataloader(records[:2], imgsz=64, batch=2)
    first, second = list(plain)[0], list(plain)[0]
    assert torch.equal(first.images, second.images) and plain.dataset.augment is None
    flip = Augment(hflip=1.0, hue=0, saturation=0, value=0, scale=0, translate=0)
    dataset = DetectionDataset(records[:1], imgsz=64, augment=flip)
    unflipped = DetectionDataset(records[:1], imgsz=64)[0]
    flipped = dataset[0]
    assert torch.equal(flipped.image, unflipped.image.flip(-1))
    expected = unflipped.targets.clone()
    expected[:, 2] = 1 - expected[:, 2]
    torch.testing.assert_close(flipped.targets, expected)


def test_default_augment_keeps_boxes_inside_the_image(records):
    torch.manual_seed(0)
    dataset = DetectionDataset(records, imgsz=64, augment=Augment())
    for i in range(len(dataset)):
        image, targets, _ = dataset[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        xyxy = torch.cat([targets[:, 2:4] - targets[:, 4:6] / 2, targets[:, 2:4] + targets[:, 4:6] / 2], 1)
        assert ((xyxy >= -1e-6) & (xyxy <= 1 + 1e-6)).all() and (targets[:, 4:6] > 0).all()


def test_cplid_val_loads_in_rect_batches(shared_data):
    info = read_dataset(shared_data / "cplid-dev")
    loader = build_dataloader(info.splits["val"], imgsz=640, batch=8, rect=True)
    batches = list(loader)
    assert sum(len(b.meta) for b in batches) == 20
    assert sum(len(b.targets) for b in batches) == sum(len(r.boxes) for r in info.splits["val"])
    assert all(b.images.shape[1] == 3 and b.images.shape[2] % 32 == 0 and b.images.shape[3] % 32 == 0
               for b in batches)
