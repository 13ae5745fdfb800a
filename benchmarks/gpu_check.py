"""The GPU acceptance check: the CUDA paths that no CPU test can prove, in one command and one table.

    bash benchmarks/gpu_check.sh [--dry-run] [--data ../shared/data/cplid-dev/data.yaml] [--epochs 3]
        [--imgsz 640] [--keep DIR]

Checks, in order (each a row: value, target, PASS / FAIL / INFO):

1. AMP loss parity: one cplid-dev batch through a seeded yolov8n in float32 and under float16 autocast (same
   weights, same batch): the relative difference of the total loss and of each part (target <= 1%).
2. ``train.py`` fine-tunes for ``--epochs`` epochs with AMP (float16, gradient scaler): ``none``, and ``fr2`` with
   ``--cache-frozen ram``; each must finish with finite losses and mAP, and (on CUDA) the CUDA memory columns of
   ``results.csv`` filled. INFO rows: the peak reserved memory of each, ``fr2``'s relative to ``none``, and the
   frozen-prefix cache's epoch-time ratio (``fr2`` cached / ``none``, median of the epochs after the first), and
   ``none``'s per-epoch validation time against its training pass.
3. ``benchmarks/bench_freeze.py --device cuda`` (yolov8n and yolov8s at 640): its PASS / FAIL lines (``fr2`` peak
   reserved <= 0.75x ``none``; gradient-norm logging <= 5% of a step) become rows.
4. The layout and ``--compile`` on the device (INFO rows, the evidence for their defaults on CUDA): one step of
   a seeded yolov8n in float32 (TF32 off) in NCHW and in channels-last, each gradient's relative distance from the
   same step in float64 (on the CPU channels-last is 15-600x further off than NCHW, from PyTorch's CPU batch-norm:
   tests/training/test_channels_last.py);
   then our training step (``Trainer.train_step`` + ``optimizer_step``, AMP float16, batch 16, in-memory batches,
   median of 5 interleaved steps after one warm-up) of yolov8n and yolov8s in NCHW and channels-last, and
   yolov8n compiled: the compile time and after how many steps it pays.

Exits 1 when any row FAILs, 0 otherwise. ``--dry-run`` runs every step on the CPU at 64 px for 1 epoch with the
same code (CUDA-only targets become SKIP rows): CI runs it so the script cannot rot. On one H200 the full check is
meant to take a few minutes (target <= 8).
"""
from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

from yolofreeze.data import Batch, build_dataloader, resolve_dataset  # noqa: E402
from yolofreeze.freezing.plan import FreezePlan  # noqa: E402
from yolofreeze.model import build_model  # noqa: E402
from yolofreeze.training.loss import build_loss  # noqa: E402
from yolofreeze.training.optim import TrainConfig, optimizer_step  # noqa: E402
from yolofreeze.training.trainer import Trainer, compile_unavailable  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "cplid-dev" / "data.yaml"
LOSS_PARITY = 0.01  # AMP against float32, relative, per loss part


def row(check: str, value: str, target: str, verdict: str) -> dict[str, str]:
    """One line of the table."""
    return {"check": check, "value": value, "target": target, "verdict": verdict}


