"""Data loader throughput and full evaluation time, yolofreeze vs the Ultralytics oracle, same run, same machine.

    python benchmarks/bench_data_eval.py [--data ../shared/data/cplid-dev/data.yaml] [--imgsz 640] [--batch 16]

Loader: images/s over the whole train+val image set, no augmentation, letterboxed to ``imgsz``
(square and rectangular batches; workers 0 and 2), best of ``--repeats`` passes, ours vs the
oracle's ``build_yolo_dataset``/``build_dataloader`` in validation mode. Evaluation: wall time of a
full evaluation of the val split (random release-format yolov8n weights, conf 0.001, same batch size,
no data-loader workers: the oracle uses none on CPU), ours (``evaluate``) vs the oracle's ``val``.
Prints tables with the ratio (target: loader ours/oracle ≥ 1, eval time ours/oracle ≤ 1).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")

from oracle import build_oracle, save_release, ultralytics  # noqa: E402
from yolofreeze import load_model  # noqa: E402
from yolofreeze.data import build_dataloader, read_yolo  # noqa: E402
from yolofreeze.evaluate import evaluate  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cplid-dev" / "data.yaml"


def images_per_second(loader, repeats: int) -> float:
    """Best-of-``repeats`` throughput of one full pass over ``loader``."""
    best = float("inf")
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["img"] if isinstance(batch, dict) else batch.images)
        best = min(best, time.perf_counter() - start)
    return n / best


def absolute_yaml(data_yaml: Path, folder: Path) -> Path:
    """A copy of the data.yaml with an absolute ``path`` (the oracle resolves relative paths elsewhere)."""
    info = read_yolo(data_yaml)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(info.names))
    out = folder / "data.yaml"
    out.write_text(f"path: {info.root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ultralytics()
    from ultralytics import YOLO as OracleYOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader as oracle_dataloader
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    tmp = Path(tempfile.mkdtemp())
    yaml_path = absolute_yaml(args.data, tmp)
    info = read_yolo(yaml_path)
    records = info.splits["train"] + info.splits["val"]
    data = check_det_dataset(str(yaml_path))
    print(f"{args.data}: {len(records)} images, imgsz {args.imgsz}, batch {args.batch}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'loader':<8} {'workers':>7} {'ours img/s':>11} {'oracle img/s':>13} {'ratio':>6}")
    for rect in (False, True):
        for workers in (0, 2):
            ours = build_dataloader(records, args.imgsz, args.batch, rect=rect, workers=workers)
            cfg = get_cfg(overrides={"imgsz": args.imgsz, "rect": rect, "cache": False, "workers": workers})
            theirs_ds = build_yolo_dataset(cfg, [data["train"], data["val"]], args.batch, data, mode="val",
                                           rect=rect, stride=32)
            theirs = oracle_dataloader(theirs_ds, args.batch, workers, shuffle=False, rank=-1)
            a, b = images_per_second(ours, args.repeats), images_per_second(theirs, args.repeats)
            print(f"{'rect' if rect else 'square':<8} {workers:>7} {a:>11.0f} {b:>13.0f} {a / b:>6.2f}", flush=True)

    net = build_oracle("yolov8n", nc=info.nc)
    weights = save_release(net, tmp / "w.pt")
    val = info.splits["val"]
    model = load_model(weights)
    evaluate(model, val[:2], info.names, batch=args.batch, progress=False)  # warm-up
    start = time.perf_counter()
    evaluate(model, val, info.names, imgsz=args.imgsz, batch=args.batch, workers=0, progress=False)
    ours_s = time.perf_counter() - start
    oracle = OracleYOLO(str(weights))
    start = time.perf_counter()
    oracle.val(data=str(yaml_path), imgsz=args.imgsz, batch=args.batch, conf=0.001, iou=0.7, plots=False,
               device="cpu", workers=0, verbose=False, project=str(tmp / "val"), save_json=True)
    oracle_s = time.perf_counter() - start
    print(f"\nfull evaluation of {len(val)} val images (pycocotools json for both):")
    print(f"{'ours s':>8} {'oracle s':>9} {'ratio':>6}\n{ours_s:>8.2f} {oracle_s:>9.2f} {ours_s / oracle_s:>6.2f}")


if __name__ == "__main__":
    main()
