"""Training speed and a short fine-tune, yolofreeze's trainer vs the Ultralytics oracle's, same data, same run.

    python benchmarks/bench_train.py [--models yolov8n,yolov8s] [--imgsz 320,640] [--batch 16] [--repeats 5]
        [--warmup 1] [--finetune-epochs 3] [--finetune-imgsz 320] [--weights W.pt] [--data DATA.yaml]
        [--threads N] [--skip-throughput] [--skip-finetune] [--augment none|light|default] [--close-mosaic N]
        [--channels-last] [--quick]

1. Throughput. Both models start from the same release-format checkpoint (the oracle's yaml build with ``nc``
   of the dataset, saved with its strip_optimizer, converted by us). The first batches of the training split
   (square ``imgsz``, no augmentation) are decoded once and kept in memory; both trainers get the same uint8
   tensors, so data loading is not timed. One timed step is one batch of: uint8 → float / 255, train-mode
   forward, loss, backward, clip the gradient norm to 10, Nesterov SGD step, zero the gradients, EMA update —
   one optimiser step per batch (as with accumulate 1), so the step's cost is in every sample. Ours:
   ``Trainer.train_step`` + ``optim.optimizer_step``. Oracle: its ``DetectionModel(batch_dict)`` (its
   ``v8DetectionLoss``), ``loss.sum()`` backward through its (disabled) GradScaler, and its own
   ``BaseTrainer.optimizer_step`` over the optimiser its ``BaseTrainer.build_optimizer`` builds (SGD,
   momentum 0.937, Nesterov) and its ``ModelEMA``. Steps are interleaved (ours, oracle, ours, oracle …) on the
   same batches after ``--warmup`` steps each; the table gives images/s from the median step time.
2. FLOP fraction. The machine's fp32 matmul rate (``torch.mm`` of 2048², best of 10) and the model's forward
   FLOPs per image counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls,
   2 per multiply-add); ``forward FLOPs × 3 × batch / step time`` as a fraction of that rate.
3. Fine-tune. From the same checkpoint (default: the oracle-trained cplid-dev yolov8n that the test suite
   caches, see ``cplid_oracle_weights`` in tests/conftest.py) both trainers fine-tune with the same recipe (SGD
   lr0 0.01 → 0.0001, momentum 0.937, nbs 64, 3 warm-up epochs capped at epochs - 1, no augmentation,
   seed 0, no loader workers) and validate the EMA weights after every epoch; the table puts their results.csv
   rows side by side, with the wall seconds of each per-epoch validation (each trainer's ``validate`` timed
   from outside: the val split in rectangular batches of 2 x batch, the validation loss, the metrics; target:
   ours ≤ the oracle's). Both run with the torch thread count the oracle's CPU training sets for itself.
   ``--augment light|default`` fine-tunes both with that augmentation preset (the oracle given the same values,
   its other augmentations off; ``--close-mosaic`` for both).

Expected duration on a 2-core CPU: the default run ≈ 25 min (measured with ``--threads 1`` beside other jobs:
yolov8n 320 ≈ 1 min, 640 ≈ 4 min, yolov8s 320 ≈ 7 min, 640 ≈ 10 min, fine-tune ≈ 2 min); ``--quick``
(yolov8n, 320, 3 steps, 1 epoch) ≈ 2 min. On a shared CPU use ``--threads 1``: two torch threads competing with
other processes for two cores ran 3-5x slower and far noisier than one.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from bench_data_eval import ORACLE_NO_AUGMENT, SHARED, absolute_yaml  # noqa: E402
from oracle import build_oracle, save_release, ultralytics  # noqa: E402
from quick import parse_with_quick  # noqa: E402
from yolofreeze.weights.checkpoints import convert_official, load_model  # noqa: E402
from yolofreeze.data import AUGMENT_PRESETS, Batch, DatasetInfo, build_dataloader, resolve_dataset  # noqa: E402
from yolofreeze.training.optim import TrainConfig, optimizer_step  # noqa: E402
from yolofreeze.training.runs import read_results  # noqa: E402
from yolofreeze.training.trainer import Trainer, seed_everything  # noqa: E402

# The oracle's settings for an un-augmented fine-tune with our recipe (names from its cfg/default.yaml).
ORACLE_RECIPE = dict(optimizer="SGD", amp=False, plots=False, deterministic=True, workers=0, val=True, device="cpu",
                     cache=False, rect=False, cos_lr=False, verbose=False, exist_ok=True)
RECIPE_FIELDS = ("seed", "nbs", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum",
                 "warmup_bias_lr", "box", "cls", "dfl")
QUICK = dict(models=["yolov8n"], imgsz=[320], repeats=3, finetune_epochs=1)
FINAL_COLUMNS = ("metrics/mAP50(B)", "metrics/mAP50-95(B)")


def comma_list(kind: type) -> Callable[[str], list]:
    """An argparse type for ``a,b,c`` lists of ``kind``."""
    return lambda text: [kind(item) for item in text.split(",") if item]


def cached_oracle_weights(version: str) -> Path | None:
    """The oracle-trained cplid-dev yolov8n the test suite caches (tests/conftest.py ``cplid_oracle_weights``), in
    this checkout's pytest cache or a sibling checkout's; None when no test run has made it yet."""
    pattern = f".pytest_cache/d/cplid-oracle-{version}-*/cplid-yolov8n.pt"
    found = sorted(ROOT.glob(pattern)) or sorted(ROOT.parent.glob(f"*/{pattern}"))
    return found[0] if found else None


def matmul_flops_per_second(n: int = 2048, tries: int = 10) -> float:
    """The machine's fp32 matmul rate: ``2 n³`` FLOPs over the best of ``tries`` ``torch.mm`` of two ``n × n``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forward_flops_per_image(model: torch.nn.Module, imgsz: int) -> int:
    """FLOPs (2 per multiply-add) of one train-mode forward pass of a ``(1, 3, imgsz, imgsz)`` image."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        copy.deepcopy(model).train()(torch.rand(1, 3, imgsz, imgsz))
    return counter.get_total_flops()


def memory_batches(info: DatasetInfo, imgsz: int, batch: int, count: int) -> list[Batch]:
    """Up to ``count`` square training batches (no augmentation, file order), decoded once and kept in memory."""
    return list(islice(build_dataloader(info.splits["train"], imgsz, batch, workers=0), count))


def same_start(name: str, info: DatasetInfo, folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, oracle)`` with identical weights: the oracle's seeded yaml build for ``info``'s classes, saved the
    release way (fp16) and converted by us; the oracle's copy rounded through fp16 the same way."""
    oracle = build_oracle(name, nc=info.nc)
    oracle.names = dict(enumerate(info.names))
    ours = convert_official(save_release(oracle, folder / f"{name}.pt"))
    return ours, oracle.half().float()