def loss_parity(data_yaml: Path, imgsz: int, device: torch.device, dtype: torch.dtype) -> list[dict]:
    """Check 1: the loss of one batch in float32 and under autocast, same weights."""
    info = resolve_dataset(data_yaml)
    torch.manual_seed(0)
    model = build_model("yolov8n", names=info.names).to(device).train()
    criterion = build_loss(model)
    batch = next(iter(build_dataloader(info.splits["train"][:16], imgsz, 16)))
    images, targets = batch.images.to(device).float() / 255, batch.targets.to(device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    losses = {}
    for label, autocast in (("fp32", None), ("amp", dtype)):
        model.load_state_dict(state)  # batch-norm statistics move in a train-mode forward: start both alike
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            outputs = model(images)
        _, parts = criterion(outputs, targets, tuple(images.shape[-2:]))
        losses[label] = {name: float(value) for name, value in parts.items()}
    rows = []
    for name, reference in losses["fp32"].items():
        difference = abs(losses["amp"][name] - reference) / max(abs(reference), 1e-12)
        rows.append(row(f"AMP {str(dtype).removeprefix('torch.')} loss parity: {name}",
                        f"{100 * difference:.3f}%", f"<= {100 * LOSS_PARITY:.0f}%",
                        "PASS" if difference <= LOSS_PARITY else "FAIL"))
    return rows


def read_results(path: Path) -> dict[str, list[float]]:
    """``results.csv`` as columns of floats."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {key.strip(): [float(r[key]) for r in rows] for key in rows[0]} if rows else {}


def train_runs(data_yaml: Path, args: argparse.Namespace, device: str, amp: str, folder: Path) -> list[dict]:
    """Check 2: ``none`` and cached ``fr2`` with AMP through ``train.py``; their rows."""
    common = [sys.executable, str(ROOT / "train.py"), "--data", str(data_yaml), "--model", "yolov8n", "--weights",
              "none", "--epochs", str(args.epochs), "--imgsz", str(args.imgsz), "--batch", "16", "--workers",
              str(args.workers), "--device", device, "--amp", amp, "--project", str(folder)]
    rows, results = [], {}
    for name, extra in (("none", ["--freeze", "none"]), ("fr2-cached", ["--freeze", "fr2", "--cache-frozen", "ram"])):
        started = time.perf_counter()
        done = subprocess.run([*common, *extra, "--name", name], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            rows.append(row(f"train {name} with AMP", f"exit {done.returncode}: {last}", "finishes", "FAIL"))
            continue
        columns = read_results(folder / name / "results.csv")
        results[name] = columns
        finite = all(math.isfinite(v) for key in ("train/box_loss", "train/cls_loss", "metrics/mAP50(B)")
                     for v in columns[key])
        rows.append(row(f"train {name} with AMP, {args.epochs} epochs", f"{seconds:.0f} s, mAP50 "
                        f"{columns['metrics/mAP50(B)'][-1]:.3f}", "finite losses and mAP", "PASS" if finite else "FAIL"))
        reserved = columns["memory/cuda_reserved_mb"]
        if device == "cuda":
            filled = all(math.isfinite(v) and v > 0 for v in reserved)
            rows.append(row(f"CUDA memory columns of {name}", f"peak reserved {max(reserved):.0f} MiB",
                            "filled every epoch", "PASS" if filled else "FAIL"))
        else:
            rows.append(row(f"CUDA memory columns of {name}", "no CUDA", "filled every epoch", "SKIP"))
    if len(results) == 2:
        def steady(columns: dict[str, list[float]]) -> float:
            seconds = columns["epoch_seconds"]
            return statistics.median(seconds[1:] or seconds)
        ratio = steady(results["fr2-cached"]) / steady(results["none"])
        rows.append(row("epoch time fr2 --cache-frozen ram / none", f"{ratio:.2f}x", "(measured)", "INFO"))
        validation = statistics.median(results["none"]["val_seconds"]) / steady(results["none"])
        rows.append(row("validation / training time per epoch (none; pycocotools scores on the CPU)",
                        f"{validation:.2f}x", "(measured)", "INFO"))
        if device == "cuda":
            memory = max(results["fr2-cached"]["memory/cuda_reserved_mb"]) / max(results["none"]["memory/cuda_reserved_mb"])
            rows.append(row("peak reserved fr2 cached / none (training)", f"{memory:.2f}x", "(measured)", "INFO"))
    return rows


def bench_freeze(args: argparse.Namespace, device: str) -> list[dict]:
    """Check 3: ``bench_freeze.py`` on the device; its PASS / FAIL lines as rows."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_freeze.py"), "--device", device]
    command += ["--quick"] if args.dry_run else ["--models", "yolov8n,yolov8s", "--imgsz", "640"]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout, flush=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [row("bench_freeze.py", f"exit {done.returncode}: {last}", "runs", "FAIL")]
    rows = []
    for line in done.stdout.splitlines():
        verdict, _, text = line.partition(" ")
        if verdict in ("PASS", "FAIL", "SKIP"):
            rows.append(row(f"bench_freeze: {text}", "", "", verdict if device == "cuda" or verdict != "FAIL"
                            else "INFO"))  # the CPU target of a dry run is not what this check is for
    return rows or [row("bench_freeze.py", "no PASS/FAIL line", "a verdict per model", "FAIL")]


def layout_gradient_gaps(data_yaml: Path, imgsz: int, device: torch.device) -> list[dict]:
    """Check 4a: one float32 step of a seeded yolov8n in each layout against the same step in float64 (TF32 off)."""
    info = resolve_dataset(data_yaml)
    batch = next(iter(build_dataloader(info.splits["train"][:16], imgsz, 16)))
    torch.manual_seed(0)
    start = build_model("yolov8n", names=info.names).train()
    criterion = build_loss(start)

    def gradients(dtype: torch.dtype, layout: torch.memory_format) -> torch.Tensor:
        model = copy.deepcopy(start).to(device, dtype).to(memory_format=layout)
        images = batch.images.to(device, memory_format=layout).to(dtype) / 255
        total, _ = criterion(model(images), batch.targets.to(device), tuple(images.shape[-2:]))
        total.backward()
        return torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        truth = gradients(torch.float64, torch.contiguous_format)
        gaps = {name: float((gradients(torch.float32, layout) - truth).norm() / truth.norm())
                for name, layout in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last))}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return [row(f"float32 gradient vs float64, {name} (yolov8n, {imgsz} px)", f"{gap:.1e}", "(measured)", "INFO")
            for name, gap in gaps.items()]


