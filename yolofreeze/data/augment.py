"""Training augmentations (off by default, the layer-freezing paper's protocol), as the reference applies them.

Each transform is a pure function of the image, its boxes and the random draws it is given, so it can be checked
against the reference's transform fed the same draws (tests/data/test_augment.py); the draws come from one
``numpy.random.Generator`` per image and epoch (:func:`sample_rng`: seeded by the run's seed, the epoch and the
image's index), so a seeded run gets the same augmentations whatever the number of data-loader workers, and a
resumed run continues the same stream.

- :func:`hsv`: colour jitter in HSV space through look-up tables: hue shifted by ``gains[0] * 180`` (OpenCV's hue
  range is 0-179, wrapping), saturation and value multiplied by ``1 + gains[1]`` and ``1 + gains[2]`` (clipped to
  255; a saturation of 0 stays 0, so greys stay grey). :func:`hsv_gains` draws ``gains`` uniformly in
  ``[-1, 1] * (hsv_h, hsv_s, hsv_v)``.
- :func:`flip_lr`: the mirror image and its boxes.

Presets (:data:`PRESETS`, ``--augment``): ``none``; ``light`` = horizontal flip (probability 0.5) and HSV jitter
(0.015, 0.7, 0.4), the reference's default values of those two.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges, with the reference's names: ``fliplr`` (probability of a horizontal flip),
    ``hsv_h`` / ``hsv_s`` / ``hsv_v`` (gain ranges)."""

    fliplr: float = 0.0
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.fliplr <= 1.0:
            raise ValueError(f"fliplr {self.fliplr} is a probability: between 0 and 1")
        for name in ("hsv_h", "hsv_s", "hsv_v"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} {getattr(self, name)} must be between 0 and 1")

    @property
    def active(self) -> bool:
        """Whether anything is augmented at all."""
        return self.fliplr > 0 or self.hsv_h > 0 or self.hsv_s > 0 or self.hsv_v > 0


PRESETS = {"none": AugmentSettings(), "light": AugmentSettings(fliplr=0.5, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4)}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random draws of image ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return np.random.default_rng([seed, epoch, index])


def hsv_gains(rng: np.random.Generator, settings: AugmentSettings) -> np.ndarray:
    """``(3,)`` gains for :func:`hsv`: uniform in ``[-1, 1]`` times ``(hsv_h, hsv_s, hsv_v)``."""
    return rng.uniform(-1, 1, 3) * np.array([settings.hsv_h, settings.hsv_s, settings.hsv_v])


def hsv(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``image (H, W, 3)`` uint8 RGB with hue shifted by ``gains[0] * 180`` and saturation and value scaled by
    ``1 + gains[1]`` and ``1 + gains[2]`` (a new array)."""
    levels = np.arange(256, dtype=np.float64)
    hue = np.mod(levels + gains[0] * 180, 180).astype(np.uint8)
    saturation = np.clip(levels * (1 + gains[1]), 0, 255).astype(np.uint8)
    saturation[0] = 0  # a colourless pixel stays colourless
    value = np.clip(levels * (1 + gains[2]), 0, 255).astype(np.uint8)
    table = np.stack([hue, saturation, value], axis=-1)[None]  # (1, 256, 3): one table per channel
    shifted = cv2.LUT(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV), table)
    return cv2.cvtColor(shifted, cv2.COLOR_HSV2RGB)


def flip_lr(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mirror image of ``image (H, W, 3)`` and ``boxes (N, 4)`` xyxy pixels moved with it."""
    width = image.shape[1]
    mirrored = boxes.copy()
    mirrored[:, [0, 2]] = width - boxes[:, [2, 0]]
    return np.ascontiguousarray(image[:, ::-1]), mirrored


def augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, settings: AugmentSettings
            ) -> tuple[np.ndarray, np.ndarray]:
    """``image (H, W, 3)`` uint8 RGB and ``boxes (N, 4)`` xyxy pixels through the active transforms, in the
    reference's order (HSV, then the flip), with draws from ``rng``."""
    if settings.hsv_h or settings.hsv_s or settings.hsv_v:
        image = hsv(image, hsv_gains(rng, settings))
    if settings.fliplr and rng.random() < settings.fliplr:
        image, boxes = flip_lr(image, boxes)
    return image, boxes
