"""Evaluate a detector with pycocotools: ``python eval.py --weights W --data D [--split val]``.

W: our checkpoint, an official Ultralytics/THU-MIG .pt, or an official name (yolov8n.pt, downloaded).
D: a data.yaml, a dataset folder (YOLO txt, COCO json or Pascal VOC xml), or a name: insplad, coco8, coco, demo.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from yolofreeze.convert import ConversionError, load_model
from yolofreeze.data import DatasetNotFoundError, resolve_dataset
from yolofreeze.evaluate import evaluate, format_result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint (.pt) or official name like yolov8n.pt")
    parser.add_argument("--data", required=True, help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--split", default="val", help="split to evaluate")
    parser.add_argument("--imgsz", type=int, default=640, help="long side of the input in pixels")
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (YOLOv8)")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="output folder (default runs/eval/<weights stem>-<split>)")
    parser.add_argument("--save-gt", action="store_true", help="also write the COCO ground truth json")
    parser.add_argument("--ignore-names", action="store_true",
                        help="match model and dataset classes by index, not by name (the counts must agree)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        info = resolve_dataset(args.data)
        if args.split not in info.splits:
            raise DatasetNotFoundError(f"{args.data} has no split {args.split!r} (has {', '.join(info.splits)})")
        model = load_model(args.weights).to(args.device)
    except (DatasetNotFoundError, FileNotFoundError, ConversionError, ValueError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    records = info.splits[args.split]
    print(f"{info.format} dataset {info.root}: {len(records)} {args.split} images, {info.nc} classes")
    if info.problems.total():
        print(f"while reading (bad items skipped, nothing else lost):\n{info.problems.format()}")
    out = Path(args.out or f"runs/eval/{Path(args.weights).stem}-{args.split}")
    try:
        result = evaluate(model, records, info.names, info.category_ids, out, args.imgsz, args.batch, args.conf,
                          args.iou, args.max_det, args.workers, args.save_gt, ignore_names=args.ignore_names)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result.class_match:
        print(f"classes: {result.class_match}")
    print(format_result(result))
    (out / "metrics.json").write_text(json.dumps({"weights": str(args.weights), "data": str(args.data),
                                                  "split": args.split, "imgsz": args.imgsz, **result.to_dict()},
                                                 indent=1))
    print(f"wrote {out}/predictions.json and metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
