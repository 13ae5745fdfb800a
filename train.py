"""Fine-tune a detector with layer freezing: ``python train.py --model yolov8n.pt --data insplad --freeze 9``.

The trainer (SGD recipe, FreezePlan and its audit, gradient-norm and memory logging) is not built yet.
Until it is, this command checks what it can — the dataset resolves, the model builds or loads, the
freeze index is valid — prints the blocks ``--freeze`` would freeze, and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yolofreeze.convert import ConversionError, load_model
from yolofreeze.data import DatasetNotFoundError, resolve_dataset
from yolofreeze.model import block_table, build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n", help="name/yaml (from scratch) or checkpoint .pt")
    parser.add_argument("--data", default="demo", help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--freeze", type=int, default=0, help="freeze blocks 0..N-1")
    args = parser.parse_args(argv)
    try:
        info = resolve_dataset(args.data)
        model = load_model(args.model) if Path(args.model).suffix == ".pt" else build_model(args.model, nc=info.nc)
    except (DatasetNotFoundError, FileNotFoundError, ConversionError, ValueError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    blocks = block_table(model)
    if not 0 <= args.freeze <= len(blocks):
        print(f"error: --freeze must be between 0 and {len(blocks)} for {model.arch}", file=sys.stderr)
        return 1
    frozen = blocks[:args.freeze]
    print(f"{model.arch} on {info.format} dataset {info.root} ({info.nc} classes): --freeze {args.freeze} would "
          f"freeze {sum(b['params'] for b in frozen):,} of {sum(b['params'] for b in blocks):,} parameters "
          f"(blocks {', '.join(str(b['index']) for b in frozen) or 'none'}).")
    print("error: the trainer is not implemented yet (see the open issues); nothing was trained.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
