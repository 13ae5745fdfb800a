"""Model specs (the ecosystem's yaml schema) → :class:`YOLO`, and the block table used to choose ``--freeze N``.

A spec is a dict with ``nc``, ``scales: {letter: [depth, width, max_channels]}``, ``backbone`` and
``head`` lists of ``[from, repeats, module, args]`` rows. Block ``N`` is row ``N`` of
``backbone + head`` and becomes ``model.N`` in the state dict, exactly as in the official checkpoints.

The rows say where each block reads from by index, which hides where P3/P4/P5 meet: :mod:`yolofreeze.nn.yolov8`
writes YOLOv8 out by hand over the same blocks (same ``state_dict``, same output; tested) to read alongside.
"""
from __future__ import annotations

import ast
import copy
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from torch import nn

from .names import COCO80_NAMES, name_key
from .nn import (
    PSA,
    SPPF,
    C2f,
    C2fCIB,
    Concat,
    Conv,
    Detect,
    RepVGGDW,
    SCDown,
    Upsample,
    V10Detect,
)

LOGGER = logging.getLogger(__name__)

MODELS_DIR = (Path(__file__).parent / "specs").resolve()  # models/ in a checkout (a link), packaged when installed
MODEL_NAME = re.compile(r"^yolov(8|10)([nsmblx]?)$", re.IGNORECASE)

MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "C2f": C2f, "SPPF": SPPF, "SCDown": SCDown, "C2fCIB": C2fCIB, "PSA": PSA,
    "Concat": Concat, "nn.Upsample": Upsample, "Detect": Detect, "v10Detect": V10Detect,
}
SCALED_CHANNELS = (Conv, C2f, SPPF, SCDown, C2fCIB, PSA)  # args start with output channels, scaled by width
REPEATED_INSIDE = (C2f, C2fCIB)  # the repeat count is an argument, not a stack of copies
HEADS = (Detect, V10Detect)
PARTS = ("backbone", "neck", "head")  # what each block belongs to (BlockInfo.part)


def load_spec(spec: str | Path | dict) -> dict:
    """Resolve a model name (``"yolov8n"``, ``"yolov10s"``), a yaml path or a dict into a spec dict.

    The returned dict is a copy with ``scale`` set to the chosen scale letter (or None when the
    yaml has no ``scales``). An existing yaml takes its scale from its ``scale`` key or the last letter
    of its name (``my-yolov8s.yaml`` → ``s``). A name, or a path to a yaml that does not exist whose
    stem is a known model (``models/yolov8s.yaml``), uses the spec shipped in ``models/``; a family
    without scale (``yolov10``, ``models/yolov10.yaml``) means its ``n`` scale, with a warning.
    """
    if isinstance(spec, dict):
        return _with_scale(copy.deepcopy(spec), spec.get("scale"), "<dict>")
    path = Path(spec)
    if path.is_file():
        data = _read_yaml(path)
        stem_scale = re.search(r"([nsmblx])$", path.stem)
        return _with_scale(data, data.get("scale") or (stem_scale.group(1) if stem_scale else None), str(path))
    match = MODEL_NAME.match(path.stem) if path.suffix in ("", ".pt", ".yaml") else None
    if match is None:
        raise FileNotFoundError(f"model spec {str(spec)!r} is neither a known name (yolov8n…x, yolov10n…x) "
                                f"nor an existing yaml file")
    version, scale = match.group(1), match.group(2).lower()
    if not scale:
        LOGGER.warning("%s names no scale (n s m l x%s): using n", spec, " b" if version == "10" else "")
        scale = "n"
    candidates = [MODELS_DIR / f"yolov{version}{scale}.yaml", MODELS_DIR / f"yolov{version}.yaml"]
    shipped = next((p for p in candidates if p.is_file()), None)
    if shipped is None:
        raise FileNotFoundError(f"no spec for {str(spec)!r}: looked for {', '.join(map(str, candidates))}")
    return _with_scale(_read_yaml(shipped), scale, str(shipped))


def _read_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or "backbone" not in data or "head" not in data:
        raise ValueError(f"{path} is not a model spec (needs 'backbone' and 'head' lists)")
    return data


