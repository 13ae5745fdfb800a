"""Inference latency per image, yolofreeze vs the Ultralytics oracle, same weights, same process, same threads.

    python benchmarks/bench_inference.py [--models yolov8n yolov10n] [--batches 1 16] [--imgsz 640] [--repeats 5]

Both models come from the same release-format checkpoint (the oracle's yaml build, saved with its
strip_optimizer, converted by us). Timed: the eval-mode forward pass (decoded output) plus
post-processing (v8: NMS, conf 0.25; v10: top-k), on random images in [0, 1], three ways: both unfused; both with
Conv+BN fusion; ours as evaluation and prediction run it (:func:`yolofreeze.model.inference_copy`: fused and
channels-last, fed channels-last images) against the oracle fused (what its predictor runs). Prints a table with
ms per image and the speed ratio oracle ms / ours ms (target >= 1.15 on the ``inference`` rows), and the share of
the machine's fp32 matmul rate each reaches (forward FLOPs / time).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("YOLO_OFFLINE", "1")

from oracle import build_oracle, save_release  # noqa: E402
from yolofreeze.weights.checkpoints import convert_official  # noqa: E402
from yolofreeze.evaluation.postprocess import postprocess  # noqa: E402
from yolofreeze.model import inference_copy  # noqa: E402
from bench_train import forward_flops_per_image, matmul_flops_per_second  # noqa: E402


def time_pair(fn_a, fn_b, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median milliseconds per image of ``fn_a(x)`` and ``fn_b(x)``, runs interleaved (a, b, a, b …) after warm-ups."""
    times = ([], [])
    with torch.inference_mode():
        for fn in (fn_a, fn_b, fn_a, fn_b):
            fn(x)
        for _ in range(repeats):
            for fn, bucket in zip((fn_a, fn_b), times):
                start = time.perf_counter()
                fn(x)
                bucket.append(time.perf_counter() - start)
    return tuple(statistics.median(t) * 1000 / x.shape[0] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["yolov8n", "yolov10n"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from ultralytics.utils.nms import non_max_suppression

    peak = matmul_flops_per_second()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, input {args.imgsz}x{args.imgsz}, "
          f"fp32 matmul rate {peak / 1e9:.1f} GFLOP/s")
    print(f"{'model':<9} {'variant':<10} {'batch':>5} {'ours ms/img':>12} {'oracle ms/img':>14} {'speed':>6} "
          f"{'ours %peak':>10} {'oracle %peak':>12}")
    for name in args.models:
        oracle = build_oracle(name)
        with tempfile.TemporaryDirectory() as tmp:
            ours = convert_official(save_release(oracle, Path(tmp) / f"{name}.pt")).eval()
        oracle = oracle.half().float().eval()
        v10 = name.startswith("yolov10")
        if v10:
            oracle.model[-1].end2end = True  # the released v10 behaviour: one-to-one branch, top-k, no NMS

        def run_ours(x, model=ours):
            return postprocess(model(x), v10)

        def run_oracle(x, model=oracle):
            return non_max_suppression(model(x)[0], 0.25, 0.7, end2end=v10)

        flops = forward_flops_per_image(ours, args.imgsz)
        fused_oracle = copy.deepcopy(oracle).fuse(verbose=False)
        variants = {"unfused": (ours, oracle, torch.contiguous_format),
                    "fused": (copy.deepcopy(ours).fuse(), fused_oracle, torch.contiguous_format),
                    "inference": (inference_copy(ours), fused_oracle, torch.channels_last)}
        for variant, (mine_model, their_model, layout) in variants.items():
            for batch in args.batches:
                x = torch.rand(batch, 3, args.imgsz, args.imgsz)
                mine, theirs = time_pair(lambda t: run_ours(t.contiguous(memory_format=layout), mine_model),
                                         lambda t: run_oracle(t, their_model), x, args.repeats)
                share = [flops / (ms / 1000) / peak for ms in (mine, theirs)]
                print(f"{name:<9} {variant:<10} {batch:>5} {mine:>12.1f} {theirs:>14.1f} {theirs / mine:>6.2f} "
                      f"{share[0]:>10.0%} {share[1]:>12.0%}", flush=True)


if __name__ == "__main__":
    main()
