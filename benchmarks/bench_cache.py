"""Epoch time at fr2 with and without the frozen-prefix cache, ours vs the oracle's trainer at freeze=9, same data.

    python benchmarks/bench_cache.py [--models yolov8n,yolov8s] [--imgsz 640] [--epochs 2] [--batch 16]
        [--workers 2] [--caches finetune,none,unfolded,ram-fp32,ram-fp16,disk-fp32,disk-fp16] [--train-images N]
        [--val-images N]
        [--threads N] [--device cpu|cuda] [--data DATA.yaml] [--weights W.pt] [--skip-oracle] [--quick]

Per model, from the same start (the oracle's seeded yaml build for the dataset's classes, saved the release way
and converted by us, as in bench_train.py), each configuration trains ``--epochs`` epochs at fr2 (blocks 0-8
frozen, their batch-norm in eval, no augmentation, seed 0, gradient-norm logging off):

- ours fine-tuning everything (``finetune``: nothing frozen, the epoch the paper's strategies are measured against);
- ours at fr2 without a cache (the frozen prefix folded, the default), without a cache and unfolded (``unfolded``:
  ``--no-fold-frozen``), then with ``--cache-frozen`` ram / disk and ``--cache-dtype`` fp32 / fp16;
- the oracle's own ``YOLO.train`` at ``freeze=9`` with the same recipe, un-augmented (``plots=False``).

Timed: one training epoch, data loading included (ours: ``epoch_seconds``, the whole of ``Trainer.train_epoch``;
oracle: from its ``on_train_epoch_start`` to its ``on_train_epoch_end`` callback); validation is not. Our
configurations run interleaved, epoch 1 of each, then epoch 2 of each …, so that load from other processes on a
shared machine falls on all of them alike (run one after the other, the ratios moved by ±0.1); after the last
epoch each validates its EMA weights once. The oracle runs after them, as a whole ``train`` call.
The first epoch of a cached run also computes the cache (the "epoch 1" column); the "steady" column is the mean
of the later epochs, "vs none" divides it by ours uncached at fr2 and "vs finetune" by ours fine-tuning everything.
Targets: steady cached epoch <= 0.8x the uncached fr2 one on CPU (the frozen prefix's forward is 23-26% of an fr2
step there, so compute alone bounds the gain near 1.3x) and <= 0.5x (>= 2x faster) on a GPU; <= 0.65x the
fine-tuning epoch. The final mAP50-95 column shows that the fp32 cache trains the same
model (fp16: within rounding); pass a trained ``--weights`` for a non-zero one.

Every trainer runs with the same torch thread count (``--threads``; default: the one the oracle's CPU training
picks for itself). On a shared CPU the numbers are noisy: compare rows of the same run.
Expected duration on a 2-core CPU with one torch thread at 640 with cplid-dev (80 train / 20 val images), the
default 2 epochs and all caches: yolov8n ≈ 8 min, yolov8s ≈ 20 min; ``--quick`` (yolov8n, 320 px, 32 train / 8
val images, batch 8, 3 epochs, no cache / ram fp32 / disk fp32) ≈ 1.5 min.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from bench_data_eval import SHARED, absolute_yaml  # noqa: E402
from bench_train import ORACLE_NO_AUGMENT, ORACLE_RECIPE, RECIPE_FIELDS, comma_list, same_start  # noqa: E402
from oracle import ultralytics  # noqa: E402
from quick import parse_with_quick  # noqa: E402
from yolofreeze.weights.checkpoints import load_model, save_checkpoint  # noqa: E402
from yolofreeze.data import resolve_dataset  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan  # noqa: E402
from yolofreeze.training.optim import TrainConfig  # noqa: E402
from yolofreeze.training.runs import read_results  # noqa: E402
from yolofreeze.training.trainer import Trainer, seed_everything  # noqa: E402

CACHES = ("finetune", "none", "unfolded", "ram-fp32", "ram-fp16", "disk-fp32", "disk-fp16")
FROZEN = 9  # fr2: blocks 0-8
CPU_TARGET, GPU_TARGET = 0.8, 0.5  # steady cached epoch / uncached epoch
FINETUNE_TARGET = 0.65  # steady cached fr2 epoch / fine-tuning epoch (nothing frozen)
QUICK = dict(models=["yolov8n"], imgsz=320, train_images=32, val_images=8, batch=8, epochs=3,
             caches=["finetune", "none", "ram-fp32", "disk-fp32"])


def subset_yaml(data_yaml: Path, folder: Path, n_train: int | None, n_val: int | None) -> Path:
    """A data.yaml with an absolute path for both trainers: the dataset itself, or its first ``n_train`` / ``n_val``
    images (sorted by name) linked with their label files into ``folder``."""
    if n_train is None and n_val is None:
        return absolute_yaml(data_yaml, folder)
    info = resolve_dataset(data_yaml)
    root = folder / "subset"
    for split, count in (("train", n_train), ("val", n_val)):
        for sub in ("images", "labels"):
            (root / sub / split).mkdir(parents=True)
        for record in sorted(info.splits[split], key=lambda r: r.path.name)[:count]:
            (root / "images" / split / record.path.name).symlink_to(record.path)
            label = record.path.parent.parent.parent / "labels" / split / f"{record.path.stem}.txt"
            if label.is_file():
                (root / "labels" / split / label.name).symlink_to(label)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(info.names))
    out = root / "data.yaml"
    out.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return out


def our_trainers(start: Path, data_yaml: Path, cfg: TrainConfig, caches: list[str], folder: Path, workers: int,
                 device: str) -> dict[str, Trainer]:
    """Our trainers of ``start``, one per configuration: ``finetune`` (nothing frozen), or fr2 with ``none``,
    ``unfolded`` (no cache and the frozen prefix not folded) or ``<ram|disk>-<fp32|fp16>``; each seeded alike."""
    info = resolve_dataset(data_yaml)
    trainers = {}
    for cache in caches:
        model = load_model(start)
        seed_everything(cfg.seed)
        mode, _, dtype = cache.partition("-")
        run_dir = folder / cache
        run_dir.mkdir(parents=True)
        plan = FreezePlan.prefix(0 if mode == "finetune" else FROZEN, model)
        trainers[cache] = Trainer(model, info, cfg, run_dir, plan, device=device,
                                  workers=workers, progress=False, grad_norms=False,
                                  cache_frozen=None if mode in ("finetune", "none", "unfolded") else mode,
                                  cache_dtype=dtype or "fp32", fold_frozen=mode != "unfolded")
    return trainers


def interleaved_epochs(trainers: dict[str, Trainer], epochs: int) -> dict[str, dict[str, list[float]]]:
    """Train all ``trainers`` epoch by epoch in turn (epoch 1 of each, then epoch 2 of each …, so a load change on a
    shared machine hits every configuration alike); per trainer its ``epoch_seconds`` (``Trainer.train_epoch``:
    data loading and training, the cache's build in epoch 1) and the final EMA weights' mAP50-95."""
    seconds = {name: [] for name in trainers}
    for epoch in range(epochs):
        for name, trainer in trainers.items():
            seconds[name].append(trainer.train_epoch(epoch)["epoch_seconds"])
    results = {}
    for name, trainer in trainers.items():
        results[name] = {"epoch_seconds": seconds[name], "metrics/mAP50-95(B)": [trainer.validate().map50_95]}
        for cache in trainer.feature_caches.values():
            cache.clear()
    return results


def oracle(start: Path, data_yaml: Path, cfg: TrainConfig, run_dir: Path, workers: int,
           device: str) -> dict[str, list[float]]:
    """The oracle's own ``YOLO.train`` at ``freeze=9``, un-augmented, same recipe: per epoch its training seconds
    (callbacks around the batch loop) and its final mAP50-95."""
    model = ultralytics().YOLO(str(start))
    seconds, started = [], []
    model.add_callback("on_train_epoch_start", lambda trainer: started.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: seconds.append(time.perf_counter() - started[-1]))
    recipe = {**ORACLE_RECIPE, "workers": workers, "device": device, "val": False}
    model.train(data=str(data_yaml), epochs=cfg.epochs, batch=cfg.batch, imgsz=cfg.imgsz, patience=cfg.patience,
                freeze=FROZEN, project=str(run_dir.parent), name=run_dir.name,
                **{k: getattr(cfg, k) for k in RECIPE_FIELDS}, **ORACLE_NO_AUGMENT, **recipe)
    results = read_results(run_dir / "results.csv")
    return {"epoch_seconds": seconds, "metrics/mAP50-95(B)": results["metrics/mAP50-95(B)"]}


def steady_seconds(epochs: list[float]) -> float:
    """The mean of the epochs after the first (the first alone when there is one)."""
    return statistics.mean(epochs[1:]) if len(epochs) > 1 else epochs[0]


def row(name: str, imgsz: int, label: str, results: dict[str, list[float]], baselines: list[float | None],
        targets: list[float | None]) -> str:
    """One table line: epoch 1, steady epoch, steady / each of ``baselines`` (uncached fr2, fine-tuning) with
    PASS/FAIL against its target (none: no verdict), final mAP50-95."""
    epochs = results["epoch_seconds"]
    steady = steady_seconds(epochs)
    ratios = []
    for baseline, target in zip(baselines, targets):
        verdict = "" if target is None or not baseline else " PASS" if steady / baseline <= target else " FAIL"
        ratios.append(f"{steady / baseline:.2f}{verdict}" if baseline else "")
    return (f"{name:<8} {imgsz:>5} {label:<22} {epochs[0]:>9.1f} {steady:>9.1f} {ratios[0]:>9} {ratios[1]:>11} "
            f"{results['metrics/mAP50-95(B)'][-1]:>9.4f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=comma_list(str), default=["yolov8n", "yolov8s"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (>= 2 for a steady epoch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers of every trainer")
    parser.add_argument("--caches", type=comma_list(str), default=list(CACHES), help=f"of {', '.join(CACHES)}")
    parser.add_argument("--train-images", type=int, default=None, help="use the first N training images")
    parser.add_argument("--val-images", type=int, default=None, help="use the first N val images")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--weights", type=Path, default=None,
                        help="official-format start checkpoint of the (single) --models architecture, e.g. a trained "
                             "one for a meaningful mAP column (default: the oracle's seeded yaml build)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the oracle's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-oracle", action="store_true")
    args = parse_with_quick(parser, QUICK)
    if args.weights and len(args.models) != 1:
        parser.error("--weights holds one architecture: give exactly one --models")
    unknown = [c for c in args.caches if c not in CACHES]
    if unknown or "none" not in args.caches:
        parser.error(f"--caches takes {', '.join(CACHES)} and must include none (the baseline); got {args.caches}")
    return args


def main() -> None:
    args = parse_args()
    ultralytics()
    from ultralytics.utils import NUM_THREADS
    torch.set_num_threads(args.threads or NUM_THREADS)
    target = GPU_TARGET if args.device.startswith("cuda") else CPU_TARGET
    cfg = TrainConfig(epochs=args.epochs, batch=args.batch, imgsz=args.imgsz, seed=0, patience=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_yaml = subset_yaml(args.data, folder, args.train_images, args.val_images)
        info = resolve_dataset(data_yaml)
        print(f"{info.root}: {len(info.splits['train'])} train / {len(info.splits['val'])} val images, "
              f"{info.nc} classes; {args.epochs} epochs, batch {args.batch}, imgsz {args.imgsz}, {args.workers} "
              f"loader workers, {torch.get_num_threads()} torch threads, {args.device}; fr2 = freeze blocks 0-8\n"
              f"epoch = one training pass, data loading included, validation not; epoch 1 of a cached run computes "
              f"the cache; steady = mean of later epochs; vs none = steady / ours uncached fr2 (target <= {target}; "
              f"oracle row: its steady epoch / ours uncached); vs finetune = steady / ours with nothing frozen "
              f"(target <= {FINETUNE_TARGET} for the caches)")
        print(f"{'model':<8} {'imgsz':>5} {'trainer / cache':<22} {'epoch 1 s':>9} {'steady s':>9} {'vs none':>9} "
              f"{'vs finetune':>11} {'mAP50-95':>9}")
        for name in args.models:
            release = args.weights
            if release is None:
                save_checkpoint(same_start(name, info, folder)[0], folder / f"{name}-ours.pt")
                release = folder / f"{name}.pt"  # what same_start saved: the oracle's start, release format
            start = release if args.weights else folder / f"{name}-ours.pt"
            trainers = our_trainers(start, data_yaml, cfg, args.caches, folder / name, args.workers, args.device)
            results = interleaved_epochs(trainers, args.epochs)
            del trainers
            baselines = [steady_seconds(results[k]["epoch_seconds"]) if k in results else None
                         for k in ("none", "finetune")]
            for cache in args.caches:
                cached = cache.startswith(("ram", "disk"))
                shown = [None if cache == "none" else baselines[0], None if cache == "finetune" else baselines[1]]
                print(row(name, args.imgsz, f"ours, {cache}", results[cache], shown,
                          [target if cached else None, FINETUNE_TARGET if cached else None]), flush=True)
            if not args.skip_oracle:
                results = oracle(release, data_yaml, cfg, folder / f"{name}-oracle", args.workers, args.device)
                print(row(name, args.imgsz, "oracle, freeze=9", results, baselines, [None, None]), flush=True)


if __name__ == "__main__":
    main()