def _with_scale(data: dict, scale: str | None, where: str) -> dict:
    scales = data.get("scales") or {}
    if scales:
        if scale not in scales:
            fallback = next(iter(scales))
            if scale is not None:
                raise ValueError(f"scale {scale!r} not in {where} (has {', '.join(scales)})")
            LOGGER.warning("%s: no scale given, using %r", where, fallback)
            scale = fallback
    data["scale"] = scale if scales else None
    return data


def scale_of_multiples(family: str, depth: float | None, width: float | None) -> str | None:
    """The scale letter whose shipped ``[depth, width, …]`` equals a pre-``scales`` yaml's multiples, else None.

    E.g. ``("yolov8", 0.33, 0.25) -> "n"`` (the 8.0 release's yolov8n.yaml had no ``scales``).
    """
    if depth is None or width is None:
        return None
    for path in sorted(MODELS_DIR.glob(f"{family}*.yaml")):
        for letter, (d, w, _) in (_read_yaml(path).get("scales") or {}).items():
            if (d, w) == (depth, width):
                return letter
    return None


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is ≥ ``x``."""
    return int(math.ceil(x / divisor) * divisor)


@dataclass
class BlockInfo:
    """One row of the block table: what ``model.<index>`` is and where it sits."""

    index: int
    source: int | list[int]
    module: str
    repeats: int
    out_channels: int
    stride: int
    part: str  # "backbone", "neck" or "head"


def _parse_arg(value, nc: int):
    if value == "nc":
        return nc
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def build_layers(spec: dict, nc: int) -> tuple[nn.Sequential, list[BlockInfo]]:
    """Instantiate the rows of ``spec`` (already scale-resolved) as ``nn.Sequential`` plus their block table."""
    depth, width = spec.get("depth_multiple", 1.0), spec.get("width_multiple", 1.0)  # pre-`scales` yamls
    max_channels = float("inf")
    if spec.get("scale") is not None:
        depth, width, max_channels = spec["scales"][spec["scale"]]
    rows = spec["backbone"] + spec["head"]
    channels, strides = [3], [1]  # per block output, with the input image at position -1 of the lists' tail
    layers, infos = [], []
    for index, (source, repeats, name, args) in enumerate(rows):
        if name not in MODULES:
            raise ValueError(f"block {index}: unsupported module {name!r} (supported: {', '.join(MODULES)})")
        cls = MODULES[name]
        args = [_parse_arg(a, nc) for a in args]
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        sources = source if isinstance(source, list) else [source]
        c_in = [channels[s] if s == -1 else channels[s + 1] for s in sources]
        s_in = [strides[s] if s == -1 else strides[s + 1] for s in sources]
        stride = s_in[0]
        if cls in SCALED_CHANNELS:
            c_out = make_divisible(min(args[0], max_channels) * width, 8)
            args = [c_in[0], c_out, *args[1:]]
            if cls in REPEATED_INSIDE:
                args.insert(2, repeats)
            if cls in (Conv, SCDown) and len(args) > 3:
                stride *= args[3]
        elif cls is Concat:
            c_out = sum(c_in)
        elif cls is Upsample:
            c_out = c_in[0]
            stride = int(stride / args[1])
        else:  # detection head
            args = [*args, c_in]
            c_out = 0
        build_copies = repeats if cls not in REPEATED_INSIDE and cls not in HEADS else 1
        module = cls(*args) if build_copies == 1 else nn.Sequential(*(cls(*args) for _ in range(build_copies)))
        if cls in HEADS:
            module.stride = torch.tensor([float(s) for s in s_in])
        part = "head" if cls in HEADS else ("backbone" if index < len(spec["backbone"]) else "neck")
        infos.append(BlockInfo(index, source, name, repeats, c_out,
                               stride if cls not in HEADS else min(s_in), part))
        layers.append(module)
        channels.append(c_out)
        strides.append(stride)
    return nn.Sequential(*layers), infos


class PrefixOutputs(NamedTuple):
    """The outputs of blocks ``0 … start-1`` that blocks ``start …`` read (:meth:`YOLO.boundary`): block index →
    ``(B, C_i, H / s_i, W / s_i)``. What a frozen prefix computes once (:mod:`yolofreeze.freezing.cache`)."""

    start: int
    outputs: dict[int, torch.Tensor]


class YOLO(nn.Module):
    """A YOLOv8 / YOLOv10 detector built from a spec.

    Input ``(B, 3, H, W)`` RGB in [0, 1], ``H`` and ``W`` multiples of 32.
    Train mode → v8: list of 3 raw maps ``(B, 4*16 + nc, H/s, W/s)`` for s = 8, 16, 32;
    v10: ``{"one2many": [...], "one2one": [...]}``. Eval mode → ``(B, 4 + nc, A)`` decoded
    (xywh boxes in input pixels, sigmoid scores; v10 from the one-to-one branch).
    """

    def __init__(self, spec: str | Path | dict, nc: int | None = None, names: list[str] | None = None):
        super().__init__()
        self.spec = load_spec(spec)
        self.nc = int(nc if nc is not None else (len(names) if names else self.spec.get("nc", 80)))
        self.spec["nc"] = self.nc
        self.model, self.blocks = build_layers(self.spec, self.nc)
        self.save = sorted({s for b in self.blocks for s in
                            (b.source if isinstance(b.source, list) else [b.source]) if s != -1})
        self.names = list(names) if names else (list(COCO80_NAMES) if self.nc == 80 else
                                                 [f"class_{i}" for i in range(self.nc)])
        if len(self.names) != self.nc:
            raise ValueError(f"{len(self.names)} class names given for nc={self.nc}")
        self.head.bias_init()
        self.scale = self.spec.get("scale") or scale_of_multiples(self.family, self.spec.get("depth_multiple"),
                                                                  self.spec.get("width_multiple"))

    @property
    def head(self) -> Detect:
        """The detection head (always the last block)."""
        return self.model[-1]

    @property
    def stride(self) -> torch.Tensor:
        """``(L,)`` strides of the head's pyramid levels, e.g. ``[8., 16., 32.]``."""
        return self.head.stride

    @property
    def device(self) -> torch.device:
        """Where the parameters are."""
        return next(self.parameters()).device

    @property
    def is_v10(self) -> bool:
        """True for the NMS-free dual-assignment head."""
        return isinstance(self.head, V10Detect)

    @property
    def nms_free(self) -> bool:
        """True when eval-mode output is post-processed by top-k, not NMS (YOLOv10 decoding its one-to-one branch)."""
        return self.is_v10 and self.head.eval_branch == "one2one"

    def use_v10_head(self, branch: str) -> YOLO:
        """Choose the YOLOv10 branch decoded in eval mode: ``"one2one"`` (NMS-free) or ``"one2many"`` (needs NMS).

        Raises ValueError for an unknown branch, or for ``"one2many"`` on a YOLOv8 model (it has one head).
        """
        if branch not in V10Detect.BRANCHES:
            raise ValueError(f"unknown YOLOv10 head {branch!r}; choose one of {', '.join(V10Detect.BRANCHES)}")
        if self.is_v10:
            self.head.eval_branch = branch
        elif branch != "one2one":
            raise ValueError(f"--v10-head {branch} applies to YOLOv10 models; {self.arch} has a single head")
        return self

    @property
    def family(self) -> str:
        """``"yolov8"`` or ``"yolov10"``."""
        return "yolov10" if self.is_v10 else "yolov8"

    @property
    def arch(self) -> str:
        """Family and scale, e.g. ``"yolov8n"``; a pre-``scales`` yaml gets the letter its multiples match, if any."""
        return f"{self.family}{self.scale or ''}"

    def sources(self, index: int) -> list[int]:
        """The blocks whose outputs block ``index`` reads (``-1`` resolved: ``index - 1``; ``-1`` for block 0 is the
        image)."""
        source = self.blocks[index].source
        return [index - 1 if s == -1 else s for s in (source if isinstance(source, list) else [source])]

    def boundary(self, stop: int) -> list[int]:
        """The outputs of blocks ``0 … stop-1`` that blocks ``stop …`` read, ascending: what a
        :class:`PrefixOutputs` starting at block ``stop`` holds. E.g. ``[4, 6, 8]`` for YOLOv8 and YOLOv10 at ``stop=9``.

        Raises ValueError unless ``1 <= stop < len(self.blocks)`` (the head always runs).
        """
        if not 1 <= stop < len(self.blocks):
            raise ValueError(f"{self.arch} can start at blocks 1-{len(self.blocks) - 1}, not {stop}")
        return sorted({s for index in range(stop, len(self.blocks)) for s in self.sources(index) if s < stop})

    def forward(self, x: torch.Tensor | PrefixOutputs):
        """The detector on images ``x (B, 3, H, W)``, or on the outputs of blocks ``0 … start-1``
        (:class:`PrefixOutputs`, as :meth:`prefix_outputs` computes them; bit for bit the same result). Returns what
        the class docstring says for the mode."""
        return self.head(self.head_inputs(x))

    def head_inputs(self, x: torch.Tensor | PrefixOutputs) -> list[torch.Tensor]:
        """What the head reads: the neck's outputs at strides 8, 16, 32 (P3, P4, P5), each ``(B, C_l, H/s, W/s)``.

        Validation runs the head on them in two visible steps (``head.maps``, then ``head.decode_maps``) to get
        the decoded predictions and the maps for the loss from one pass.

        Raises ValueError when a :class:`PrefixOutputs` holds other blocks than :meth:`boundary` ``(start)``.
        """
        last = len(self.model) - 1
        if isinstance(x, PrefixOutputs):
            needed = self.boundary(x.start)
            if sorted(x.outputs) != needed:
                raise ValueError(f"starting at block {x.start} needs the outputs of blocks {needed}, got "
                                 f"{sorted(x.outputs)}")
            outputs, start, x = dict(x.outputs), x.start, x.outputs.get(x.start - 1)
        else:
            outputs, start = {}, 0
        sources = self.sources(last)
        self._run(x, outputs, start, last, set(self.save) | set(sources))
        return [outputs[s] for s in sources]

    @torch.no_grad()
    def prefix_outputs(self, x: torch.Tensor, stop: int) -> PrefixOutputs:
        """Run blocks ``0 … stop-1`` on ``x`` ``(B, 3, H, W)`` (in the current mode, without autograd) and return
        the outputs later blocks read: block index (:meth:`boundary` ``(stop)``) → ``(B, C_i, H / s_i, W / s_i)``.
        """
        keep = self.boundary(stop)
        outputs: dict[int, torch.Tensor] = {}
        self._run(x, outputs, 0, stop, set(self.save) | set(keep))
        return PrefixOutputs(stop, {index: outputs[index] for index in keep})

    def _run(self, x: torch.Tensor | None, outputs: dict[int, torch.Tensor], start: int, stop: int, keep: set[int]):
        """The one loop over blocks ``start … stop-1``: ``x`` is the output of block ``start - 1`` (the image for
        ``start == 0``; None when no later block reads it), ``outputs`` the earlier outputs by block index; the
        outputs of blocks in ``keep`` are added to it. Returns the last block's output."""
        for index in range(start, stop):
            layer, info = self.model[index], self.blocks[index]
            if isinstance(info.source, list):
                x = [x if s == -1 else outputs[s] for s in info.source]
            elif info.source != -1:
                x = outputs[info.source]
            x = layer(x)
            if index in keep:
                outputs[index] = x
        return x

    @torch.no_grad()
    def fuse(self) -> YOLO:
        """Fold every batch-norm into its convolution and merge RepVGGDW branches (inference only)."""
        for module in [m for m in self.modules() if isinstance(m, RepVGGDW)]:
            module.fuse()
        for module in [m for m in self.modules() if isinstance(m, Conv)]:
            module.fuse()
        return self


