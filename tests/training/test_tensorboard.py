"""TensorBoard event files of a run, read back with TensorBoard's own reader: every results.csv column as a scalar,
per-block gradient-norm histograms per epoch; off with --no-tensorboard; a one-line error without the package."""
from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train as train_cli
from yolofreeze.data import write_demo_dataset
from yolofreeze.freezing.gradnorm import read_grad_norms
from yolofreeze.training import setup
from yolofreeze.training.runs import read_results

TINY = ["--weights", "none", "--epochs", "2", "--imgsz", "64", "--batch", "8", "--nbs", "8", "--workers", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("datasets") / "demo", n_train=24, n_val=8)


def test_the_events_hold_every_results_column_and_a_histogram_per_block_and_epoch(data, tmp_path, capsys):
    assert train_cli.main(["--data", str(data), *TINY, "--freeze", "fr1", "--tensorboard", "--project",
                           str(tmp_path), "--name", "tb"]) == 0
    assert f"TensorBoard: tensorboard --logdir {tmp_path}" in capsys.readouterr().out
    run = tmp_path / "tb"
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    results = read_results(run / "results.csv")
    tags = set(events.Tags()["scalars"])
    for column in ("train/box_loss", "val/cls_loss", "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)",
                   "metrics/mAP50-95(B)", "lr/pg0", "lr/pg2", "grad_norm/total", "grad_norm/backbone",
                   "grad_norm/head", "memory/peak_rss_mb", "frozen_blocks", "epoch_seconds"):
        assert column in tags, column
        scalars = events.Scalars(column)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx(results[column], rel=1e-5), column  # csv: 7 digits
    assert "memory/cuda_reserved_mb" not in tags  # NaN on CPU: left out
    norms = read_grad_norms(run / "grad_norms.csv")
    histograms = set(events.Tags()["histograms"])
    trained = sorted({int(r["block"]) for r in norms if r["block"] != "all"})
    assert trained[0] == 4 and trained[-1] == 22  # fr1: blocks 0-3 frozen, no gradients (nor in parameter-free ones)
    assert histograms == {f"grad_norms/block_{b:02d}" for b in trained}
    for epoch in (1, 2):
        values = [r["norm"] for r in norms if r["block"] == "7" and r["epoch"] == epoch]
        histogram = next(h for h in events.Histograms("grad_norms/block_07") if h.step == epoch).histogram_value
        assert histogram.num == len(values) == 3  # one value per optimiser step of the epoch
        assert histogram.sum == pytest.approx(sum(values), rel=1e-6)
        assert (histogram.min, histogram.max) == pytest.approx((min(values), max(values)), rel=1e-6)


def test_no_tensorboard_writes_no_events(data, tmp_path, capsys):
    assert train_cli.main(["--data", str(data), *TINY, "--epochs", "1", "--no-tensorboard", "--project",
                           str(tmp_path), "--name", "off"]) == 0
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))
    assert "TensorBoard:" not in capsys.readouterr().out


def test_asking_for_tensorboard_without_the_package_is_one_line(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(setup, "tensorboard_available", lambda: False)
    assert train_cli.main(["--data", str(data), *TINY, "--tensorboard", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tensorboard needs the tensorboard package" in err
    assert "pip install -e .[tensorboard]" in err
    assert setup.parse_train_args(["--data", str(data)])[0].board() is False  # the default follows the package
