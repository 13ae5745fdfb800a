"""Adaptive freezing against the static strategies: final mAP, wall time of the whole run, when blocks froze.

    python benchmarks/bench_auto_freeze.py [--datasets demo,cplid] [--configs none,fr1,fr2,auto,auto+ram]
        [--seeds 0,1] [--epochs N] [--auto-flags "--auto-threshold median"] [--out DIR] [--quick]

Each configuration is one ``python -m yolofreeze.train`` run (a subprocess, as a user runs it), timed from start
to exit: data checks, memory profile, training, validation every epoch and the plots, all of it. Configurations:
``none`` / ``fr1`` / ``fr2`` (``--freeze``), ``auto`` (``--freeze auto``, default rule) and ``auto+ram`` (the same
with ``--cache-frozen ram``: after each freeze the frozen prefix's outputs are computed once and later epochs start
from the first trainable block). Datasets:

- ``demo``: the study demo's transfer (``python -m yolofreeze.study --demo``): yolov8n pretrained on the generated
  sky domain, fine-tuned on the field domain, 160 px, batch 8, 8 epochs, no early stopping;
- ``cplid``: ``../shared/data/cplid-dev`` from the oracle-trained yolov8n of the test suite (the pytest cache's
  ``cplid-oracle-*`` checkpoint; trained now with the oracle if absent), 256 px, batch 8, 12 epochs.

Printed per dataset and seed: final-epoch mAP50 and mAP50-95, wall seconds and the ratio to ``none``'s, and the
freezes (``0-3@5``: blocks 0-3 frozen from epoch 5); then per dataset the mean and spread over seeds.
Target (issue 15): ``auto+ram`` within 0.01 of ``none``'s mAP50 (or above) in <= 0.75x its wall time, and above
``fr2``'s mAP50. Runs go one after another on a quiet machine; wall times on a shared 2-core CPU scatter by ~10%.
``--quick``: the demo only, seed 0, 4 epochs (a smoke run, ~4 min).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("YOLO_OFFLINE", "1")

from quick import parse_with_quick  # noqa: E402
from yolofreeze.data.demo import FIELD, demo_root, ensure_demo_dataset  # noqa: E402
from yolofreeze.study.demo import source_checkpoint  # noqa: E402
from yolofreeze.training.runs import read_results  # noqa: E402

CONFIGS = {"none": ["--freeze", "none"], "fr1": ["--freeze", "fr1"], "fr2": ["--freeze", "fr2"],
           "auto": ["--freeze", "auto"], "auto+ram": ["--freeze", "auto", "--cache-frozen", "ram"]}
SHARED = ROOT.parent / "shared" / "data"
QUICK = dict(datasets=["demo"], seeds=[0], epochs=4)


def demo_setup() -> tuple[str, str, list[str]]:
    """(data, weights, flags) of the study demo's transfer."""
    data = ensure_demo_dataset(demo_root().parent / "demo-field", FIELD)
    weights = source_checkpoint(lambda line: print(line, flush=True))
    return str(data), str(weights), ["--imgsz", "160", "--batch", "8", "--epochs", "8", "--patience", "0"]


def cplid_setup(folder: Path) -> tuple[str, str, list[str]]:
    """(data, weights, flags) of the cplid-dev fine-tune from the test suite's oracle-trained checkpoint."""
    cached = sorted((ROOT / ".pytest_cache" / "d").glob("cplid-oracle-*/cplid-yolov8n.pt"))
    if cached:
        weights = cached[-1]
    else:
        from conftest import CPLID_RECIPE
        from oracle import ultralytics
        print("training the oracle's cplid-dev checkpoint (a few CPU minutes) …", flush=True)
        data = folder / "cplid.yaml"
        data.write_text(f"path: {SHARED / 'cplid-dev'}\ntrain: images/train\nval: images/val\n"
                        "names:\n  0: insulator\n  1: defect\n")
        recipe = dict(CPLID_RECIPE)
        ultralytics().YOLO(recipe.pop("model")).train(data=str(data), project=str(folder), name="oracle",
                                                      exist_ok=True, verbose=False, **recipe)
        weights = folder / "oracle" / "weights" / "last.pt"
    return str(SHARED / "cplid-dev"), str(weights), ["--imgsz", "256", "--batch", "8", "--epochs", "12",
                                                     "--patience", "0"]


