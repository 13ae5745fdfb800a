"""What each deployment format costs and keeps: PyTorch eager, onnxruntime float32, float16 and INT8, same weights.

    python benchmarks/bench_export.py [--models yolov8n yolov8s] [--imgsz 320 640] [--calib 64] [--repeats 20]
    python benchmarks/bench_export.py --weights runs/train/exp/weights/best.pt --data insplad --imgsz 640

Weights: by default, per model, the oracle trained from scratch on cplid-dev with the tests' recipe
(``tests/conftest.py`` ``CPLID_RECIPE``, the model swapped; trained once, a few CPU minutes for yolov8n, kept in
``~/.cache/yolofreeze/bench-export``); ``--weights`` benchmarks a checkpoint of yours on ``--data`` instead.

Per model and input size: a static batch-1 export (Conv+BN fused, as every format here), then

- latency: median ms per image over ``--repeats`` calls at batch 1 after warm-up, on one thread (our stand-in for
  an edge core) and on all the cores this process may use; the forward only (the same letterboxed val image every
  call; preprocessing and NMS are the same for every format);
- size of the file (PyTorch: the fused float32 parameters and buffers);
- mAP@50:95 and mAP@50 on the val split (pycocotools, conf 0.001), square ``imgsz`` letterbox for every row, since a
  static export takes nothing else (``eval.py`` on a ``.pt`` uses rectangular batches: other numbers);
- INT8 once per calibration method (``--calib`` train images, seeded): the method with the best mAP@50:95 is the
  one to use; its drop against ORT float32 is the number the targets speak of.

Targets on a CPU (issue 17): ORT float32 >= 1.3x faster than PyTorch eager at batch 1; INT8 >= 1.5x faster than
ORT float32 on one thread, with an mAP@50:95 drop <= 0.015. ``--profile`` writes onnxruntime's per-operator
profile of the float32 and INT8 models (one thread) and prints where the time goes.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from yolofreeze.data import resolve_dataset  # noqa: E402
from yolofreeze.deploy.export import CALIBRATION_METHODS, calibration_images, export_onnx, quantize_int8  # noqa: E402
from yolofreeze.deploy.measure import ms_per_image  # noqa: E402
from yolofreeze.deploy.runtime import OnnxDetector, default_threads  # noqa: E402
from yolofreeze.evaluation.detect import letterboxed_input  # noqa: E402
from yolofreeze.evaluation.evaluate import evaluate  # noqa: E402
from yolofreeze.weights.checkpoints import load_model  # noqa: E402

CACHE = Path.home() / ".cache" / "yolofreeze" / "bench-export"
CPLID = ROOT.parent / "shared" / "data" / "cplid-dev"


def oracle_trained(model: str) -> Path:
    """The oracle's ``model`` trained from scratch on cplid-dev with the tests' recipe (cached), official format."""
    from conftest import CPLID_RECIPE
    from oracle import ultralytics

    ul = ultralytics()
    recipe = {**CPLID_RECIPE, "model": f"{model}.yaml"}
    key = hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()[:10]
    folder = CACHE / f"cplid-oracle-{ul.__version__}-{key}"
    weights = folder / f"cplid-{model}.pt"
    if weights.is_file():
        return weights
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.yaml"
    data.write_text(f"path: {CPLID}\ntrain: images/train\nval: images/val\nnames:\n  0: insulator\n  1: defect\n")
    print(f"training {model} with the oracle on cplid-dev (once; cached in {folder}) ...", flush=True)
    trainer = ul.YOLO(recipe.pop("model"))
    trainer.train(data=str(data), project=str(folder), name="run", exist_ok=True, verbose=False, **recipe)
    (folder / "run" / "weights" / "last.pt").replace(weights)
    return weights


def torch_latency(model, x: torch.Tensor, threads: int, repeats: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return ms_per_image(model, x, repeats)
    finally:
        torch.set_num_threads(before)


def square_map(model, val, names, imgsz: int) -> tuple[float, float]:
    """mAP@50:95 and mAP@50 with square ``imgsz`` inputs (what a static export takes)."""
    result = evaluate(model, val, names, imgsz=imgsz, batch=8, progress=False)
    return result.map50_95, result.map50


class Square(torch.nn.Module):
    """A PyTorch model presented to evaluation as a static ``imgsz`` export is: square letterboxed batches."""

    def __init__(self, model, imgsz: int):
        super().__init__()
        self.model, self.fixed_shape = model, (imgsz, imgsz)
        self.names, self.stride, self.nc, self.nms_free = model.names, model.stride, model.nc, model.nms_free

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def profile_ops(path: Path, x: torch.Tensor, repeats: int, folder: Path) -> list[tuple[str, float]]:
    """onnxruntime's profile of ``path`` on one thread: total ms per operator type, per call, largest first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.enable_profiling, options.profile_file_prefix = True, str(folder / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(repeats):
        session.run(None, {"images": x.numpy()})
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / 1000 / repeats
    return sorted(totals.items(), key=lambda kv: -kv[1])


