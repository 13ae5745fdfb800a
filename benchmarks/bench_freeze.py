"""What layer freezing buys per training step: time, saved activations and peak memory for each strategy.

    python benchmarks/bench_freeze.py [--models yolov8n,yolov8s,yolov10n,yolov10s]
        [--strategies none,fr1,fr2,backbone,fr3] [--imgsz 640] [--batch 8 on CPU, 16 on CUDA] [--nc 80]
        [--repeats 5] [--warmup 1] [--device cpu|cuda] [--threads N] [--quick]

For every model and strategy (a ``--freeze`` preset: ``none`` is full fine-tuning) one full training step as the
trainer runs it: train-mode forward (frozen batch-norm in eval mode), loss, backward, clip the gradient norm to 10,
Nesterov SGD step, zero the gradients (``optim.optimizer_step`` without EMA). All strategies of a model start from
the same seeded random weights (pretrained weights change nothing here) and see the same fixed synthetic batch
(random pixels, three boxes per image), so they differ only in what is frozen.

Columns:

- step ms: median wall time of ``--repeats`` steps after ``--warmup`` untimed ones per strategy. Strategies are
  interleaved (one step of each in turn, the starting strategy rotating every round) so that a CPU shared with
  other work slows them alike.
- grads+mom MiB: gradients and SGD momentum of the trainable parameters, measured by
  ``yolofreeze.freezing.memory.profile_training_step``; saved act. MiB: the activations autograd keeps for backward, counted
  by the same profile (each storage once, parameters and the input batch left out).
- peak MiB. CUDA: ``torch.cuda.max_memory_reserved`` and ``max_memory_allocated`` over two full steps of that
  strategy alone (reset after emptying the cache; the model, its optimiser and the batch are the only tensors on
  the device). CPU: the profile's estimate, parameters + gradients + momentum + saved activations.
- ``x none``: the value divided by the same model's ``none`` value.
- norms ms (%): the time each step spends logging gradient norms (``GradNormMonitor.record``, on by default in
  training, so included in step ms), median, and as a share of the step: the hook overhead (target <= 5%).

Targets, printed as PASS/FAIL lines: on CUDA, ``fr2`` peak reserved <= 0.75x ``none``; on CPU, ``fr2`` step time
<= 0.7x ``none``.

Expected duration: ``--quick`` (yolov8n, 160 px, batch 8, 2 steps) ≈ 20 s on one CPU thread; the default CPU run
at 640 px is long (each yolov8s step with batch 8 takes seconds), a CUDA run a few minutes.
"""
from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quick import parse_with_quick  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan  # noqa: E402
from yolofreeze.training.loss import build_loss  # noqa: E402
from yolofreeze.model import YOLO, build_model  # noqa: E402
from yolofreeze.freezing.gradnorm import GradNormMonitor  # noqa: E402
from yolofreeze.freezing.memory import profile_training_step  # noqa: E402
from yolofreeze.training.optim import TrainConfig, build_optimizer, optimizer_step  # noqa: E402

MIB = 2**20
QUICK = dict(models=["yolov8n"], imgsz=160, repeats=2, warmup=1)
TARGETS = {"cuda": ("peak_reserved", 0.75, "peak reserved"), "cpu": ("step_seconds", 0.7, "step time")}
BOXES = torch.tensor([[1, 0.5, 0.5, 0.3, 0.4], [0, 0.25, 0.3, 0.2, 0.25], [2, 0.7, 0.7, 0.15, 0.1]])


