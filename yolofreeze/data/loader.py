"""Records -> letterboxed uint8 batches: image loading, letterbox, rectangular batches, RAM cache, collate.

The pixels are those the reference pipeline gives the released weights, in training and in validation
(``tests/data/test_preprocess_parity.py`` checks them against it):

1. decode with OpenCV, EXIF orientation applied (a 640x480 JPEG tagged "rotate 90°" is 480x640);
2. ``load_image``: resize so the long side is ``imgsz`` (bilinear, ``cv2.INTER_LINEAR``), unless it already is:
   with ``r = imgsz / max(h0, w0)`` the size is ``min(ceil(w0 * r), imgsz) x min(ceil(h0 * r), imgsz)``;
3. ``letterbox`` to the batch shape ``(H, W)``: scale ``min(H / h, W / w)``, capped at 1 in the dataset
   (never enlarged), resized size ``max(round(w * scale), 1)`` (bilinear, only if the size changes), then
   centred on a grey-114 canvas, the odd pixel of padding going right / bottom.

A point maps as ``x_letterboxed = x_original * ratio_x + pad_left`` (same for y with ``ratio_y, pad_top``);
``ratio`` is per axis because sizes are rounded to whole pixels.
"""
from __future__ import annotations

import logging
import math
import os
import random
import signal
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..boxes import xyxy2xywh
from .augment import AugmentSettings, affine, augment, mosaic, sample_rng
from .records import IMAGE_ERRORS, ImageRecord

log = logging.getLogger(__name__)

PAD_VALUE = 114
RECENT_IMAGES = 1000  # at most this many decoded images kept per loader worker while augmenting

def decode_image(path: str | Path) -> np.ndarray:
    """Decode an image file with OpenCV, EXIF orientation applied.

    Returns:
        ``image (h0, w0, 3) uint8`` in OpenCV's **BGR** channel order (grey images are repeated, alpha dropped).

    Raises:
        ``FileNotFoundError`` / ``OSError``: missing or unreadable file, or one OpenCV cannot decode
        (corrupt, truncated, unknown format).
    """
    data = np.fromfile(path, np.uint8)
    if not data.size:
        raise OSError(f"{path}: empty file")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise OSError(f"{path}: {error}") from None
    if image is None:
        raise OSError(f"{path}: cannot decode image (corrupt, truncated or unsupported format)")
    return image


def resize_long_side(image: np.ndarray, imgsz: int) -> np.ndarray:
    """Resize ``(h0, w0, C)`` bilinearly so the long side is ``imgsz``; the image itself when it already is.

    The new size is ``min(ceil(w0 * r), imgsz) x min(ceil(h0 * r), imgsz)`` with ``r = imgsz / max(h0, w0)``,
    so the short side is rounded up.
    """
    height, width = image.shape[:2]
    if max(height, width) == imgsz:
        return image
    return cv2.resize(image, long_side_size(height, width, imgsz)[::-1], interpolation=cv2.INTER_LINEAR)


def long_side_size(height: int, width: int, imgsz: int) -> tuple[int, int]:
    """``(h, w)`` of a ``height x width`` image after :func:`resize_long_side` to ``imgsz``."""
    r = imgsz / max(height, width)
    return min(math.ceil(height * r), imgsz), min(math.ceil(width * r), imgsz)


