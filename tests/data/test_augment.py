"""The augmentations against the reference's own transforms fed the same random draws, on real photos; then the
draws themselves (distribution, reproducibility across data-loader workers and epochs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from oracle import ultralytics
from yolofreeze.data import build_dataloader, read_yolo
from yolofreeze.data.augment import PRESETS, AugmentSettings, augment, flip_lr, hsv, hsv_gains, sample_rng
from yolofreeze.data.loader import load_image


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