def inference_copy(model: YOLO) -> YOLO:
    """A copy of ``model`` to run inference with (evaluation, prediction): eval mode, every batch-norm folded into
    its convolution (:meth:`YOLO.fuse`), weights in the channels-last layout that CPU and CUDA convolution kernels
    run fastest (feed it images in either layout; channels-last saves a conversion). ``model`` is untouched."""
    return copy.deepcopy(model).eval().fuse().to(memory_format=torch.channels_last)


def build_model(spec: str | Path | dict, nc: int | None = None, names: list[str] | None = None) -> YOLO:
    """Build a randomly initialised :class:`YOLO` from a name (``"yolov8n"``), a yaml path or a spec dict."""
    return YOLO(spec, nc=nc, names=names)


def block_table(model: YOLO, imgsz: int = 640) -> list[dict]:
    """One dict per block: index, from, module, repeats, params, output shape at ``imgsz``, part."""
    rows = []
    for info in model.blocks:
        if info.part == "head":
            shape = f"{4 + model.nc}x{sum((imgsz // int(s)) ** 2 for s in model.stride.tolist())}"
        else:
            side = math.ceil(imgsz / info.stride)
            shape = f"{info.out_channels}x{side}x{side}"
        rows.append({"index": info.index, "from": info.source, "module": info.module, "repeats": info.repeats,
                     "params": sum(p.numel() for p in model.model[info.index].parameters()),
                     "output": shape, "part": info.part})
    return rows


