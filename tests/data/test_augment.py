"""The augmentations against the reference's own transforms fed the same random draws, on real photos; then the
draws themselves (distribution, reproducibility across data-loader workers and epochs)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from oracle import ultralytics
from yolofreeze.data import DetectionDataset, build_dataloader, read_yolo, write_demo_dataset
from yolofreeze.data.augment import (PRESETS, AugmentSettings, affine_matrix, augment, box_candidates, flip_lr, hsv,
                                     hsv_gains, mosaic, sample_rng, warp, warp_boxes)
from yolofreeze.data.loader import EpochStamped, load_image


@pytest.fixture(scope="module")
def photos(shared_data) -> list[np.ndarray]:
    """Three cplid-dev photos, resized as the loader does: (H, W, 3) uint8 RGB."""
    paths = sorted((shared_data / "cplid-dev" / "images" / "train").glob("*"))[:3]
    return [load_image(path, 320)[0] for path in paths]


@pytest.mark.parametrize("seed", range(6))
def test_hsv_equals_the_reference_given_the_same_gains(photos, seed):
    ultralytics()
    from ultralytics.data.augment import RandomHSV

    settings = PRESETS["light"]
    image = photos[seed % len(photos)]
    bgr = np.ascontiguousarray(image[..., ::-1])
    np.random.seed(seed)
    RandomHSV(settings.hsv_h, settings.hsv_s, settings.hsv_v)({"img": bgr})  # in place, its own global draws
    np.random.seed(seed)
    gains = np.random.uniform(-1, 1, 3) * [settings.hsv_h, settings.hsv_s, settings.hsv_v]  # the same draws
    ours = hsv(image, gains)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - bgr[..., ::-1].astype(int)).max() <= 1
    assert np.abs(ours.astype(int) - image.astype(int)).max() > 10  # the jitter did change the photo


def test_a_grey_pixel_stays_grey_and_zero_gains_change_nothing(photos):
    grey = np.full((4, 4, 3), 128, np.uint8)
    jittered = hsv(grey, np.array([0.01, 0.7, -0.3]))
    assert (jittered[..., 0] == jittered[..., 1]).all() and (jittered[..., 1] == jittered[..., 2]).all()
    round_trip = np.abs(hsv(photos[0], np.zeros(3)).astype(int) - photos[0].astype(int))  # 8-bit HSV and back
    assert round_trip.max() <= 3 and round_trip.mean() < 0.5


def test_flip_equals_the_reference(photos):
    ultralytics()
    from ultralytics.data.augment import RandomFlip
    from ultralytics.utils.instance import Instances

    image = photos[0]
    height, width = image.shape[:2]
    boxes = np.array([[10.0, 20.0, 60.0, 90.0], [width - 40.0, 5.0, width - 1.0, 30.5]], np.float32)
    labels = {"img": np.ascontiguousarray(image[..., ::-1]), "cls": np.zeros((2, 1)),
              "instances": Instances(boxes.copy(), np.zeros((0, 1000, 2), np.float32), bbox_format="xyxy",
                                     normalized=False)}
    out = RandomFlip(p=1.0, direction="horizontal")(labels)
    out["instances"].convert_bbox(format="xyxy")
    ours_image, ours_boxes = flip_lr(image, boxes)
    assert np.array_equal(ours_image, out["img"][..., ::-1])
    np.testing.assert_allclose(ours_boxes, out["instances"].bboxes, atol=1e-3)
    assert np.array_equal(flip_lr(*flip_lr(image, boxes))[1], boxes)  # twice is the identity


def test_draws_follow_their_distributions_and_depend_on_seed_epoch_and_image():
    settings = PRESETS["light"]
    gains = np.stack([hsv_gains(sample_rng(0, 0, k), settings) for k in range(4000)])
    limits = np.array([settings.hsv_h, settings.hsv_s, settings.hsv_v])
    assert (np.abs(gains) <= limits).all()
    # uniform on [-limit, limit]: mean 0 and std limit / sqrt(3); 4000 fixed draws, 5-sigma bounds
    assert np.all(np.abs(gains.mean(0)) < 5 * limits / np.sqrt(3) / np.sqrt(4000))
    np.testing.assert_allclose(gains.std(0), limits / np.sqrt(3), rtol=0.05)
    first = hsv_gains(sample_rng(0, 1, 7), settings)
    assert np.array_equal(first, hsv_gains(sample_rng(0, 1, 7), settings))
    assert not np.array_equal(first, hsv_gains(sample_rng(0, 2, 7), settings))
    assert not np.array_equal(first, hsv_gains(sample_rng(1, 1, 7), settings))


def test_the_flip_rate_is_its_probability():
    image, boxes = np.zeros((2, 4, 3), np.uint8), np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    flipped = [augment(image, boxes, sample_rng(0, 0, k), AugmentSettings(fliplr=0.3))[1][0, 0] == 3.0
               for k in range(4000)]
    assert abs(np.mean(flipped) - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 4000)  # fixed draws: a 5-sigma bound


def _epoch_batches(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    return [(b.images.clone(), b.targets.clone()) for b in loader]


def test_an_augmented_loader_repeats_itself_across_worker_counts_and_changes_with_the_epoch(shared_data):
    records = read_yolo(shared_data / "cplid-dev" / "data.yaml").splits["train"][:8]
    runs = {}
    for workers in (0, 2):
        sampler = DistributedSampler(range(len(records)), num_replicas=1, rank=0, shuffle=True, seed=3)
        loader = build_dataloader(records, imgsz=128, batch=4, workers=workers, seed=3, sampler=sampler,
                                  augment=PRESETS["light"])
        runs[workers] = [_epoch_batches(loader, sampler, epoch) for epoch in (0, 1)]
    for (images_a, targets_a), (images_b, targets_b) in zip(runs[0][0] + runs[0][1], runs[2][0] + runs[2][1]):
        assert torch.equal(images_a, images_b) and torch.equal(targets_a, targets_b)
    plain_sampler = DistributedSampler(range(len(records)), num_replicas=1, rank=0, shuffle=True, seed=3)
    plain = _epoch_batches(build_dataloader(records, imgsz=128, batch=4, seed=3, sampler=plain_sampler),
                           plain_sampler, 0)
    assert not torch.equal(plain[0][0], runs[0][0][0][0])  # augmented
    assert not torch.equal(runs[0][0][0][0], runs[0][1][0][0]) or not torch.equal(runs[0][0][1][0], runs[0][1][1][0])
    for _, targets in runs[0][0] + runs[0][1]:
        assert ((targets[:, 2:] >= 0) & (targets[:, 2:] <= 1)).all()


def test_augmentation_needs_a_sampler_with_an_epoch(shared_data):
    records = read_yolo(shared_data / "cplid-dev" / "data.yaml").splits["train"][:2]
    with pytest.raises(ValueError, match="sampler with an epoch"):
        build_dataloader(records, imgsz=64, batch=2, shuffle=True, augment=PRESETS["light"])


def _instances(boxes):
    from ultralytics.utils.instance import Instances

    return Instances(boxes.copy(), np.zeros((0, 1000, 2), np.float32), bbox_format="xyxy", normalized=False)


def _boxes_of(image: np.ndarray, seed: int) -> np.ndarray:
    """A dozen boxes inside ``image``: large, small (some filtered by the warp) and thin, seeded."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    x1, y1 = rng.uniform(0, w - 8, 12), rng.uniform(0, h - 8, 12)
    x2 = np.minimum(x1 + rng.uniform(3, w / 2, 12), w)
    y2 = np.minimum(y1 + rng.uniform(3, h / 2, 12), h)
    return np.stack([x1, y1, x2, y2], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_affine_equals_the_reference_given_the_same_draws(photos, seed):
    ultralytics()
    from ultralytics.data.augment import RandomPerspective

    image, size, degrees, translate, scale = photos[seed % len(photos)], 320, 10.0, 0.1, 0.5
    boxes = _boxes_of(image, seed)
    labels = {"img": np.ascontiguousarray(image[..., ::-1]), "cls": np.arange(len(boxes))[:, None],
              "instances": _instances(boxes)}
    random.seed(seed)
    out = RandomPerspective(degrees=degrees, translate=translate, scale=scale, shear=0.0, perspective=0.0,
                            size=(size, size))(labels)
    random.seed(seed)  # the reference's draws, in its order: perspective (2), angle, scale, shear (2), translation
    _ = [random.uniform(0, 0) for _ in range(2)]
    angle, zoom = random.uniform(-degrees, degrees), random.uniform(1 - scale, 1 + scale)
    _ = [random.uniform(0, 0) for _ in range(2)]
    tx, ty = (random.uniform(0.5 - translate, 0.5 + translate) * size for _ in range(2))
    matrix = affine_matrix(image.shape[1], image.shape[0], size, angle, zoom, tx, ty)
    ours = warp(image, matrix, size)
    moved = warp_boxes(boxes, matrix, size)
    keep = np.flatnonzero(box_candidates(boxes * zoom, moved))
    assert ours.shape == (size, size, 3) and np.abs(ours.astype(int) - out["img"][..., ::-1].astype(int)).max() <= 1
    out["instances"].convert_bbox(format="xyxy")
    assert np.array_equal(out["cls"][:, 0], keep) and 0 < len(keep)
    np.testing.assert_allclose(moved[keep], out["instances"].bboxes, atol=1e-3)


class _Items:
    """The dataset interface the reference's Mosaic reads: items by index, a buffer to draw partners from."""

    def __init__(self, items):
        self.items, self.buffer, self.cache = items, list(range(len(items))), None

    def get_image_and_label(self, index):
        item = self.items[index]
        return {**item, "img": item["img"].copy(), "instances": _instances(item["boxes"]), "cls": item["cls"].copy()}


@pytest.mark.parametrize("seed", range(4))
def test_mosaic_equals_the_reference_given_the_same_draws(photos, seed):
    ultralytics()
    from ultralytics.data.augment import Mosaic

    size = 320
    items = [{"img": np.ascontiguousarray(p[..., ::-1]), "boxes": _boxes_of(p, seed + k),
              "cls": np.full((12, 1), k, np.float32), "im_file": f"{k}.jpg", "ori_shape": p.shape[:2],
              "resized_shape": p.shape[:2]} for k, p in enumerate(photos)]
    source = _Items(items)
    random.seed(seed)
    out = Mosaic(source, imgsz=size, p=1.0)(source.get_image_and_label(0))
    random.seed(seed)  # its draws: apply or not, three partners from the buffer, then the centre (y first)
    random.uniform(0, 1)
    partners = random.choices(source.buffer, k=3)
    yc, xc = (int(random.uniform(size / 2, 3 * size / 2)) for _ in range(2))
    chosen = [0, *partners]
    canvas, boxes, keep = mosaic([photos[k] for k in chosen], [items[k]["boxes"] for k in chosen], (xc, yc), size)
    assert np.array_equal(canvas, out["img"][..., ::-1])
    out["instances"].convert_bbox(format="xyxy")
    np.testing.assert_allclose(boxes, out["instances"].bboxes, atol=1e-3)
    assert np.array_equal(np.concatenate([items[k]["cls"] for k in chosen])[keep], out["cls"])


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical distributions."""
    grid = np.sort(np.concatenate([a, b]))
    return float(np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                        - np.searchsorted(np.sort(b), grid, "right") / len(b)).max())


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("aug") / "demo", n_train=8, n_val=2, size=64)


def test_default_augmentation_places_and_scales_boxes_as_the_reference_does(small_demo):
    """Over 2000 augmented images (mosaic + affine, seeded: the test cannot flake) the distributions of the boxes'
    centre, width and count per image match those of the reference's Mosaic + RandomPerspective on the same images
    (two-sample KS statistic below 0.07; about 0.06 is the 0.1% critical value for these sample sizes)."""
    ultralytics()
    from ultralytics.data.augment import Mosaic, RandomPerspective

    size, draws = 64, 2000
    records = read_yolo(small_demo).splits["train"]
    dataset = DetectionDataset(records, imgsz=size, augment=PRESETS["default"], epochs=10**6)
    sampler = DistributedSampler(range(len(records)), num_replicas=1, rank=0, shuffle=True, seed=0)
    items = EpochStamped(sampler, batch_size=4)  # as the loader addresses them: partners from the item's batch
    ours = []
    for epoch in range(draws // len(records)):
        sampler.set_epoch(epoch)
        ours += [dataset[item].targets for item in items]
    items = []
    for record in records:
        resized, _ = load_image(record.path, size)
        scale = resized.shape[1] / record.width
        items.append({"img": np.ascontiguousarray(resized[..., ::-1]), "boxes": record.boxes * scale,
                      "cls": record.classes[:, None].astype(np.float32), "im_file": str(record.path),
                      "ori_shape": (record.height, record.width), "resized_shape": resized.shape[:2]})
    source = _Items(items)
    source.buffer = list(range(len(items)))
    mosaic_t = Mosaic(source, imgsz=size, p=1.0)
    affine_t = RandomPerspective(degrees=0.0, translate=0.1, scale=0.5, size=(size, size))
    theirs = []
    for k in range(draws):
        random.seed(k)
        out = affine_t(mosaic_t(source.get_image_and_label(k % len(items))))
        out["instances"].convert_bbox(format="xywh")
        theirs.append(out["instances"].bboxes / size)
    ours_boxes = np.concatenate([t[:, 2:].numpy() for t in ours])
    theirs_boxes = np.concatenate(theirs)
    for column, name in enumerate(("centre x", "centre y", "width", "height")):
        assert _ks(ours_boxes[:, column], theirs_boxes[:, column]) < 0.07, name
    assert _ks(np.array([len(t) for t in ours], float), np.array([len(t) for t in theirs], float)) < 0.07


def test_in_the_loader_mosaic_partners_come_from_the_items_batch(small_demo, monkeypatch):
    import yolofreeze.data.loader as loader

    records = read_yolo(small_demo).splits["train"]
    dataset = DetectionDataset(records, imgsz=64, augment=AugmentSettings(mosaic=1.0, close_mosaic=0), epochs=10)
    sampler = DistributedSampler(range(len(records)), num_replicas=1, rank=0, shuffle=True, seed=3)
    seen = []
    real = loader.mosaic

    def recording(images, boxes, centre, size):
        seen.append([next(k for k, r in enumerate(records) if dataset._load(k) is image) for image in images])
        return real(images, boxes, centre, size)

    monkeypatch.setattr(loader, "mosaic", recording)
    items = list(EpochStamped(sampler, batch_size=3))
    assert [item.batch for item in items[:4]] == [items[0].batch] * 3 + [items[3].batch]
    assert len(items[-1].batch) == len(records) % 3  # the last, partial batch
    for item in items:
        dataset[item]
        assert seen[-1][0] == item.index and set(seen[-1][1:]) <= set(item.batch)


def test_mosaic_stops_for_the_last_close_mosaic_epochs_and_boxes_stay_inside(small_demo):
    records = read_yolo(small_demo).splits["train"]
    settings = AugmentSettings(mosaic=1.0, translate=0.1, scale=0.5, close_mosaic=2)
    dataset = DetectionDataset(records, imgsz=64, augment=settings, epochs=5)
    counts = []
    for epoch in range(5):
        for k in range(len(records)):
            sample = dataset[epoch * len(records) + k]
            assert sample.image.shape == (3, 64, 64)
            xywh = sample.targets[:, 2:]
            assert ((xywh[:, :2] - xywh[:, 2:] / 2 >= -1e-6) & (xywh[:, :2] + xywh[:, 2:] / 2 <= 1 + 1e-6)).all()
            counts.append((epoch, len(sample.targets)))
    assert settings.mosaic_on(2, 5) and not settings.mosaic_on(3, 5)
    # a mosaic brings the boxes of four images into the frame: more per image than one warped image
    with_mosaic = np.mean([n for e, n in counts if e < 3])
    without = np.mean([n for e, n in counts if e >= 3])
    assert with_mosaic > 1.5 * without


def test_augmenting_keeps_recently_decoded_images_and_gives_the_same_samples(small_demo, monkeypatch):
    import yolofreeze.data.loader as loader

    records = read_yolo(small_demo).splits["train"]
    decoded = []
    real = loader.load_image

    def counting(path, imgsz):
        decoded.append(path)
        return real(path, imgsz)

    fresh = DetectionDataset(records, imgsz=64, augment=PRESETS["default"], epochs=10)
    expected = [fresh[epoch * len(records) + k] for epoch in range(2) for k in range(len(records))]
    monkeypatch.setattr(loader, "load_image", counting)
    buffered = DetectionDataset(records, imgsz=64, augment=PRESETS["default"], epochs=10)
    got = [buffered[epoch * len(records) + k] for epoch in range(2) for k in range(len(records))]
    assert len(decoded) == len(set(decoded)) == len(records)  # each image decoded once over two epochs of mosaics
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.targets, b.targets)
    plain = DetectionDataset(records, imgsz=64)
    assert plain._recent is None  # validation and un-augmented training read the files (or --cache) as before
