"""The reference's training recipe as small pure pieces: config, optimiser and its parameter groups, warm-up and
schedule, step, EMA.

The training loop reads (``nb`` batches per epoch, ``iteration = i + nb * epoch`` counts batches from 0)::

    optimizer = build_optimizer(model, cfg, trainable)        # pg0 weights, pg1 norm weights, pg2 biases
    ema, last_step = ModelEMA(model), -1
    for epoch in range(cfg.epochs):
        for i, batch in enumerate(loader):
            iteration = i + nb * epoch
            accumulate = apply_schedule(optimizer, iteration, epoch, cfg, nb)
            loss(model(batch)).backward()
            if step_due(iteration, last_step, accumulate):
                grad_norm = optimizer_step(model, optimizer, ema)
                last_step = iteration

Recipe (Ultralytics 8.4.190's ``BaseTrainer``; checked against it in tests/training/test_optim.py for SGD, AdamW and
``auto``):

- The optimiser (``optimizer``): SGD with Nesterov momentum (this project's default, the layer-freezing paper's),
  Adam or AdamW with ``betas = (momentum, 0.999)``, or RMSprop with ``momentum``; ``auto`` (the reference's default)
  becomes AdamW with ``lr0 = round(0.01 / (4 + nc), 6)`` and momentum 0.9 when the run has at most 10,000
  iterations (``ceil(images / max(batch, nbs)) * epochs``), else SGD with lr0 0.01 and momentum 0.9 (the pinned
  reference picks its MuSGD there, which this project does not have), and in both cases bias warm-up from 0
  (:func:`resolve_auto`). Three groups for every optimiser: pg0 weights with weight decay, pg1
  normalisation-layer weights and pg2 biases, both without decay. Weight decay is
  ``weight_decay * batch * accumulate / nbs``.
- Gradients of ``accumulate = round(nbs / batch)`` batches are summed before each step (at least 1, at most
  the number of batches in the run), so a step always sees about ``nbs`` images.
- Learning rate per epoch ``lr0 * lf(epoch)``, ``lf`` from 1 at epoch 0 to ``lrf`` at ``epochs``: linear, or half a
  cosine with ``cos_lr``.
- Warm-up over ``round(min(warmup_epochs, epochs - 1) * nb)`` iterations (none in a one-epoch run): linearly
  in the iteration, pg2's lr falls from ``warmup_bias_lr`` and the others' rise from 0 to the epoch's lr,
  momentum rises from ``warmup_momentum`` to ``momentum`` (SGD and RMSprop; Adam's first beta stays at
  ``momentum``, as in the reference), and ``accumulate`` grows from 1.
- Before each step the gradients' total L2 norm is clipped to 10; after it, an EMA of the weights is updated.

A parameter is trained only when it requires gradients and ``trainable`` (a FreezePlan's choice) accepts it;
the others never enter the optimiser, so they get no momentum buffer and no weight decay. The DFL projection
is built with ``requires_grad=False`` and so is never trained. The reference puts frozen parameters in its
groups, but without gradients SGD skips them, so the updates are the same.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.augment import LIMITS as AUGMENT_LIMITS
from ..data.augment import AugmentSettings
from ..freezing.plan import LrSplit

LOGGER = logging.getLogger(__name__)

GROUPS = ("weight", "norm", "bias")  # pg0, pg1, pg2: the order of the results.csv columns lr/pg0, lr/pg1, lr/pg2
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)
MAX_GRAD_NORM = 10.0
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "auto")
AUTO_SGD_ITERATIONS = 10_000  # optimizer=auto: longer runs get SGD, shorter ones AdamW
AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentSettings))


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters, with the reference's names and defaults (``args.yaml`` lists them).

    Units: ``epochs`` passes over the training set, ``batch`` and ``nbs`` images, ``imgsz`` pixels,
    ``patience`` epochs without improvement before early stopping; ``box``/``cls``/``dfl`` are loss gains.
    """

    epochs: int = 100
    batch: int = 16
    imgsz: int = 640
    patience: int = 100
    seed: int = 0
    nbs: int = 64  # nominal batch: images per optimiser step, reached by accumulating gradients
    lr0: float = 0.01
    lrf: float = 0.01  # final learning rate as a fraction of lr0
    momentum: float = 0.937
    weight_decay: float = 5e-4  # for a batch of nbs images; scaled by batch * accumulate / nbs
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5
    optimizer: str = "SGD"  # SGD, Adam, AdamW, RMSprop, or auto (resolved by resolve_auto once the data is known)
    cos_lr: bool = False  # cosine instead of linear decay from lr0 to lr0 * lrf
    fliplr: float = 0.0  # augmentation (yolofreeze.data.augment): probability of a horizontal flip
    hsv_h: float = 0.0  # HSV jitter ranges
    hsv_s: float = 0.0
    hsv_v: float = 0.0
    mosaic: float = 0.0  # probability of a 4-image mosaic
    degrees: float = 0.0  # affine: rotation range
    translate: float = 0.0  # affine: shift range, fraction of imgsz
    scale: float = 0.0  # affine: zoom range, 1 ± scale
    close_mosaic: int = 10  # mosaic off for the last this many epochs

    def __post_init__(self):
        for name in ("epochs", "batch", "imgsz", "nbs"):
            _require(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, "an integer >= 1")
        _require(isinstance(self.patience, int) and self.patience >= 0, "patience", "an integer >= 0")
        _require(self.lr0 > 0, "lr0", "> 0")
        _require(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        _require(0 < self.momentum < 1, "momentum", "in (0, 1) (SGD's momentum, Adam's first beta)")
        _require(0 <= self.warmup_momentum < 1, "warmup_momentum", "in [0, 1)")
        for name in ("lrf", "weight_decay", "warmup_epochs", "warmup_bias_lr", "box", "cls", "dfl"):
            _require(getattr(self, name) >= 0, name, ">= 0")
        for name, (allowed, what) in AUGMENT_LIMITS.items():
            _require(allowed(getattr(self, name)), name, what)

    def augmentation(self) -> AugmentSettings:
        """The training images' augmentation (nothing active by default)."""
        return AugmentSettings(**{name: getattr(self, name) for name in AUGMENT_FIELDS})

    @property
    def val_batch(self) -> int:
        """Images per validation batch: twice the training batch (the reference's validator)."""
        return 2 * self.batch

    def to_dict(self) -> dict:
        """Plain ``{name: value}`` in field order, for ``args.yaml``."""
        return dataclasses.asdict(self)


def _require(ok: bool, name: str, what: str) -> None:
    if not ok:
        raise ValueError(f"training setting {name} (--{name.replace('_', '-')}) must be {what}")


def optimizer_name(text: str) -> str:
    """The canonical spelling of an optimiser name given in any case (``adamw`` → ``AdamW``, ``RMSProp`` →
    ``RMSprop``); ValueError for an unknown one."""
    found = {name.lower(): name for name in OPTIMIZERS}.get(str(text).lower())
    if found is None:
        raise ValueError(f"unknown optimizer {text!r}: choose one of {', '.join(OPTIMIZERS)}")
    return found


def resolve_auto(cfg: TrainConfig, nc: int, images: int) -> TrainConfig:
    """``cfg`` with ``optimizer="auto"`` made concrete for a dataset of ``nc`` classes and ``images`` training
    images, as the reference decides (see the module docstring); any other ``cfg`` unchanged."""
    if cfg.optimizer != "auto":
        return cfg
    iterations = math.ceil(images / max(cfg.batch, cfg.nbs)) * cfg.epochs
    if iterations > AUTO_SGD_ITERATIONS:
        return dataclasses.replace(cfg, optimizer="SGD", lr0=0.01, momentum=0.9, warmup_bias_lr=0.0)
    return dataclasses.replace(cfg, optimizer="AdamW", lr0=round(0.002 * 5 / (4 + nc), 6), momentum=0.9,
                               warmup_bias_lr=0.0)


def accumulate(cfg: TrainConfig) -> int:
    """Batches whose gradients are summed per optimiser step: ``round(nbs / batch)``, at least 1."""
    return max(round(cfg.nbs / cfg.batch), 1)


def scaled_weight_decay(cfg: TrainConfig) -> float:
    """pg0's weight decay: ``weight_decay * batch * accumulate / nbs`` (the images one step actually sees)."""
    return cfg.weight_decay * cfg.batch * accumulate(cfg) / cfg.nbs


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """``lf(epoch)``: 1 at epoch 0, falling to ``lrf`` at ``epochs``, linearly or (``cos_lr``) along half a cosine
    (the epoch's lr is ``lr0 * lf``)."""
    if cfg.cos_lr:
        return max((1 - math.cos(epoch * math.pi / cfg.epochs)) / 2, 0) * (cfg.lrf - 1.0) + 1.0
    return max(1 - epoch / cfg.epochs, 0) * (1.0 - cfg.lrf) + cfg.lrf


def warmup_iterations(cfg: TrainConfig, nb: int) -> int:
    """Iterations of warm-up: ``round(min(warmup_epochs, epochs - 1) * nb)``, 0 for a one-epoch run.

    ``nb`` is the number of batches per epoch. Warm-up covers iterations ``0 … warmup_iterations``
    inclusive: at the last one every value lands exactly on its target.
    """
    if nb < 1:
        raise ValueError(f"an epoch needs at least one batch, got nb={nb}")
    epochs = min(cfg.warmup_epochs, max(cfg.epochs - 1, 0))
    return round(epochs * nb) if epochs > 0 else 0


def _warming(iteration: int, cfg: TrainConfig, nb: int) -> bool:
    if iteration < 0:
        raise ValueError(f"iteration counts batches from 0, got {iteration}")
    warmup = warmup_iterations(cfg, nb)
    return warmup > 0 and iteration <= warmup


def _ramp(iteration: int, cfg: TrainConfig, nb: int, start: float, end: float) -> float:
    """Linear from ``start`` at iteration 0 to ``end`` at the last warm-up iteration."""
    return float(np.interp(iteration, [0, warmup_iterations(cfg, nb)], [start, end]))


def lr_at(iteration: int, epoch: int, cfg: TrainConfig, nb: int, bias: bool = False) -> float:
    """Learning rate of a group at a global ``iteration`` (``i + nb * epoch``) of ``epoch``.

    ``lr0 * lf(epoch)``; during warm-up a ramp to that value from ``warmup_bias_lr`` (``bias=True``, pg2)
    or from 0 (pg0, pg1).
    """
    scheduled = cfg.lr0 * lr_factor(epoch, cfg)
    if not _warming(iteration, cfg, nb):
        return scheduled
    return _ramp(iteration, cfg, nb, cfg.warmup_bias_lr if bias else 0.0, scheduled)


def momentum_at(iteration: int, cfg: TrainConfig, nb: int) -> float:
    """Momentum (SGD, RMSprop) at a global ``iteration``: ``warmup_momentum`` rising to ``momentum`` during
    warm-up."""
    if not _warming(iteration, cfg, nb):
        return cfg.momentum
    return _ramp(iteration, cfg, nb, cfg.warmup_momentum, cfg.momentum)


def accumulate_at(iteration: int, cfg: TrainConfig, nb: int) -> int:
    """Batches to accumulate per step at a global ``iteration``.

    After warm-up: :func:`accumulate`, capped at the run's ``nb * epochs`` batches. During warm-up it grows
    from 1 to that value, rounded half to even.
    """
    target = min(accumulate(cfg), nb * cfg.epochs)
    if not _warming(iteration, cfg, nb):
        return target
    return max(1, round(_ramp(iteration, cfg, nb, 1, target)))


def step_due(iteration: int, last_step: int, accumulate: int) -> bool:
    """True when the batch at ``iteration`` completes an accumulation: ``accumulate`` batches since ``last_step``.

    ``last_step`` is the iteration of the previous optimiser step, -1 before the first.
    """
    return iteration - last_step >= accumulate


def _group_of(param_name: str, module: nn.Module) -> str:
    if param_name == "bias":
        return "bias"
    return "norm" if isinstance(module, NORM_LAYERS) else "weight"


def param_groups(model: nn.Module, trainable: Callable[[str], bool] | None,
                 cfg: TrainConfig, lr_split: LrSplit | None = None) -> list[dict]:
    """The SGD parameter groups: three kinds, each its own group, in the order of the results.csv columns
    lr/pg0, lr/pg1, lr/pg2 — three per label of ``lr_split`` when given (label-major).

    pg0 ``"weight"``: weights of convolutions (and any other non-normalisation layer), with
    :func:`scaled_weight_decay`; pg1 ``"norm"``: normalisation-layer weights, no decay; pg2 ``"bias"``:
    every bias (normalisation layers' too), no decay. A parameter enters only when it requires gradients
    and ``trainable(name)`` (dotted state-dict name, e.g. ``"model.0.conv.weight"``) is true or
    ``trainable`` is None. Each group is ``{"params", "name" (the kind), "label", "lr_mult", "weight_decay"}``
    (label ``"all"`` and multiplier 1 without ``lr_split``); every group exists even when empty, so the layout
    stays the same when the trainable set changes. Raises ValueError when no parameter is trainable.
    """
    labels = lr_split.labels if lr_split else (("all", 1.0),)
    members: dict[tuple[str, str], list[nn.Parameter]] = {(label, kind): [] for label, _ in labels for kind in GROUPS}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if param.requires_grad and (trainable is None or trainable(full_name)):
                label = lr_split.label_of(full_name) if lr_split else "all"
                members[(label, _group_of(param_name, module))].append(param)
    if not any(members.values()):
        raise ValueError("no trainable parameters: every parameter is frozen")
    decay = {"weight": scaled_weight_decay(cfg), "norm": 0.0, "bias": 0.0}
    return [{"params": members[(label, kind)], "name": kind, "label": label, "lr_mult": multiplier,
             "weight_decay": decay[kind]} for label, multiplier in labels for kind in GROUPS]


def regroup(optimizer: torch.optim.Optimizer, model: nn.Module, trainable: Callable[[str], bool],
            cfg: TrainConfig, lr_split: LrSplit | None = None) -> None:
    """Make ``optimizer`` train what ``trainable`` accepts now (progressive unfreezing), in place.

    Parameters that stay keep their momentum; newly trainable ones join their group with fresh state (SGD
    starts their momentum buffer at their first step); ones no longer trainable leave, with their state.
    The groups keep their order and settings; inside a group parameters are in model order, as a fresh
    :func:`build_optimizer` would put them, so a resumed run's optimiser state lines up.
    """
    for group, fresh in zip(optimizer.param_groups, param_groups(model, trainable, cfg, lr_split), strict=True):
        group["params"] = fresh["params"]
    kept = {p for group in optimizer.param_groups for p in group["params"]}
    for param in [p for p in optimizer.state if p not in kept]:
        del optimizer.state[param]


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    trainable: Callable[[str], bool] | None = None,
                    lr_split: LrSplit | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over :func:`param_groups` with ``lr0`` (the schedule overrides it): Nesterov SGD with
    ``momentum``, Adam / AdamW with ``betas=(momentum, 0.999)``, RMSprop with ``momentum``. ``auto`` must be
    resolved first (:func:`resolve_auto`: it depends on the dataset)."""
    groups = param_groups(model, trainable, cfg, lr_split)
    if cfg.optimizer == "SGD":
        return torch.optim.SGD(groups, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer in ("Adam", "AdamW"):
        kind = torch.optim.AdamW if cfg.optimizer == "AdamW" else torch.optim.Adam
        return kind(groups, lr=cfg.lr0, betas=(cfg.momentum, 0.999), weight_decay=0.0)
    if cfg.optimizer == "RMSprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr0, momentum=cfg.momentum)
    raise ValueError(f"optimizer {cfg.optimizer!r} must be resolved for the dataset first (resolve_auto)")


def apply_schedule(optimizer: torch.optim.Optimizer, iteration: int, epoch: int, cfg: TrainConfig, nb: int) -> int:
    """Set every group's lr and momentum for this ``iteration`` (before its forward pass); return its accumulate.

    Groups are told apart by their ``"name"`` (see :func:`param_groups`); pg2 ``"bias"`` warms up from above.
    Each group's lr is multiplied by its ``"lr_mult"`` (1 when absent): the whole schedule, warm-up included.
    Momentum is set where the optimiser has one (SGD, RMSprop; Adam's betas stay).
    """
    momentum = momentum_at(iteration, cfg, nb)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(iteration, epoch, cfg, nb, bias=group["name"] == "bias") * group.get("lr_mult", 1.0)
        if "momentum" in group:
            group["momentum"] = momentum
    return accumulate_at(iteration, cfg, nb)


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, ema: ModelEMA | None,
                   scaler: torch.amp.GradScaler | None = None,
                   on_norms: Callable[[list[nn.Parameter], list[torch.Tensor], torch.Tensor], None] | None = None,
                   ) -> float:
    """Clip, step, clear the gradients and update the EMA; return the total gradient L2 norm before clipping.

    With a ``GradScaler`` the gradients are unscaled before clipping, and the step is skipped (the norm
    is then inf or nan, ``on_norms`` is not called, a warning is logged with the new loss scale) when they
    overflowed. Clipping scales the gradients of all of ``model``'s parameters
    that are in the optimiser together so that their joint L2 norm is at most ``MAX_GRAD_NORM`` (10); the norm
    is computed as ``clip_grad_norm_`` computes it (one fused norm per tensor, then the norm of those).

    ``on_norms(params, norms, total)``, when given, sees the gradients the optimiser applies at the only point
    where they are final: unscaled, summed over the accumulated batches, averaged by DDP, not yet clipped.
    ``params`` are the trained parameters with a gradient in model order, ``norms`` their gradients' L2 norms
    (0-d tensors) and ``total`` the norm clipping uses.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = [p for p in model.parameters() if id(p) in trained and p.grad is not None]  # model order
    norms = list(torch._foreach_norm([p.grad for p in params])) if params else []
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    overflowed = scaler is not None and not bool(torch.isfinite(total))
    if on_norms is not None and not overflowed:
        on_norms(params, norms, total)
    nn.utils.clip_grads_with_norm_(params, MAX_GRAD_NORM, total)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
        if overflowed:
            LOGGER.warning("optimizer step skipped: the float16 gradients overflowed (norm %s); loss scale now %g",
                           float(total), scaler.get_scale())
    else:
        optimizer.step()
    optimizer.zero_grad()
    if ema is not None:
        ema.update(model)
    return float(total)


class ModelEMA:
    """Exponential moving average of a model: the weights evaluated and saved as ``best``/``last``.

    ``module`` is a frozen copy in eval mode. Every update moves each floating-point entry of its
    ``state_dict`` (parameters and buffers: batch-norm running means and variances too; integer
    counters are left alone) towards the model's: ``ema = d * ema + (1 - d) * model`` with
    ``d = decay * (1 - exp(-updates / tau))``, so early updates follow the model closely
    (``d`` ≈ 0.0005 at the first update, 0.63 * decay after ``tau`` updates).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def decay_at(self, updates: int) -> float:
        """``d`` after ``updates`` updates: the weight kept by the average."""
        return self.decay * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Count one update and average ``model``'s current state into :attr:`module`."""
        self.updates += 1
        keep = self.decay_at(self.updates)
        current = model.state_dict()
        pairs = [(average, current[name]) for name, average in self.module.state_dict().items()
                 if average.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in pairs], [c for _, c in pairs], 1.0 - keep)  # one fused kernel launch
