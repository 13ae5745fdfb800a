"""The training loop: the reference's recipe around our model, loss, data and evaluation.

Data flow per epoch: shuffled training batches (one ``DistributedSampler`` shard per process; a single process is
the one-shard case, so the order is a function of ``seed`` and the epoch, which is what makes resume exact) →
``model`` in train mode with the frozen blocks' batch-norm in eval (:class:`FreezePlan`) → loss → backward →
every ``accumulate`` batches a clipped optimiser step and an EMA update (:mod:`yolofreeze.training.optim`) → after the
epoch the EMA weights are evaluated with pycocotools (:func:`yolofreeze.evaluation.evaluate.evaluate`), a ``results.csv``
row is written, and ``weights/last.pt`` (and ``best.pt`` when the fitness ``0.1 * mAP50 + 0.9 * mAP50-95``
improved) are saved atomically.

``last.pt`` is our checkpoint with the EMA weights plus a ``train`` entry holding everything a resumed run needs:
the raw training weights, optimiser and AMP-scaler state, gradients accumulated towards a step not yet taken,
the EMA's update count, the last step's iteration, the best fitness and epoch, the RNG states and the settings.
All of it is tensors and plain Python values, so it loads with ``torch.load(..., weights_only=True)``.

Under ``torchrun`` every process trains on its shard with ``DistributedDataParallel`` (gloo on CPU, NCCL on
CUDA); ``batch`` is the total over processes; only rank 0 validates, logs and writes files.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DistributedSampler
from tqdm import tqdm

from ..data import Batch, DatasetInfo, build_dataloader, collate
from ..evaluation.evaluate import EvalResult, evaluate
from ..freezing.audit import record_decision, record_phase, verify_phase, write_audit
from ..freezing.auto import GradientIntervals, decide_freeze
from ..freezing.cache import (FEATURE_CACHE_DIR, CacheEstimate, FeatureBatch, FeatureCache, estimate_run_cache,
                              phase_caches, split_datasets)
from ..freezing.folded import FoldedPrefix, foldable_length
from ..freezing.gradnorm import GradNormMonitor, summarize_grad_norms
from ..freezing.memory import PhaseMemory, memory_record, profile_plan_memory
from ..freezing.plan import FreezePlan
from ..model import YOLO, PrefixOutputs
from ..plots import plot_grad_norms, plot_results
from ..weights.checkpoints import CheckpointWriteError, atomic_torch_save, checkpoint_dict
from .loss import build_loss
from .optim import (GROUPS, ModelEMA, TrainConfig, apply_schedule, build_optimizer, optimizer_step, regroup, step_due,
                    warmup_iterations)
from .board import RunBoard
from .stopping import StopSignals, TrainingInterrupted
from .runs import append_results, keep_epochs, results_columns, write_args

LOGGER = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped (``last.pt`` holds the last good epoch)."""


