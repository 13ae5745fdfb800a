"""benchmarks/gpu_check.sh: its dry run (every step on the CPU) prints the whole table and passes, so the script that
proves the CUDA paths on the day a GPU is lent cannot rot; without a GPU and without --dry-run it says so."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import gpu_check  # noqa: E402

ENV = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}


def test_the_dry_run_runs_every_check_and_prints_one_table(shared_data):
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--data",
                           str(shared_data / "cplid-dev" / "data.yaml")], cwd=PROJECT_ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| check | value | target | verdict |"):]
    for check in ("AMP float16 loss parity: box", "AMP float16 loss parity: cls", "AMP float16 loss parity: dfl",
                  "train none with AMP", "train fr2-cached with AMP", "CUDA memory columns of none",
                  "epoch time fr2 --cache-frozen ram / none", "validation / training time per epoch",
                  "bench_freeze: yolov8n",
                  "float32 gradient vs float64, NCHW", "float32 gradient vs float64, channels-last",
                  "training step yolov8n 64 px, batch 16, NCHW", "training step yolov8n: channels-last speed-up",
                  "--compile yolov8n", "wall time"):
        assert f"| {check}" in table, check
    assert "| FAIL |" not in table and table.count("| PASS |") >= 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the full check would run")
def test_without_a_gpu_the_full_check_refuses_in_one_line(shared_data):
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--data", str(shared_data / "cplid-dev" / "data.yaml")],
                          cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == "error: no CUDA device; use --dry-run to exercise the script on the CPU\n"


def test_any_failed_row_makes_the_exit_status_non_zero():
    rows = [gpu_check.row("a", "1", "", "PASS"), gpu_check.row("b", "", "", "INFO")]
    assert gpu_check.exit_code(rows) == 0
    assert gpu_check.exit_code([*rows, gpu_check.row("c", "2%", "<= 1%", "FAIL")]) == 1
    assert gpu_check.format_table(rows).splitlines()[2] == "| a | 1 |  | PASS |"