def our_step(model: torch.nn.Module, info: DatasetInfo, cfg: TrainConfig, run_dir: Path,
             channels_last: bool = False) -> Callable[[Batch], None]:
    """One training step of our ``Trainer``: ``train_step`` (forward, loss, backward) + ``optimizer_step``."""
    trainer = Trainer(model, info, cfg, run_dir, workers=0, progress=False, channels_last=channels_last)
    trainer.plan.set_train_mode(trainer.model)

    def step(batch: Batch) -> None:
        trainer.train_step(batch, 0, 0)
        optimizer_step(trainer.model, trainer.optimizer, trainer.ema)
    return step


def oracle_step(net: torch.nn.Module, cfg: TrainConfig) -> Callable[[Batch], None]:
    """One training step of the oracle's pieces, as its ``BaseTrainer._do_train`` runs them on CPU without AMP:
    ``model(batch)`` → ``loss.sum()`` → scaled backward → its ``BaseTrainer.optimizer_step``."""
    ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.utils.torch_utils import ModelEMA

    args = get_cfg(overrides=dict(optimizer="SGD", **{k: getattr(cfg, k) for k in RECIPE_FIELDS}))
    net.args = args  # what its trainer attaches: the loss reads its gains from here
    net.train()
    optimizer = BaseTrainer.build_optimizer(SimpleNamespace(args=args), net, name="SGD", lr=cfg.lr0,
                                            momentum=cfg.momentum, decay=cfg.weight_decay)
    state = SimpleNamespace(model=net, optimizer=optimizer, ema=ModelEMA(net), device=torch.device("cpu"),
                            scaler=torch.amp.GradScaler("cuda", enabled=False))

    def step(batch: Batch) -> None:
        targets = batch.targets
        data = {"img": batch.images.float() / 255, "batch_idx": targets[:, 0], "cls": targets[:, 1:2],
                "bboxes": targets[:, 2:6]}
        loss, _ = net(data)
        state.scaler.scale(loss.sum()).backward()
        BaseTrainer.optimizer_step(state)
    return step


