"""The embedded ``demo`` dataset: coloured shapes under power lines, generated procedurally, no download.

Three classes (``rectangle``, ``ellipse``, ``triangle``), each with its own saturated hue (red, green, blue),
1-8 objects per image (about 4 on average), 12-35 % of the image side, on a smooth grey "overcast sky" with a
slight tint, pixel grain and 1-3 thin dark power lines. 256 training and 64 validation images of 160 x 160
pixels, written as a YOLO txt dataset (``data.yaml``, ``images/{train,val}/*.jpg``, ``labels/{train,val}/*.txt``)
in about a second. The same seed gives the same files. Sized so that yolov8n trained from scratch with the
reference recipe (``python train.py``: 10 epochs at imgsz 160, 57 optimiser steps) climbs from mAP@50 0
to about 0.9 on the val split in a few CPU minutes.

A second domain, ``field`` (:data:`FIELD`), is the target of the offline miniature of the layer-freezing study
(``python -m yolofreeze.study --demo``): other classes (``ring``, ``cross``, ``diamond``) in other colours (orange,
purple, cyan) on a green-brown "vegetation" ground with a dark pole, so a model pretrained on the sky domain has
useful low-level features but must learn new classes.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_NAMES = ("rectangle", "ellipse", "triangle")
DEMO_VERSION = 2
DEMO_IMAGE_SIZE = 160  # pixels, square images
DEMO_SPLITS = {"train": 256, "val": 64}  # images per split
_HUES = np.array([[205, 55, 45], [55, 165, 65], [55, 85, 215]])  # base RGB colour per class
_TRIES = (3, 8)  # objects attempted per image (inclusive); one overlapping a placed object is dropped
_SIDE = (0.12, 0.35)  # object width and height, fractions of the image side (inclusive)
_MAX_IOU = 0.1  # largest overlap (IoU) with an object already placed
_MARKER = ".yolofreeze-demo"
_OURS = {"data.yaml", "images", "labels", _MARKER}


def demo_root() -> Path:
    """Cache folder of the demo dataset: ``$YOLOFREEZE_DATASETS/demo``, else ``~/.cache/yolofreeze/demo``."""
    base = os.environ.get("YOLOFREEZE_DATASETS")
    return Path(base).expanduser() / "demo" if base else Path.home() / ".cache" / "yolofreeze" / "demo"


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """``size x size`` RGB "overcast sky": smooth grey field (levels 120-220), slight tint, grain, 1-3 dark lines."""
    levels = Image.fromarray(rng.uniform(120, 220, (3, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    sky = np.asarray(levels, np.float64)[..., None] + rng.uniform(-8.0, 8.0, 3)
    grain = rng.normal(0.0, 6.0, (size, size, 1))
    image = Image.fromarray(np.clip(sky + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        y0, y1 = rng.uniform(0, size, 2)
        draw.line([(0, y0), (size, y1)], fill=(40, 40, 40), width=int(rng.integers(1, 3)))
    return image


def _field(rng: np.random.Generator, size: int) -> Image.Image:
    """``size x size`` RGB "vegetation": smooth green-brown field, grain, one dark vertical pole."""
    levels = Image.fromarray(rng.uniform(0, 255, (3, 3)).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    mix = np.asarray(levels, np.float64)[..., None] / 255  # 0: green, 1: brown
    ground = (1 - mix) * np.array([70.0, 115.0, 55.0]) + mix * np.array([125.0, 100.0, 65.0])
    grain = rng.normal(0.0, 9.0, (size, size, 1))
    image = Image.fromarray(np.clip(ground + grain, 0, 255).astype(np.uint8))
    x = float(rng.uniform(0, size))
    ImageDraw.Draw(image).line([(x, 0), (x + rng.uniform(-size / 8, size / 8), size)], fill=(45, 35, 30),
                               width=int(rng.integers(2, 5)))
    return image


def _sky_shape(draw: ImageDraw.ImageDraw, cls: int, corners: tuple[int, int, int, int], colour, outline,
               rng: np.random.Generator) -> None:
    """Class 0 rectangle, 1 ellipse, 2 triangle (apex up or down) filling ``corners`` (inclusive pixels)."""
    x0, y0, x1, y1 = corners
    if cls == 0:
        draw.rectangle([x0, y0, x1, y1], fill=colour, outline=outline)
    elif cls == 1:
        draw.ellipse([x0, y0, x1, y1], fill=colour, outline=outline)
    else:
        apex, base = (y0, y1) if rng.random() < 0.5 else (y1, y0)
        draw.polygon([(x0, base), (x1, base), ((x0 + x1) / 2, apex)], fill=colour, outline=outline)


def _field_shape(draw: ImageDraw.ImageDraw, cls: int, corners: tuple[int, int, int, int], colour, outline,
                 rng: np.random.Generator) -> None:
    """Class 0 ring (thick ellipse outline, ground visible inside), 1 cross (two bars), 2 diamond."""
    x0, y0, x1, y1 = corners
    w, h = x1 - x0 + 1, y1 - y0 + 1
    if cls == 0:
        draw.ellipse([x0, y0, x1, y1], outline=colour, width=max(2, min(w, h) // 5))
    elif cls == 1:
        bar_w, bar_h = max(2, w // 3), max(2, h // 3)
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle([x0, cy - bar_h // 2, x1, cy - bar_h // 2 + bar_h - 1], fill=colour, outline=outline)
        draw.rectangle([cx - bar_w // 2, y0, cx - bar_w // 2 + bar_w - 1, y1], fill=colour, outline=outline)
    else:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour, outline=outline)


@dataclass(frozen=True)
class Domain:
    """A generated image domain: class names, a base colour per class, the background and the shape drawer."""

    name: str
    names: tuple[str, ...]
    hues: np.ndarray  # (classes, 3) base RGB
    background: Callable[[np.random.Generator, int], Image.Image]
    shape: Callable[..., None]


SKY = Domain("sky", DEMO_NAMES, _HUES, _background, _sky_shape)
FIELD = Domain("field", ("ring", "cross", "diamond"), np.array([[235, 135, 25], [150, 60, 195], [40, 190, 200]]),
               _field, _field_shape)


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Largest IoU of ``box`` (xyxy) with any of ``others``."""
    best = 0.0
    for other in others:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            union = np.prod(box[2:] - box[:2]) + np.prod(other[2:] - other[:2]) - inter
            best = max(best, inter / union)
    return best


