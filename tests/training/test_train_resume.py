"""Runs in real subprocesses: a run killed mid-way and resumed ends with the same weights as an uninterrupted one;
``torchrun`` with 2 CPU processes (gloo) trains with rank-0 logging and checkpoints."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yolofreeze.data import write_demo_dataset
from yolofreeze.freezing.gradnorm import read_grad_norms
from yolofreeze.training.runs import read_results

ROOT = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, str(ROOT / "train.py")]
# 3 epochs of 6 batches; 8-image batches accumulate 8 per step, so steps straddle epoch ends (pending gradients
# must survive the kill) and warm-up runs through epoch 2.
RECIPE = ["--weights", "none", "--epochs", "3", "--imgsz", "128", "--batch", "8", "--workers", "0"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """The first 48 train and 16 val images of the demo dataset (6 batches of 8), in a temporary folder: data.yaml."""
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=48, n_val=16)


def _train(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def _kill_after_first_epoch(argv: list[str], cwd: Path, last: Path) -> int:
    process = subprocess.Popen([*TRAIN, *argv], cwd=cwd, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill()
    return process.wait()


@pytest.mark.parametrize("precision", [[], ["--amp", "fp16", "--imgsz", "64"]], ids=["fp32", "amp-fp16"])
def test_killed_run_resumes_to_the_same_weights(precision, demo_data, tmp_path):
    data = ["--data", str(demo_data), *RECIPE, *precision]
    full = _train(*data, "--name", "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    killed_dir = tmp_path / "runs" / "train" / "killed"
    code = _kill_after_first_epoch([*data, "--name", "killed"], tmp_path, killed_dir / "weights" / "last.pt")
    assert code == -9, "the run should have been killed during epoch 2"
    assert torch.load(killed_dir / "weights" / "last.pt", weights_only=True)["train"]["epoch"] == 1
    resumed = _train("--resume", str(killed_dir), "--workers", "0", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "after epoch 1 of 3" in resumed.stdout

    a = torch.load(tmp_path / "runs" / "train" / "full" / "weights" / "last.pt", weights_only=True)
    b = torch.load(killed_dir / "weights" / "last.pt", weights_only=True)
    for saved in ("state_dict", "model"):
        x = a[saved] if saved == "state_dict" else a["train"][saved]
        y = b[saved] if saved == "state_dict" else b["train"][saved]
        worst = max((x[k].double() - y[k].double()).abs().max().item() for k in x if x[k].is_floating_point())
        assert worst <= 1e-6, f"{saved}: largest difference {worst}"
    assert a["train"]["ema_updates"] == b["train"]["ema_updates"]
    assert a["train"]["scaler"] == b["train"]["scaler"]  # fp16: the loss scale and its growth tracker continue
    if precision:
        assert b["train"]["scaler"]["scale"] < 2.0**16  # the scaler was live: it backed off from its start
    full_rows, resumed_rows = (read_results(tmp_path / "runs" / "train" / n / "results.csv") for n in ("full", "killed"))
    assert resumed_rows["epoch"] == [1.0, 2.0, 3.0]
    for column in ("train/box_loss", "metrics/mAP50-95(B)", "val/cls_loss", "lr/pg2", "grad_norm/total"):
        assert resumed_rows[column] == pytest.approx(full_rows[column], rel=1e-6, abs=1e-9, nan_ok=True), column
    full_norms, resumed_norms = (read_grad_norms(tmp_path / "runs" / "train" / n / "grad_norms.csv")
                                 for n in ("full", "killed"))
    assert [(r["step"], r["epoch"], r["block"]) for r in resumed_norms] == [
        (r["step"], r["epoch"], r["block"]) for r in full_norms]  # no row of the killed epoch is left twice
    assert [r["norm"] for r in resumed_norms] == pytest.approx([r["norm"] for r in full_norms], rel=1e-5)


def test_resuming_a_finished_run_is_refused(demo_data, tmp_path):
    done = _train("--data", str(demo_data), *RECIPE[:2], "--epochs", "1", *RECIPE[4:], "--name", "done",
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = _train("--resume", str(tmp_path / "runs" / "train" / "done"), cwd=tmp_path)
    assert again.returncode == 2 and "already finished its 1 epochs" in again.stderr


def test_torchrun_two_cpu_processes_train_with_rank0_files(demo_data, tmp_path):
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "train.py"), "--data", str(demo_data), *RECIPE[:2], "--epochs", "2",
                          *RECIPE[4:], "--device", "cpu", "--name", "ddp"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("training 2 epochs") == 1, run.stdout  # rank 0 alone prints
    assert "batches of 4 per process x 2" in run.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == ["ddp"]
    last = torch.load(tmp_path / "runs" / "train" / "ddp" / "weights" / "last.pt", weights_only=True)
    assert last["train"]["settings"]["world_size"] == 2 and last["train"]["epoch"] == 2
    # each process saw half of the 48 images per epoch: 6 batches of 4
    assert last["train"]["batches_per_epoch"] == 6
    rows = read_results(tmp_path / "runs" / "train" / "ddp" / "results.csv")
    assert rows["epoch"] == [1.0, 2.0] and all(v == v and v > 0 for v in rows["train/box_loss"])


def test_torchrun_with_c10d_rendezvous_stops_on_sigterm_and_resumes_under_torchrun(demo_data, tmp_path):
    """What a multi-node run uses (``--rdzv-backend c10d``; one node here): SIGTERM to every process, as a scheduler
    sends it, stops both ranks at the same step boundary; ``--resume`` under torchrun finishes the run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", str(ROOT / "train.py")]
    run_dir = tmp_path / "runs" / "train" / "c10d"
    process = subprocess.Popen([*torchrun, "--data", str(demo_data), *RECIPE[:2], "--epochs", "3", *RECIPE[4:],
                                "--imgsz", "64", "--device", "cpu", "--name", "c10d"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (run_dir / "weights" / "last.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert "stopped: SIGTERM: stopped in epoch" in err and "continue with: python train.py --resume" in err, err[-3000:]
    held = torch.load(run_dir / "weights" / "last.pt", weights_only=True)["train"]["epoch"]
    assert 1 <= held < 3
    resumed = subprocess.run([*torchrun[:-1], "--rdzv-endpoint", f"127.0.0.1:{port}", str(ROOT / "train.py"),
                              "--resume", str(run_dir)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after epoch {held} of 3" in resumed.stdout
    last = torch.load(run_dir / "weights" / "last.pt", weights_only=True)["train"]
    assert last["epoch"] == 3 and last["settings"]["world_size"] == 2
    assert read_results(run_dir / "results.csv")["epoch"] == [float(e) for e in range(1, 4)]


def test_a_kill_right_after_last_pt_never_loses_best_pt(demo_data, tmp_path):
    """last.pt records the best fitness that best.pt holds, so best.pt is written first: a run killed just after
    writing last.pt (before its results row) still has the best.pt that last.pt vouches for."""
    import torch

    from yolofreeze import build_model
    from yolofreeze.data import read_dataset
    from yolofreeze.training.optim import TrainConfig
    from yolofreeze.training.trainer import Trainer

    class Killed(Exception):
        pass

    class KilledAfterLast(Trainer):
        def save_last(self, epoch, row):
            super().save_last(epoch, row)
            raise Killed

    torch.manual_seed(0)
    data = read_dataset(demo_data, "yolo")
    trainer = KilledAfterLast(build_model("yolov8n", names=data.names), data,
                              TrainConfig(epochs=2, batch=8, imgsz=64, warmup_epochs=0), tmp_path, workers=0,
                              progress=False, grad_norms=False)
    with pytest.raises(Killed):
        trainer.fit()
    last = torch.load(tmp_path / "weights" / "last.pt", weights_only=True)
    assert last["train"]["best_epoch"] == 1 and (tmp_path / "weights" / "best.pt").is_file()