def run(config: str, data: str, weights: str, flags: list[str], seed: int, project: Path) -> dict:
    """One timed training run; its final-epoch metrics and the freezes its audit recorded."""
    label = Path(data).parent.name if Path(data).suffix == ".yaml" else Path(data).name
    name = f"{label}-{config.replace('+', '-')}-s{seed}-{int(time.time())}"
    argv = [sys.executable, "-m", "yolofreeze.train", "--data", data, "--weights", weights, "--seed", str(seed),
            "--workers", "0", *flags, *CONFIGS[config], "--project", str(project), "--name", name]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{config} failed: {done.stderr.strip().splitlines()[-1:]}\n$ {shlex.join(argv)}")
    results = read_results(project / name / "results.csv")
    audit = json.loads((project / name / "freeze_audit.json").read_text())
    freezes = [f"0-{d['prefix_after'] - 1}@{d['epoch'] + 1}" for d in audit.get("decisions", [])
               if d["prefix_after"] > d["prefix_before"]]
    return {"config": config, "seed": seed, "map50": results["metrics/mAP50(B)"][-1],
            "map50_95": results["metrics/mAP50-95(B)"][-1], "seconds": seconds,
            "freezes": " ".join(freezes) or ("none" if config.startswith("auto") else "-")}


def table(rows: list[dict]) -> str:
    reference = {r["seed"]: r["seconds"] for r in rows if r["config"] == "none"}
    lines = [f"{'config':<9} {'seed':>4} {'mAP50':>7} {'mAP50-95':>9} {'wall s':>7} {'vs none':>8}  freezes"]
    for r in rows:
        ratio = r["seconds"] / reference[r["seed"]] if r["seed"] in reference else float("nan")
        lines.append(f"{r['config']:<9} {r['seed']:>4} {r['map50']:>7.3f} {r['map50_95']:>9.3f} {r['seconds']:>7.1f} "
                     f"{ratio:>7.2f}x  {r['freezes']}")
    return "\n".join(lines)


def spread(rows: list[dict]) -> str:
    """Per config over seeds: mean (min-max) of mAP50, of mAP50 minus none's of the same seed, and of the time
    ratio to none's."""
    none = {r["seed"]: r for r in rows if r["config"] == "none"}
    lines = [f"{'config':<9} {'mAP50 mean (min-max)':>22} {'vs none mAP50':>22} {'time vs none':>20}"]
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config and r["seed"] in none]
        cells = []
        for values in ([r["map50"] for r in mine], [r["map50"] - none[r["seed"]]["map50"] for r in mine],
                       [r["seconds"] / none[r["seed"]]["seconds"] for r in mine]):
            cells.append(f"{statistics.mean(values):+.3f} ({min(values):+.3f}..{max(values):+.3f})")
        lines.append(f"{config:<9} {cells[0]:>22} {cells[1]:>22} {cells[2]:>20}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=lambda s: s.split(","), default=["demo", "cplid"])
    parser.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the dataset's epochs")
    parser.add_argument("--auto-flags", default="", help="extra flags for the auto configurations")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: temporary)")
    args = parse_with_quick(parser, QUICK)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    with tempfile.TemporaryDirectory() as tmp:
        project = args.out or Path(tmp)
        for dataset in args.datasets:
            data, weights, flags = demo_setup() if dataset == "demo" else cplid_setup(Path(tmp))
            if args.epochs:
                flags = [*flags[:flags.index("--epochs")], "--epochs", str(args.epochs),
                         *flags[flags.index("--epochs") + 2:]]
            rows = []
            for seed in args.seeds:
                for config in args.configs:
                    extra = shlex.split(args.auto_flags) if config.startswith("auto") else []
                    rows.append(run(config, data, weights, flags + extra, seed, project))
                    print(f"  {dataset} seed {seed} {config}: mAP50 {rows[-1]['map50']:.3f} in "
                          f"{rows[-1]['seconds']:.0f} s, freezes {rows[-1]['freezes']}", flush=True)
            print(f"\n{dataset} ({' '.join(flags)}; auto flags: {args.auto_flags or 'defaults'})\n{table(rows)}")
            if len(args.seeds) > 1 and "none" in args.configs:
                print(f"\nover seeds {args.seeds}:\n{spread(rows)}")
            print(flush=True)


if __name__ == "__main__":
    main()
