"""Official Ultralytics checkpoints → our checkpoints, and our checkpoint save/load.

Our checkpoint is a plain dict loadable with ``torch.load(..., weights_only=True)``::

    {"format": "yolofreeze", "version": 1, "arch": "yolov8n", "spec": {...model yaml...},
     "nc": 80, "names": [...], "stride": [8.0, 16.0, 32.0], "state_dict": {fp32 tensors},
     "train": {...optional training metadata...}}

The command line is :mod:`yolofreeze.convert`.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch
import yaml

from .releases import download_weights, official_name
from ..model import MODEL_NAME, YOLO, build_model
from ..names import class_names
from .safe_pickle import ConversionError, StandIn, archive_problem, first_line, safe_load

LOGGER = logging.getLogger(__name__)
FORMAT, VERSION = "yolofreeze", 1
ACTIVATIONS = {"SiLU", "Identity", "ReLU", "LeakyReLU", "GELU", "Hardswish", "Sigmoid"}
YAML_SUFFIXES = (".yaml", ".yml")
SNIFF_BYTES = 1 << 20  # a model yaml is a few KiB; larger text files are not sniffed for one


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


def _official_names(names, nc: int) -> list[str]:
    """The class names an official checkpoint stores (list or ``{index: name}``), or ``class_<i>`` placeholders
    when they are missing, malformed or not ``nc`` of them."""
    try:
        listed = class_names(names)
    except ValueError:
        listed = None
    return listed if listed is not None and len(listed) == nc else [f"class_{i}" for i in range(nc)]


def convert_official(path: str | Path) -> YOLO:
    """Read an official Ultralytics (8.0 … 8.4) or THU-MIG YOLOv10 ``.pt`` safely and return our fp32 model.

    Uses ``ema`` when ``model`` is None, converts fp16 to fp32, keeps names, nc, stride and the
    architecture from the pickled yaml dict (any vintage: ``depth_multiple``/``width_multiple``
    without ``scales``, ``scales`` without ``scale``, or both). Raises :class:`ConversionError` when
    the file is not a readable checkpoint, is refused by the allow-list, or when the architecture,
    keys, shapes or activations differ from what yolofreeze builds; ``FileNotFoundError`` when missing.
    """
    path = Path(path)
    check_weights_file(path)
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected an Ultralytics checkpoint dict, got {type(ckpt).__name__}")
    if ckpt.get("format") == FORMAT:
        raise ConversionError(f"{path} is already a yolofreeze checkpoint: nothing to convert, "
                              f"use it as it is")
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
    names = _official_names(attrs.get("names"), nc)
    model = _build_matching(spec, nc, names, state, path)
    _check_matches(model, state, net, path)
    model.load_state_dict(state, strict=True)
    stride = attrs.get("stride")
    if isinstance(stride, torch.Tensor) and not torch.equal(stride.float(), model.stride.cpu()):
        raise ConversionError(f"{path}: stride {stride.tolist()} differs from ours {model.stride.tolist()}")
    return model


def _build_matching(spec: dict, nc: int, names: list[str], state: dict, path) -> YOLO:
    """Build the pickled architecture.

    Three yaml vintages: 8.0.0 files and yamls written by hand carry ``depth_multiple``/``width_multiple``
    and no ``scales``; early 8.0.x files carry ``scales`` but no ``scale`` (pick the one whose shapes
    fit); later files carry both.
    """
    scales = list(spec.get("scales") or {})
    if spec.get("scale") in scales:
        scales = [spec["scale"]]
    elif not scales:
        scales = [None]
    errors = []
    for scale in scales:
        try:
            model = YOLO({**spec, "scale": scale}, nc=nc, names=names)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ConversionError(f"{path}: cannot build its architecture: {err}") from err
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        if all(k in state and state[k].shape == s for k, s in shapes.items()) or len(scales) == 1:
            return model
        errors.append(str(scale))
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
                f"{path}: {where} is {name} in the checkpoint but {mine} in yolofreeze (e.g. some Ultralytics 8.4 "
                f"releases built SPPF.cv1 without activation when training from yaml); refusing a silently "
                f"different network")


def checkpoint_dict(model: YOLO, train: dict | None = None) -> dict:
    """Our checkpoint for ``model`` (fp32 state dict on CPU)."""
    ckpt = {"format": FORMAT, "version": VERSION, "arch": model.arch, "spec": model.spec, "nc": model.nc,
            "names": list(model.names), "stride": model.stride.tolist(),
            "state_dict": {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu()
                           .clone(memory_format=torch.contiguous_format)
                           for k, v in model.state_dict().items()}}
    if train is not None:
        ckpt["train"] = train
    return ckpt


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, most often); the file it would replace is untouched."""


