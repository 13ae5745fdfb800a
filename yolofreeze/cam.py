"""Class-activation maps: where a detector looks for each of its detections.

``python -m yolofreeze.cam --weights best.pt --source img_or_dir [--layers 15,18,21] [--method gradcam|gradcam++|
eigencam] [--target class|box|all] [--conf 0.25] [--imgsz 640] [--per-image] [--out runs/cam]``

Writes per detection ``<stem>_cam.jpg`` (the first, highest-scoring; then ``<stem>_cam_2.jpg`` …): its map as a heat
map over the photo with its box and label; with ``--per-image`` one ``<stem>_cam.jpg`` per image, the sum of its
detections' maps with every box. ``cam.json`` lists every detection: image, box (original pixels), class, score,
method, layers, the map's peak (original pixels) and the fraction of the map's mass inside the box. The maps are
computed by :mod:`yolofreeze.explain.cam` (hooks on the blocks' outputs, mapped back through the letterbox).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from tqdm import tqdm

from .cli import ArgumentParser, add_detection_options, entry_point
from .data.records import IMAGE_ERRORS
from .evaluation.detect import draw_boxes, list_images, open_original
from .explain.cam import (METHODS, TARGETS, check_request, default_layers, energy_in_boxes, explain_image, normalise,
                          peak)
from .deploy.runtime import is_onnx
from .weights.checkpoints import load_model

LOGGER = logging.getLogger(__name__)


def overlay(image: Image.Image, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``image`` blended with ``cam (H, W)`` in [0, 1] drawn in the jet colour map (``alpha``: the map's weight)."""
    heat = (colormaps["jet"](cam)[..., :3] * 255).astype(np.uint8)
    return Image.blend(image, Image.fromarray(heat).resize(image.size), alpha)


def layer_list(text: str | None) -> list[int] | None:
    """``--layers 15,18,21`` → ``[15, 18, 21]``; None for the default."""
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--layers {text}: block numbers like 15,18,21") from None


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.cam", __doc__)
    parser.add_argument("--weights", required=True, help="our checkpoint or an official .pt")
    parser.add_argument("--source", required=True, help="image file or directory of images")
    parser.add_argument("--layers", default=None, help="blocks to explain, e.g. 15,18,21 (default: the blocks the "
                                                       "detection head reads)")
    parser.add_argument("--method", choices=METHODS, default="gradcam", help="map method")
    parser.add_argument("--target", choices=TARGETS, default="class",
                        help="what a detection's map explains: its class score, its box coordinates, or both")
    parser.add_argument("--per-image", action="store_true", help="one map per image: the sum of its detections'")
    parser.add_argument("--out", default="runs/cam", help="output directory")
    add_detection_options(parser, conf=0.25)
    args = parser.parse_args(argv)
    if is_onnx(args.weights):
        raise ValueError(f"--weights {args.weights}: class-activation maps need the PyTorch model's gradients and "
                         "blocks; give the .pt it was exported from")
    images = list_images(args.source)
    model = load_model(args.weights).use_v10_head(args.v10_head).to(args.device)
    layers = layer_list(args.layers) or default_layers(model)
    check_request(model, layers, args.method, args.target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, failed, empty = [], 0, 0
    for path in tqdm(images, desc="cam", unit="img"):
        try:
            explained = explain_image(model, path, args.imgsz, layers, args.method, args.target, args.conf,
                                      args.iou, args.max_det)
            photo = open_original(path)
        except IMAGE_ERRORS as err:
            LOGGER.warning("skipped %s: %s", path, err)
            failed += 1
            continue
        det = explained.detections
        if not len(det):
            empty += 1
            continue
        for k, (row, cam) in enumerate(zip(det.tolist(), explained.maps, strict=True)):
            records.append({"image": path.name, "box": [round(v, 2) for v in row[:4]],
                            "class": model.names[int(row[5])], "score": round(row[4], 4), "method": args.method,
                            "layers": layers, "peak": list(peak(cam)),
                            "energy_in_box": round(energy_in_boxes(cam, [row[:4]]), 4)})
            if not args.per_image:
                name = f"{path.stem}_cam.jpg" if k == 0 else f"{path.stem}_cam_{k + 1}.jpg"
                draw_boxes(overlay(photo, cam), det[k:k + 1], model.names).save(out / name, quality=90)
        if args.per_image:
            total = normalise(torch.from_numpy(np.sum(explained.maps, axis=0))[None])[0].numpy()
            draw_boxes(overlay(photo, total), det, model.names).save(out / f"{path.stem}_cam.jpg", quality=90)
    (out / "cam.json").write_text(json.dumps(records, indent=1))
    print(f"{len(images) - failed} images, {len(records)} detections explained ({args.method}, target "
          f"{args.target}, blocks {','.join(map(str, layers))}) -> {out}/ (cam.json and drawn maps)"
          + (f"; {empty} images without detections above --conf {args.conf}" if empty else "")
          + (f"; {failed} unreadable images skipped" if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
