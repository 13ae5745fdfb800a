"""Records -> letterboxed uint8 batches: image loading, letterbox, rectangular batches, RAM cache, collate.

Geometry: an image of original size ``(h0, w0)`` is resized (aspect kept) so its long side is ``imgsz``,
then padded with grey 114 to the target shape, the padding split evenly (extra pixel right / bottom).
A point maps as ``x_letterboxed = x_original * ratio_x + pad_left`` (same for y with ``ratio_y, pad_top``);
``ratio`` is per axis because the resized size is rounded to whole pixels.
"""
from __future__ import annotations

import logging
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .augment import Augment
from .records import IMAGE_ERRORS, ImageRecord

log = logging.getLogger(__name__)

PAD_VALUE = 114

AugmentFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _fit(height: int, width: int, imgsz: int, shape: tuple[int, int] | None) -> tuple[int, int]:
    """Resized ``(h, w)``: long side ``imgsz``, shrunk further if needed to fit ``shape``; at least 1 px."""
    r = imgsz / max(height, width)
    if shape is not None:
        r = min(r, shape[0] / height, shape[1] / width)
    return max(1, round(height * r)), max(1, round(width * r))


def load_image(path: str | Path, imgsz: int, reduced_decode: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image as RGB and resize it (bilinear, aspect kept) so its long side is ``imgsz`` pixels.

    Args:
        path: image file.
        imgsz: long side of the result in pixels.
        reduced_decode: let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale (``Image.draft``), never
            below the target size, before the final resize; much faster for e.g. 1920x1080 frames at 640.

    Returns:
        ``image (h, w, 3) uint8`` RGB with ``max(h, w) == imgsz``, and the original ``(h0, w0)`` from the file.

    Raises:
        one of ``records.IMAGE_ERRORS``: unreadable or truncated file.
    """
    with Image.open(path) as image:
        w0, h0 = image.size
        h, w = _fit(h0, w0, imgsz, None)
        if reduced_decode and image.format == "JPEG" and max(w, h) < max(w0, h0):
            image.draft("RGB", (w, h))
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies even RGB → RGB
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.BILINEAR)
    return np.asarray(rgb), (h0, w0)


def letterbox(image: np.ndarray, imgsz: int, shape: tuple[int, int] | None = None, stride: int = 32,
              pad_value: int = PAD_VALUE) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize (aspect kept) so the long side is ``imgsz`` and pad to ``shape``.

    Args:
        image: ``(h, w, 3)`` uint8.
        imgsz: target long side in pixels (shrunk further if the image would not fit ``shape``).
        shape: output ``(H, W)``; default: the resized size rounded up to multiples of ``stride``.
        stride: alignment of the default shape.
        pad_value: grey level of the padding.

    Returns:
        ``out (H, W, 3)`` uint8, ``ratio (rx, ry)`` = resized / input size per axis, ``pad (left, top)``
        in pixels; a point maps as ``x_out = x_in * rx + left``. ``out`` is a view of a channel-first
        buffer, so ``out.transpose(2, 0, 1)`` (what the model eats) is contiguous and costs no copy.
    """
    height, width = image.shape[:2]
    h, w = _fit(height, width, imgsz, shape)
    if shape is None:
        shape = (math.ceil(h / stride) * stride, math.ceil(w / stride) * stride)
    if (h, w) != (height, width):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    chw = np.full((3, shape[0], shape[1]), pad_value, np.uint8)
    chw[:, top:top + h, left:left + w] = image.transpose(2, 0, 1)
    return chw.transpose(1, 2, 0), (w / width, h / height), (left, top)


def letterbox_from_original(resized: np.ndarray, orig_hw: tuple[int, int], imgsz: int,
                            shape: tuple[int, int] | None = None, stride: int = 32
                            ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """``letterbox`` of an image already shrunk by ``load_image``, with the ratio relative to the original file.

    Returns ``out (H, W, 3)`` uint8, ``ratio (rx, ry)`` and ``pad (left, top)`` such that a point of the
    original image maps as ``x_out = x_orig * rx + left``.
    """
    image, (rx, ry), pad = letterbox(resized, imgsz, shape, stride)
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
        position of that order.
    """
    aspect = sizes[:, 0] / sizes[:, 1]
    order = np.argsort(aspect, kind="stable")
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


class Batch(NamedTuple):
    """A batch: ``images (B, 3, H, W) uint8``, ``targets (M, 6)`` float32 ``[batch_index, cls, cx, cy, w, h]``
    (normalised to ``W, H``), ``meta`` list of ``B`` ``ImageMeta``."""

    images: torch.Tensor
    targets: torch.Tensor
    meta: list[ImageMeta]


class DetectionDataset(Dataset):
    """Letterboxed images and normalised targets for a list of records.

    Targets leave out boxes flagged "ignore in evaluation" (iscrowd / difficult). An image that fails to load
    is logged, counted in ``failures`` (per process: each DataLoader worker counts its own) and replaced by
    the next loadable item, so an epoch never stops on a bad file; its ``meta.index`` names the image used.

    Args:
        records: images to serve; ``meta.index`` refers to positions in this list.
        imgsz: long side in pixels, a multiple of ``stride``.
        rect: order items by aspect ratio with one shape per batch of ``batch_size`` (validation); the
            loader must then use the same batch size without shuffling. Otherwise every item is
            ``imgsz x imgsz``.
        batch_size: batch size for the rectangular shapes.
        stride: shape alignment in pixels.
        cache: decode and resize every image once up front into RAM (uint8 arrays), shared with workers.
        augment: ``(image, boxes_xyxy, classes) -> same`` applied to the letterboxed image, or None.
    """

    def __init__(self, records: Sequence[ImageRecord], imgsz: int = 640, rect: bool = False, batch_size: int = 16,
                 stride: int = 32, cache: bool = False, augment: AugmentFn | None = None) -> None:
        if imgsz % stride:
            raise ValueError(f"imgsz {imgsz} must be a multiple of the stride {stride}")
        self.records = list(records)
        self.imgsz = imgsz
        self.augment = augment
        self.failures = 0
        if rect and self.records:
            sizes = np.array([(r.height, r.width) for r in self.records], np.float64)
            self.order, self.shapes = rect_batch_shapes(sizes, imgsz, batch_size, stride)
        else:
            self.order = np.arange(len(self.records), dtype=np.int64)
            self.shapes = np.full((len(self.records), 2), imgsz, np.int64)
        self._cache = self._fill_cache() if cache else None

    def _load_or_none(self, index: int) -> np.ndarray | None:
        """Resized image of record ``index``, or None (logged) when it cannot be read."""
        try:
            return load_image(self.records[index].path, self.imgsz)[0]
        except IMAGE_ERRORS as error:
            log.warning("cannot cache %s: %s", self.records[index].path, error)
            return None

    def _fill_cache(self) -> list[np.ndarray | None]:
        """Every record's resized image, decoded by a few threads (PIL releases the GIL while decoding)."""
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            images = list(tqdm(pool.map(self._load_or_none, range(len(self.records))), total=len(self.records),
                               desc="caching images", leave=False, disable=None))
        log.info("cached %d images, %.1f MB", len(images), sum(i.nbytes for i in images if i is not None) / 1e6)
        return images

    def _load(self, index: int) -> np.ndarray:
        """Resized image of record ``index`` from the cache or the file; raises on an unreadable image."""
        if self._cache is None:
            return load_image(self.records[index].path, self.imgsz)[0]
        image = self._cache[index]
        if image is None:
            raise OSError(f"{self.records[index].path} could not be read when caching")
        return image

    def __len__(self) -> int:
        """Number of records."""
        return len(self.records)

    def __getitem__(self, item: int) -> Sample:
        """Item ``item`` (a position in the rect order when ``rect``) as a ``Sample``."""
        for attempt in range(len(self)):
            index = int(self.order[(item + attempt) % len(self)])
            try:
                resized = self._load(index)
            except IMAGE_ERRORS as error:
                self.failures += 1
                log.warning("skipping unreadable image %s (%s); serving the next item instead",
                            self.records[index].path, error)
                continue
            return self._sample(index, resized, tuple(int(s) for s in self.shapes[item]))
        raise RuntimeError("no image of the dataset could be read")

    def _sample(self, index: int, resized: np.ndarray, shape: tuple[int, int]) -> Sample:
        """Letterbox the resized image of record ``index`` to ``shape`` and build its targets."""
        record = self.records[index]
        orig_hw = (record.height, record.width)
        image, ratio, (left, top) = letterbox_from_original(resized, orig_hw, self.imgsz, shape)
        keep = ~record.flags
        boxes = torch.from_numpy(record.boxes[keep] * np.array([*ratio, *ratio], np.float32)
                                 + np.array([left, top, left, top], np.float32))
        classes = torch.from_numpy(record.classes[keep])
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.augment is not None:
            tensor, boxes, classes = self.augment(tensor, boxes, classes)
        height, width = shape
        targets = torch.zeros((len(classes), 6), dtype=torch.float32)
        targets[:, 1] = classes.float()
        targets[:, 2] = (boxes[:, 0] + boxes[:, 2]) / (2 * width)
        targets[:, 3] = (boxes[:, 1] + boxes[:, 3]) / (2 * height)
        targets[:, 4] = (boxes[:, 2] - boxes[:, 0]) / width
        targets[:, 5] = (boxes[:, 3] - boxes[:, 1]) / height
        return Sample(tensor, targets, ImageMeta(index, (record.height, record.width), ratio, (left, top)))


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack images into ``(B, 3, H, W)`` and concatenate targets, writing each one's batch index in column 0."""
    shapes = {tuple(s.image.shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch differ in shape {sorted(shapes)}: rect batches need the loader's "
                         "batch size to equal the dataset's and no shuffling")
    targets = [s.targets.clone() for s in samples]
    for i, t in enumerate(targets):
        t[:, 0] = i
    # numpy's single-threaded copy: torch.stack's intra-op threads were 30x slower here for uint8 images
    images = torch.from_numpy(np.stack([s.image.numpy() for s in samples]))
    return Batch(images, torch.cat(targets), [s.meta for s in samples])


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a DataLoader worker from the torch seed the loader gave it.

    Also limits the worker to one intra-op thread: workers already run in parallel, and more threads
    per worker only oversubscribe the cores.
    """
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_dataloader(records: Sequence[ImageRecord], imgsz: int = 640, batch: int = 16, shuffle: bool = False,
                     workers: int = 0, seed: int = 0, rect: bool = False, cache: bool = False,
                     augment: bool | AugmentFn = False, stride: int = 32,
                     pin_memory: bool | None = None) -> DataLoader:
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
        cache: keep decoded, resized images in RAM (filled once, when the loader is built); costs about
            ``3 * imgsz * imgsz * (short side / long side)`` bytes per image (0.9 MB for 4:3 at 640).
        augment: True for ``Augment()`` defaults, or a callable ``(image, boxes_xyxy, classes) -> same``.
        stride: shape alignment in pixels.
        pin_memory: page-locked batches; default: when CUDA is available.

    Returns:
        ``torch.utils.data.DataLoader`` whose dataset is a ``DetectionDataset``.
    """
    if rect and shuffle:
        raise ValueError("rect batches have a fixed aspect-ratio order; use shuffle=False with rect=True")
    transform = Augment() if augment is True else (augment or None)
    dataset = DetectionDataset(records, imgsz, rect=rect, batch_size=batch, stride=stride, cache=cache,
                               augment=transform)
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker,
                      persistent_workers=workers > 0)