class ClassTransfer(NamedTuple):
    """What :func:`with_class_names` did: the new model, the classes kept (by name) and what was re-initialised."""

    model: YOLO
    kept: dict[str, int]  # new class name -> the old class index its output rows came from
    fresh_classes: list[str]  # new classes the old model did not have: prior-initialised outputs
    fresh_tensors: list[str]  # state-dict keys initialised afresh (their shape depends on the class count)

    def message(self) -> str:
        """One line for the user, empty when nothing changed."""
        unchanged = list(self.kept.values()) == list(range(len(self.kept)))
        if not self.fresh_classes and not self.fresh_tensors and unchanged:
            return ""
        parts = []
        if self.kept:
            parts.append(f"kept by name: {', '.join(f'{n} (was {i})' for n, i in self.kept.items())}")
        if self.fresh_classes:
            parts.append(f"new classes, class outputs initialised afresh: {', '.join(self.fresh_classes)}")
        widened = sorted({_class_branch(k) for k in self.fresh_tensors if not _is_class_output(k)})
        if widened:
            parts.append(f"class-branch layers whose width depends on the class count initialised afresh: "
                         f"{', '.join(widened)}")
        return "; ".join(parts)


def _class_branch(key: str) -> str | None:
    """``"model.22.cv3.0"`` for any key of a classification branch (level 0 there), else None."""
    match = re.match(r"(.*\.(?:one2one_)?cv3\.\d+)\.", key)
    return match.group(1) if match else None


