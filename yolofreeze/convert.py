"""Official Ultralytics checkpoints → our checkpoints, and our checkpoint save/load.

Our checkpoint is a plain dict loadable with ``torch.load(..., weights_only=True)``::

    {"format": "yolofreeze", "version": 1, "arch": "yolov8n", "spec": {...model yaml...},
     "nc": 80, "names": [...], "stride": [8.0, 16.0, 32.0], "state_dict": {fp32 tensors},
     "train": {...optional training metadata...}}

CLI: ``python -m yolofreeze.convert yolov8n.pt weights/yolov8n.pt``
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import tempfile
from pathlib import Path

import torch

from .download import RELEASES, download_weights
from .model import YOLO
from .safe_pickle import StandIn, safe_load

LOGGER = logging.getLogger(__name__)
FORMAT, VERSION = "yolofreeze", 1
ACTIVATIONS = {"SiLU", "Identity", "ReLU", "LeakyReLU", "GELU", "Hardswish", "Sigmoid"}


class ConversionError(ValueError):
    """The file is readable but is not a checkpoint yolofreeze can represent faithfully."""


def standin_state_dict(module: StandIn, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk a stand-in module tree like ``nn.Module.state_dict``: parameters and persistent buffers by dotted key."""
    out = {}
    state = module.__dict__
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is not None and name not in skip:
                out[prefix + name] = tensor
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(standin_state_dict(child, f"{prefix}{name}."))
    return out


def standin_activations(module: StandIn, prefix: str = "") -> dict[str, str]:
    """``{dotted path: class name}`` of every activation module in a stand-in tree."""
    out = {}
    for name, child in (module.__dict__.get("_modules") or {}).items():
        if child is None:
            continue
        if type(child).__name__ in ACTIVATIONS:
            out[prefix + name] = type(child).__name__
        out.update(standin_activations(child, f"{prefix}{name}."))
    return out


def _names_list(names, nc: int) -> list[str]:
    if isinstance(names, dict):
        return [str(names.get(i, f"class{i}")) for i in range(nc)]
    if isinstance(names, (list, tuple)) and len(names) == nc:
        return [str(n) for n in names]
    return [f"class{i}" for i in range(nc)]


def convert_official(path: str | Path) -> YOLO:
    """Read an official Ultralytics (8.0 … 8.4) or THU-MIG YOLOv10 ``.pt`` safely and return our fp32 model.

    Uses ``ema`` when ``model`` is None, converts fp16 to fp32, keeps names, nc, stride and the
    architecture from the pickled yaml dict. Raises :class:`ConversionError` when the
    architecture, keys, shapes or activations differ from what yolofreeze builds.
    """
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected an Ultralytics checkpoint dict, got {type(ckpt).__name__}")
    net = ckpt.get("model") if ckpt.get("model") is not None else ckpt.get("ema")
    if not isinstance(net, StandIn):
        raise ConversionError(f"{path}: neither 'model' nor 'ema' holds a pickled model (keys: {sorted(ckpt)})")
    attrs = net.__dict__
    spec = attrs.get("yaml")
    if not isinstance(spec, dict) or "backbone" not in spec:
        raise ConversionError(f"{path}: the pickled model has no architecture yaml dict")
    spec = {k: v for k, v in spec.items() if k in ("nc", "scales", "scale", "backbone", "head",
                                                    "depth_multiple", "width_multiple")}
    state = {k: v.float() if v.is_floating_point() else v.clone() for k, v in standin_state_dict(net).items()}
    head_classes = [k for k in state if k.endswith(".cv3.0.2.weight")]
    nc = int(state[head_classes[-1]].shape[0]) if head_classes else int(spec.get("nc", 80))
    names = _names_list(attrs.get("names"), nc)
    model = _build_matching(spec, nc, names, state, path)
    _check_matches(model, state, net, path)
    model.load_state_dict(state, strict=True)
    stride = attrs.get("stride")
    if isinstance(stride, torch.Tensor) and not torch.equal(stride.float(), model.stride.cpu()):
        raise ConversionError(f"{path}: stride {stride.tolist()} differs from ours {model.stride.tolist()}")
    return model


