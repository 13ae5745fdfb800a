"""Every yaml vintage the converter claims, pickled from the oracle's own modules, converts to the same numbers.

Each checkpoint is the oracle's DetectionModel built from a yaml dict of its era (seeded, random BN
statistics), with that era's dict stored as ``model.yaml`` the way Ultralytics pickles it:

* 8.0.0 release and hand-written yamls: ``depth_multiple`` / ``width_multiple``, no ``scales``;
* early 8.0.x releases: ``scales`` without ``scale`` (the converter picks the scale whose shapes fit);
* later releases: ``scales`` and ``scale``;
* THU-MIG YOLOv10: a ``YOLOv10DetectionModel`` in fp32 under ``ema`` with ``model`` None;
* fine-tunes with a custom ``nc`` and a ``names`` dict.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

from oracle import build_oracle, max_output_differences, save_release, ultralytics
from yolofreeze.weights.checkpoints import convert_official
from yolofreeze.model import YOLO

# models/v8/yolov8n.yaml as shipped with ultralytics 8.0.0 (Jan 2023), before `scales` existed
V8_0_0_YAML = """
nc: 80  # number of classes
depth_multiple: 0.33  # scales module repeats
width_multiple: 0.25  # scales convolution channels

backbone:
  # [from, repeats, module, args]
  - [-1, 1, Conv, [64, 3, 2]]  # 0-P1/2
  - [-1, 1, Conv, [128, 3, 2]]  # 1-P2/4
  - [-1, 3, C2f, [128, True]]
  - [-1, 1, Conv, [256, 3, 2]]  # 3-P3/8
  - [-1, 6, C2f, [256, True]]
  - [-1, 1, Conv, [512, 3, 2]]  # 5-P4/16
  - [-1, 6, C2f, [512, True]]
  - [-1, 1, Conv, [1024, 3, 2]]  # 7-P5/32
  - [-1, 3, C2f, [1024, True]]
  - [-1, 1, SPPF, [1024, 5]]  # 9

head:
  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 6], 1, Concat, [1]]  # cat backbone P4
  - [-1, 3, C2f, [512]]  # 12

  - [-1, 1, nn.Upsample, [None, 2, 'nearest']]
  - [[-1, 4], 1, Concat, [1]]  # cat backbone P3
  - [-1, 3, C2f, [256]]  # 15 (P3/8-small)

  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 12], 1, Concat, [1]]  # cat head P4
  - [-1, 3, C2f, [512]]  # 18 (P4/16-medium)

  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 9], 1, Concat, [1]]  # cat head P5
  - [-1, 3, C2f, [1024]]  # 21 (P5/32-large)

  - [[15, 18, 21], 1, Detect, [nc]]  # Detect(P3, P4, P5)
"""
INPUT = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))  # not square on purpose


def multiples_yaml(depth: float, width: float, yaml_file: str) -> dict:
    """An 8.0.0-style yaml dict as pickled: the file's keys plus ``yaml_file`` and ``ch`` (added on load)."""
    spec = yaml.safe_load(V8_0_0_YAML)
    return {**spec, "depth_multiple": depth, "width_multiple": width, "yaml_file": yaml_file, "ch": 3}


def oracle_yaml(name: str) -> dict:
    """The yaml dict today's oracle loads for ``name`` (with ``scales`` and ``scale``)."""
    ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    return yaml_model_load(f"{name}.yaml")