def step_seconds(steps: dict[str, Callable[[Batch], None]], batches: list[Batch], warmup: int,
                 repeats: int) -> dict[str, list[float]]:
    """Seconds of each trainer's ``repeats`` timed steps; steps interleaved (a, b, a, b …: each step follows one
    of the other trainer), step ``k`` of each on ``batches[k % len(batches)]``, the first ``warmup`` of each
    untimed."""
    times = {name: [] for name in steps}
    for k in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step(batches[k % len(batches)])
            if k >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def throughput(args: argparse.Namespace, info: DatasetInfo, folder: Path) -> None:
    """Print the throughput and FLOP-fraction table: one row per model and image size."""
    peak = matmul_flops_per_second()
    print(f"\nmachine fp32 matmul rate: {peak / 1e9:.1f} GFLOP/s (torch.mm 2048x2048, best of 10)")
    print(f"timed: one training step per batch of {args.batch} in-memory images: uint8 -> float/255, train-mode "
          f"forward, loss, backward, clip 10, Nesterov SGD step, zero_grad, EMA update\n"
          f"  ours = Trainer.train_step + optim.optimizer_step; oracle = DetectionModel(batch) + "
          f"BaseTrainer.optimizer_step\n"
          f"  median of {args.repeats} steps each, interleaved (ours, oracle, ours, oracle …), after {args.warmup} "
          f"warm-up step(s) each; ratio = ours / oracle img/s (target >= 1); best = the same from each one's "
          f"fastest step\n  %peak = forward FLOPs x 3 x batch / step time / matmul rate")
    print(f"{'model':<8} {'imgsz':>5} {'batch':>5} {'GFLOP/img':>9} {'ours img/s':>10} {'oracle img/s':>12} "
          f"{'ratio':>6} {'best':>5} {'ours %peak':>10} {'oracle %peak':>12}")
    for name in args.models:
        for imgsz in args.imgsz:
            cfg = TrainConfig(batch=args.batch, imgsz=imgsz, epochs=1)
            ours, oracle = same_start(name, info, folder)
            flops = forward_flops_per_image(ours, imgsz)
            batches = memory_batches(info, imgsz, args.batch, args.warmup + args.repeats)
            run_dir = folder / f"throughput-{name}-{imgsz}"
            run_dir.mkdir()
            steps = {"ours": our_step(ours, info, cfg, run_dir, args.channels_last), "oracle": oracle_step(oracle, cfg)}
            seconds = step_seconds(steps, batches, args.warmup, args.repeats)
            images = len(batches[0].meta)
            rate = {k: images / statistics.median(s) for k, s in seconds.items()}
            best = min(seconds["oracle"]) / min(seconds["ours"])
            share = {k: flops * 3 * r / peak for k, r in rate.items()}
            print(f"{name:<8} {imgsz:>5} {images:>5} {flops / 1e9:>9.2f} {rate['ours']:>10.2f} "
                  f"{rate['oracle']:>12.2f} {rate['ours'] / rate['oracle']:>6.2f} {best:>5.2f} "
                  f"{share['ours']:>10.1%} {share['oracle']:>12.1%}", flush=True)


def timed_calls(fn: Callable, seconds: list[float]) -> Callable:
    """``fn`` that appends the wall seconds of each call to ``seconds``."""
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)
    return timed