def fitness(result: EvalResult) -> float:
    """The reference's model-selection score: ``0.1 * mAP50 + 0.9 * mAP50-95``."""
    return 0.1 * result.map50 + 0.9 * result.map50_95


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` job (``world_size`` 1 without one)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the process that validates, logs and writes files."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str | torch.device = "cpu") -> Distributed:
        """Join the ``torchrun`` process group described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, if any.

        On CUDA each process takes ``cuda:LOCAL_RANK`` and NCCL; on CPU gloo. Without ``torchrun`` nothing is
        initialised and ``device`` is used as given.
        """
        device = torch.device(device)
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(0, 1, device)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def broadcast(self, value):
        """Rank 0's ``value`` on every process (any picklable object)."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process (one small all-reduce with ``torchrun``)."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


class WaitClock:
    """Iterates ``iterable`` and adds up in ``seconds`` the time spent waiting for each next item (for a loader:
    the data loading its workers did not hide)."""

    def __init__(self, iterable: Iterable) -> None:
        self.iterable, self.seconds = iterable, 0.0

    def __iter__(self):
        iterator = iter(self.iterable)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.seconds += time.perf_counter() - started
            yield item


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def amp_dtype(amp: bool | str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed precision on ``device``, or None (float32): ``"fp16"`` / ``"bf16"`` on any
    device; None or True: float16 on CUDA only (the default); False or ``"off"``: None."""
    if amp is None or amp is True:
        return torch.float16 if device.type == "cuda" else None
    if amp is False or amp == "off":
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f"mixed precision {amp!r}: choose from {', '.join(AMP_DTYPES)} or off")
    return AMP_DTYPES[amp]


@dataclass
class TrainSummary:
    """What a finished run reports: where its files are, its best epoch and that epoch's evaluation."""

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_fitness: float
    best: EvalResult | None
    stopped_early: bool
    seconds: float
    unreadable: list[str]
    grad_norms: dict[str, dict[str, float]] = field(default_factory=dict)  # summarize_grad_norms of the run
    freezes: list[dict] = field(default_factory=list)  # --freeze auto: the decisions that froze blocks

    def to_dict(self) -> dict:
        """Plain values (``summary.json``; its presence marks a finished run)."""
        return {"run_dir": str(self.run_dir), "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "best_fitness": self.best_fitness, "best": self.best.to_dict() if self.best else None,
                "stopped_early": self.stopped_early, "seconds": self.seconds, "unreadable": self.unreadable,
                "grad_norms": self.grad_norms, "freezes": self.freezes}


def compile_unavailable(device: str | torch.device) -> str | None:
    """Why ``torch.compile`` (Inductor) cannot compile the training step on ``device`` here (one sentence), or None:
    on CPU it builds C++ kernels with the compiler ``CXX`` names (default ``g++``), on CUDA Triton kernels."""
    if torch.device(device).type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "--compile on CUDA needs the triton package (pip install triton), which is not installed"
        return None
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        return (f"--compile on CPU needs a C++ compiler, and {compiler!r} is not on PATH (install g++, or set CXX "
                f"to one)")
    return None


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """The ``memory/*`` columns of ``results.csv`` in MiB: the process's peak resident set (any device) and,
    on CUDA, the peak allocated and reserved since the last ``reset_peak_memory_stats`` (NaN elsewhere)."""
    cuda = device.type == "cuda"
    return {"memory/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
            "memory/cuda_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else math.nan,
            "memory/cuda_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20 if cuda else math.nan}


def _memory_label(device: torch.device) -> str:
    """Progress-bar memory: ``allocated/reserved`` GiB on CUDA (peaks of the epoch), peak RSS on CPU."""
    peaks = peak_memory_mb(device)
    if device.type == "cuda":
        return f"{peaks['memory/cuda_allocated_mb'] / 1024:.2f}/{peaks['memory/cuda_reserved_mb'] / 1024:.2f}G"
    return f"{peaks['memory/peak_rss_mb'] / 1024:.2f}G"


class Trainer:
    """Fine-tune (or train from scratch) ``model`` on ``data`` with the reference recipe ``cfg``.

    Args:
        model: the network to train, already predicting ``data``'s classes in ``data``'s order
            (see :func:`yolofreeze.model.with_class_names`).
        data: the dataset; its ``train`` split trains, its ``val`` split validates each epoch.
        cfg: the recipe (epochs, batch, image size, optimiser and its hyper-parameters, loss gains).
        run_dir: the run's folder (``runs/train/<name>``), created beforehand.
        plan: which blocks are frozen, with its batch-norm policy, learning-rate multipliers and unfreezing
            schedule (default: none frozen); with an adaptive rule (``--freeze auto``) the trainer feeds it the
            gradients and each decision becomes a phase from the next epoch (:meth:`decide`).
        device: where to train; under ``torchrun`` on CUDA each process uses its local rank's GPU.
        workers: data-loader worker processes per training process.
        cache_images: keep the decoded, resized training images in RAM (``--cache``; not the frozen-prefix cache).
        amp: mixed precision (:func:`amp_dtype`): ``"fp16"`` (float16 autocast and a gradient scaler) or
            ``"bf16"`` (bfloat16 autocast, no scaler) on any device; None or True: fp16 on CUDA, none elsewhere;
            False or ``"off"``: none.
        settings: what ``args.yaml`` and the checkpoints record about the run besides ``cfg`` (data, model,
            weights, freeze …): what a resume needs to rebuild it.
        progress: show tqdm bars.
        grad_norms: log per-step gradient norms (``grad_norms.csv``, ``grad_norm/*`` columns, ``grad_norms.png``).
        cache_frozen: ``"ram"`` or ``"disk"``: compute the frozen prefix's outputs for the train and val images once
            and run the model from the first trainable block (:mod:`yolofreeze.freezing.cache`; disk entries go to
            ``<run>/feature_cache`` and are deleted when ``fit`` ends; with ``--unfreeze`` each phase with a frozen
            prefix caches its own prefix's outputs, a phase with nothing frozen trains on images); None: no cache.
        cache_dtype: ``"fp32"`` or ``"fp16"``: how the cached outputs are stored.
        tensorboard: write each epoch to TensorBoard event files in the run folder (:mod:`.board`; rank 0).
        channels_last: keep the model's 4-D weights and every image and feature map it is fed in the channels-last
            (NHWC) memory layout, which the CPU's and CUDA's convolution kernels run faster (1.1-1.3x a CPU step);
            off by default because PyTorch's CPU batch-norm accumulates channels-last training statistics less
            precisely: with nothing frozen the gradient moved 3e-4 to 4e-3 of its norm from a float64 step
            (NCHW: 6e-6), see tests/training/test_channels_last.py. False: NCHW, the reference loop's exact step.
        fold_frozen: run a frozen prefix ``0 … k-1`` (batch-norm in eval) as a folded inference copy
            (:mod:`yolofreeze.freezing.folded`; outputs equal up to float rounding, bound measured there); the
            frozen-prefix cache is built with the same copy. False: the model's own frozen blocks run.
        compile: run the training forward (and so its backward) through ``torch.compile`` (Inductor), compiled on
            the first step and again when a freeze phase changes what trains (:func:`compile_unavailable` says
            when it cannot work here). Validation and the EMA run uncompiled.

    Raises CacheNotApplicable (the plan's frozen outputs are not fixed) or CacheTooLarge with ``cache_frozen``.
    """

    def __init__(self, model: YOLO, data: DatasetInfo, cfg: TrainConfig, run_dir: str | Path,
                 plan: FreezePlan | None = None, device: str | torch.device = "cpu", workers: int = 2,
                 cache_images: bool = False, amp: bool | str | None = None, settings: dict | None = None,
                 progress: bool = True, grad_norms: bool = True, cache_frozen: str | None = None,
                 cache_dtype: str = "fp32", tensorboard: bool = False, channels_last: bool = False,
                 fold_frozen: bool = True, compile: bool = False) -> None:
        for split in ("train", "val"):
            if not data.splits.get(split):
                raise ValueError(f"dataset {data.root} has no {split} images")
        if model.names != data.names:
            raise ValueError("the model's classes differ from the dataset's: align them first "
                             "(yolofreeze.model.with_class_names)")
        self.dist = Distributed.from_env(device)
        if cfg.batch % self.dist.world_size:
            raise ValueError(f"batch {cfg.batch} must divide evenly over {self.dist.world_size} processes")
        self.device = self.dist.device
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.freeze_plan = plan or FreezePlan.prefix(0, model)  # the whole plan; self.plan: the current phase's
        self.freeze_plan.check_schedule(cfg.epochs)
        self.plan = self.freeze_plan.at(0)
        self.amp_dtype = amp_dtype(amp, self.device)
        self.amp = self.amp_dtype is not None
        self.settings = dict(settings or {})
        self.workers, self.progress = workers, progress and self.dist.main
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.plan.apply(model).to(self.device, memory_format=self.memory_format)
        self.fold_frozen, self.compile = fold_frozen, compile
        self.folded: FoldedPrefix | None = None  # this epoch's folded copy of the frozen prefix (fold_frozen)
        self.criterion = build_loss(self.model, cfg.to_dict())
        self.optimizer = build_optimizer(self.model, cfg, self.plan.trainable, self.freeze_plan.lr_split())
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.model)
        self.start_epoch, self.last_step = 0, -1
        self.saved_epochs = 0  # the epochs last.pt holds
        self.position = (0, -1)  # (epoch, batch) of the last training step, 0-based
        self.stop = StopSignals(self.resume_hint)  # SIGTERM / Ctrl-C during fit: stop at the next step boundary
        self.best_fitness, self.best_epoch, self.best_result = -math.inf, 0, None
        self.unreadable: set[str] = set()
        self.sampler = DistributedSampler(range(len(data.splits["train"])), num_replicas=self.dist.world_size,
                                          rank=self.dist.rank, shuffle=True, seed=cfg.seed)
        stride = max(32, int(self.model.stride.max()))
        self.loader = build_dataloader(data.splits["train"], cfg.imgsz, cfg.batch // self.dist.world_size,
                                       workers=workers, seed=cfg.seed, cache_images=cache_images, stride=stride,
                                       sampler=self.sampler, augment=cfg.augmentation(),
                                       epochs=cfg.epochs)
        self.nb = len(self.loader)
        self.cache_mode, self.cache_dtype = cache_frozen, cache_dtype
        self.cache_estimate: CacheEstimate | None = None  # with cache_frozen: its size, checked against RAM/disk
        if cache_frozen and cfg.augmentation().active:
            raise ValueError("the frozen-prefix cache computes each image's prefix outputs once; augmentation "
                             "changes the images every epoch")
        if cache_frozen:
            self.cache_estimate = estimate_run_cache(self.model, self.freeze_plan, data.splits, cfg.imgsz,
                                                     self.cfg.val_batch, cache_frozen, cache_dtype, self.run_dir)
        self.feature_caches = self._feature_caches()
        self.grad_norms = GradNormMonitor(self.model) if grad_norms and self.dist.main else None
        self.board = RunBoard(self.run_dir) if tensorboard and self.dist.main else None
        rule = self.freeze_plan.auto  # adaptive freezing: rank 0 sums the gradients and decides, all apply
        self.intervals = GradientIntervals(self.model, rule) if rule and self.dist.main else None
        self.network = self._wrap()

    # -- files of the run folder --------------------------------------------------------------------------------

    @property
    def weights_dir(self) -> Path:
        """``<run>/weights``: ``last.pt`` and ``best.pt``."""
        return self.run_dir / "weights"

    @property
    def audit_path(self) -> Path:
        """``<run>/freeze_audit.json``: the plan's audit and the integrity record (:mod:`yolofreeze.freezing.audit`)."""
        return self.run_dir / "freeze_audit.json"

    @property
    def memory_path(self) -> Path:
        """``<run>/memory.json``: the memory breakdown of one training step per phase."""
        return self.run_dir / "memory.json"

    @property
    def grad_norms_path(self) -> Path:
        """``<run>/grad_norms.csv``."""
        return self.run_dir / "grad_norms.csv"

    # -- the loop -----------------------------------------------------------------------------------------------

    def fit(self) -> TrainSummary:
        """Train from ``start_epoch`` to ``cfg.epochs`` (or early stop); return the run's summary.

        Each epoch: enter its freeze phase → train → (``--freeze auto``) decide the next phase → check the frozen
        tensors → validate → ``results.csv`` row → checkpoints → early stop? Only rank 0 validates and writes files.

        Raises:
            TrainingDiverged: the loss became NaN or infinite (message names the epoch and batch).
            FrozenTensorChanged: a frozen tensor moved during an epoch (named).
            TrainingInterrupted: SIGTERM or Ctrl-C (at the next step boundary; a second signal at once); the
                message says which epoch ``last.pt`` holds and how to resume.
        """
        with self.stop:
            try:
                return self._fit()
            except (RuntimeError, CheckpointWriteError):
                if not self.stop.requested:
                    raise
                # the signal reached the data-loader workers too (a scheduler signals every process): the loader
                # failed before the next step boundary
                raise self.interrupted() from None
            finally:
                if self.board is not None:
                    self.board.close()

    def _fit(self) -> TrainSummary:
        """The loop of :meth:`fit`."""
        started, stopped_early, epoch = time.perf_counter(), False, self.start_epoch
        if self.dist.main:
            write_args(self.run_dir, {**self.settings, **self.cfg.to_dict()})
            write_audit(self.audit_path, self.freeze_plan, self.plan, self.model, self.start_epoch)
            if not self.memory_path.is_file():
                self.profile_memory()
        for epoch in range(self.start_epoch, self.cfg.epochs):
            if self.enter_phase(epoch) and self.dist.main:
                record_phase(self.audit_path, self.plan, self.model, epoch)
                LOGGER.info("epoch %d: %s", epoch + 1, self.plan.describe(self.model))
            row = self.train_epoch(epoch)
            self.decide(epoch)
            stop = False
            if self.dist.main:
                verify_phase(self.audit_path, self.plan, self.model, epoch)
                validation_started = time.perf_counter()
                result = self.validate()
                row = {**row, "val_seconds": time.perf_counter() - validation_started}
                improved = fitness(result) > self.best_fitness
                if improved:
                    self.best_fitness, self.best_epoch, self.best_result = fitness(result), epoch + 1, result
                row = self.results_row(row, result)
                if self.board is not None:
                    self.board.epoch(epoch + 1, row, self.grad_norms.block_norms() if self.grad_norms else {})
                self.save_epoch(epoch, row, result if improved else None)
                self.log_epoch(epoch, row, result, improved)
                stop = self.cfg.patience > 0 and epoch + 1 - self.best_epoch >= self.cfg.patience
            if self.dist.broadcast(stop):
                stopped_early = epoch + 1 < self.cfg.epochs
                if stopped_early:
                    LOGGER.info("early stop: no improvement in %d epochs; best epoch %d", self.cfg.patience,
                                self.best_epoch)
                break
        return self.finish(epoch, stopped_early, time.perf_counter() - started)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training shard; returns the epoch's mean losses, last learning rates and timing."""
        started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sampler.set_epoch(epoch)
        self.position = (epoch, -1)
        self.plan.set_train_mode(self.model)
        self.folded = self.fold_prefix()
        sums, batches = torch.zeros(3), 0
        waiting = WaitClock(self.epoch_batches())
        bar = tqdm(waiting, total=self.nb, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for i, batch in enumerate(bar):
            iteration = i + self.nb * epoch
            accumulate = apply_schedule(self.optimizer, iteration, epoch, self.cfg, self.nb)
            self.unreadable.update(str(self.data.splits["train"][k].path) for k in batch.failed)
            if not batch.meta:
                continue
            parts = self.train_step(batch, epoch, i)
            if step_due(iteration, self.last_step, accumulate):
                optimizer_step(self.model, self.optimizer, self.ema, self.scaler if self.scaler.is_enabled() else None,
                               self.gradient_observer(epoch, iteration))
                self.last_step = iteration
            self.position = (epoch, i)
            if self.dist.any(self.stop.requested):
                raise self.interrupted()
            sums += torch.stack([parts[name].float().cpu() for name in ("box", "cls", "dfl")])
            batches += 1
            means = sums / batches
            size = batch.shape[-1] if isinstance(batch, FeatureBatch) else batch.images.shape[-1]
            bar.set_postfix_str(f"box {means[0]:.3f} cls {means[1]:.3f} dfl {means[2]:.3f} "
                                f"inst {len(batch.targets)} size {size} mem {_memory_label(self.device)}")
        means = (sums / max(batches, 1)).tolist()
        row = {"epoch": epoch + 1, "train/box_loss": means[0], "train/cls_loss": means[1],
               "train/dfl_loss": means[2], "epoch_seconds": time.perf_counter() - started,
               **peak_memory_mb(self.device), "frozen_blocks": len(self.plan.frozen),
               "data_wait_seconds": waiting.seconds, **self.learning_rates()}
        if self.grad_norms:
            row.update(self.grad_norms.epoch_means())
        return row

    def gradient_observer(self, epoch: int, iteration: int) -> Callable | None:
        """What sees the gradients of the optimiser step at ``iteration`` (:func:`optimizer_step`'s ``on_norms``):
        the gradient-norm monitor and the adaptive rule's interval sums (rank 0), or None."""
        observers = []
        if self.grad_norms:
            observers.append(partial(self.grad_norms.record, step=self.ema.updates + 1, epoch=epoch + 1))
        if self.intervals:
            warming = iteration < warmup_iterations(self.cfg, self.nb)
            observers.append(lambda params, norms, total: self.intervals.add(params, iteration - self.last_step,
                                                                              warming, epoch + 1))
        if not observers:
            return None

        def observe_all(params, norms, total):
            for observe in observers:
                observe(params, norms, total)
        return observe_all

    def decide(self, epoch: int) -> None:
        """With ``--freeze auto``, after ``epoch`` (0-based; not the last): when an interval closed, rank 0 asks the
        rule (:func:`decide_freeze`) and every process gets its decision; it goes into ``freeze_audit.json``, and a
        larger prefix becomes the plan's phase from the next epoch (measured into ``memory.json``)."""
        rule = self.freeze_plan.auto
        if rule is None or epoch + 1 >= self.cfg.epochs:
            return
        decision = None
        if self.intervals is not None and self.intervals.end_epoch(epoch + 1):
            decision = decide_freeze(self.intervals.history, len(self.plan.frozen), rule)
        decision = self.dist.broadcast(decision)
        if decision is None:
            return
        if self.dist.main:
            record_decision(self.audit_path, decision, epoch, self.ema.updates)
            LOGGER.info("epoch %d, auto: %s%s", epoch + 1, decision.reason,
                        f"; blocks 0-{decision.prefix_after - 1} are frozen from epoch {epoch + 2}"
                        if decision.changed else "")
        if decision.changed:
            self.freeze_plan = self.freeze_plan.with_phase(epoch + 1, range(decision.prefix_after))
            if self.dist.main:
                self.profile_memory()

    def train_step(self, batch: Batch | FeatureBatch, epoch: int, index: int) -> dict[str, torch.Tensor]:
        """Forward and backward of one batch (gradients accumulate until the next optimiser step): from the images,
        or with the frozen-prefix cache from the cached outputs of the frozen blocks (the model runs from the first
        trainable block on)."""
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        with autocast:
            if isinstance(batch, FeatureBatch):
                prefix = batch.prefix(self.device)
                inputs = PrefixOutputs(prefix.start, {i: f.contiguous(memory_format=self.memory_format)
                                                      for i, f in prefix.outputs.items()})
            else:
                images = batch.images.to(self.device, non_blocking=True, memory_format=self.memory_format)
                inputs = images.float() / 255
                if self.folded is not None:
                    inputs = self.folded(inputs)
            outputs = self.network(inputs)
        shape = batch.shape if isinstance(batch, FeatureBatch) else tuple(batch.images.shape[-2:])
        total, parts = self.criterion(outputs, batch.targets.to(self.device), shape)
        if not torch.isfinite(total):
            kept = self.weights_dir / "last.pt"
            raise TrainingDiverged(
                f"the loss became {float(total.detach())} at epoch {epoch + 1}, batch {index + 1} of {self.nb}; "
                f"training stopped, " + (f"the last good epoch is in {kept}" if kept.is_file() else
                                         "no epoch had finished, so no checkpoint was written") +
                " (try a lower --lr0, or check the starting weights and the labels)")
        self.scaler.scale(total * self.dist.world_size).backward()  # DDP averages gradients; the recipe sums
        return parts

    def validate(self) -> EvalResult:
        """Evaluate the EMA weights on the val split (batch ``2 * batch``, rectangular batches), val losses too;
        with the frozen-prefix cache from the val images' cached outputs (the EMA's frozen blocks are the model's)."""
        batches = None
        if self.feature_caches:
            cache, size = self.feature_caches["val"], self.cfg.val_batch
            cache.refresh(self.ema.module)
            batches = cache.batches([list(range(s, min(s + size, len(cache.dataset))))
                                     for s in range(0, len(cache.dataset), size)])
        return evaluate(self.ema.module, self.data.splits["val"], self.data.names, self.data.category_ids,
                        imgsz=self.cfg.imgsz, batch=self.cfg.val_batch, workers=self.workers,
                        progress=self.progress, criterion=self.criterion, batches=batches)

    def results_row(self, row: dict[str, float], result: EvalResult) -> dict[str, float]:
        """The epoch's ``results.csv`` row: training ``row`` plus the validation metrics and losses, in file order
        (NaN for a column not measured)."""
        row = {**row, "metrics/precision(B)": result.precision, "metrics/recall(B)": result.recall,
               "metrics/mAP50(B)": result.map50, "metrics/mAP50-95(B)": result.map50_95,
               **{f"val/{name}_loss": result.losses.get(name, math.nan) for name in ("box", "cls", "dfl")}}
        return {column: row.get(column, math.nan) for column in results_columns(row)}

    def save_epoch(self, epoch: int, row: dict[str, float], best: EvalResult | None) -> None:
        """After ``epoch`` (0-based): the gradient norms, ``best.pt`` when ``best`` (the epoch's result, when it
        improved), ``last.pt``, then the ``results.csv`` row. A kill between them is repaired on resume: before
        ``last.pt`` the epoch is trained again (and ``best.pt`` rewritten), after it the row comes from ``last.pt``;
        ``best.pt`` goes first because ``last.pt`` records the best fitness it holds."""
        if self.grad_norms:
            self.grad_norms.flush(self.grad_norms_path)
        if best is not None:
            self.save_best(epoch, best)
        self.save_last(epoch, row)
        append_results(self.run_dir / "results.csv", row)

    def log_epoch(self, epoch: int, row: dict[str, float], result: EvalResult, improved: bool) -> None:
        LOGGER.info("epoch %d/%d  box %.4f cls %.4f dfl %.4f  P %.3f R %.3f  mAP50 %.4f  mAP50-95 %.4f  %.0fs%s",
                    epoch + 1, self.cfg.epochs, row["train/box_loss"], row["train/cls_loss"],
                    row["train/dfl_loss"], result.precision, result.recall, result.map50, result.map50_95,
                    row["epoch_seconds"], "  (best)" if improved else "")

    def finish(self, epoch: int, stopped_early: bool, seconds: float) -> TrainSummary:
        """After the last epoch (0-based ``epoch``): drop the feature caches, draw the plots, write
        ``summary.json`` (the finished marker) and return the summary."""
        for cache in self.feature_caches.values():
            cache.clear()
        grad_summary, freezes = {}, []
        if self.dist.main:
            audit = json.loads(self.audit_path.read_text(encoding="utf-8"))
            freezes = [d for d in audit.get("decisions", []) if d["prefix_after"] > d["prefix_before"]]
            if self.cache_mode:
                shutil.rmtree(self.run_dir / FEATURE_CACHE_DIR, ignore_errors=True)
            if (self.run_dir / "results.csv").is_file():
                plot_results(self.run_dir / "results.csv", self.run_dir / "results.png")
            if self.grad_norms_path.is_file():
                plot_grad_norms(self.grad_norms_path, self.run_dir / "grad_norms.png")
                grad_summary = summarize_grad_norms(self.grad_norms_path)
        summary = TrainSummary(self.run_dir, epoch + 1, self.best_epoch, self.best_fitness, self.best_result,
                               stopped_early, seconds, sorted(self.unreadable), grad_summary, freezes)
        if self.dist.main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=1), encoding="utf-8")
        return summary

    # -- freeze phases ------------------------------------------------------------------------------------------

    def enter_phase(self, epoch: int) -> bool:
        """Switch to the plan's phase for ``epoch`` (0-based) when it differs from the current one: set which
        parameters require gradients (newly frozen ones drop their pending gradient), regroup the optimiser (newly
        trainable parameters start with fresh state; newly frozen ones leave with theirs), rebuild the DDP wrapper
        and, with ``cache_frozen``, the frozen-prefix caches for the new prefix. Returns whether the phase changed."""
        plan = self.freeze_plan.at(epoch)
        if plan.frozen == self.plan.frozen:
            return False
        self.plan = plan
        plan.apply(self.model)
        for param in self.model.parameters():
            if not param.requires_grad:
                param.grad = None
        regroup(self.optimizer, self.model, plan.trainable, self.cfg, self.freeze_plan.lr_split())
        self.network = self._wrap()
        self.feature_caches = self._feature_caches()
        return True

    def _wrap(self) -> torch.nn.Module:
        """The module that runs the forward pass: the model, or its DDP wrapper (rebuilt when the trainable set
        changes, because DDP fixes the parameters it synchronises when it is built); with ``compile`` that module
        compiled (lazily: on its first call)."""
        network = self.model
        if self.dist.world_size > 1:
            network = DistributedDataParallel(self.model,
                                              device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(network) if self.compile else network

    def _feature_caches(self) -> dict[str, FeatureCache]:
        """With ``cache_frozen``: the current phase's frozen-prefix caches of the train and val splits."""
        if not self.cache_mode:
            return {}
        datasets = {**split_datasets(self.model, self.data.splits, self.cfg.imgsz, self.cfg.val_batch),
                    "train": self.loader.dataset}
        return phase_caches(self.model, self.plan, datasets, {"train": self.loader.batch_size, "val": self.cfg.val_batch},
                            self.cache_mode, self.cache_dtype, self.run_dir, self.workers, self.amp_dtype,
                            self.fold_frozen)

    def fold_prefix(self) -> FoldedPrefix | None:
        """With ``fold_frozen``: a folded copy of the current phase's frozen prefix, made from the model's tensors as
        they are now (so a restored or newly frozen prefix is never stale); None when nothing folds or the
        frozen-prefix cache serves the prefix's outputs."""
        length = foldable_length(self.plan)
        if not self.fold_frozen or not length or self.feature_caches:
            return None
        return FoldedPrefix(self.model, length)

    def epoch_batches(self) -> Iterable[Batch | FeatureBatch]:
        """This epoch's training batches (after ``sampler.set_epoch``): images, or with the frozen-prefix cache the
        cached outputs of the same images in the same batches."""
        if not self.feature_caches:
            return self.loader
        cache = self.feature_caches["train"]
        cache.refresh(self.model)
        return cache.batches(BatchSampler(self.sampler, self.loader.batch_size, drop_last=False))

    def loader_memory(self) -> dict:
        """The training data loader's estimated host memory (``DetectionDataset.host_memory``)."""
        return self.loader.dataset.host_memory(self.loader.num_workers, self.loader.batch_size)

    def profile_memory(self) -> list[PhaseMemory]:
        """Measure one real training step of a copy of the model in each phase of the plan on the first training
        images (one process's batch), write ``memory.json`` (:func:`memory_record`) and return the phases. The
        model, optimiser, RNG and data order are untouched (:func:`yolofreeze.freezing.memory.profile_training_step`)."""
        dataset = self.loader.dataset
        samples = [dataset[k] for k in range(len(dataset))[:self.cfg.batch // self.dist.world_size]]
        batch = collate(samples)
        if not batch.meta:
            raise ValueError(f"none of the first {len(samples)} training images could be read")
        phases = profile_plan_memory(
            self.model, self.freeze_plan, self.criterion, batch.images.to(self.device).float() / 255,
            batch.targets.to(self.device),
            lambda model, plan: build_optimizer(model, self.cfg, plan.trainable, self.freeze_plan.lr_split()))
        record = memory_record(self.model, self.freeze_plan, phases)
        record["data_loader"] = self.loader_memory()
        self.memory_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
        return phases

    # -- checkpoints and resume ---------------------------------------------------------------------------------

    def learning_rates(self) -> dict[str, float]:
        """The lr columns: ``lr/pg0 … lr/pg2`` the schedule's lr of each kind (weights, norm weights, biases;
        multiplier 1), then with ``--lr-mult`` ``lr/<label>`` the weights' lr of each group."""
        groups = self.optimizer.param_groups
        rates = {f"lr/pg{k}": next(g["lr"] / g["lr_mult"] for g in groups if g["name"] == kind)
                 for k, kind in enumerate(GROUPS)}
        if self.freeze_plan.lr_mult:
            rates.update({f"lr/{g['label']}": g["lr"] for g in groups if g["name"] == "weight"})
        return rates

    def interrupted(self) -> TrainingInterrupted:
        """The stop a signal asked for, saying where training was and how to resume (``resume_hint``)."""
        epoch, batch = self.position
        return TrainingInterrupted(f"{self.stop.name or 'a stop signal on another process'}: stopped in epoch "
                                   f"{epoch + 1} after {batch + 1} of {self.nb} batches; {self.resume_hint()}",
                                   self.stop.signum or signal.SIGTERM)

    def resume_hint(self) -> str:
        """Which epoch ``last.pt`` holds and how to continue from it (for messages of a run that stopped)."""
        last = self.weights_dir / "last.pt"
        if not self.saved_epochs or not last.is_file():
            return "no epoch had finished, so there is nothing to resume: start the run again"
        return (f"{last} holds epoch {self.saved_epochs} of {self.cfg.epochs}; continue with: python train.py "
                f"--resume {self.run_dir}")

    def train_state(self, epoch: int, row: dict[str, float]) -> dict:
        """Everything a resumed run needs after ``epoch`` (0-based) finished; tensors and plain values only."""
        def cpu(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().cpu().clone(memory_format=torch.contiguous_format)  # files in NCHW
        pending = {name: cpu(p.grad) for name, p in self.model.named_parameters() if p.grad is not None}
        return {"epoch": epoch + 1, "config": self.cfg.to_dict(), "settings": self.settings,
                "freeze_plan": self.freeze_plan.to_dict(),
                "auto": self.intervals.state_dict() if self.intervals else None,
                "model": {k: cpu(v) for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "pending_gradients": pending, "ema_updates": self.ema.updates, "last_step": self.last_step,
                "best_fitness": self.best_fitness, "best_epoch": self.best_epoch,
                "best_result": self.best_result.to_dict() if self.best_result else None,
                "results_row": row, "batches_per_epoch": self.nb,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def save_last(self, epoch: int, row: dict[str, float]) -> Path:
        """``weights/last.pt``: EMA weights plus the full training state (atomic)."""
        path = self.save_checkpoint(checkpoint_dict(self.ema.module, self.train_state(epoch, row)),
                                    self.weights_dir / "last.pt")
        self.saved_epochs = epoch + 1
        return path

    def save_checkpoint(self, checkpoint: dict, path: Path) -> Path:
        """``atomic_torch_save``; a failed write (a full disk) raises ``CheckpointWriteError`` saying how to
        resume from the checkpoint still there."""
        try:
            return atomic_torch_save(checkpoint, path)
        except CheckpointWriteError as error:
            raise CheckpointWriteError(f"{error}; {self.resume_hint()}") from None

    def save_best(self, epoch: int, result: EvalResult) -> Path:
        """``weights/best.pt``: EMA weights with the epoch, fitness and metrics that made them best (atomic)."""
        info = {"epoch": epoch + 1, "fitness": fitness(result), "metrics": result.to_dict(),
                "config": self.cfg.to_dict(), "settings": self.settings}
        return self.save_checkpoint(checkpoint_dict(self.ema.module, info), self.weights_dir / "best.pt")

    def restore(self, ckpt: dict) -> None:
        """Continue from a ``last.pt`` dict: weights, EMA, optimiser, scaler, pending gradients, counters, RNG.

        Raises ValueError when the checkpoint does not fit this run (other data size or finished already).
        """
        state = ckpt["train"]
        if state["batches_per_epoch"] != self.nb:
            raise ValueError(f"the run had {state['batches_per_epoch']} batches per epoch, the dataset now gives "
                             f"{self.nb}: resume needs the same data and batch size")
        if state["epoch"] >= self.cfg.epochs:
            raise ValueError(f"{self.run_dir} already finished its {self.cfg.epochs} epochs; nothing to resume")
        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(ckpt["state_dict"])
        self.ema.updates = state["ema_updates"]
        if "freeze_plan" in state:  # with the phases that adaptive decisions added
            self.freeze_plan = FreezePlan.from_dict(state["freeze_plan"])
        if self.intervals is not None and state.get("auto"):
            self.intervals.load_state_dict(state["auto"], self.device)
        self.enter_phase(state["epoch"] - 1)  # the optimiser's layout when last.pt was written; fit enters the next
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        parameters = dict(self.model.named_parameters())
        for name, grad in state["pending_gradients"].items():  # in the parameter's layout, as backward leaves it
            parameters[name].grad = torch.empty_like(parameters[name]).copy_(grad)
        self.start_epoch, self.last_step = state["epoch"], state["last_step"]
        self.saved_epochs = state["epoch"]
        self.best_fitness, self.best_epoch = state["best_fitness"], state["best_epoch"]
        self.best_result = EvalResult.from_dict(state["best_result"]) if state["best_result"] else None
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.dist.main:  # the files hold exactly the finished epochs again; the last row comes from last.pt
            keep_epochs(self.run_dir / "results.csv", state["epoch"] - 1)
            append_results(self.run_dir / "results.csv", state["results_row"])
            keep_epochs(self.grad_norms_path, state["epoch"])


__all__ = ["Distributed", "TrainSummary", "Trainer", "TrainingDiverged", "compile_unavailable", "fitness",
           "seed_everything"]
