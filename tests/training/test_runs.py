"""Run directories, results.csv with the reference's columns, args.yaml and results.png."""
from __future__ import annotations

import csv
import math

import pytest
import yaml
from PIL import Image

from yolofreeze.plots import plot_results
from yolofreeze.training.runs import (EXTRA_COLUMNS, REFERENCE_COLUMNS, RESULTS_COLUMNS, append_results, new_run_dir,
                             read_results, write_args)

# The reference's results.csv header, written out here from its documentation (not read from our module).
DOCUMENTED_HEADER = ("epoch,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
                     "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2")


def test_run_dirs_are_never_reused(tmp_path):
    first = new_run_dir(tmp_path / "runs" / "train", "exp")
    (first / "weights").mkdir()
    second = new_run_dir(tmp_path / "runs" / "train", "exp")
    third = new_run_dir(tmp_path / "runs" / "train", "exp")
    assert [p.name for p in (first, second, third)] == ["exp", "exp2", "exp3"]
    assert (first / "weights").is_dir() and not any(second.iterdir())
    with pytest.raises(ValueError, match="plain folder name"):
        new_run_dir(tmp_path, "a/b")


def epoch_row(epoch: int) -> dict[str, float]:
    row = {column: 1.0 / (epoch + 1) + i for i, column in enumerate(RESULTS_COLUMNS)}
    row["epoch"] = epoch
    row["memory/cuda_reserved_mb"] = math.nan
    return row


def test_results_csv_has_the_reference_columns_then_ours(tmp_path):
    path = tmp_path / "results.csv"
    for epoch in range(3):
        append_results(path, epoch_row(epoch))
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert ",".join(header[:len(REFERENCE_COLUMNS)]) == DOCUMENTED_HEADER
    assert tuple(header[len(REFERENCE_COLUMNS):]) == EXTRA_COLUMNS
    assert [r[0] for r in rows] == ["0", "1", "2"]
    back = read_results(path)
    assert back["train/box_loss"] == pytest.approx([1 / (e + 1) + 1 for e in range(3)], rel=1e-5)
    assert all(math.isnan(v) for v in back["memory/cuda_reserved_mb"])
    with pytest.raises(ValueError, match="missing"):
        append_results(path, {"epoch": 3})
    with pytest.raises(ValueError, match="differ"):
        append_results(path, {**epoch_row(3), "lr/backbone": 0.1})


def test_a_results_csv_of_an_older_version_gains_the_new_standard_columns_when_a_run_resumes(tmp_path):
    path = tmp_path / "results.csv"
    new = ("data_wait_seconds", "val_seconds")
    old_columns = [c for c in RESULTS_COLUMNS if c not in new]  # before the columns existed
    path.write_text(",".join(old_columns) + "\n" + ",".join(["1"] + ["0.5"] * (len(old_columns) - 1)) + "\n")
    append_results(path, {**epoch_row(2), "data_wait_seconds": 0.25, "val_seconds": 1.5})
    back = read_results(path)
    assert list(back) == list(RESULTS_COLUMNS) and back["epoch"] == [1.0, 2.0]
    assert math.isnan(back["data_wait_seconds"][0]) and back["data_wait_seconds"][1] == 0.25
    assert math.isnan(back["val_seconds"][0]) and back["val_seconds"][1] == 1.5
    assert back["train/box_loss"][0] == 0.5


def test_run_specific_columns_follow_ours(tmp_path):
    path = tmp_path / "results.csv"
    for epoch in range(2):
        append_results(path, {"lr/backbone": 0.001 * (epoch + 1), **epoch_row(epoch), "lr/head": 0.01})
    header = path.read_text().splitlines()[0].split(",")
    assert header[-2:] == ["lr/backbone", "lr/head"] and tuple(header[:-2]) == RESULTS_COLUMNS
    assert read_results(path)["lr/backbone"] == pytest.approx([0.001, 0.002])


def test_args_yaml_round_trips(tmp_path):
    write_args(tmp_path, {"model": "yolov8n", "data": tmp_path / "data.yaml", "freeze": [0, 1, 2], "lr0": 0.01})
    back = yaml.safe_load((tmp_path / "args.yaml").read_text())
    assert back == {"model": "yolov8n", "data": str(tmp_path / "data.yaml"), "freeze": [0, 1, 2], "lr0": 0.01}


def test_results_png_is_drawn(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for epoch in range(4):
        append_results(run / "results.csv", epoch_row(epoch))
    png = plot_results(run / "results.csv")
    assert png == run / "results.png"
    with Image.open(png) as image:
        assert image.size == (1500, 800)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20  # axes, text and several curves, not a blank canvas