def load_image(path: str | Path, imgsz: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image (EXIF orientation applied) and resize it so its long side is ``imgsz`` pixels.

    Returns:
        ``image (h, w, 3) uint8`` RGB with ``max(h, w) == imgsz`` (see ``resize_long_side``), and the
        original ``(h0, w0)`` after orientation.

    Raises:
        ``OSError``: see ``decode_image``.
    """
    bgr = decode_image(path)
    return cv2.cvtColor(resize_long_side(bgr, imgsz), cv2.COLOR_BGR2RGB), bgr.shape[:2]


def letterbox(image: np.ndarray, shape: int | tuple[int, int], scaleup: bool = True, auto: bool = False,
              stride: int = 32, pad_value: int = PAD_VALUE, channels_first: bool = True
              ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize (aspect kept) to fit ``shape`` and centre on a grey canvas.

    Args:
        image: ``(h, w, 3)`` uint8.
        shape: target ``(H, W)``, or ``S`` for ``(S, S)``.
        scaleup: allow enlarging; with False the scale is capped at 1.
        auto: pad only up to the next multiples of ``stride`` instead of up to ``shape``.
        stride: alignment for ``auto``.
        pad_value: grey level of the padding.
        channels_first: lay ``out`` out channel-first in memory (see below); with False it is a contiguous
            ``(H', W', 3)`` array, cheaper for the pixel operations of augmentation that follow.

    Returns:
        ``out (H', W', 3)`` uint8, ``ratio (rx, ry)`` = placed / input size per axis, ``pad (left, top)``
        in pixels; a point maps as ``x_out = x_in * rx + left``. The scale is ``min(H / h, W / w)``, the
        placed size ``max(round(w * scale), 1) x max(round(h * scale), 1)`` (bilinear resize only if it
        changes); padding splits evenly, the odd pixel right / bottom. With ``channels_first``, ``out`` is a view
        of a channel-first buffer, so ``out.transpose(2, 0, 1)`` (what the model eats) is contiguous and costs no
        copy.
    """
    height, width = image.shape[:2]
    canvas_h, canvas_w = (shape, shape) if isinstance(shape, int) else shape
    scale = min(canvas_h / height, canvas_w / width)
    if not scaleup:
        scale = min(scale, 1.0)
    h, w = max(round(height * scale), 1), max(round(width * scale), 1)
    if auto:
        canvas_h, canvas_w = h + (canvas_h - h) % stride, w + (canvas_w - w) % stride
    if (h, w) != (height, width):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    top, left = (canvas_h - h) // 2, (canvas_w - w) // 2
    if not channels_first:
        out = cv2.copyMakeBorder(image, top, canvas_h - h - top, left, canvas_w - w - left, cv2.BORDER_CONSTANT,
                                 value=(pad_value,) * 3)
        return out, (w / width, h / height), (left, top)
    chw = np.full((3, canvas_h, canvas_w), pad_value, np.uint8)
    chw[:, top:top + h, left:left + w] = image.transpose(2, 0, 1)
    return chw.transpose(1, 2, 0), (w / width, h / height), (left, top)


def letterbox_from_original(resized: np.ndarray, orig_hw: tuple[int, int], imgsz: int,
                            shape: tuple[int, int] | None = None, stride: int = 32, scaleup: bool = True,
                            channels_first: bool = True) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """``letterbox`` of an image already resized by ``load_image``, with the ratio relative to the original.

    Args:
        resized: ``(h, w, 3)`` uint8 from ``load_image``.
        orig_hw: ``(h0, w0)`` of the original (oriented) image.
        imgsz: without ``shape``, the canvas is ``imgsz x imgsz`` trimmed to the next multiples of ``stride``.
        shape: canvas ``(H, W)`` (e.g. a rect batch shape).
        stride: alignment when ``shape`` is None.
        scaleup: allow enlarging ``resized`` to fill ``shape``.
        channels_first: ``out``'s memory layout, as for ``letterbox``.

    Returns:
        ``out (H, W, 3)`` uint8, ``ratio (rx, ry)`` and ``pad (left, top)`` such that a point of the
        original image maps as ``x_out = x_orig * rx + left``.
    """
    if shape is None:
        image, (rx, ry), pad = letterbox(resized, imgsz, scaleup, auto=True, stride=stride,
                                         channels_first=channels_first)
    else:
        image, (rx, ry), pad = letterbox(resized, shape, scaleup, channels_first=channels_first)
    return image, (rx * resized.shape[1] / orig_hw[1], ry * resized.shape[0] / orig_hw[0]), pad


def rect_batch_shapes(sizes: np.ndarray, imgsz: int, batch: int, stride: int = 32,
                      pad: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Order images by aspect ratio and give each batch of ``batch`` consecutive images one shape.

    A batch whose images are all landscape gets ``(ceil(max(h/w) * imgsz / stride + pad) * stride,
    ceil(imgsz / stride + pad) * stride)``, all portrait the transpose, mixed a square; every side is a
    multiple of ``stride``.

    Args:
        sizes: ``(N, 2)`` original ``(h, w)`` per image.
        imgsz: long side in pixels.
        batch: batch size the loader will use.
        stride: alignment in pixels.
        pad: extra strides added before rounding up (0.5 like the reference validator).

    Returns:
        ``order (N,)`` int64 image indices sorted by ``h / w`` and ``shapes (N, 2)`` int64 ``(H, W)`` for each
        position of that order. The sort is numpy's default one, as in the reference, so images of equal
        aspect ratio fall into the same batches as there.
    """
    aspect = sizes[:, 0] / sizes[:, 1]
    order = np.argsort(aspect)
    shapes = np.zeros((len(order), 2), np.int64)
    for start in range(0, len(order), batch):
        chunk = aspect[order[start:start + batch]]
        low, high = chunk.min(), chunk.max()
        relative = (high, 1.0) if high < 1 else (1.0, 1.0 / low) if low > 1 else (1.0, 1.0)
        shapes[start:start + batch] = np.ceil(np.array(relative) * imgsz / stride + pad).astype(np.int64) * stride
    return order.astype(np.int64), shapes


class ImageMeta(NamedTuple):
    """Where a letterboxed image came from: record ``index``, ``orig_shape (h0, w0)``, ``ratio (rx, ry)``,
    ``pad (left, top)``; ``x_letterboxed = x_original * rx + left``."""

    index: int
    orig_shape: tuple[int, int]
    ratio: tuple[float, float]
    pad: tuple[int, int]


class Sample(NamedTuple):
    """One item: ``image (3, H, W) uint8`` RGB, ``targets (N, 6)`` float32 ``[0, cls, cx, cy, w, h]`` with boxes
    normalised to the letterboxed image, and its ``meta``."""

    image: torch.Tensor
    targets: torch.Tensor
    meta: ImageMeta


class LoadFailure(NamedTuple):
    """An item whose image could not be read: record ``index`` and the error text."""

    index: int
    error: str


class Batch(NamedTuple):
    """A batch: ``images (B, 3, H, W) uint8``, ``targets (M, 6)`` float32 ``[batch_index, cls, cx, cy, w, h]``
    (normalised to ``W, H``), ``meta`` list of ``B`` ``ImageMeta``, and ``failed``: record indices of the
    batch whose image could not be read (left out, so ``B`` may be smaller than the batch size, even 0)."""

    images: torch.Tensor
    targets: torch.Tensor
    meta: list[ImageMeta]
    failed: list[int]


class DetectionDataset(Dataset):
    """Letterboxed images and normalised targets for a list of records.

    Targets leave out boxes flagged "ignore in evaluation" (iscrowd / difficult). An image that cannot be
    read (or whose oriented size differs from its record's) gives a ``LoadFailure`` instead of a ``Sample``,
    with a logged warning; ``collate`` leaves it out of the batch and lists it in ``Batch.failed``.

    Args:
        records: images to serve; ``meta.index`` refers to positions in this list.
        imgsz: long side in pixels, a multiple of ``stride``.
        rect: order items by aspect ratio with one shape per batch of ``batch_size`` (validation); the
            loader must then use the same batch size without shuffling. Otherwise every item is
            ``imgsz x imgsz``.
        batch_size: batch size for the rectangular shapes.
        stride: shape alignment in pixels.
        cache_images: decode and resize every image once up front into RAM (uint8 arrays), shared with workers.
        augment: augmentation of the letterboxed image (:mod:`yolofreeze.data.augment`), or None. Its draws come
            from :func:`~yolofreeze.data.augment.sample_rng` of ``seed``, the epoch and the record: items are then
            :class:`Item` s (:class:`EpochStamped` makes them from a sampler: mosaic partners come from the item's
            batch) or ``epoch * len(dataset) + position`` (partners from the whole dataset).
        seed: the run's seed, for ``augment``.
        epochs: the run's length, for ``augment``'s ``close_mosaic``.
    """

    def __init__(self, records: Sequence[ImageRecord], imgsz: int = 640, rect: bool = False, batch_size: int = 16,
                 stride: int = 32, cache_images: bool = False, augment: AugmentSettings | None = None,
                 seed: int = 0, epochs: int = 0) -> None:
        if imgsz % stride:
            raise ValueError(f"imgsz {imgsz} must be a multiple of the stride {stride}")
        if augment is not None and rect:
            raise ValueError("augmentation is for square training batches, not rect (validation) ones")
        self.records = list(records)
        self.imgsz = imgsz
        self.augment = augment if augment is not None and augment.active else None
        self.seed, self.epochs = seed, epochs
        if rect and self.records:
            sizes = np.array([(r.height, r.width) for r in self.records], np.float64)
            self.order, self.shapes = rect_batch_shapes(sizes, imgsz, batch_size, stride)
        else:
            self.order = np.arange(len(self.records), dtype=np.int64)
            self.shapes = np.full((len(self.records), 2), imgsz, np.int64)
        self._cache = self._fill_cache() if cache_images else None
        # augmenting without the cache: keep recently decoded images (each loader worker its own), as the reference
        # does; a mosaic reads four images per item
        self._recent: OrderedDict[int, np.ndarray] | None = (
            OrderedDict() if self.augment is not None and self._cache is None else None)
        self._recent_size = min(len(self.records), max(8 * batch_size, 64), RECENT_IMAGES)

    def _read(self, index: int) -> np.ndarray:
        """``load_image`` of record ``index``; raises ``ValueError`` if its oriented size is not the record's."""
        record = self.records[index]
        image, orig_hw = load_image(record.path, self.imgsz)
        if orig_hw != (record.height, record.width):
            raise ValueError(f"decoded size {orig_hw[1]}x{orig_hw[0]} differs from the dataset's "
                             f"{record.width}x{record.height}")
        return image

    def _read_or_none(self, index: int) -> np.ndarray | None:
        """``_read``, or None (logged) when the image cannot be read."""
        try:
            return self._read(index)
        except IMAGE_ERRORS as error:
            log.warning("cannot cache %s: %s", self.records[index].path, error)
            return None

    def _fill_cache(self) -> list[np.ndarray | None]:
        """Every record's resized image, decoded by a few threads (OpenCV releases the GIL)."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(tqdm(pool.map(self._read_or_none, range(len(self.records))), total=len(self.records),
                               desc="caching images", leave=False, disable=None))
        log.info("cached %d images, %.1f MB", len(images), sum(i.nbytes for i in images if i is not None) / 1e6)
        return images

    def _load(self, index: int) -> np.ndarray:
        """Resized image of record ``index`` from the cache, the recently decoded images (augmentation) or the
        file; raises on an unreadable image. The array is shared: callers must not write to it."""
        if self._cache is None and self._recent is None:
            return self._read(index)
        if self._cache is None:
            image = self._recent.get(index)
            if image is None:
                image = self._recent[index] = self._read(index)
                if len(self._recent) > self._recent_size:
                    self._recent.popitem(last=False)
            else:
                self._recent.move_to_end(index)
            return image
        image = self._cache[index]
        if image is None:
            raise OSError("could not be read when caching")
        return image

    def host_memory(self, workers: int, batch: int) -> dict:
        """Estimated host memory of a loader over this dataset with ``workers`` worker processes (0: the main
        process loads) and ``batch`` images per batch, in bytes, with a line saying what it counts:

        - ``image_cache_bytes``: the ``cache_images`` RAM cache (shared with the workers);
        - ``recent_images_bytes``: the recently decoded images kept while augmenting without the cache, each
          worker its own buffer (at most ``recent_images`` images; the average resized image times that);
        - ``mosaic_canvas_bytes``: per item being built, mosaic's ``2 imgsz x 2 imgsz`` canvas (4x an output
          image) and the warped output;
        - ``batches_bytes``: the uint8 batches in flight (two prefetched per worker, or one).
        """
        average = sum(3 * math.prod(long_side_size(r.height, r.width, self.imgsz))
                      for r in self.records) / max(len(self.records), 1)
        processes = max(workers, 1)
        square = 3 * self.imgsz * self.imgsz
        mosaic_on = self.augment is not None and self.augment.mosaic > 0
        record = {
            "workers": workers,
            "image_cache_bytes": int(average * len(self.records)) if self._cache is not None else 0,
            "recent_images": self._recent_size if self._recent is not None else 0,
            "recent_images_bytes": int(average * self._recent_size * processes) if self._recent is not None else 0,
            "mosaic_canvas_bytes": 5 * square * processes if mosaic_on else 0,
            "batches_bytes": batch * square * (2 * workers if workers else 1)}
        parts = [f"{name.removesuffix('_bytes').replace('_', ' ')} {value / 2**20:.0f} MiB"
                 for name, value in record.items() if name.endswith("_bytes") and value]
        record["total_bytes"] = sum(v for k, v in record.items() if k.endswith("_bytes"))
        record["note"] = (f"data loader (host RAM, estimated, {processes} process{'es' if processes > 1 else ''}): "
                          + ", ".join(parts) + (" (mosaic builds a 2x-side canvas per item)" if mosaic_on else ""))
        return record

    def __len__(self) -> int:
        """Number of records."""
        return len(self.records)

    def __getitem__(self, item: int | Item) -> Sample | LoadFailure:
        """Item ``item``: a position in the rect order when ``rect``; with ``augment`` an :class:`Item` (mosaic
        partners from its batch) or ``epoch * len + position`` (partners from the whole dataset). A ``Sample``, or
        a ``LoadFailure``."""
        pool = None
        if isinstance(item, Item):
            epoch, index, pool = item
            item = index  # the square order is the records' own
        else:
            epoch, item = divmod(int(item), len(self.records)) if self.augment is not None else (0, item)
            index = int(self.order[item])
        try:
            resized = self._load(index)
        except IMAGE_ERRORS as error:
            log.warning("unreadable image %s left out of its batch: %s", self.records[index].path, error)
            return LoadFailure(index, str(error))
        return self._sample(index, resized, tuple(int(s) for s in self.shapes[item]), epoch, pool)

    def _resized_boxes(self, index: int, resized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record ``index``'s boxes ``(N, 4)`` xyxy in the pixels of its ``resized`` image, and classes ``(N,)``
        (boxes ignored in evaluation left out)."""
        record = self.records[index]
        keep = ~record.flags
        scale = np.array([resized.shape[1] / record.width, resized.shape[0] / record.height] * 2, np.float32)
        return record.boxes[keep] * scale, record.classes[keep]

    def _recomposed(self, index: int, resized: np.ndarray, epoch: int, pool: tuple[int, ...] | None = None
                    ) -> Sample:
        """Record ``index`` through the geometric augmentation (``epoch``'s draws): mosaic with three other images
        drawn from ``pool`` (record indices; None: the whole dataset) when on (skipped when one of them cannot be
        read), the affine warp to ``imgsz x imgsz``, then colour and flip. Its ``meta`` describes the resize only
        (the warp is the augmentation's)."""
        settings, size = self.augment, self.imgsz
        rng = sample_rng(self.seed, epoch, index)
        boxes, classes = self._resized_boxes(index, resized)
        image = resized
        if settings.mosaic_on(epoch, self.epochs) and rng.uniform() < settings.mosaic:
            drawn = rng.integers(0, len(pool) if pool else len(self.records), 3)
            partners = [int(pool[j]) if pool else int(j) for j in drawn]
            yc, xc = (int(rng.uniform(size / 2, 3 * size / 2)) for _ in range(2))
            try:
                loaded = [self._load(j) for j in partners]
            except IMAGE_ERRORS as error:
                log.warning("mosaic skipped for %s: a partner image cannot be read: %s", self.records[index].path,
                            error)
            else:
                parts = [(boxes, classes)] + [self._resized_boxes(j, img) for j, img in zip(partners, loaded)]
                image, boxes, keep = mosaic([resized, *loaded], [b for b, _ in parts], (xc, yc), size)
                classes = np.concatenate([c for _, c in parts])[keep]
        image, boxes, keep = affine(image, boxes, rng, settings, size)
        image, boxes = augment(image, boxes, rng, settings)
        record = self.records[index]
        ratio = (resized.shape[1] / record.width, resized.shape[0] / record.height)
        return Sample(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                      _targets(boxes, classes[keep], size, size), ImageMeta(index, (record.height, record.width),
                                                                             ratio, (0, 0)))

    def _sample(self, index: int, resized: np.ndarray, shape: tuple[int, int], epoch: int = 0,
                pool: tuple[int, ...] | None = None) -> Sample:
        """Letterbox the resized image of record ``index`` to ``shape`` (never enlarged), augment it (``epoch``'s
        draws; geometric augmentation recomposes the image instead, :meth:`_recomposed`, with mosaic partners from
        ``pool``) and build its targets."""
        if self.augment is not None and self.augment.geometric:
            return self._recomposed(index, resized, epoch, pool)
        record = self.records[index]
        orig_hw = (record.height, record.width)
        image, ratio, (left, top) = letterbox_from_original(resized, orig_hw, self.imgsz, shape, scaleup=False,
                                                            channels_first=self.augment is None)
        keep = ~record.flags
        boxes = (record.boxes[keep] * np.array([*ratio, *ratio], np.float32)
                 + np.array([left, top, left, top], np.float32))
        if self.augment is not None:
            image, boxes = augment(image, boxes, sample_rng(self.seed, epoch, index), self.augment)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        height, width = shape
        return Sample(tensor, _targets(boxes, record.classes[keep], height, width),
                      ImageMeta(index, orig_hw, ratio, (left, top)))


def _targets(boxes: np.ndarray, classes: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``(N, 6)`` float32 ``[0, cls, cx, cy, w, h]`` normalised to ``width x height`` from ``boxes (N, 4)`` xyxy
    pixels."""
    targets = torch.zeros((len(classes), 6), dtype=torch.float32)
    targets[:, 1] = torch.from_numpy(np.asarray(classes)).float()
    targets[:, 2:] = xyxy2xywh(torch.from_numpy(np.asarray(boxes, np.float32))) / torch.tensor(
        [width, height, width, height], dtype=torch.float32)
    return targets


def collate(items: Sequence[Sample | LoadFailure]) -> Batch:
    """Stack the samples' images into ``(B, 3, H, W)`` and concatenate their targets, writing each one's batch
    index in column 0; ``LoadFailure`` items are left out and their record indices listed in ``failed``."""
    samples = [s for s in items if isinstance(s, Sample)]
    failed = [f.index for f in items if isinstance(f, LoadFailure)]
    if not samples:
        return Batch(torch.zeros((0, 3, 0, 0), dtype=torch.uint8), torch.zeros((0, 6)), [], failed)
    shapes = {tuple(s.image.shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch differ in shape {sorted(shapes)}: rect batches need the loader's "
                         "batch size to equal the dataset's and no shuffling")
    targets = [s.targets.clone() for s in samples]
    for i, t in enumerate(targets):
        t[:, 0] = i
    # numpy's single-threaded copy: torch.stack's intra-op threads were 30x slower here for uint8 images
    images = torch.from_numpy(np.stack([s.image.numpy() for s in samples]))
    return Batch(images, torch.cat(targets), [s.meta for s in samples], failed)


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a DataLoader worker from the torch seed the loader gave it.

    Also limits the worker to one intra-op thread: workers already run in parallel, and more threads
    per worker only oversubscribe the cores. (OpenCV's thread count is left alone: changing it in a forked
    worker hangs when the parent process had already used OpenCV's thread pool.) Workers ignore Ctrl-C, which
    a terminal sends to the whole process group: the main process decides when to stop (the trainer at a step
    boundary) and its loader shuts them down. SIGTERM keeps PyTorch's handling (the loader's shutdown relies on
    it); a scheduler's SIGTERM to every process kills them, which the trainer reports as the same stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class Item(NamedTuple):
    """An augmented training item: record ``index`` in ``epoch``, loaded in a batch with the records ``batch``,
    among which its mosaic partners are drawn (images a loader worker decodes for that batch anyway)."""

    epoch: int
    index: int
    batch: tuple[int, ...]


class EpochStamped(Sampler):
    """``sampler``'s record indices as :class:`Item` s: stamped with its epoch (the wrapped sampler's ``epoch``,
    ``DistributedSampler.set_epoch``, read when an epoch's iteration starts) and with the indices of the batch of
    ``batch_size`` each falls in (consecutive indices, as the loader batches them), for a dataset whose items
    depend on both (augmentation)."""

    def __init__(self, sampler: Sampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size

    def __iter__(self):
        epoch = int(getattr(self.sampler, "epoch", 0))
        indices = [int(i) for i in self.sampler]
        for start in range(0, len(indices), self.batch_size):
            batch = tuple(indices[start:start + self.batch_size])
            yield from (Item(epoch, index, batch) for index in batch)

    def __len__(self) -> int:
        return len(self.sampler)


def build_dataloader(records: Sequence[ImageRecord], imgsz: int = 640, batch: int = 16, shuffle: bool = False,
                     workers: int = 0, seed: int = 0, rect: bool = False, cache_images: bool = False,
                     augment: AugmentSettings | None = None, epochs: int = 0, stride: int = 32,
                     pin_memory: bool | None = None, sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader of ``Batch`` es over ``records``.

    Args:
        records: images to load.
        imgsz: long side / square side in pixels, a multiple of ``stride``.
        batch: batch size.
        shuffle: random order each epoch (training); not with ``rect``.
        workers: worker processes (0 = load in the main process).
        seed: seeds the loader's generator, hence the order and each worker's torch / numpy / random seed:
            the same seed gives the same batches.
        rect: rectangular per-batch shapes ordered by aspect ratio (validation); otherwise square ``imgsz``.
        cache_images: keep decoded, resized images in RAM (filled once, when the loader is built); costs about
            ``3 * imgsz * imgsz * (short side / long side)`` bytes per image (0.9 MB for 4:3 at 640).
        augment: training augmentation (:class:`~yolofreeze.data.augment.AugmentSettings`), drawn per image and
            epoch from ``seed``; needs a ``sampler`` with an ``epoch`` (``DistributedSampler``).
        epochs: the run's length (mosaic stops for the last ``augment.close_mosaic`` epochs).
        stride: shape alignment in pixels.
        pin_memory: page-locked batches; default: when CUDA is available.
        sampler: the order of the records (e.g. a ``DistributedSampler`` for training: a fresh shuffle per
            ``set_epoch`` that a resumed run can repeat, and one shard per process); not with ``shuffle``.

    Returns:
        ``torch.utils.data.DataLoader`` whose dataset is a ``DetectionDataset``.
    """
    if rect and shuffle:
        raise ValueError("rect batches have a fixed aspect-ratio order; use shuffle=False with rect=True")
    if sampler is not None and (shuffle or rect):
        raise ValueError("a sampler sets the order itself: use shuffle=False and rect=False with it")
    dataset = DetectionDataset(records, imgsz, rect=rect, batch_size=batch, stride=stride, cache_images=cache_images,
                               augment=augment, seed=seed, epochs=epochs)
    if dataset.augment is not None:
        if sampler is None or not hasattr(sampler, "epoch"):
            raise ValueError("augmentation needs a sampler with an epoch (DistributedSampler and set_epoch)")
        sampler = EpochStamped(sampler, batch)
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      collate_fn=collate,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
                      persistent_workers=workers > 0)