def _is_class_output(key: str) -> bool:
    """Whether a state-dict key is the last (class-logit) layer of a head's classification branch."""
    return bool(re.search(r"\.(one2one_)?cv3\.\d+\.2\.(weight|bias)$", key))


def with_class_names(model: YOLO, names: list[str]) -> ClassTransfer:
    """A copy of ``model`` that predicts ``names``, for fine-tuning on a dataset with other classes.

    Every tensor whose shape does not depend on the class count is copied. The class-logit rows of a class
    the model already knows (same name, compared as in :func:`names.name_key`) are copied from that class, so
    the same names in another order are a pure remap; other classes get the head's prior initialisation.
    Layers of the classification branch whose width depends on the class count (``max(c, min(nc, 100))``
    channels: e.g. yolov8n's, 80 wide for COCO but 64 for 2 classes) are initialised afresh, and so are
    the class rows on top of them.
    """
    fresh = YOLO(model.spec, nc=len(names), names=list(names))
    old_state, new_state = model.state_dict(), fresh.state_dict()
    old_index = {name_key(n): i for i, n in enumerate(model.names)}
    source = [old_index.get(name_key(n)) for n in names]
    fresh_tensors = [k for k, v in new_state.items() if not _is_class_output(k) and old_state[k].shape != v.shape]
    widened_branches = {_class_branch(k) for k in fresh_tensors}
    for key, value in new_state.items():
        if key in fresh_tensors:
            continue
        if not _is_class_output(key):
            value.copy_(old_state[key])
        elif _class_branch(key) in widened_branches:
            fresh_tensors.append(key)
        else:
            for new_class, old_class in enumerate(source):
                if old_class is not None:
                    value[new_class] = old_state[key][old_class]
    if widened_branches:  # the class rows sit on fresh layers: nothing of the old classes survives
        source = [None] * len(names)
    kept = {n: i for n, i in zip(names, source) if i is not None}
    return ClassTransfer(fresh, kept, [n for n, i in zip(names, source) if i is None], fresh_tensors)
