"""Detections on image files: letterbox as the reference does, run, post-process, map back to the original
pixels; draw them (the command line is :mod:`yolofreeze.predict`)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from ..boxes import unletterbox_boxes
from ..data.loader import letterbox_from_original, load_image
from ..data.records import IMAGE_SUFFIXES
from ..model import YOLO
from .postprocess import postprocess

PALETTE = [(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 157, 151), (146, 204, 23), (52, 69, 147),
           (255, 112, 31), (207, 210, 49), (132, 56, 255), (255, 55, 199)]


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the image files of a directory (sorted, not recursive).

    Raises FileNotFoundError when ``source`` does not exist or is a directory without images.
    """
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {source}")
        return images
    raise FileNotFoundError(f"source not found: {source}")


class Letterboxed(NamedTuple):
    """An image file as the model sees it: ``x (1, 3, H, W)`` float in [0, 1] on the model's device, and the
    letterbox (``gain``, ``pad``) that maps original pixels ``(h0, w0) = orig_hw`` onto it."""

    x: torch.Tensor
    gain: tuple[float, float]
    pad: tuple[float, float]
    orig_hw: tuple[int, int]


def letterboxed_input(path: Path, imgsz: int, device: torch.device, square: bool = False) -> Letterboxed:
    """Decode, resize and letterbox ``path`` as the reference's prediction does: ``x (1, 3, H, W)`` in [0, 1], the
    long side ``imgsz`` and the short side padded to the next multiple of 32, or with ``square`` to ``imgsz`` (what
    a static export takes)."""
    resized, orig_hw = load_image(path, imgsz)
    canvas, gain, pad = letterbox_from_original(resized, orig_hw, imgsz, shape=(imgsz, imgsz) if square else None)
    x = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].to(device).float() / 255
    return Letterboxed(x, gain, pad, orig_hw)


@torch.no_grad()
def predict_image(model: YOLO, path: Path, imgsz: int = 640, conf: float = 0.25, iou: float = 0.7,
                  max_det: int = 300) -> torch.Tensor:
    """Detections ``(N, 6)``: ``x1, y1, x2, y2`` in original-image pixels, score, class index.

    ``model``: a :class:`YOLO` or an ONNX runner (:class:`yolofreeze.deploy.runtime.OnnxDetector`)."""
    image = letterboxed_input(path, imgsz, model.device, square=getattr(model, "fixed_shape", None) is not None)
    det = postprocess(model(image.x), model.nms_free, conf=conf, iou=iou, max_det=max_det)[0].cpu()
    det[:, :4] = unletterbox_boxes(det[:, :4], image.gain, image.pad, image.orig_hw)
    return det


def open_original(path: Path) -> Image.Image:
    """The image file as RGB with its EXIF orientation applied (the pixels detections refer to)."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def draw_detections(path: Path, det: torch.Tensor, names: list[str]) -> Image.Image:
    """The original image (EXIF orientation applied, as the detections are) with labelled boxes."""
    return draw_boxes(open_original(path), det, names)


def draw_boxes(image: Image.Image, det: torch.Tensor, names: list[str]) -> Image.Image:
    """``image`` with the labelled boxes of ``det (N, 6)`` (xyxy pixels, score, class) drawn on it (in place)."""
    pen = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 400))
    for x1, y1, x2, y2, score, cls in det.tolist():
        color = PALETTE[int(cls) % len(PALETTE)]
        label = f"{names[int(cls)]} {score:.2f}"
        pen.rectangle((x1, y1, x2, y2), outline=color, width=width)
        left, top, right, bottom = pen.textbbox((0, 0), label)
        label_h = bottom - top + 2 * width
        label_top = y1 - label_h if y1 - label_h >= 0 else y1  # above the box, or inside it at the top edge
        label_left = min(x1, max(0, image.width - (right - left + 2 * width)))  # never past the right edge
        pen.rectangle((label_left, label_top, label_left + right - left + 2 * width, label_top + label_h), fill=color)
        pen.text((label_left + width, label_top + width - top), label, fill=(255, 255, 255))
    return image
