"""Print the block table of a model: the table to read before choosing ``--freeze N``.

``python -m yolofreeze.inspect yolov8n``  |  ``python -m yolofreeze.inspect weights/best.pt --imgsz 1280``
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .convert import load_model
from .model import YOLO, block_table, build_model


def format_block_table(model: YOLO, imgsz: int = 640) -> str:
    """The block table as aligned text, with totals per part and what ``--freeze N`` means for this model."""
    rows = block_table(model, imgsz)
    lines = [f"{model.arch}: nc={model.nc}, strides {'/'.join(str(int(s)) for s in model.stride.tolist())}, "
             f"{sum(r['params'] for r in rows):,} parameters, {len(rows)} blocks",
             f"{'block':>5}  {'from':<12} {'module':<12} {'n':>2} {'params':>11}  {f'output @{imgsz}':<16} part"]
    for r in rows:
        lines.append(f"{r['index']:>5}  {str(r['from']):<12} {r['module']:<12} {r['repeats']:>2} {r['params']:>11,}  "
                     f"{r['output']:<16} {r['part']}")
    lines.append("")
    for part in ("backbone", "neck", "head"):
        idx = [r["index"] for r in rows if r["part"] == part]
        params = sum(r["params"] for r in rows if r["part"] == part)
        lines.append(f"{part:>8}: blocks {idx[0]}-{idx[-1]}, {params:,} parameters")
    backbone_end = max(r["index"] for r in rows if r["part"] == "backbone") + 1
    head = rows[-1]["index"]
    lines.append(f"--freeze N freezes blocks 0..N-1: --freeze {backbone_end} = the whole backbone, "
                 f"--freeze {head} = everything but the head (block {head}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolofreeze.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model name (yolov8n … yolov10x), model yaml, or checkpoint (.pt)")
    parser.add_argument("--imgsz", type=int, default=640, help="input size for the output-shape column")
    parser.add_argument("--nc", type=int, default=None, help="number of classes (names and yamls only)")
    args = parser.parse_args(argv)
    try:
        if Path(args.model).suffix == ".pt":
            model = load_model(args.model)
        else:
            model = build_model(args.model, nc=args.nc)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}")
        return 1
    print(format_block_table(model, args.imgsz))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