def _build_matching(spec: dict, nc: int, names: list[str], state: dict, path) -> YOLO:
    """Build the pickled architecture; early 8.0 files carry ``scales`` but no ``scale``: pick the one whose shapes fit."""
    scales = [spec["scale"]] if spec.get("scale") or not spec.get("scales") else list(spec["scales"])
    errors = []
    for scale in scales:
        try:
            model = YOLO({**spec, "scale": scale}, nc=nc, names=names)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ConversionError(f"{path}: cannot build its architecture: {err}") from err
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if all(k in state and state[k].shape == s for k, s in shapes.items()) or len(scales) == 1:
            return model
        errors.append(scale)
    raise ConversionError(f"{path}: no scale of its yaml ({', '.join(errors)}) matches the stored tensor shapes")


def _check_matches(model: YOLO, state: dict, net: StandIn, path) -> None:
    ours = model.state_dict()
    missing, extra = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    if missing or extra:
        raise ConversionError(f"{path}: state_dict keys differ (missing {missing[:5]}, unexpected {extra[:5]}); "
                              f"fused or unsupported checkpoints cannot be converted")
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in ours.items() if state[k].shape != v.shape]
    if wrong:
        raise ConversionError(f"{path}: tensor shapes differ: {wrong[:5]}")
    for where, name in standin_activations(net).items():
        mine = type(model.get_submodule(where)).__name__
        if mine != name:
            raise ConversionError(
                f"{path}: {where} is {name} in the checkpoint but {mine} in yolofreeze (e.g. Ultralytics ≥8.4 builds "
                f"SPPF.cv1 without activation when training from yaml); refusing a silently different network")


def checkpoint_dict(model: YOLO, train: dict | None = None) -> dict:
    """Our checkpoint for ``model`` (fp32 state dict on CPU)."""
    ckpt = {"format": FORMAT, "version": VERSION, "arch": model.arch, "spec": model.spec, "nc": model.nc,
            "names": list(model.names), "stride": model.stride.tolist(),
            "state_dict": {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                           for k, v in model.state_dict().items()}}
    if train is not None:
        ckpt["train"] = train
    return ckpt


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(model: YOLO, path: str | Path, train: dict | None = None) -> Path:
    """Write our checkpoint atomically."""
    return atomic_torch_save(checkpoint_dict(model, train), path)


def load_checkpoint(path: str | Path) -> dict:
    """Load our checkpoint dict with ``weights_only=True`` (no code execution)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConversionError(f"{path} is not a yolofreeze checkpoint")
    return ckpt


def load_model(path: str | Path) -> YOLO:
    """Load our checkpoint or an official Ultralytics ``.pt`` (converted on the fly), in eval mode on CPU.

    A bare official name that is not a local file (``"yolov8n"``, ``"yolov10s.pt"``) is fetched
    into the weights cache first (:func:`yolofreeze.download.download_weights`).
    """
    path = Path(path)
    if not path.is_file() and path.parent == Path(".") and path.stem.lower() in RELEASES:
        path = download_weights(path.stem.lower())
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (official weights: python -m yolofreeze.download "
                                f"yolov8n, or pass a name like yolov8n.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        ckpt = None  # foreign classes inside: an official checkpoint, read through the allow-list instead
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        model = YOLO(ckpt["spec"], nc=ckpt["nc"], names=ckpt["names"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    else:
        model = convert_official(path)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolofreeze.convert",
                                     description="Convert an official Ultralytics/THU-MIG .pt into a yolofreeze "
                                                 "checkpoint, without importing ultralytics.")
    parser.add_argument("source", help="official checkpoint, e.g. yolov8n.pt")
    parser.add_argument("target", help="where to write our checkpoint, e.g. weights/yolov8n.pt")
    args = parser.parse_args(argv)
    try:
        model = convert_official(args.source)
    except (ConversionError, ValueError, FileNotFoundError, pickle.UnpicklingError) as err:
        print(f"error: {err}")
        return 1
    save_checkpoint(model, args.target)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.source} -> {args.target}: {model.arch}, nc={model.nc}, {params:,} parameters, "
          f"stride {model.stride.int().tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