def finetune_ours(weights: Path, info: DatasetInfo, cfg: TrainConfig, run_dir: Path,
                  validation_seconds: list[float]) -> Path:
    """Fine-tune our converted copy of ``weights`` with our ``Trainer``; returns its results.csv. The wall seconds
    of each per-epoch validation are appended to ``validation_seconds``."""
    model = load_model(weights)
    if model.names != info.names:
        raise SystemExit(f"error: {weights} predicts {model.names}, the dataset has {info.names}")
    seed_everything(cfg.seed)
    run_dir.mkdir()
    trainer = Trainer(model, info, cfg, run_dir, workers=0, progress=False)
    trainer.validate = timed_calls(trainer.validate, validation_seconds)
    trainer.fit()
    return run_dir / "results.csv"


def finetune_oracle(weights: Path, data_yaml: Path, cfg: TrainConfig, run_dir: Path,
                    validation_seconds: list[float]) -> Path:
    """Fine-tune ``weights`` with the oracle's own ``YOLO.train``, same recipe and augmentation values (its others
    off); its results.csv. The wall seconds of each per-epoch validation (its trainer's ``validate``) are appended
    to ``validation_seconds``."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    class TimedValidation(DetectionTrainer):
        def validate(self):
            return timed_calls(super().validate, validation_seconds)()

    augmentation = {**ORACLE_NO_AUGMENT, **dataclasses.asdict(cfg.augmentation())}
    ultralytics().YOLO(str(weights)).train(
        trainer=TimedValidation,
        data=str(data_yaml), epochs=cfg.epochs, batch=cfg.batch, imgsz=cfg.imgsz, patience=cfg.patience,
        project=str(run_dir.parent), name=run_dir.name, **{k: getattr(cfg, k) for k in RECIPE_FIELDS},
        **augmentation, **ORACLE_RECIPE)
    return run_dir / "results.csv"


def timed_with_threads(threads: int, fn, *args) -> tuple[object, float]:
    """``fn(*args)`` and its wall seconds, run with ``threads`` torch threads (the count is put back after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        return fn(*args), time.perf_counter() - start
    finally:
        torch.set_num_threads(before)


def finetune(args: argparse.Namespace, info: DatasetInfo, folder: Path) -> None:
    """Fine-tune with both trainers and print their per-epoch results side by side."""
    augmentation = dataclasses.asdict(AUGMENT_PRESETS[args.augment]) | {"close_mosaic": args.close_mosaic}
    cfg = TrainConfig(epochs=args.finetune_epochs, batch=args.batch, imgsz=args.finetune_imgsz, seed=0,
                      **augmentation)
    data_yaml = absolute_yaml(args.data, folder)
    ultralytics()
    from ultralytics.utils import NUM_THREADS  # the thread count the oracle's CPU training sets for itself
    validation: dict[str, list[float]] = {"ours": [], "oracle": []}
    ours_csv, ours_s = timed_with_threads(NUM_THREADS, finetune_ours, args.weights, info, cfg, folder / "ours",
                                          validation["ours"])
    oracle_csv, oracle_s = timed_with_threads(NUM_THREADS, finetune_oracle, args.weights, data_yaml, cfg,
                                              folder / "oracle", validation["oracle"])
    ours, theirs = read_results(ours_csv), read_results(oracle_csv)
    print(f"\nfine-tune from {args.weights}: {len(info.splits['train'])} train / {len(info.splits['val'])} val "
          f"images, {cfg.epochs} epochs, batch {cfg.batch}, imgsz {cfg.imgsz}, SGD lr0 {cfg.lr0} lrf {cfg.lrf} "
          f"momentum {cfg.momentum} nbs {cfg.nbs}, warm-up {cfg.warmup_epochs:g} epochs (capped at epochs - 1), "
          f"augmentation {args.augment}{_active(cfg)}, seed {cfg.seed}; EMA weights validated each epoch")
    print(f"{'epoch':>5} {'ours box/cls/dfl':>20} {'oracle box/cls/dfl':>20} {'ours mAP50':>10} "
          f"{'oracle mAP50':>12} {'ours mAP50-95':>13} {'oracle mAP50-95':>15} {'ours val s':>10} {'oracle val s':>12}")
    for k, epoch in enumerate(ours["epoch"]):
        losses = [" ".join(f"{run[f'train/{p}_loss'][k]:.3f}" for p in ("box", "cls", "dfl")) for run in (ours, theirs)]
        (m50, m95), (o50, o95) = ([run[c][k] for c in FINAL_COLUMNS] for run in (ours, theirs))
        print(f"{int(epoch):>5} {losses[0]:>20} {losses[1]:>20} {m50:>10.4f} {o50:>12.4f} {m95:>13.4f} {o95:>15.4f} "
              f"{validation['ours'][k]:>10.2f} {validation['oracle'][k]:>12.2f}")
    val_ours, val_oracle = (statistics.median(validation[k]) for k in ("ours", "oracle"))
    print(f"per-epoch validation ({len(info.splits['val'])} val images, imgsz {cfg.imgsz}, batch {2 * cfg.batch}, "
          f"EMA weights, with the validation loss; median over epochs): ours {val_ours:.2f} s, oracle "
          f"{val_oracle:.2f} s, ours/oracle {val_ours / val_oracle:.2f} (target <= 1)")
    print(f"final mAP50 ours {ours[FINAL_COLUMNS[0]][-1]:.4f} vs oracle {theirs[FINAL_COLUMNS[0]][-1]:.4f}; "
          f"mAP50-95 ours {ours[FINAL_COLUMNS[1]][-1]:.4f} vs oracle {theirs[FINAL_COLUMNS[1]][-1]:.4f}; wall time "
          f"(training + validation + data loading, {NUM_THREADS} torch threads each: the oracle's own CPU "
          f"choice, cpu count - 1, up to 8) ours {ours_s:.0f} s, oracle {oracle_s:.0f} s")
    print("differences the recipe cannot remove: the training order (ours: a seeded DistributedSampler; oracle: its "
          "own shuffle), the oracle's training images (bilinear resize to the long side and centring by warpAffine; "
          "ours: area resize, integer padding) and its box filter after the affine step; validation: oracle's own "
          "AP code vs pycocotools for ours (both conf 0.001, IoU 0.7, EMA weights)")


def _active(cfg: TrainConfig) -> str:
    values = {k: v for k, v in dataclasses.asdict(cfg.augmentation()).items() if v and k != "close_mosaic"}
    return f" ({', '.join(f'{k} {v}' for k, v in values.items())}, close_mosaic {cfg.close_mosaic})" if values else ""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=comma_list(str), default=["yolov8n", "yolov8s"])
    parser.add_argument("--imgsz", type=comma_list(int), default=[320, 640], help="throughput image sizes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per trainer")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per trainer first")
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-imgsz", type=int, default=320)
    parser.add_argument("--weights", type=Path, default=None,
                        help="official-format start checkpoint for the fine-tune (default: the test suite's cached "
                             "oracle-trained cplid-dev yolov8n)")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the throughput part (default: torch's; the fine-tune always uses "
                             "the count the oracle's CPU training picks for itself)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--channels-last", action="store_true", help="our trainer in the channels-last layout")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--augment", choices=tuple(AUGMENT_PRESETS), default="none",
                        help="fine-tune both trainers with this augmentation preset")
    parser.add_argument("--close-mosaic", type=int, default=10, help="epochs at the end without mosaic (both)")
    args = parse_with_quick(parser, QUICK)
    if not args.skip_finetune:
        args.weights = args.weights or cached_oracle_weights(ultralytics().__version__)
        if args.weights is None or not args.weights.is_file():
            parser.error("no fine-tune start checkpoint: pass --weights, or run the test suite once (tests/"
                         "test_evaluate.py trains and caches it), or use --skip-finetune")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = resolve_dataset(args.data)
    print(f"{info.root}: {len(info.splits['train'])} train images, {info.nc} classes; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_throughput:
            throughput(args, info, Path(tmp))
        if not args.skip_finetune:
            finetune(args, info, Path(tmp))


if __name__ == "__main__":
    main()
