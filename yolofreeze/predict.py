"""Run a detector on images and save them with boxes drawn, plus a JSON of the detections.

``python -m yolofreeze.predict --weights yolov8n.pt --source path/to/img_or_dir [--out runs/predict]``

``--weights`` may be an ONNX export (``best.onnx``), run with onnxruntime at its own input size.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from .cli import DEFAULT_IMGSZ, ArgumentParser, add_detection_options, entry_point
from .data.records import IMAGE_ERRORS
from .evaluation.detect import draw_detections, list_images, predict_image
from .deploy.runtime import is_onnx, load_detector

LOGGER = logging.getLogger(__name__)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.predict", __doc__)
    parser.add_argument("--weights", required=True,
                        help="our checkpoint, an official .pt, a name like yolov8n.pt, or an ONNX export (.onnx)")
    parser.add_argument("--source", required=True, help="image file or directory of images")
    parser.add_argument("--out", default="runs/predict", help="output directory")
    add_detection_options(parser, conf=0.25, onnx=True)
    args = parser.parse_args(argv)
    images = list_images(args.source)
    model = load_detector(args.weights, args.v10_head, args.device, args.threads, args.imgsz, args.names)
    imgsz = model.imgsz if is_onnx(args.weights) else args.imgsz or DEFAULT_IMGSZ
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = [], 0
    for path in tqdm(images, desc="predict", unit="img"):
        try:
            det = predict_image(model, path, imgsz, args.conf, args.iou, args.max_det)
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
