"""Evaluate a detector with pycocotools: ``python eval.py --weights W --data D [--split val]``.

W: our checkpoint, an official Ultralytics/THU-MIG .pt, an official name (yolov8n.pt, downloaded), or an ONNX
export (best.onnx, best.int8.onnx: run with onnxruntime, its input size and classes from its metadata).
D: a data.yaml, a dataset folder (YOLO txt, COCO json or Pascal VOC xml), or a name: insplad, coco8, coco, demo.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from yolofreeze.cli import (DEFAULT_IMGSZ, ArgumentParser, add_detection_options, entry_point, non_negative_int,
                            positive_int)
from yolofreeze.deploy.runtime import is_onnx, load_detector
from yolofreeze.data import DatasetNotFoundError, resolve_dataset
from yolofreeze.evaluation.evaluate import evaluate, format_result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser("eval.py", __doc__)
    parser.add_argument("--weights", required=True,
                        help="checkpoint (.pt), official name like yolov8n.pt, or ONNX export (.onnx)")
    parser.add_argument("--data", required=True, help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--split", default="val", help="split to evaluate")
    add_detection_options(parser, conf=0.001, onnx=True)
    parser.add_argument("--batch", type=positive_int, default=32, help="batch size")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data loader worker processes")
    parser.add_argument("--out", default=None, help="output folder (default runs/eval/<weights stem>-<split>)")
    parser.add_argument("--save-gt", action="store_true", help="also write the COCO ground truth json")
    parser.add_argument("--ignore-names", action="store_true",
                        help="match model and dataset classes by index, not by name (the counts must agree)")
    return parser.parse_args(argv)


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    info = resolve_dataset(args.data)
    if args.split not in info.splits:
        raise DatasetNotFoundError(f"{args.data} has no split {args.split!r} (has {', '.join(info.splits)})")
    model = load_detector(args.weights, args.v10_head, args.device, args.threads, args.imgsz, args.names)
    if is_onnx(args.weights):  # input size and YOLOv10 branch are the export's
        imgsz, v10_head = model.imgsz, model.meta.get("v10_head") or None
    else:
        imgsz, v10_head = args.imgsz or DEFAULT_IMGSZ, args.v10_head if model.is_v10 else None
    records = info.splits[args.split]
    print(f"{info.format} dataset {info.root}: {len(records)} {args.split} images, {info.nc} classes")
    if info.problems.total():
        print(f"while reading (bad items skipped, nothing else lost):\n{info.problems.format()}")
    out = Path(args.out or f"runs/eval/{Path(args.weights).stem}-{args.split}")
    result = evaluate(model, records, info.names, info.category_ids, out, imgsz, args.batch, args.conf,
                      args.iou, args.max_det, args.workers, args.save_gt, ignore_names=args.ignore_names)
    if result.class_match:
        print(f"classes: {result.class_match}")
    print(format_result(result))
    (out / "metrics.json").write_text(json.dumps({"weights": str(args.weights), "data": str(args.data),
                                                  "split": args.split, "imgsz": imgsz,
                                                  "v10_head": v10_head,
                                                  **result.to_dict()}, indent=1))
    print(f"wrote {out}/predictions.json and metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
