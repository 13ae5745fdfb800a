"""Run a detector on images and save them with boxes drawn, plus a JSON of the detections.

``python -m yolofreeze.predict --weights yolov8n.pt --source path/to/img_or_dir [--out runs/predict]``
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from tqdm import tqdm

from .boxes import unletterbox_boxes
from .cli import ArgumentParser, add_detection_options, entry_point
from .convert import load_model
from .data.loader import letterbox_from_original, load_image
from .data.records import IMAGE_ERRORS, IMAGE_SUFFIXES
from .model import YOLO
from .postprocess import postprocess

LOGGER = logging.getLogger(__name__)
PALETTE = [(255, 56, 56), (72, 249, 10), (0, 194, 255), (255, 157, 151), (146, 204, 23), (52, 69, 147),
           (255, 112, 31), (207, 210, 49), (132, 56, 255), (255, 55, 199)]


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the image files of a directory (sorted, not recursive)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"source not found: {source}")


@torch.no_grad()
def predict_image(model: YOLO, path: Path, imgsz: int = 640, conf: float = 0.25, iou: float = 0.7,
                  max_det: int = 300) -> torch.Tensor:
    """Detections ``(N, 6)``: ``x1, y1, x2, y2`` in original-image pixels, score, class index."""
    resized, (h0, w0) = load_image(path, imgsz)
    canvas, gain, pad = letterbox_from_original(resized, (h0, w0), imgsz)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))[None].to(device).float() / 255
    det = postprocess(model(x), model.nms_free, conf=conf, iou=iou, max_det=max_det)[0].cpu()
    det[:, :4] = unletterbox_boxes(det[:, :4], gain, pad, (h0, w0))
    return det


def draw_detections(path: Path, det: torch.Tensor, names: list[str]) -> Image.Image:
    """The original image (EXIF orientation applied, as the detections are) with labelled boxes."""
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
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


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.predict", __doc__)
    parser.add_argument("--weights", required=True, help="our checkpoint, an official .pt, or a name like yolov8n.pt")
    parser.add_argument("--source", required=True, help="image file or directory of images")
    parser.add_argument("--out", default="runs/predict", help="output directory")
    add_detection_options(parser, conf=0.25)
    args = parser.parse_args(argv)
    images = list_images(args.source)
    if not images:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.source}")
    model = load_model(args.weights).use_v10_head(args.v10_head).to(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for path in tqdm(images, desc="predict", unit="img"):
        try:
            det = predict_image(model, path, args.imgsz, args.conf, args.iou, args.max_det)
            draw_detections(path, det, model.names).save(out / f"{path.stem}.jpg", quality=90)
        except IMAGE_ERRORS as err:
            LOGGER.warning("skipped %s: %s", path, err)
            failed += 1
            continue
        results.append({"image": str(path), "detections": [
            {"box_xyxy": [round(v, 2) for v in row[:4]], "score": round(row[4], 4), "class_id": int(row[5]),
             "class_name": model.names[int(row[5])]} for row in det.tolist()]})
    (out / "detections.json").write_text(json.dumps(results, indent=1))
    total = sum(len(r["detections"]) for r in results)
    print(f"{len(results)} images, {total} detections -> {out}/ (detections.json and drawn images)"
          + (f"; {failed} unreadable images skipped" if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
