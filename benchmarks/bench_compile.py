"""What ``--compile`` costs and saves: compile time against the per-step saving of a torch.compile'd training step.

    python benchmarks/bench_compile.py [--models yolov8n] [--imgsz 320] [--freeze 0,9] [--batch 16] [--repeats 5]
        [--threads N] [--data DATA.yaml] [--train-images 80]

For each model, image size and freeze, two of our trainers from the same start (the oracle's seeded yaml build for
the dataset's classes, converted, as in bench_train.py), one eager and one with ``compile=True``, run the same
in-memory batches (square ``imgsz``, no augmentation): one step = ``Trainer.train_step`` + ``optim.optimizer_step``.
The compiled trainer's first step compiles (Inductor; timed as "compile s", the step included); then both run
``--repeats`` steps interleaved (eager, compiled, eager …) after one warm-up step each; the table gives the median
step times, the saving per step and the break-even: how many steps (and epochs of ``--train-images`` images) a
run needs before compiling has paid for itself. A negative saving never pays.

Expected duration on a 2-core CPU: yolov8n at 320, freeze 0 and 9 ≈ 6 min (most of it compiling).
"""
from __future__ import annotations

import argparse
import math
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

from bench_data_eval import SHARED  # noqa: E402
from bench_train import comma_list, memory_batches, same_start, step_seconds  # noqa: E402
from gpu_check import step_timer  # noqa: E402
from yolofreeze.data import resolve_dataset  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan  # noqa: E402
from yolofreeze.training.optim import TrainConfig  # noqa: E402
from yolofreeze.training.trainer import Trainer, compile_unavailable  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=comma_list(str), default=["yolov8n"])
    parser.add_argument("--imgsz", type=comma_list(int), default=[320])
    parser.add_argument("--freeze", type=comma_list(int), default=[0, 9])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--train-images", type=int, default=80, help="images per epoch for the break-even in epochs")
    args = parser.parse_args()
    if reason := compile_unavailable("cpu"):
        sys.exit(f"error: {reason}")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = resolve_dataset(args.data)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch {args.batch}; step = train_step + "
          f"optimizer_step; median of {args.repeats} interleaved steps after 1 warm-up each")
    print(f"{'model':<8} {'imgsz':>5} {'freeze':>6} {'compile s':>9} {'eager ms':>9} {'compiled ms':>11} {'speed':>6} "
          f"{'saving ms':>9} {'pays after':>16}")
    steps_per_epoch = math.ceil(args.train_images / args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.models:
            for imgsz in args.imgsz:
                batches = memory_batches(info, imgsz, args.batch, args.repeats + 2)
                for freeze in args.freeze:
                    trainers = {}
                    for compiled in (False, True):
                        start_dir = folder / f"{name}-{imgsz}-{freeze}-{compiled}"
                        start_dir.mkdir(parents=True)
                        model = same_start(name, info, start_dir)[0]
                        run_dir = start_dir / "run"
                        run_dir.mkdir()
                        cfg = TrainConfig(batch=args.batch, imgsz=imgsz, epochs=1)
                        trainers[compiled] = Trainer(model, info, cfg, run_dir, FreezePlan.prefix(freeze, model),
                                                     workers=0, progress=False, grad_norms=False, compile=compiled)
                    steps = {"eager": step_timer(trainers[False]), "compiled": step_timer(trainers[True])}
                    start = time.perf_counter()
                    steps["compiled"](batches[-1])
                    compile_seconds = time.perf_counter() - start
                    seconds = step_seconds(steps, batches, 1, args.repeats)
                    eager, fast = (statistics.median(seconds[k]) for k in ("eager", "compiled"))
                    saving = eager - fast
                    extra = compile_seconds - fast  # what the first step cost beyond a compiled step
                    pays = (f"{math.ceil(extra / saving)} steps, {math.ceil(extra / saving / steps_per_epoch)} ep"
                            if saving > 0 else "never")
                    print(f"{name:<8} {imgsz:>5} {freeze:>6} {compile_seconds:>9.1f} {eager * 1000:>9.0f} "
                          f"{fast * 1000:>11.0f} {eager / fast:>6.2f} {saving * 1000:>9.0f} {pays:>16}", flush=True)


if __name__ == "__main__":
    main()
