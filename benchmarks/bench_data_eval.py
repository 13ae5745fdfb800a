"""Data loader fidelity and throughput and full evaluation time, yolofreeze vs the Ultralytics oracle, same run.

    python benchmarks/bench_data_eval.py [--data ../shared/data/cplid-dev/data.yaml] [--imgsz 640] [--batch 16]
        [--augmented]

Fidelity first: every image of train+val through both loaders (square and rectangular batches), matched
by file: largest and mean absolute pixel difference, share of differing pixels, images whose shape or
letterbox ratio/pad differ. Loader: images/s over the same set, no augmentation, letterboxed to ``imgsz``
(square and rectangular batches; workers 0 and 2), ``--repeats`` back-to-back passes after a warm-up,
ours vs the oracle's ``build_yolo_dataset``/``build_dataloader`` in validation mode. Importing the oracle sets
``cv2.setNumThreads(0)`` for the whole process, so both loaders run with single-threaded OpenCV.
Evaluation: wall time of a full evaluation of the val split (random release-format yolov8n weights,
conf 0.001, same batch size, no data-loader workers: the oracle uses none on CPU), ours (``evaluate``)
vs the oracle's ``val``, median of ``--repeats`` interleaved runs at the torch thread count the oracle's
validator sets for itself (cpu_count - 1; it leaves it so, which would otherwise slow whatever runs after it).
Prints tables with the ratio (target: loader ours/oracle ≥ 1, eval time ours/oracle ≤ 1).
``--augmented``: instead, training loaders with augmentation (``light`` and ``default``: mosaic, affine, HSV,
flip), ours vs the oracle's train-mode dataset given the same values (its other augmentations off), shuffled, over
the training split: images/s, workers 0 and 2 (target ≥ 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from oracle import build_oracle, save_release, ultralytics  # noqa: E402
from yolofreeze import load_model  # noqa: E402
from yolofreeze.data import AUGMENT_PRESETS, build_dataloader, read_yolo  # noqa: E402
from yolofreeze.evaluation.evaluate import evaluate  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cplid-dev" / "data.yaml"


def images_in_pass(loader) -> int:
    """Run one full pass over ``loader``; the number of images it gave."""
    return sum(len(batch["img"] if isinstance(batch, dict) else batch.images) for batch in loader)


def images_per_second(loader, passes: int) -> float:
    """Steady-state throughput: images over ``passes`` back-to-back passes after one warm-up pass.

    Back to back, a loader that keeps its workers busy across epochs (the oracle's infinite loader)
    gets credit for it, and one that idles between epochs pays for it, as in a real training run.
    """
    images_in_pass(loader)
    start = time.perf_counter()
    n = sum(images_in_pass(loader) for _ in range(passes))
    return n / (time.perf_counter() - start)


def fidelity(ours, theirs, records) -> dict[str, float]:
    """Pixel and geometry agreement of two loaders over the same images, matched by file."""
    reference = {}
    for batch in theirs:
        for j, path in enumerate(batch["im_file"]):
            reference[path] = (batch["img"][j], batch["ratio_pad"][j])
    worst, total, differing, pixels, shape_off, geometry_off = 0, 0.0, 0, 0, 0, 0
    for batch in ours:
        for image, meta in zip(batch.images, batch.meta):
            ref_image, ((gain_y, gain_x), pad) = reference[str(records[meta.index].path)]
            if image.shape != ref_image.shape:
                shape_off += 1
                continue
            diff = (image.int() - ref_image.int()).abs()
            worst, total = max(worst, int(diff.max())), total + float(diff.sum())
            differing, pixels = differing + int((diff > 0).sum()), pixels + diff.numel()
            geometry_off += not (np.allclose(meta.ratio, (gain_x, gain_y), rtol=1e-12) and meta.pad == tuple(pad))
    return {"max": worst, "mean": total / max(pixels, 1), "differing": differing / max(pixels, 1),
            "shape_off": shape_off, "geometry_off": geometry_off}


# the oracle's augmentation hyper-parameters, all off (a preset of ours is laid over them)
ORACLE_NO_AUGMENT = dict(mosaic=0.0, mixup=0.0, cutmix=0.0, copy_paste=0.0, degrees=0.0, translate=0.0, scale=0.0,
                         shear=0.0, perspective=0.0, flipud=0.0, fliplr=0.0, bgr=0.0, hsv_h=0.0, hsv_s=0.0,
                         hsv_v=0.0, erasing=0.0, auto_augment=None, close_mosaic=0, multi_scale=0.0)


def augmented_throughput(args, records, data) -> None:
    """Images/s of augmented training loaders, ours vs the oracle's (see the module docstring)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader as oracle_dataloader
    from ultralytics.data import build_yolo_dataset

    print(f"\n{'augment':<8} {'workers':>7} {'ours img/s':>11} {'ours --cache':>12} {'oracle img/s':>13} "
          f"{'ratio':>6} {'cached':>6}")
    for preset in ("light", "default"):
        values = dataclasses.asdict(AUGMENT_PRESETS[preset]) | {"close_mosaic": 0}
        for workers in (0, 2):
            speeds = []
            for cache_images in (False, True):  # the oracle keeps recently decoded images in RAM (its buffer)
                sampler = DistributedSampler(range(len(records)), num_replicas=1, rank=0, shuffle=True, seed=0)
                ours = build_dataloader(records, args.imgsz, args.batch, workers=workers, sampler=sampler,
                                        augment=AUGMENT_PRESETS[preset], epochs=10**6, cache_images=cache_images)
                speeds.append(images_per_second(ours, args.repeats))
                del ours
                gc.collect()
            cfg = get_cfg(overrides={"imgsz": args.imgsz, "cache": False, "workers": workers, **ORACLE_NO_AUGMENT,
                                     **values})
            dataset = build_yolo_dataset(cfg, data["train"], args.batch, data, mode="train", rect=False, stride=32)
            theirs = oracle_dataloader(dataset, args.batch, workers, shuffle=True, rank=-1)
            b = images_per_second(theirs, args.repeats)
            del theirs
            gc.collect()
            a, cached = speeds
            print(f"{preset:<8} {workers:>7} {a:>11.0f} {cached:>12.0f} {b:>13.0f} {a / b:>6.2f} {cached / b:>6.2f}",
                  flush=True)


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--augmented", action="store_true", help="time augmented training loaders instead")
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
    if args.augmented:
        augmented_throughput(args, info.splits["train"], data)
        return

    def loaders(rect: bool, workers: int):
        ours = build_dataloader(records, args.imgsz, args.batch, rect=rect, workers=workers)
        cfg = get_cfg(overrides={"imgsz": args.imgsz, "rect": rect, "cache": False, "workers": workers})
        theirs_ds = build_yolo_dataset(cfg, [data["train"], data["val"]], args.batch, data, mode="val",
                                       rect=rect, stride=32)
        return ours, oracle_dataloader(theirs_ds, args.batch, workers, shuffle=False, rank=-1)

    print(f"{'batches':<8} {'max |diff|':>10} {'mean |diff|':>11} {'px differ':>9} {'shape off':>9} "
          f"{'ratio/pad off':>13}")
    for rect in (False, True):
        ours, theirs = loaders(rect, 0)
        f = fidelity(ours, theirs, records)
        print(f"{'rect' if rect else 'square':<8} {f['max']:>10} {f['mean']:>11.4f} {f['differing']:>9.2%} "
              f"{f['shape_off']:>9} {f['geometry_off']:>13}", flush=True)
    print(f"\n{'loader':<8} {'workers':>7} {'ours img/s':>11} {'oracle img/s':>13} {'ratio':>6}")
    for rect in (False, True):
        for workers in (0, 2):
            ours, theirs = loaders(rect, workers)
            a = images_per_second(ours, args.repeats)
            del ours  # stop our workers before timing the oracle's
            gc.collect()
            b = images_per_second(theirs, args.repeats)
            del theirs
            gc.collect()
            print(f"{'rect' if rect else 'square':<8} {workers:>7} {a:>11.0f} {b:>13.0f} {a / b:>6.2f}", flush=True)

    net = build_oracle("yolov8n", nc=info.nc)
    weights = save_release(net, tmp / "w.pt")
    val = info.splits["val"]
    model = load_model(weights)
    oracle = OracleYOLO(str(weights))

    def oracle_val() -> float:
        start = time.perf_counter()
        oracle.val(data=str(yaml_path), imgsz=args.imgsz, batch=args.batch, conf=0.001, iou=0.7, plots=False,
                   device="cpu", workers=0, verbose=False, project=str(tmp / "val"), save_json=True)
        return time.perf_counter() - start

    def ours_val() -> float:
        start = time.perf_counter()
        evaluate(model, val, info.names, imgsz=args.imgsz, batch=args.batch, workers=0, progress=False,
                 out_dir=tmp / "ours")
        return time.perf_counter() - start

    # the oracle's validator sets torch's threads (to cpu_count - 1) and leaves them so: both run at that count
    oracle_val()
    threads = torch.get_num_threads()
    ours_val()  # warm-up
    times = [(ours_val(), oracle_val()) for _ in range(args.repeats)]
    ours_s, oracle_s = (statistics.median(t) for t in zip(*times))
    print(f"\nfull evaluation of {len(val)} val images (median of {args.repeats}, interleaved, {threads} torch "
          f"threads for both; both write their predictions json, ours scores with pycocotools, the oracle with its "
          f"own code):")
    print(f"{'ours s':>8} {'oracle s':>9} {'ratio':>6}\n{ours_s:>8.2f} {oracle_s:>9.2f} {ours_s / oracle_s:>6.2f}")


if __name__ == "__main__":
    main()
