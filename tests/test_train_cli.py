"""train.py until the trainer lands: checks its inputs, says what --freeze would freeze, and refuses to pretend."""
from __future__ import annotations

import train as train_cli
from yolofreeze import block_table, build_model


def test_reports_frozen_blocks_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path))
    assert train_cli.main(["--model", "yolov10n", "--data", "demo", "--freeze", "11"]) == 2
    captured = capsys.readouterr()
    expected = sum(b["params"] for b in block_table(build_model("yolov10n", nc=3))[:11])
    assert f"freeze {expected:,} of" in captured.out and "blocks 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)" in captured.out
    assert "not implemented yet" in captured.err


def test_bad_freeze_index_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("YOLOFREEZE_DATASETS", str(tmp_path))
    assert train_cli.main(["--data", "demo", "--freeze", "40"]) == 2
    assert "has 23 blocks (0-22)" in capsys.readouterr().err
