"""Loader: letterbox geometry, rect batches, determinism, collate, cache, unreadable images."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolofreeze.data import (AugmentSettings, DetectionDataset, ImageRecord, build_dataloader, collate, letterbox, load_image,
                             read_dataset, rect_batch_shapes)
from yolofreeze.data.loader import decode_image, resize_long_side

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
    out, (rx, ry), (left, top) = letterbox(image, (64, 64))
    assert out.shape == (64, 64, 3) and (rx, ry) == (64 / 200, 32 / 100) and (left, top) == (0, 16)
    assert (out[:16] == 114).all() and (out[48:] == 114).all()
    cx, cy = 170 * rx + left, 50 * ry + top  # centre of the red patch, mapped
    assert tuple(out[int(cy), int(cx)]) == RED
    out, ratio, pad = letterbox(image, (96, 64))
    assert out.shape == (96, 64, 3) and ratio == (64 / 200, 32 / 100) and pad == (0, 32)
    out, ratio, pad = letterbox(image, 64, auto=True)  # canvas trimmed to multiples of the stride
    assert out.shape == (32, 64, 3) and pad == (0, 0)
    tall = np.zeros((90, 30, 3), np.uint8)
    out, ratio, pad = letterbox(tall, 64, auto=True, stride=32)  # placed 64 x round(21.3) = 21, padded to 32
    assert out.shape == (64, 32, 3) and pad == (5, 0) and ratio == (21 / 30, 64 / 90)


def test_letterbox_without_scaleup_centres_a_small_image_with_the_odd_pixel_right_and_bottom():
    small = np.full((21, 30, 3), 7, np.uint8)
    out, ratio, (left, top) = letterbox(small, (64, 64), scaleup=False)
    assert ratio == (1.0, 1.0) and (left, top) == (17, 21)  # 34 = 17 + 17 columns, 43 = 21 + 22 rows
    assert (out[top:top + 21, left:left + 30] == 7).all()
    assert (out[:, :left] == 114).all() and (out[:, left + 30:] == 114).all() and (out[top + 21:] == 114).all()
    assert out.shape[1] - (left + 30) == 17 and out.shape[0] - (top + 21) == 22


@pytest.mark.parametrize("shape,kwargs", [((64, 64), {}), ((96, 64), {}), (64, {"auto": True}),
                                          ((500, 300), {"scaleup": False})])
def test_letterbox_channels_last_has_the_same_pixels_geometry_and_is_contiguous(shape, kwargs):
    image = np.random.default_rng(3).integers(0, 256, (101, 203, 3), dtype=np.uint8)
    chw_view, ratio, pad = letterbox(image, shape, **kwargs)
    hwc, ratio_hwc, pad_hwc = letterbox(image, shape, channels_first=False, **kwargs)
    assert hwc.flags.c_contiguous and not chw_view.flags.c_contiguous
    assert np.array_equal(hwc, chw_view) and ratio_hwc == ratio and pad_hwc == pad


def test_host_memory_counts_the_cache_as_filled_and_mosaic_canvases_only_with_mosaic(records):
    cached = DetectionDataset(records, 64, cache_images=True)
    memory = cached.host_memory(workers=0, batch=4)
    assert memory["image_cache_bytes"] == sum(image.nbytes for image in cached._cache)
    assert memory["recent_images_bytes"] == memory["mosaic_canvas_bytes"] == 0
    assert memory["batches_bytes"] == 4 * 3 * 64 * 64 and "cache" in memory["note"]
    light = DetectionDataset(records, 64, augment=AugmentSettings(fliplr=0.5)).host_memory(workers=2, batch=4)
    assert light["image_cache_bytes"] == light["mosaic_canvas_bytes"] == 0 and light["recent_images"] == len(records)
    assert light["recent_images_bytes"] == 2 * cached.host_memory(0, 4)["image_cache_bytes"]  # a buffer per worker
    mosaic = DetectionDataset(records, 64, augment=AugmentSettings(mosaic=1.0)).host_memory(workers=0, batch=4)
    assert mosaic["mosaic_canvas_bytes"] == 5 * 3 * 64 * 64 and "2x-side canvas" in mosaic["note"]


@pytest.mark.parametrize("hw,imgsz,expected", [((333, 517), 320, (207, 320)),  # 333 * 320 / 517 = 206.1 -> up
                                               ((517, 333), 320, (320, 207)),
                                               ((150, 200), 320, (240, 320)),  # enlarged
                                               ((90, 1200), 320, (24, 320))])  # 24.0 stays 24
def test_resize_long_side_rounds_the_short_side_up(hw, imgsz, expected):
    assert resize_long_side(np.zeros((*hw, 3), np.uint8), imgsz).shape[:2] == expected


def test_resize_long_side_leaves_an_image_already_at_imgsz_alone():
    image = np.zeros((480, 640, 3), np.uint8)
    assert resize_long_side(image, 640) is image


def test_decode_raises_a_clear_oserror_for_missing_empty_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(OSError, match="empty file"):
        decode_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(OSError, match="cannot decode"):
        decode_image(tmp_path / "text.jpg")


def test_load_image_gives_rgb(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[..., 0] = 200  # red
    Image.fromarray(pixels).save(tmp_path / "red.png")
    image, orig_hw = load_image(tmp_path / "red.png", 60)
    assert orig_hw == (40, 60) and image.shape == (40, 60, 3)
    assert (image[..., 0] == 200).all() and (image[..., 1:] == 0).all()


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
    for images, targets, meta, failed in loader:
        assert failed == []
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
    cached = DetectionDataset(records, imgsz=96, rect=True, batch_size=4, cache_images=True)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.targets, b.targets) and a.meta == b.meta


def test_flagged_boxes_are_left_out_of_training_targets(records):
    record = records[0]
    two = ImageRecord(record.path, record.width, record.height, np.concatenate([record.boxes, [[1, 1, 20, 20]]]),
                      np.array([1, 0]), np.array([False, True]), 1)
    assert DetectionDataset([two], imgsz=64)[0].targets[:, 1].tolist() == [1.0]


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_unreadable_at_load_time_is_reported_never_replaced(records, cache, workers, caplog):
    broken = records[4].path
    broken.write_bytes(broken.read_bytes()[:200])  # truncated after the readers checked it
    loader = build_dataloader(records, imgsz=64, batch=3, cache_images=cache, workers=workers)
    batches = list(loader)
    assert [len(b.meta) for b in batches] == [3, 2, 2] and [b.failed for b in batches] == [[], [4], []]
    assert batches[1].images.shape == (2, 3, 64, 64) and batches[1].targets[:, 0].tolist() == [0, 1]
    served = [m.index for b in batches for m in b.meta]
    assert served == [0, 1, 2, 3, 5, 6, 7]  # every other image exactly once, nothing in its place
    if workers == 0:  # worker processes log in their own process
        assert any(str(broken) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_batch_whose_images_all_fail_is_empty_and_names_them(records):
    for record in records[:2]:
        record.path.write_bytes(b"")
    batch = collate([DetectionDataset(records[:2], imgsz=64)[i] for i in range(2)])
    assert batch.images.shape[0] == 0 and len(batch.targets) == 0 and batch.meta == [] and batch.failed == [0, 1]


def test_an_image_whose_size_changed_since_reading_fails(records):
    record = records[0]
    Image.new("RGB", (record.width + 8, record.height)).save(record.path)
    item = DetectionDataset([record], imgsz=64)[0]
    assert item.index == 0 and "differs from the dataset" in item.error


def test_augmentation_is_off_by_default_and_flip_moves_boxes(records):
    plain = DetectionDataset(records[:1], imgsz=64)
    assert plain.augment is None and torch.equal(plain[0].image, DetectionDataset(records[:1], imgsz=64)[0].image)
    flipped = DetectionDataset(records[:1], imgsz=64, augment=AugmentSettings(fliplr=1.0))[0]  # epoch 0, item 0
    unflipped = plain[0]
    assert torch.equal(flipped.image, unflipped.image.flip(-1))
    expected = unflipped.targets.clone()
    expected[:, 2] = 1 - expected[:, 2]
    torch.testing.assert_close(flipped.targets, expected)


def test_cplid_val_loads_in_rect_batches(shared_data):
    info = read_dataset(shared_data / "cplid-dev")
    loader = build_dataloader(info.splits["val"], imgsz=640, batch=8, rect=True)
    batches = list(loader)
    assert sum(len(b.meta) for b in batches) == 20
    assert sum(len(b.targets) for b in batches) == sum(len(r.boxes) for r in info.splits["val"])
    assert all(b.images.shape[1] == 3 and b.images.shape[2] % 32 == 0 and b.images.shape[3] % 32 == 0
               for b in batches)
