"""Faults a long run meets: a full disk while writing a checkpoint, SIGTERM and Ctrl-C (one line, how to resume)."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import train as train_cli
from conftest import PROJECT_ROOT
from yolofreeze.data import write_demo_dataset
from yolofreeze.weights import checkpoints
from yolofreeze.weights.checkpoints import CheckpointWriteError, atomic_torch_save

TINY = ["--imgsz", "64", "--batch", "8", "--grad-norms", "off"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """32 train and 8 val demo images: data.yaml."""
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=32, n_val=8)


def _disk_full_after(real_save, writes_allowed: int, error: BaseException):
    """A ``torch.save`` that works ``writes_allowed`` times, then writes a few bytes and raises ``error``."""
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) <= writes_allowed:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04partial")
        raise error
    return save


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")])
def test_a_checkpoint_that_does_not_fit_is_one_line_and_leaves_the_previous_one(tmp_path, monkeypatch, error):
    path = atomic_torch_save({"w": torch.ones(1000)}, tmp_path / "last.pt")
    monkeypatch.setattr(checkpoints.torch, "save", _disk_full_after(torch.save, 0, error))
    if isinstance(error, RuntimeError):  # torch's zip writer says nothing of the disk: the free space tells
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(CheckpointWriteError) as raised:
        atomic_torch_save({"w": torch.zeros(2**20)}, path)
    message = str(raised.value)
    assert "\n" not in message and f"cannot write {path}: the disk is full (about 4.0 MiB needed" in message
    assert "the previous last.pt is intact" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no partial temporary file
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1000))


def test_a_full_disk_at_the_second_epoch_stops_the_run_with_one_line_and_it_resumes(demo_data, tmp_path,
                                                                                   monkeypatch, capsys):
    real_save = torch.save
    monkeypatch.setattr(checkpoints.torch, "save", _disk_full_after(  # epoch 1: best.pt and last.pt
        real_save, 2, OSError(errno.ENOSPC, "No space left on device")))
    argv = ["--data", str(demo_data), "--weights", "none", "--epochs", "2", "--workers", "0", "--project",
            str(tmp_path), "--name", "full", *TINY]
    assert train_cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    run = tmp_path / "full"
    assert err[-1].startswith(f"error: cannot write {run / 'weights'}") and "the disk is full" in err[-1]
    assert f"{run / 'weights' / 'last.pt'} holds epoch 1 of 2; continue with: python train.py --resume {run}" in err[-1]
    assert not [p for p in (run / "weights").iterdir() if p.suffix == ".tmp"]
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["train"]["epoch"] == 1
    monkeypatch.setattr(checkpoints.torch, "save", real_save)  # space freed
    assert train_cli.main(["--resume", str(run)]) == 0
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["train"]["epoch"] == 2


def _start(demo_data: Path, run: Path, epochs: int, workers: int) -> subprocess.Popen:
    """train.py in its own process group (so a signal can reach its data-loader workers too)."""
    command = [sys.executable, "train.py", "--data", str(demo_data), "--weights", "none", "--epochs", str(epochs),
               "--workers", str(workers), "--project", str(run.parent), "--name", run.name, *TINY]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "YOLO_OFFLINE": "1"})


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_sigterm_to_the_process_group_stops_at_a_step_boundary_and_the_run_resumes(demo_data, tmp_path):
    run = tmp_path / "term"
    process = _start(demo_data, run, epochs=6, workers=2)
    _wait_for(run / "weights" / "last.pt", process)
    os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: the trainer and its loader workers
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "exited unexpectedly" not in err and "killed by signal" not in err, err
    last_line = err.strip().splitlines()[-1]
    held = torch.load(run / "weights" / "last.pt", weights_only=True)["train"]["epoch"]
    assert last_line.startswith("stopped: SIGTERM: stopped in epoch ") and " batches; " in last_line
    assert f"last.pt holds epoch {held} of 6; continue with: python train.py --resume {run}" in last_line
    assert f"stopped in epoch {held + 1} after " in last_line  # the epoch after the one saved was cut short
    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(run)],
                             cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "YOLO_OFFLINE": "1"})
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["train"]["epoch"] == 6


def test_a_second_signal_stops_at_once(demo_data, tmp_path):
    run = tmp_path / "twice"
    process = _start(demo_data, run, epochs=40, workers=0)
    _wait_for(run / "weights" / "last.pt", process)
    os.kill(process.pid, signal.SIGINT)  # two different signals: a pending one is not merged with the other
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("stopped: a second signal (SIGTERM): stopped at once; ") and "--resume" in last_line
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["train"]["epoch"] >= 1
    assert not [p for p in (run / "weights").iterdir() if p.suffix == ".tmp"]
    shutil.rmtree(run)
