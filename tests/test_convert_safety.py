"""The converter never executes pickled code, and reads every checkpoint variant it claims to read."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from oracle import build_oracle, save_release, ultralytics
from yolofreeze import load_model
from yolofreeze.convert import ConversionError, convert_official, main as convert_main
from yolofreeze.safe_pickle import UnsafeCheckpointError, safe_load


class RunsShell:
    """A pickle payload: unpickling it calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("payload_kind", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload_kind):
    marker = tmp_path / "pwned"
    payload = RunsShell(f"touch {marker}") if payload_kind == "os.system" else CallsEval()
    evil = tmp_path / "evil.pt"
    torch.save({"model": payload, "ema": None}, evil)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load global"):
        safe_load(evil)
    with pytest.raises(UnsafeCheckpointError):
        load_model(evil)
    assert convert_main([str(evil), str(tmp_path / "out.pt")]) == 1
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


def test_ema_used_when_model_is_none(tmp_path):
    oracle = build_oracle("yolov8n")
    path = tmp_path / "ema_only.pt"
    torch.save({"epoch": 5, "model": None, "ema": oracle.half(), "optimizer": None}, path)
    model = convert_official(path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - oracle.float().eval()(x)[0]).abs().max() <= 1e-4


def test_thu_mig_yolov10_release_fp32(tmp_path, monkeypatch):
    """THU-MIG's YOLOv10 release pickles a ``YOLOv10DetectionModel`` in fp32; emulate that class name."""
    ultralytics()
    import ultralytics.nn.tasks as tasks

    class YOLOv10DetectionModel(tasks.DetectionModel):
        pass

    YOLOv10DetectionModel.__module__ = "ultralytics.nn.tasks"
    YOLOv10DetectionModel.__qualname__ = "YOLOv10DetectionModel"
    monkeypatch.setattr(tasks, "YOLOv10DetectionModel", YOLOv10DetectionModel, raising=False)
    oracle = build_oracle("yolov10s")
    oracle.__class__ = YOLOv10DetectionModel
    path = tmp_path / "yolov10s.pt"
    torch.save({"model": oracle, "ema": None, "train_args": {}, "epoch": -1}, path)
    assert "YOLOv10DetectionModel" in type(safe_load(path)["model"]).__name__
    model = convert_official(path).eval()
    oracle.eval().model[-1].end2end = False
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        raw = oracle(x)[1]["one2one"]
        assert (model(x) - oracle.model[-1]._inference(raw)).abs().max() <= 1e-4


def test_early_release_without_scale_key_finds_its_scale(tmp_path):
    oracle = build_oracle("yolov8s")
    oracle.yaml.pop("scale", None)
    model = convert_official(save_release(oracle, tmp_path / "old.pt"))
    assert model.arch == "yolov8s"


def test_activation_mismatch_is_refused(tmp_path):
    oracle = build_oracle("yolov8n")
    oracle.model[9].cv1.act = torch.nn.Identity()  # what Ultralytics 8.4 builds from yaml
    with pytest.raises(ConversionError, match="model.9.cv1.act"):
        convert_official(save_release(oracle, tmp_path / "v84.pt"))


def test_convert_cli_writes_weights_only_checkpoint(tmp_path, capsys):
    src = save_release(build_oracle("yolov10n"), tmp_path / "yolov10n.pt")
    assert convert_main([str(src), str(tmp_path / "w" / "yolov10n.pt")]) == 0
    assert "yolov10n" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "w" / "yolov10n.pt", weights_only=True)
    assert ckpt["arch"] == "yolov10n" and len(ckpt["names"]) == 80


def test_not_a_zip_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch zip archive"):
        safe_load(bad)
