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
- :func:`mosaic`: four resized images around a centre on a ``2s x 2s`` grey canvas (the image itself top left, then
  three others: the loader draws them from the images of the same batch; the reference from a buffer of recently
  loaded images),
  boxes shifted with them, clipped to the canvas, empty ones dropped.
- :func:`affine_matrix` / :func:`warp` / :func:`warp_boxes`: about the input's centre, rotate by ``angle`` degrees
  and scale by ``scale``, then move the centre to ``(tx, ty)`` of an ``s x s`` output (``tx, ty`` drawn in
  ``[0.5 - translate, 0.5 + translate] * s``): the whole square input of training, mosaic or not (without mosaic
  this replaces the letterbox, as in the reference). Boxes: the four corners mapped, their bounds, clipped to the
  output; :func:`box_candidates` keeps a box at least 2 px wide and high, of aspect ratio below 100 and keeping
  more than 10% of its scaled area. No shear or perspective (the reference's defaults are 0).

Presets (:data:`PRESETS`, ``--augment``): ``none``; ``light`` = horizontal flip (probability 0.5) and HSV jitter
(0.015, 0.7, 0.4); ``default`` = the reference's defaults: mosaic (probability 1, off for the last
``close_mosaic`` epochs), translate 0.1, scale 0.5, no rotation, the same HSV jitter and flip. Order per image, as
in the reference: mosaic, affine, HSV, flip.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD = 114  # grey of the canvas around and between images


# each setting's allowed values and how to say them (AugmentSettings and the training config check with it)
LIMITS = {**dict.fromkeys(("fliplr", "hsv_h", "hsv_s", "hsv_v", "mosaic", "translate"),
                          (lambda value: 0.0 <= value <= 1.0, "between 0 and 1")),
          "scale": (lambda value: 0.0 <= value < 1.0, "in [0, 1)"),
          "degrees": (lambda value: 0.0 <= value <= 180.0, "between 0 and 180"),
          "close_mosaic": (lambda value: isinstance(value, int) and value >= 0, "an integer >= 0")}


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges, with the reference's names (allowed values: :data:`LIMITS`): ``fliplr`` and
    ``mosaic`` (probabilities), ``hsv_h`` / ``hsv_s`` / ``hsv_v`` (gain ranges), ``degrees``, ``translate`` and
    ``scale`` (the affine's ranges), ``close_mosaic`` (epochs at the end without mosaic)."""

    fliplr: float = 0.0
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0
    mosaic: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: float = 0.0
    close_mosaic: int = 10  # mosaic off for the last this many epochs

    def __post_init__(self):
        for name, (allowed, what) in LIMITS.items():
            if not allowed(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)} must be {what}")

    @property
    def active(self) -> bool:
        """Whether anything is augmented at all."""
        return self.geometric or self.fliplr > 0 or self.hsv_h > 0 or self.hsv_s > 0 or self.hsv_v > 0

    @property
    def geometric(self) -> bool:
        """Whether images are recomposed (mosaic) or warped (affine) rather than letterboxed."""
        return self.mosaic > 0 or self.degrees > 0 or self.translate > 0 or self.scale > 0

    def mosaic_on(self, epoch: int, epochs: int) -> bool:
        """Whether mosaic may apply in ``epoch`` (0-based) of an ``epochs``-epoch run."""
        return self.mosaic > 0 and epoch < epochs - self.close_mosaic


_LIGHT = {"fliplr": 0.5, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}
PRESETS = {"none": AugmentSettings(), "light": AugmentSettings(**_LIGHT),
           "default": AugmentSettings(**_LIGHT, mosaic=1.0, translate=0.1, scale=0.5)}


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
    return cv2.flip(image, 1), mirrored


