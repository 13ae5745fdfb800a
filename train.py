"""Fine-tune a detector with layer freezing: ``python train.py --model yolov8n.pt --data insplad --freeze 9``.

The trainer (SGD recipe, FreezePlan and its audit, gradient-norm and memory logging) is not built yet.
Until it is, this command checks what it can — the dataset resolves, the model builds or loads, the
freeze index is valid — prints the blocks ``--freeze`` would freeze, and exits with status 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

from yolofreeze.cli import ArgumentParser, default_device, device, entry_point, image_size, non_negative_int
from yolofreeze.convert import load_model
from yolofreeze.data import resolve_dataset
from yolofreeze.model import block_table, build_model


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser("train.py", __doc__)
    parser.add_argument("--model", default="yolov8n", help="name/yaml (from scratch) or checkpoint .pt")
    parser.add_argument("--data", default="demo", help="data.yaml, dataset folder, or insplad/coco8/coco/demo")
    parser.add_argument("--freeze", type=non_negative_int, default=0, help="freeze blocks 0..N-1")
    parser.add_argument("--imgsz", type=image_size, default=640, help="training image size in pixels")
    parser.add_argument("--device", type=device, default=default_device(), help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    info = resolve_dataset(args.data)
    model = load_model(args.model) if Path(args.model).suffix == ".pt" else build_model(args.model, nc=info.nc)
    blocks = block_table(model)
    if args.freeze >= len(blocks):
        parser.error(f"--freeze {args.freeze}: {model.arch} has {len(blocks)} blocks (0-{len(blocks) - 1}); "
                     f"freeze at most {len(blocks) - 1} so that the head trains")
    frozen = blocks[:args.freeze]
    print(f"{model.arch} on {info.format} dataset {info.root} ({info.nc} classes): --freeze {args.freeze} would "
          f"freeze {sum(b['params'] for b in frozen):,} of {sum(b['params'] for b in blocks):,} parameters "
          f"(blocks {', '.join(str(b['index']) for b in frozen) or 'none'}).")
    print("error: the trainer is not implemented yet (see the open issues); nothing was trained.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