def build_vintage(spec: dict, nc: int = 80, names: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """The oracle built from ``spec`` (its scale resolved), carrying ``spec`` exactly as ``model.yaml``.

    Checks that the oracle is in released form: SPPF.cv1 with SiLU, as every released v8/v10 file
    pickles it (Ultralytics 8.4.190 builds it so for these yaml rows; earlier 8.4 releases did not).
    """
    ultralytics()
    from ultralytics.nn.modules.block import SPPF

    oracle = build_oracle(spec, seed=seed, nc=nc)
    sppf = [m for m in oracle.modules() if isinstance(m, SPPF)]
    assert len(sppf) == 1 and type(sppf[0].cv1.act) is torch.nn.SiLU, "the oracle's SPPF.cv1 is not SiLU"
    oracle.yaml = copy.deepcopy(spec)
    oracle.yaml["nc"] = nc
    oracle.names = names if names is not None else {i: f"class{i}" for i in range(nc)}
    return oracle


def assert_converts_faithfully(oracle: torch.nn.Module, path, reference: torch.nn.Module) -> YOLO:
    """``path`` (saved from ``oracle``) converts to a model with the oracle's classes and outputs; returns it."""
    ours = convert_official(path)
    nc = len(oracle.names)
    assert ours.nc == nc
    assert ours.names == [oracle.names[i] for i in range(nc)]
    assert ours.stride.tolist() == reference.stride.tolist()
    differences = max_output_differences(reference, ours, INPUT)
    assert max(differences.values()) <= 1e-4, differences
    return ours


def as_stored_fp16(model: torch.nn.Module) -> torch.nn.Module:
    """The weights exactly as a release stores them (fp16), back in fp32 for comparison."""
    return copy.deepcopy(model).half().float()


def test_v8n_8_0_0_multiples_without_scales(tmp_path):
    oracle = build_vintage(multiples_yaml(0.33, 0.25, "yolov8n.yaml"))
    assert "scales" not in oracle.yaml and "scale" not in oracle.yaml
    path = save_release(oracle, tmp_path / "yolov8n-8.0.0.pt")
    assert assert_converts_faithfully(oracle, path, as_stored_fp16(oracle)).arch == "yolov8n"  # letter from multiples


def test_v8s_fine_tune_multiples_without_scales_custom_names(tmp_path):
    """A fine-tuned 8.3.x YOLOv8s (nc=2) trained from a hand-written yaml with multiples only."""
    names = {0: "insulator", 1: "defect"}
    oracle = build_vintage(multiples_yaml(0.33, 0.50, "yolov8s-insulator.yaml"), nc=2, names=names)
    path = save_release(oracle, tmp_path / "best.pt", use_ema=False)
    assert assert_converts_faithfully(oracle, path, as_stored_fp16(oracle)).arch == "yolov8s"


def test_early_8_0_scales_without_scale_picks_the_fitting_scale(tmp_path):
    spec = oracle_yaml("yolov8s")
    oracle = build_vintage(spec)
    del oracle.yaml["scale"]  # early 8.0.x pickled the unified yaml with all scales but no choice among them
    assert list(oracle.yaml["scales"])[0] == "n"  # the first scale is not the right one: the shapes decide
    path = save_release(oracle, tmp_path / "yolov8s-early.pt")
    assert assert_converts_faithfully(oracle, path, as_stored_fp16(oracle)).arch == "yolov8s"


@pytest.mark.parametrize("name", ["yolov8n", "yolov10n"])
def test_release_with_scales_key_converts_faithfully(name, tmp_path):
    oracle = build_vintage(oracle_yaml(name))
    path = save_release(oracle, tmp_path / f"{name}.pt")
    assert assert_converts_faithfully(oracle, path, as_stored_fp16(oracle)).arch == name


def test_thu_mig_yolov10_fp32_ema_only(tmp_path, monkeypatch):
    """THU-MIG's YOLOv10 release pickles a ``YOLOv10DetectionModel`` in fp32; emulate that class name."""
    ultralytics()
    import ultralytics.nn.tasks as tasks

    class YOLOv10DetectionModel(tasks.DetectionModel):
        pass

    YOLOv10DetectionModel.__module__ = "ultralytics.nn.tasks"
    YOLOv10DetectionModel.__qualname__ = "YOLOv10DetectionModel"
    monkeypatch.setattr(tasks, "YOLOv10DetectionModel", YOLOv10DetectionModel, raising=False)
    oracle = build_vintage(oracle_yaml("yolov10n"))
    oracle.__class__ = YOLOv10DetectionModel
    path = tmp_path / "yolov10n.pt"
    torch.save({"model": None, "ema": oracle, "updates": 0, "optimizer": None, "train_args": {}, "epoch": -1}, path)
    assert_converts_faithfully(oracle, path, copy.deepcopy(oracle))


def test_v10_custom_nc_with_names_dict(tmp_path):
    names = {0: "crack", 1: "flashover", 2: "missing cap"}
    oracle = build_vintage(oracle_yaml("yolov10n"), nc=3, names=names, seed=4)
    path = save_release(oracle, tmp_path / "yolov10n-3cls.pt", use_ema=False)
    assert_converts_faithfully(oracle, path, as_stored_fp16(oracle))