def _draw_image(rng: np.random.Generator, size: int,
                domain: Domain = SKY) -> tuple[Image.Image, list[tuple[int, np.ndarray]]]:
    """One image and its objects ``(class, xyxy pixel box)``; box edges are the drawn pixels' outer edges."""
    image = domain.background(rng, size)
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, np.ndarray]] = []
    smallest, largest = (int(size * f) for f in _SIDE)
    for _ in range(int(rng.integers(_TRIES[0], _TRIES[1] + 1))):
        cls = int(rng.integers(len(domain.names)))
        w, h = (int(v) for v in rng.integers(smallest, largest + 1, 2))
        x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        box = np.array([x0, y0, x0 + w, y0 + h], np.float64)
        if _overlap(box, [b for _, b in objects]) > _MAX_IOU:
            continue
        colour = tuple(int(c) for c in np.clip(domain.hues[cls] + rng.integers(-35, 36, 3), 0, 255))
        outline = tuple(c // 2 for c in colour)
        domain.shape(draw, cls, (x0, y0, x0 + w - 1, y0 + h - 1), colour, outline, rng)  # PIL: end pixel included
        objects.append((cls, box))
    return image, objects


def write_demo_dataset(root: str | Path, seed: int = 0, n_train: int = DEMO_SPLITS["train"],
                       n_val: int = DEMO_SPLITS["val"], size: int = DEMO_IMAGE_SIZE, domain: Domain = SKY) -> Path:
    """Generate the demo dataset into ``root`` (created; existing files of the same names are overwritten).

    Args:
        root: output folder.
        seed: generator seed; the same seed gives identical files.
        n_train, n_val: images per split.
        size: image side in pixels (square images).
        domain: what the images show (:data:`SKY`, the demo; :data:`FIELD`, the study demo's target).

    Returns:
        path of the written ``data.yaml``.
    """
    root = Path(root)
    for split_index, (split, count) in enumerate((("train", n_train), ("val", n_val))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, objects = _draw_image(np.random.default_rng([seed, split_index, i]), size, domain)
            stem = f"{split}_{i:04d}"
            image.save(root / "images" / split / f"{stem}.jpg", quality=90)
            rows = []
            for cls, (x0, y0, x1, y1) in objects:
                rows.append(f"{cls} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                            f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    names = "".join(f"  {k}: {name}\n" for k, name in enumerate(domain.names))
    data_yaml = root / "data.yaml"
    label = "" if domain is SKY else f" ({domain.name} domain)"
    data_yaml.write_text(f"# yolofreeze demo dataset v{DEMO_VERSION}{label} (generated, seed {seed})\npath: .\n"
                         f"train: images/train\nval: images/val\nnames:\n{names}", encoding="utf-8")
    return data_yaml


def ensure_demo_dataset(root: str | Path | None = None, domain: Domain = SKY) -> Path:
    """Path of the demo ``data.yaml`` under ``root`` (default ``demo_root()``), generating it when missing or stale.

    Generation happens in a sibling temporary folder that is renamed into place, so an interrupted run
    never leaves a half-written dataset behind. A stale folder is replaced only if it holds nothing but
    demo files; otherwise ``FileExistsError`` is raised.
    """
    root = Path(root) if root is not None else demo_root()
    marker = root / _MARKER
    stamp = f"version {DEMO_VERSION}\n" if domain is SKY else f"version {DEMO_VERSION} {domain.name}\n"
    if marker.is_file() and marker.read_text(encoding="utf-8") == stamp:
        return root / "data.yaml"
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OURS)
        if foreign:
            raise FileExistsError(f"{root} exists and holds non-demo files {foreign}; "
                                  "move it or set YOLOFREEZE_DATASETS")
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_demo_dataset(tmp, domain=domain)
    (tmp / _MARKER).write_text(stamp, encoding="utf-8")
    tmp.rename(root)
    return root / "data.yaml"
