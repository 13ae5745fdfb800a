"""Print the block table of a model: the table to read before choosing ``--freeze N``.

``python -m yolofreeze.inspect yolov8n``  |  ``python -m yolofreeze.inspect weights/best.pt --imgsz 1280``  |
``python -m yolofreeze.inspect yolov10s --freeze fr2`` (the freeze audit train.py prints)
"""
from __future__ import annotations

from pathlib import Path

from .cli import ArgumentParser, entry_point, image_size, positive_int
from .freezing.plan import BN_MODES, FreezePlan, format_audit
from .model import YOLO, block_table, build_model
from .weights.checkpoints import load_model


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


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("python -m yolofreeze.inspect", __doc__)
    parser.add_argument("model", help="model name (yolov8n … yolov10x), model yaml, or checkpoint (.pt)")
    parser.add_argument("--imgsz", type=image_size, default=640, help="input size for the output-shape column")
    parser.add_argument("--nc", type=positive_int, default=None, help="number of classes (names and yamls only)")
    parser.add_argument("--freeze", nargs="+", metavar="BLOCKS", default=None,
                        help="print the freeze audit of this --freeze value (as train.py takes it) instead")
    parser.add_argument("--frozen-bn", choices=BN_MODES, default="eval", help="batch-norm of frozen blocks")
    args = parser.parse_args(argv)
    model = load_model(args.model) if Path(args.model).suffix == ".pt" else build_model(args.model, nc=args.nc)
    if args.freeze:
        print(format_audit(FreezePlan.parse(args.freeze, model, args.frozen_bn).audit(model)))
    else:
        print(format_block_table(model, args.imgsz))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