def tensor_bytes(obj) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists, tuples): about the size of its ``torch.save``."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file.

    Raises:
        CheckpointWriteError: the write failed (one line: the file, and for a full disk the space needed and
            free); the temporary file is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch's zip writer reports a short write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointWriteError(_write_failure(path, obj, error)) from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_failure(path: Path, obj, error: BaseException) -> str:
    """One line on why ``path`` could not be written and what is left of it."""
    needed, free = tensor_bytes(obj), shutil.disk_usage(path.parent).free
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < needed
    reason = (f"the disk is full (about {needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free)" if full
              else str(error).strip().splitlines()[0])
    before = (f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was there before")
    return f"cannot write {path}: {reason}; nothing partial was left, {before}"


def save_checkpoint(model: YOLO, path: str | Path, train: dict | None = None) -> Path:
    """Write our checkpoint atomically."""
    return atomic_torch_save(checkpoint_dict(model, train), path)


def load_checkpoint(path: str | Path) -> dict:
    """Load our checkpoint dict with ``weights_only=True`` (no code execution).

    Raises ``FileNotFoundError`` or :class:`ConversionError` (one line naming the file).
    """
    path = Path(path)
    check_weights_file(path)
    ckpt = _torch_load_weights_only(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConversionError(f"{path} is not a yolofreeze checkpoint")
    return ckpt


def check_weights_file(path: Path) -> None:
    """Raise unless ``path`` is an existing, complete torch zip archive.

    ``FileNotFoundError`` when it does not exist; :class:`ConversionError` (one line naming the
    file and what is wrong) for a directory, a model yaml, an empty, truncated or non-checkpoint file.
    """
    if path.is_dir():
        raise ConversionError(f"{path} is a directory, not a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (official weights: python -m yolofreeze.download "
                                f"yolov8n, or pass a name like yolov8n.pt)")
    problem = archive_problem(path)
    if problem and _is_model_yaml(path):
        raise ConversionError(f"{path} is a model yaml, not weights: use it as --model to train from scratch, or "
                              f"write random weights with: python -m yolofreeze.convert {path} out.pt --init random")
    if problem:
        raise ConversionError(f"{path}: {problem}")


def _is_model_yaml(path: Path) -> bool:
    """True for a small yaml text file holding ``backbone`` and ``head`` lists (whatever its suffix)."""
    if path.stat().st_size > SNIFF_BYTES:
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("backbone"), list) and isinstance(data.get("head"), list)


def _torch_load_weights_only(path: Path):
    """``torch.load(weights_only=True)`` after checking every member's CRC (torch itself does not).

    Returns None when the pickle names classes outside torch's allow-list (an official checkpoint).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        if damaged is None:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ConversionError(f"{path}: damaged checkpoint ({type(err).__name__}: {first_line(err)})") from err
    raise ConversionError(f"{path}: damaged checkpoint (CRC mismatch in {damaged})")


def _model_from_checkpoint(ckpt: dict, path: Path) -> YOLO:
    """Our checkpoint dict → :class:`YOLO` with its weights."""
    try:
        model = YOLO(ckpt["spec"], nc=ckpt["nc"], names=ckpt["names"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ConversionError(f"{path}: inconsistent yolofreeze checkpoint ({type(err).__name__}: "
                              f"{first_line(err)})") from err
    return model


def load_model(path: str | Path) -> YOLO:
    """Load our checkpoint or an official Ultralytics ``.pt`` (converted on the fly), in eval mode on CPU.

    A bare official name that is not a local file (``"yolov8n"``, ``"yolov10s.pt"``) is fetched
    into the weights cache first (:func:`yolofreeze.weights.releases.download_weights`). Raises
    ``FileNotFoundError`` for a missing file and :class:`ConversionError` (one line naming the file
    and what is wrong) for anything that cannot become a model.
    """
    name = official_name(path)
    path = download_weights(name) if name else Path(path)
    check_weights_file(path)
    ckpt = _torch_load_weights_only(path)  # None: foreign classes inside, read through the allow-list instead
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        model = _model_from_checkpoint(ckpt, path)
    else:
        model = convert_official(path)
    return model.eval()


def random_model(spec: str | Path | dict, nc: int | None = None, names: list[str] | None = None,
                 seed: int = 0) -> YOLO:
    """Build ``spec`` (name, yaml or dict) with weights drawn after ``torch.manual_seed(seed)``.

    The global RNG state is left as it was. Same seed, same weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, nc=nc, names=names)