def comma_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def synthetic_batch(batch: int, imgsz: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images ``(batch, 3, imgsz, imgsz)`` in [0, 1] and :data:`BOXES` in every image ``(3 batch, 6)``."""
    images = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    targets = torch.cat([torch.cat([torch.full((len(BOXES), 1), float(i)), BOXES], 1) for i in range(batch)])
    return images.to(device), targets.to(device)


class Strategy:
    """One frozen variant of a model on ``device``: its plan, loss and optimiser, and one full training step."""

    def __init__(self, base: YOLO, spec: str, cfg: TrainConfig, device: torch.device):
        self.model = copy.deepcopy(base).to(device)
        self.plan = FreezePlan.parse(spec, self.model)
        self.plan.apply(self.model)
        self.plan.set_train_mode(self.model)
        self.cfg, self.device = cfg, device
        self.criterion = build_loss(self.model)
        self.optimizer = self.new_optimizer(self.model)
        self.monitor = GradNormMonitor(self.model)
        self.steps, self.norm_seconds = 0, []

    def new_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg, self.plan.trainable)

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        """Forward, loss, backward, gradient-norm logging, clip, SGD step, zero_grad; waits for the device."""
        total, _ = self.criterion(self.model(images), targets, tuple(images.shape[-2:]))
        total.backward()
        self.steps += 1
        optimizer_step(self.model, self.optimizer, None, on_norms=self.log_norms)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log_norms(self, params, norms, total) -> None:
        """The trainer's gradient-norm hook, timed (its rows are dropped: only the cost matters here)."""
        start = time.perf_counter()
        self.monitor.record(params, norms, total, step=self.steps, epoch=1)
        self.norm_seconds.append(time.perf_counter() - start)
        self.monitor.rows.clear()


def cuda_peaks(make: Callable[[], Strategy], images: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """``(max reserved, max allocated)`` bytes over two steps of a fresh strategy, alone on the device."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    strategy = make()
    for _ in range(2):  # the first step creates the momentum buffers
        strategy.step(images, targets)
    return torch.cuda.max_memory_reserved(), torch.cuda.max_memory_allocated()


def measure_memory(base: YOLO, specs: list[str], cfg: TrainConfig, device: torch.device, images: torch.Tensor,
                   targets: torch.Tensor) -> dict[str, dict]:
    """Per strategy: the profile's breakdown and peak bytes (CUDA measured, CPU the estimate), one at a time."""
    rows = {}
    for spec in specs:
        strategy = Strategy(base, spec, cfg, device)
        breakdown = profile_training_step(strategy.model, strategy.criterion, images, targets,
                                          strategy.new_optimizer, strategy.plan.set_train_mode)
        rows[spec] = {"plan": strategy.plan, "trainable": sum(p.numel() for p in strategy.model.parameters()
                                                               if p.requires_grad),
                      "grads_and_momentum": breakdown.gradients_bytes + breakdown.optimizer_state_bytes,
                      "saved": breakdown.saved_activations_bytes}
        del strategy
        if device.type == "cuda":
            reserved, allocated = cuda_peaks(lambda: Strategy(base, spec, cfg, device), images, targets)
            rows[spec].update(peak_reserved=reserved, peak_allocated=allocated)
        else:
            rows[spec].update(peak_estimate=breakdown.estimated_total_bytes)
    return rows


def step_times(strategies: dict[str, Strategy], images: torch.Tensor, targets: torch.Tensor, warmup: int,
               repeats: int) -> dict[str, list[float]]:
    """Seconds of each strategy's timed steps; one step of each per round, the first strategy rotating."""
    names = list(strategies)
    times = {name: [] for name in names}
    for k in range(warmup + repeats):
        for name in names[k % len(names):] + names[:k % len(names)]:
            start = time.perf_counter()
            strategies[name].step(images, targets)
            if k >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def ratio(rows: dict[str, dict], spec: str, key: str) -> float | None:
    return rows[spec][key] / rows["none"][key] if "none" in rows and rows["none"][key] else None


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(name: str, rows: dict[str, dict], device: torch.device) -> None:
    peaks = ["peak_reserved", "peak_allocated"] if device.type == "cuda" else ["peak_estimate"]
    titles = {"peak_reserved": "peak reserved MiB", "peak_allocated": "peak allocated MiB",
              "peak_estimate": "est. total MiB"}
    header = ["model", "strategy", "frozen blocks", "trainable params", "step ms", "x none", "norms ms (%)",
              "grads+mom MiB", "saved act. MiB", "x none"] + [part for key in peaks for part in (titles[key], "x none")]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|")
    for spec, row in rows.items():
        cells = [name, spec, row["plan"].label, f"{row['trainable']:,}", f"{1000 * row['step_seconds']:.1f}",
                 cell(ratio(rows, spec, "step_seconds")),
                 f"{1000 * row['norm_seconds']:.2f} ({100 * row['norm_seconds'] / row['step_seconds']:.1f}%)",
                 f"{row['grads_and_momentum'] / MIB:.1f}",
                 f"{row['saved'] / MIB:.1f}", cell(ratio(rows, spec, "saved"))]
        for key in peaks:
            cells += [f"{row[key] / MIB:.1f}", cell(ratio(rows, spec, key))]
        print("| " + " | ".join(cells) + " |", flush=True)


def target_lines(name: str, rows: dict[str, dict], device: torch.device) -> list[str]:
    """``PASS``/``FAIL`` for this device's target, or why it cannot be checked."""
    key, limit, what = TARGETS[device.type]
    if "fr2" not in rows or "none" not in rows:
        return [f"SKIP {name}: the target compares fr2 with none; run both strategies"]
    value = ratio(rows, "fr2", key)
    verdict = "PASS" if value <= limit else "FAIL"
    overhead = max(row["norm_seconds"] / row["step_seconds"] for row in rows.values())
    return [f"{verdict} {name} {device.type.upper()} fr2 {what} {value:.2f}x none (target <= {limit}x)",
            f"{'PASS' if overhead <= 0.05 else 'FAIL'} {name} gradient-norm logging at most {100 * overhead:.2f}% "
            f"of a step (target <= 5%)"]


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> list[str]:
    """Measure and print one model's table; return its target lines."""
    torch.manual_seed(0)
    base = build_model(name, nc=args.nc)
    cfg = TrainConfig(batch=args.batch, imgsz=args.imgsz)
    images, targets = synthetic_batch(args.batch, args.imgsz, device)
    rows = measure_memory(base, args.strategies, cfg, device, images, targets)
    strategies = {spec: Strategy(base, spec, cfg, device) for spec in args.strategies}
    for spec, seconds in step_times(strategies, images, targets, args.warmup, args.repeats).items():
        rows[spec]["step_seconds"] = statistics.median(seconds)
        rows[spec]["norm_seconds"] = statistics.median(strategies[spec].norm_seconds[args.warmup:])
    print_table(name, rows, device)
    return target_lines(name, rows, device)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=comma_list, default=["yolov8n", "yolov8s", "yolov10n", "yolov10s"])
    parser.add_argument("--strategies", type=comma_list, default=["none", "fr1", "fr2", "backbone", "fr3"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=None, help="images per step (default: 8 on CPU, 16 on CUDA)")
    parser.add_argument("--nc", type=int, default=80, help="classes of the detection head")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per strategy")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per strategy first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parse_with_quick(parser, QUICK)
    device = torch.device(args.device)
    if device.type not in TARGETS or (device.type == "cuda" and not torch.cuda.is_available()):
        parser.error(f"--device {args.device}: use cpu, or cuda on a machine with a CUDA GPU")
    if args.batch is None:
        args.batch = 16 if device.type == "cuda" else 8
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; imgsz {args.imgsz}, batch {args.batch}, nc {args.nc}, random "
          f"weights (seed 0), one fixed synthetic batch; median of {args.repeats} interleaved steps after "
          f"{args.warmup} warm-up step(s) per strategy\n")
    lines = []
    for name in args.models:
        lines += run_model(name, args, device)
        print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