def bench(weights: Path, data: str, imgsz: int, calib: int, repeats: int, methods: list[str], folder: Path,
          profile: bool) -> list[dict]:
    """Rows of one model at one input size (see the module docstring)."""
    info = resolve_dataset(data)
    val, names = info.splits["val"], info.names
    model = load_model(weights).eval()
    fused = copy.deepcopy(model).fuse().eval()
    x = letterboxed_input(val[0].path, imgsz, torch.device("cpu"), square=True).x
    cores = default_threads()
    rows = []

    def row(fmt: str, path: Path | None, runner, size_mb: float, note: str = "") -> dict:
        one = ms_per_image(runner(1), x, repeats) if path is not None else torch_latency(fused, x, 1, repeats)
        every = ms_per_image(runner(cores), x, repeats) if path is not None else torch_latency(fused, x, cores, repeats)
        m5095, m50 = square_map(runner(cores) if path is not None else Square(fused, imgsz), val, names, imgsz)
        found = {"format": fmt, "ms_1": one, "ms_all": every, "size_mb": size_mb, "map50_95": m5095, "map50": m50,
                 "note": note}
        print(f"  {fmt:<22} {one:8.1f} ms (1 thread) {every:8.1f} ms ({cores} threads) {size_mb:6.1f} MB "
              f"mAP50-95 {m5095:.4f} mAP50 {m50:.4f} {note}", flush=True)
        rows.append(found)
        return found

    params = sum(t.numel() * t.element_size() for t in [*fused.parameters(), *fused.buffers()]) / 2**20
    row("PyTorch fp32 (eager)", None, None, params)
    fp32 = export_onnx(model, folder / f"m{imgsz}.onnx", imgsz)
    row("ORT fp32", fp32, lambda t: OnnxDetector(fp32, threads=t), fp32.stat().st_size / 2**20)
    fp16 = export_onnx(model, folder / f"m{imgsz}.fp16.onnx", imgsz, half=True)
    row("ORT fp16", fp16, lambda t: OnnxDetector(fp16, threads=t), fp16.stat().st_size / 2**20)
    train = info.splits.get("train") or val
    images, _ = calibration_images([r.path for r in train], imgsz, calib)
    for method in methods:
        start = time.perf_counter()
        try:
            int8 = quantize_int8(fp32, folder / f"m{imgsz}.{method}.int8.onnx", images, method)
        except ValueError as refused:  # a histogram method that would not fit in memory
            print(f"  ORT INT8 ({method}): {refused}", flush=True)
            continue
        row(f"ORT INT8 ({method})", int8, lambda t, p=int8: OnnxDetector(p, threads=t), int8.stat().st_size / 2**20,
            f"calibrated on {len(images)} images in {time.perf_counter() - start:.0f} s")
    if profile:
        best = max((r for r in rows if r["format"].startswith("ORT INT8")), key=lambda r: r["map50_95"])
        method = best["format"].split("(")[1].rstrip(")")
        for path in (fp32, folder / f"m{imgsz}.{method}.int8.onnx"):
            ops = profile_ops(path, x, repeats, folder)
            total = sum(ms for _, ms in ops)
            print(f"  profile {path.name} (1 thread, {total:.1f} ms of kernels per call): "
                  + ", ".join(f"{op} {ms:.1f} ms ({ms / total:.0%})" for op, ms in ops[:6]), flush=True)
    return rows


def print_table(title: str, rows: list[dict]) -> None:
    base = {r["format"]: r for r in rows}
    fp32, eager = base["ORT fp32"], base["PyTorch fp32 (eager)"]
    print(f"\n### {title}\n")
    print("| format | ms/img 1 thread | ms/img all threads | speed-up vs ORT fp32 (1 thread) | size MB | "
          "mAP50-95 | mAP50 | drop vs ORT fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['format']} | {r['ms_1']:.1f} | {r['ms_all']:.1f} | {fp32['ms_1'] / r['ms_1']:.2f}x | "
              f"{r['size_mb']:.1f} | {r['map50_95']:.4f} | {r['map50']:.4f} | "
              f"{fp32['map50_95'] - r['map50_95']:+.4f} |")
    int8 = max((r for r in rows if r["format"].startswith("ORT INT8")), key=lambda r: r["map50_95"])
    print(f"\nORT fp32 vs PyTorch eager: {eager['ms_1'] / fp32['ms_1']:.2f}x (1 thread), "
          f"{eager['ms_all'] / fp32['ms_all']:.2f}x (all threads), target >= 1.3x; best INT8 ({int8['format']}) vs "
          f"ORT fp32 on 1 thread: {fp32['ms_1'] / int8['ms_1']:.2f}x, target >= 1.5x; its mAP50-95 drop "
          f"{fp32['map50_95'] - int8['map50_95']:+.4f}, target <= 0.015")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolov8n", "yolov8s"], help="oracle-trained cplid models")
    parser.add_argument("--weights", default=None, help="benchmark this checkpoint instead (with --data)")
    parser.add_argument("--data", default=None, help="dataset of --weights (default: cplid-dev)")
    parser.add_argument("--imgsz", nargs="+", type=int, default=[320, 640])
    parser.add_argument("--calib", type=int, default=64, help="calibration images for INT8")
    parser.add_argument("--methods", nargs="+", default=list(CALIBRATION_METHODS), choices=CALIBRATION_METHODS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="onnxruntime per-operator profile (1 thread)")
    args = parser.parse_args()
    data = args.data or str(CPLID / "data.yaml")
    cases = [(Path(args.weights).name, Path(args.weights))] if args.weights else [
        (f"{m} (oracle-trained on cplid-dev)", oracle_trained(m)) for m in args.models]
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {default_threads()} cores, "
          f"data {data}", flush=True)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, weights in cases:
            for imgsz in args.imgsz:
                print(f"{name} at {imgsz}:", flush=True)
                tables.append((f"{name}, {imgsz} px", bench(weights, data, imgsz, args.calib, args.repeats,
                                                             args.methods, Path(tmp), args.profile)))
    for title, rows in tables:
        print_table(title, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