def mosaic(images: list[np.ndarray], boxes: list[np.ndarray], centre: tuple[int, int], size: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four resized images ``(h, w, 3)`` (long side ``size``) around ``centre = (xc, yc)`` on a ``(2 size, 2 size, 3)``
    canvas of grey 114: the first's bottom-right corner at the centre, the second's bottom-left, the third's
    top-right, the fourth's top-left. Returns the canvas, the boxes ``(M, 4)`` xyxy (each image's ``boxes`` in its
    pixels, shifted, clipped to the canvas, those of zero area dropped) and which input box each one is ``(M,)``
    (an index into the concatenated ``boxes``)."""
    xc, yc = centre
    edge = 2 * size
    canvas = np.full((edge, edge, 3), PAD, np.uint8)
    moved = []
    for k, (image, own) in enumerate(zip(images, boxes, strict=True)):
        h, w = image.shape[:2]
        # (x1, y1, x2, y2) on the canvas, clipped at its edges; the image is cut on the side away from the centre
        x1, x2 = (max(xc - w, 0), xc) if k in (0, 2) else (xc, min(xc + w, edge))
        y1, y2 = (max(yc - h, 0), yc) if k in (0, 1) else (yc, min(yc + h, edge))
        sx1 = w - (x2 - x1) if k in (0, 2) else 0
        sy1 = h - (y2 - y1) if k in (0, 1) else 0
        canvas[y1:y2, x1:x2] = image[sy1:sy1 + (y2 - y1), sx1:sx1 + (x2 - x1)]
        moved.append(own + np.array([x1 - sx1, y1 - sy1] * 2, np.float32))
    everything = np.concatenate(moved) if moved else np.zeros((0, 4), np.float32)
    clipped = everything.clip(0, edge)
    keep = np.flatnonzero((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
    return canvas, clipped[keep], keep


def affine_matrix(width: int, height: int, size: int, angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    """``(3, 3)`` float32: about the centre of a ``width x height`` input rotate by ``angle`` degrees
    (counter-clockwise, OpenCV's convention) and scale by ``scale``, then put that centre at ``(tx, ty)`` of the
    ``size x size`` output (pixels)."""
    centre = np.eye(3, dtype=np.float32)
    centre[:2, 2] = (-width / 2, -height / 2)
    rotate = np.eye(3, dtype=np.float32)
    rotate[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=scale)
    move = np.eye(3, dtype=np.float32)
    move[:2, 2] = (tx, ty)
    return move @ rotate @ centre


def draw_affine(rng: np.random.Generator, settings: AugmentSettings, size: int) -> tuple[float, float, float, float]:
    """``(angle, scale, tx, ty)`` for :func:`affine_matrix`: uniform in ``±degrees``, ``1 ± scale`` and
    ``(0.5 ± translate) * size``."""
    angle = rng.uniform(-settings.degrees, settings.degrees)
    scale = rng.uniform(1 - settings.scale, 1 + settings.scale)
    tx, ty = rng.uniform(0.5 - settings.translate, 0.5 + settings.translate, 2) * size
    return angle, scale, tx, ty


def warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``image`` through ``matrix`` onto a ``(size, size, 3)`` grey-114 canvas (bilinear)."""
    return cv2.warpAffine(image, matrix[:2], dsize=(size, size), borderValue=(PAD, PAD, PAD))


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """``boxes (N, 4)`` xyxy through ``matrix``: the bounds of the four mapped corners, clipped to ``size``."""
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)  # x1y1, x2y2, x1y2, x2y1
    mapped = (np.c_[corners, np.ones(len(corners))] @ matrix.T)[:, :2].reshape(-1, 4, 2)
    out = np.concatenate([mapped.min(1), mapped.max(1)], axis=1) if len(boxes) else np.zeros((0, 4))
    return out.clip(0, size).astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray, min_side: float = 2.0, max_ratio: float = 100.0,
                   min_area: float = 0.1, eps: float = 1e-16) -> np.ndarray:
    """Which boxes survive a warp ``(N,)`` bool: ``after`` at least ``min_side`` px on each side, aspect ratio below
    ``max_ratio``, and more than ``min_area`` of ``before``'s area (``before``: the input boxes scaled as the warp
    scales)."""
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ratio = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > min_side) & (h2 > min_side) & (w2 * h2 / (w1 * h1 + eps) > min_area) & (ratio < max_ratio)


def affine(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, settings: AugmentSettings, size: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp ``image`` (any size) and ``boxes`` to ``size x size`` with draws from ``rng``; the boxes that survive
    (:func:`box_candidates`) and their indices."""
    angle, scale, tx, ty = draw_affine(rng, settings, size)
    matrix = affine_matrix(image.shape[1], image.shape[0], size, angle, scale, tx, ty)
    moved = warp_boxes(boxes, matrix, size)
    keep = np.flatnonzero(box_candidates(boxes * scale, moved))
    return warp(image, matrix, size), moved[keep], keep


def augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, settings: AugmentSettings
            ) -> tuple[np.ndarray, np.ndarray]:
    """``image (H, W, 3)`` uint8 RGB and ``boxes (N, 4)`` xyxy pixels through the colour and flip transforms, in the
    reference's order (HSV, then the flip), with draws from ``rng``."""
    if settings.hsv_h or settings.hsv_s or settings.hsv_v:
        image = hsv(image, hsv_gains(rng, settings))
    if settings.fliplr and rng.random() < settings.fliplr:
        image, boxes = flip_lr(image, boxes)
    return image, boxes
