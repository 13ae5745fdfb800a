"""Gradient-norm logging: the rows of grad_norms.csv are the norms of the gradients the optimiser applies, checked
against norms computed straight from ``.grad`` at step time, with accumulation over 4 batches and under 2-process
gloo DDP; summaries and the plot."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from yolofreeze.data import write_demo_dataset
from yolofreeze.freezing.gradnorm import read_grad_norms, summarize_grad_norms
from yolofreeze.training.runs import read_results

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "freezing" / "grad_norm_probe.py"
PARTS = {**{b: "backbone" for b in range(10)}, **{b: "neck" for b in range(10, 22)}, 22: "head"}  # yolov8 facts


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=16, n_val=4, size=64)


def csv_by_step(run_dir: Path) -> dict[int, dict[tuple[str, str], float]]:
    steps = defaultdict(dict)
    for row in read_grad_norms(run_dir / "grad_norms.csv"):
        steps[row["step"]][(row["block"], row["part"])] = row["norm"]
    return steps


def check_rows_against_probe(run_dir: Path, records: list[dict]) -> None:
    steps = csv_by_step(run_dir)
    assert sorted(steps) == list(range(1, len(records) + 1))
    for step, record in enumerate(records, start=1):
        rows = steps[step]
        blocks = {block for block, part in rows if block != "all"}
        assert blocks == set(record["blocks"]), step
        assert all(int(b) >= 4 for b in blocks)  # blocks 0-3 are frozen: no gradient, no row
        for block, norm in record["blocks"].items():
            assert rows[(block, PARTS[int(block)])] == pytest.approx(norm, rel=1e-5), (step, block)
        for part in ("backbone", "neck", "head"):
            direct = math.sqrt(sum(n * n for b, n in record["blocks"].items() if PARTS[int(b)] == part))
            assert rows[("all", part)] == pytest.approx(direct, rel=1e-5), (step, part)
        total = rows[("all", "total")]
        assert total == pytest.approx(record["direct_total"], rel=1e-5)
        assert total == pytest.approx(record["clip_total"], rel=1e-7)  # what clip_grad_norm_ returns
        assert total == pytest.approx(record["returned"], rel=1e-7)


def test_rows_equal_norms_from_grad_with_accumulation_4(tiny_data, tmp_path, monkeypatch):
    sys.path.insert(0, str(PROBE.parent))
    import grad_norm_probe
    import yolofreeze.training.trainer as train_module
    monkeypatch.setattr(train_module, "optimizer_step", train_module.optimizer_step)  # restored after the test
    records = grad_norm_probe.run(tmp_path, tiny_data)
    # 8 batches of 2 per epoch, one step per 4 batches: 2 steps per epoch, 4 in 2 epochs
    assert len(records) == 4
    check_rows_against_probe(tmp_path / "run", records)
    results = read_results(tmp_path / "run" / "results.csv")
    steps = csv_by_step(tmp_path / "run")
    for epoch, first in ((1, 1), (2, 3)):
        mean_total = np.mean([steps[s][("all", "total")] for s in (first, first + 1)])
        assert results["grad_norm/total"][epoch - 1] == pytest.approx(mean_total, rel=1e-5)  # csv: 6 digits
    assert (tmp_path / "run" / "grad_norms.png").stat().st_size > 10_000


def test_rows_equal_norms_from_grad_under_two_process_ddp(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(PROBE), str(tmp_path), str(tiny_data)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"probe_{r}.json").read_text()) for r in (0, 1))
    assert len(rank0) == len(rank1) == 4  # 1 image per process per batch: still 8 batches, 2 steps per epoch
    for a, b in zip(rank0, rank1, strict=True):  # DDP averaged: both processes apply the same gradients
        assert a["direct_total"] == pytest.approx(b["direct_total"], rel=1e-6)
    check_rows_against_probe(tmp_path / "run", rank0)


def test_summary_is_mean_std_and_cv_over_steps(tmp_path):
    path = tmp_path / "grad_norms.csv"
    path.write_text("step,epoch,block,part,norm\n"
                    "1,1,9,backbone,3\n1,1,all,backbone,3\n1,1,all,total,5\n"
                    "2,1,9,backbone,1\n2,1,all,backbone,1\n2,1,all,total,inf\n"
                    "3,2,9,backbone,2\n3,2,all,backbone,2\n3,2,all,total,1\n")
    summary = summarize_grad_norms(path)
    assert list(summary) == ["total", "backbone", "block 9"]
    assert summary["total"] == pytest.approx({"mean": 3.0, "std": 2.0, "cv": 2 / 3, "cv_epochs": 2 / 3, "steps": 2,
                                              "epochs": 2})  # inf left out; one step per epoch: both CVs agree
    assert summary["backbone"]["mean"] == pytest.approx(2.0)
    assert summary["backbone"]["std"] == pytest.approx(math.sqrt(2 / 3))


def _total_rows(epochs_of_norms: list[list[float]]) -> str:
    """grad_norms.csv text with only total rows: epoch k (1-based) has the norms ``epochs_of_norms[k - 1]``."""
    rows, step = ["step,epoch,block,part,norm"], 0
    for epoch, norms in enumerate(epochs_of_norms, start=1):
        for norm in norms:
            step += 1
            rows.append(f"{step},{epoch},all,total,{norm}")
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("series, cv_steps, cv_epochs", [
    ([[1, 3], [1, 3], [1, 3]], 0.5, 0.0),  # noise, no trend: every epoch means 2
    ([[1, 1], [3, 3]], 0.5, 0.5),  # trend, no noise: both see it
    ([[4, 4, 4, 4], [2, 2, 2, 2], [1, 1]], 1.2 / 2.6, math.sqrt(14 / 9) / (7 / 3)),  # decay, short epoch
    ([[2, 2], [2, 2]], 0.0, 0.0),
])
def test_cv_over_steps_and_over_epochs_on_crafted_series(tmp_path, series, cv_steps, cv_epochs):
    """CV steps: std / mean of every step's norm; CV epochs: of the per-epoch means (each epoch counts once,
    however many steps it has). Expected values by hand: e.g. the decay series, steps 4,4,4,4,2,2,2,2,1,1: mean 2.6,
    variance (4 * 1.96 + 4 * 0.36 + 2 * 2.56) / 10 = 1.44; epoch means 4, 2, 1: mean 7/3, variance 14/9."""
    path = tmp_path / "grad_norms.csv"
    path.write_text(_total_rows(series))
    total = summarize_grad_norms(path)["total"]
    assert total["cv"] == pytest.approx(cv_steps, abs=1e-12)
    assert total["cv_epochs"] == pytest.approx(cv_epochs, abs=1e-12)
    assert total["epochs"] == len(series) and total["steps"] == sum(map(len, series))


def test_block_epoch_means_are_per_block_per_epoch_with_frozen_cells_empty(tmp_path):
    from yolofreeze.freezing.gradnorm import block_epoch_means, read_grad_norms
    from yolofreeze.plots import plot_grad_norms

    path = tmp_path / "grad_norms.csv"
    path.write_text("step,epoch,block,part,norm\n"
                    "1,1,0,backbone,2\n1,1,9,backbone,4\n1,1,all,total,5\n"
                    "2,1,0,backbone,4\n2,1,9,backbone,inf\n2,1,all,total,5\n"
                    "3,2,9,backbone,1\n3,2,all,total,1\n")  # block 0 frozen in epoch 2
    blocks, epochs, means = block_epoch_means(read_grad_norms(path))
    assert blocks == [0, 9] and epochs == [1, 2]
    assert means[0, 0] == pytest.approx(3.0) and math.isnan(means[0, 1])
    assert means[1, 0] == pytest.approx(4.0) and means[1, 1] == pytest.approx(1.0)  # inf left out
    assert plot_grad_norms(path).stat().st_size > 10_000