def step_timer(trainer: Trainer) -> Callable[[Batch], float]:
    """One timed training step of ``trainer`` (``train_step`` + ``optimizer_step``, with its scaler), synchronised."""
    trainer.plan.set_train_mode(trainer.model)
    trainer.folded = trainer.fold_prefix()
    scaler = trainer.scaler if trainer.scaler.is_enabled() else None

    def step(batch: Batch) -> float:
        synchronize(trainer.device)
        start = time.perf_counter()
        trainer.train_step(batch, 0, 0)
        optimizer_step(trainer.model, trainer.optimizer, trainer.ema, scaler)
        synchronize(trainer.device)
        return time.perf_counter() - start
    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layout_and_compile(data_yaml: Path, args: argparse.Namespace, device: str, folder: Path) -> list[dict]:
    """Check 4b: our training step in NCHW, channels-last and (yolov8n) compiled; median step times and ratios."""
    info = resolve_dataset(data_yaml)
    repeats = 1 if args.dry_run else 5
    batches = list(islice(build_dataloader(info.splits["train"], args.imgsz, 16, workers=0), 2))
    rows = []
    for name in ("yolov8n",) if args.dry_run else ("yolov8n", "yolov8s"):
        variants = {"NCHW": {}, "channels-last": {"channels_last": True}}
        reason = ("dry run (benchmarks/bench_compile.py measures the CPU)" if args.dry_run
                  else compile_unavailable(device))
        if name == "yolov8n" and not reason:
            variants["compiled"] = {"compile": True}
        steps, first = {}, {}
        for variant, levers in variants.items():
            torch.manual_seed(0)
            model = build_model(name, names=info.names)
            run_dir = folder / f"step-{name}-{variant}"
            run_dir.mkdir(parents=True)
            trainer = Trainer(model, info, TrainConfig(epochs=1, batch=16, imgsz=args.imgsz), run_dir,
                              FreezePlan.prefix(0, model), device=device, workers=0, progress=False,
                              grad_norms=False, **levers)
            steps[variant] = step_timer(trainer)
            first[variant] = steps[variant](batches[-1])  # warm-up; the compiled trainer compiles here
        seconds = {variant: [] for variant in steps}
        for k in range(repeats):  # interleaved: NCHW, channels-last, compiled, NCHW …
            for variant, step in steps.items():
                seconds[variant].append(step(batches[k % len(batches)]))
        median = {variant: statistics.median(times) for variant, times in seconds.items()}
        base = median["NCHW"]
        rows.append(row(f"training step {name} {args.imgsz} px, batch 16, NCHW", f"{base * 1000:.1f} ms",
                        "(measured)", "INFO"))
        rows.append(row(f"training step {name}: channels-last speed-up (NCHW time / its time)",
                        f"{base / median['channels-last']:.2f}x", "(measured)", "INFO"))
        if "compiled" in median:
            saving = base - median["compiled"]
            extra = first["compiled"] - median["compiled"]
            pays = f"pays after {math.ceil(extra / saving)} steps" if saving > 0 else "never pays"
            rows.append(row(f"--compile {name}: speed-up (NCHW time / compiled time)",
                            f"{base / median['compiled']:.2f}x, compile {first['compiled']:.0f} s, {pays}",
                            "(measured)", "INFO"))
        elif name == "yolov8n":
            rows.append(row(f"--compile {name}", reason, "", "SKIP"))
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = ["| check | value | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['value']} | {r['target']} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def exit_code(rows: list[dict]) -> int:
    """1 when a row failed, else 0."""
    return 1 if any(r["verdict"] == "FAIL" for r in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU, 64 px, 1 epoch (CI)")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (1 with --dry-run)")
    parser.add_argument("--imgsz", type=int, default=None, help="default 640 (64 with --dry-run)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"error: {args.data} not found: the check trains on cplid-dev (../shared/data/cplid-dev)",
              file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("error: no CUDA device; use --dry-run to exercise the script on the CPU", file=sys.stderr)
        return 2
    args.epochs = args.epochs or (1 if args.dry_run else 3)
    args.imgsz = args.imgsz or (64 if args.dry_run else 640)
    args.workers = 0 if args.dry_run else args.workers
    device = "cuda" if cuda else "cpu"
    started = time.perf_counter()
    print(f"GPU check on {torch.cuda.get_device_name(0) if cuda else 'CPU (dry run)'}, torch {torch.__version__}",
          flush=True)
    rows = loss_parity(args.data, args.imgsz, torch.device(device), torch.float16)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        rows += train_runs(args.data, args, device, "fp16", folder)
    rows += bench_freeze(args, device)
    rows += layout_gradient_gaps(args.data, args.imgsz, torch.device(device))
    with tempfile.TemporaryDirectory() as tmp:
        rows += layout_and_compile(args.data, args, device, Path(tmp))
    rows.append(row("wall time", f"{(time.perf_counter() - started) / 60:.1f} min", "<= 8 min on one GPU", "INFO"))
    print(format_table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
