"""Frozen-prefix feature cache: run the frozen blocks once per image, then train from the first trainable block.

When the frozen blocks form a prefix ``0 … k-1``, their batch-norm layers are in eval mode and the images are
not augmented, what the prefix outputs for an image is the same in every epoch. :class:`FeatureCache` computes
it once — exactly the outputs later blocks read, :meth:`YOLO.boundary` ``(k)`` (blocks 4, 6 and 8 for YOLOv8
and YOLOv10 at ``k = 9``) — and serves them in batches (:class:`FeatureBatch`) whose :meth:`FeatureBatch.prefix` the
model runs from block ``k`` on (``model(batch.prefix(device))``: the model's own loop).

Each image's entry is stored under a key that cannot go stale (:func:`entry_key`): the image file (resolved
path, size, modification time in ns), its labels, ``imgsz`` and the letterbox shape it is served at, the SHA-256
of every frozen tensor (:meth:`FreezePlan.digest`), the blocks stored and the storage dtype. A changed key means
the entry is computed again (:meth:`FeatureCache.refresh`); an old entry is never reused under a new key.

Storage: ``"ram"`` keeps one tensor per image and block in this process; ``"disk"`` writes one file per image
(``<key>.pt``, read back with ``weights_only=True``) under a directory. ``fp16`` halves the size; the features
are rounded to float16 (relative error at most 2**-11) and widened again before the first trainable block.

The build pass uses its own un-shuffled loader with its own generator: it draws nothing from the global torch
random state, so a cached and an uncached run from the same seed see the same data order and the same
initialisation.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data import DetectionDataset, ImageMeta, ImageRecord, LoadFailure, collate
from ..data.loader import seed_worker
from ..host import available_memory
from ..model import YOLO, PrefixOutputs
from .folded import FoldedPrefix
from .plan import FreezePlan

LOGGER = logging.getLogger(__name__)

MODES = ("ram", "disk")
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
HEADROOM = 0.8  # the cache may take at most this share of the available RAM or disk; the rest is left to training


class CacheNotApplicable(ValueError):
    """The frozen prefix's outputs would change between epochs (or there is no frozen prefix): nothing to cache."""


class CacheTooLarge(ValueError):
    """The cache would not fit in the available RAM or disk space."""


def why_not_cacheable(plan: FreezePlan) -> str | None:
    """Why the frozen prefix's outputs are not fixed under ``plan`` (one sentence), or None when they are.

    Cacheable means: in every phase of the plan (``--unfreeze``) the frozen blocks are ``0 … k-1`` (``k >= 1``
    in at least one phase, or ``--freeze auto``; a phase with nothing frozen runs without the cache) and their
    batch-norm in eval mode.
    """
    phases = [(first, plan.at(first)) for first, _ in plan.phases()]
    if plan.auto and plan.frozen_bn == "eval":
        return None  # a prefix in every phase by construction; the cache starts with the first frozen block
    if not any(phase.frozen for _, phase in phases) and not plan.auto:
        return "nothing is frozen, so there is no frozen prefix to cache"
    for first, phase in phases:
        if phase.frozen != frozenset(range(len(phase.frozen))):
            when = f" from epoch {first + 1}" if plan.unfreeze else ""
            return (f"the frozen blocks ({phase.label}){when} are not a prefix 0-{len(phase.frozen) - 1}: a "
                    f"trainable block sits among them, so their outputs change as it trains")
    if plan.frozen_bn == "train":
        return ("the frozen blocks' batch-norm is in train mode (--frozen-bn train): their statistics and outputs "
                "change every step")
    return None


def require_cacheable(plan: FreezePlan) -> int:
    """The prefix length ``k`` (blocks ``0 … k-1`` frozen; with ``--unfreeze`` in the first phase);
    raises :class:`CacheNotApplicable` with the reason."""
    reason = why_not_cacheable(plan)
    if reason is not None:
        raise CacheNotApplicable(f"--cache-frozen does not apply: {reason}")
    return len(plan.frozen)


def prefixes(plan: FreezePlan) -> set[int]:
    """The prefix lengths the plan's phases freeze; with ``auto`` every length from the start to the ceiling."""
    counts = {len(plan.at(first).frozen) for first, _ in plan.phases()}
    return counts | set(range(len(plan.frozen), plan.auto.ceiling + 1)) if plan.auto else counts


def feature_bytes(model: YOLO, start: int, shape: tuple[int, int], dtype: str) -> int:
    """Bytes of the outputs of blocks :meth:`YOLO.boundary` ``(start)`` for one ``(H, W)`` letterboxed image:
    ``sum(C_i * H / s_i * W / s_i) * itemsize`` (``H``, ``W`` multiples of the largest stride)."""
    height, width = shape
    elements = sum(model.blocks[i].out_channels * (height // model.blocks[i].stride) * (width // model.blocks[i].stride)
                   for i in model.boundary(start))
    return elements * DTYPES[dtype].itemsize


def available_bytes(mode: str, directory: Path | None = None) -> int:
    """Free memory (``"ram"``: ``MemAvailable`` of /proc/meminfo, else available pages) or free space on the disk
    holding ``directory`` (its nearest existing ancestor), in bytes."""
    if mode == "disk":
        existing = Path(directory or ".").resolve()
        while not existing.exists():
            existing = existing.parent
        return shutil.disk_usage(existing).free
    return available_memory()


def _size(count: float) -> str:
    """Bytes as ``"1.4 MB"`` / ``"2.3 GB"`` (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


@dataclass(frozen=True)
class CacheEstimate:
    """What a cache will hold: ``blocks`` (the stored outputs) for ``images`` images, ``per_image`` bytes for a
    square ``imgsz`` image, ``total`` bytes of features, ``needed`` of them not stored yet, against ``available``
    bytes of RAM or disk (``where``)."""

    mode: str
    dtype: str
    start: int
    blocks: tuple[int, ...]
    images: int
    imgsz: int
    per_image: int
    total: int
    needed: int
    available: int
    where: str
    processes: int = 1  # processes on this machine that each hold the training images' outputs (RAM, torchrun)
    phases: int = 1  # prefixes the run may cache (--unfreeze phases, --freeze auto); this estimate is the largest

    @property
    def fits(self) -> bool:
        """Whether ``needed`` is at most :data:`HEADROOM` of ``available``."""
        return self.needed <= HEADROOM * self.available

    @property
    def _notes(self) -> str:
        copies = "" if self.processes == 1 else f" (each of {self.processes} processes holds the training outputs)"
        return copies + ("" if self.phases == 1 else f" (the largest of the caches of {self.phases} "
                                                     f"prefixes, held one at a time)")

    def describe(self) -> str:
        """One line for the user."""
        stored = "" if self.needed == self.total else f" ({_size(self.needed)} still to compute)"
        return (f"frozen-prefix cache ({self.mode}, {self.dtype}): outputs of blocks "
                f"{', '.join(map(str, self.blocks))} (training starts at block {self.start}) for {self.images} images, "
                f"{_size(self.per_image)} per {self.imgsz}x{self.imgsz} image, {_size(self.total)} in all"
                f"{self._notes}{stored}; {_size(self.available)} {self.where} available")

    def refusal(self) -> str:
        """Why it does not fit: needed against available."""
        return (f"--cache-frozen {self.mode} needs {_size(self.needed)} for the {self.dtype} outputs of blocks "
                f"{', '.join(map(str, self.blocks))} of {self.images} images{self._notes}, but only "
                f"{_size(self.available)} {self.where} is available (the cache may use {HEADROOM:.0%} of it)"
                + ("; try --cache-dtype fp16" if self.dtype == "fp32" else "")
                + ("; try --cache-frozen disk" if self.mode == "ram" else "; free some space or use no cache"))


def estimate_cache(model: YOLO, plan: FreezePlan, datasets: Sequence[DetectionDataset], mode: str, dtype: str,
                   directory: str | Path | None = None, copies: Sequence[int] | None = None) -> CacheEstimate:
    """The size of the frozen-prefix cache of ``datasets`` (each item at its letterbox shape) against the RAM or
    the free disk space of ``directory``; raises when the plan is not cacheable (:class:`CacheNotApplicable`) or
    the cache would not fit (:class:`CacheTooLarge`, needed against available). With ``--unfreeze`` the cache
    holds one phase's outputs at a time: the estimate is that of the phase whose outputs take the most (with
    ``--freeze auto``, of every prefix the rule may reach).

    ``copies``: per dataset, how many processes on this machine hold its entries in RAM (default one each; a
    ``"disk"`` cache is one set of files whatever the count).

    Raises ValueError for an unknown ``mode`` or ``dtype``.
    """
    if mode not in MODES or dtype not in DTYPES:
        raise ValueError(f"cache mode {mode!r} / dtype {dtype!r}: choose from {', '.join(MODES)} / "
                         f"{', '.join(DTYPES)}")
    require_cacheable(plan)
    copies = [1] * len(datasets) if copies is None or mode == "disk" else list(copies)
    stored = 0
    if mode == "disk" and directory is not None and Path(directory).is_dir():
        stored = sum(f.stat().st_size for f in Path(directory).rglob("*.pt"))
    imgsz = datasets[0].imgsz if datasets else 0
    estimates = []
    for start in sorted(prefixes(plan) - {0}):
        total = sum(count * feature_bytes(model, start, tuple(int(s) for s in shape), dtype)
                    for dataset, count in zip(datasets, copies) for shape in dataset.shapes)
        estimates.append(CacheEstimate(
            mode, dtype, start, tuple(model.boundary(start)), sum(len(d) for d in datasets), imgsz,
            feature_bytes(model, start, (imgsz, imgsz), dtype), total, max(total - stored, 0),
            available_bytes(mode, directory), "RAM" if mode == "ram" else f"disk at {directory}",
            max(copies, default=1)))
    estimate = replace(max(estimates, key=lambda e: e.total), phases=len(estimates))
    if not estimate.fits:
        raise CacheTooLarge(estimate.refusal())
    return estimate


def weights_digest(plan: FreezePlan, model: YOLO) -> str:
    """One SHA-256 (hex) over the digests of every frozen tensor (:meth:`FreezePlan.digest`)."""
    return hashlib.sha256(json.dumps(sorted(plan.digest(model).items())).encode()).hexdigest()


def entry_key(dataset: DetectionDataset, position: int, context: str) -> str | None:
    """The key of item ``position`` of ``dataset``: SHA-256 (hex) of its image file's resolved path, size and
    modification time (ns), its labels, ``imgsz``, its letterbox shape and ``context`` (weights digest, blocks,
    dtype); None when the file cannot be found."""
    record = dataset.records[int(dataset.order[position])]
    try:
        stat = os.stat(record.path)
    except OSError:
        return None
    labels = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes()
                                     for a in (record.boxes, record.classes, record.flags))).hexdigest()
    parts = [str(Path(record.path).resolve()), stat.st_size, stat.st_mtime_ns, labels, dataset.imgsz,
             [int(s) for s in dataset.shapes[position]], context]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class Entry(NamedTuple):
    """One image's cached outputs: ``features`` block index → ``(C_i, H / s_i, W / s_i)`` in the cache dtype,
    ``targets (N, 6)`` ``[0, cls, cx, cy, w, h]`` (as :class:`DetectionDataset` gives them), ``meta``, and the
    letterboxed ``shape (H, W)``."""

    features: dict[int, torch.Tensor]
    targets: torch.Tensor
    meta: ImageMeta
    shape: tuple[int, int]


class FeatureBatch(NamedTuple):
    """A batch of cached outputs, what :class:`yolofreeze.data.Batch` is for images: ``features`` block index →
    ``(B, C_i, H / s_i, W / s_i)`` (cache dtype), ``targets (M, 6)`` ``[batch_index, cls, cx, cy, w, h]``, ``meta``
    (``B`` entries), ``failed`` record indices, ``shape`` the letterboxed ``(H, W)``, ``start`` the first block to
    run and ``dtype`` what the prefix produced (what the first trainable block receives)."""

    features: dict[int, torch.Tensor]
    targets: torch.Tensor
    meta: list[ImageMeta]
    failed: list[int]
    shape: tuple[int, int]
    start: int
    dtype: torch.dtype

    def prefix(self, device: torch.device) -> PrefixOutputs:
        """The outputs on ``device`` in the prefix's dtype: what the model runs from block ``start`` on."""
        return PrefixOutputs(self.start, {i: f.to(device, non_blocking=True).to(self.dtype)
                                          for i, f in self.features.items()})


class _RamStore:
    """Entries in this process, by key."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def has(self, key: str) -> bool:
        return key in self.entries

    def put(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry

    def get(self, key: str) -> Entry:
        return self.entries[key]

    def keep_only(self, keys: set[str]) -> None:
        for key in set(self.entries) - keys:
            del self.entries[key]

    def clear(self) -> None:
        self.entries.clear()


class _DiskStore:
    """Entries as ``<directory>/<key>.pt`` files (written atomically, read with ``weights_only=True``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, entry: Entry) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".{key}.{os.getpid()}.tmp"
        torch.save({"features": entry.features, "targets": entry.targets, "shape": list(entry.shape),
                    "meta": [list(entry.meta.orig_shape), list(entry.meta.ratio), list(entry.meta.pad)]}, partial)
        os.replace(partial, self.path(key))

    def get(self, key: str) -> Entry:
        saved = torch.load(self.path(key), weights_only=True)
        orig_shape, ratio, pad = (tuple(v) for v in saved["meta"])
        return Entry(saved["features"], saved["targets"], ImageMeta(-1, orig_shape, ratio, pad), tuple(saved["shape"]))

    def keep_only(self, keys: set[str]) -> None:
        for path in self.directory.glob("*.pt") if self.directory.is_dir() else ():
            if path.stem not in keys:
                path.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _CachedItems(Dataset):
    """Item ``position`` of a split from the store: an :class:`Entry` with the record index in its meta, or a
    :class:`LoadFailure` for an image that could not be read."""

    def __init__(self, store: _RamStore | _DiskStore, keys: list[str | None], records: list[int],
                 failures: dict[str, str]) -> None:
        self.store, self.keys, self.records, self.failures = store, keys, records, failures

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, position: int) -> Entry | LoadFailure:
        key, index = self.keys[position], self.records[position]
        if key is None or key in self.failures:
            return LoadFailure(index, self.failures.get(key, "image file not found"))
        entry = self.store.get(key)
        return entry._replace(meta=entry.meta._replace(index=index))


class FeatureCache:
    """The frozen-prefix outputs of every item of ``dataset`` (a split, served at its letterbox shapes).

    Args:
        dataset: the split as training or validation serves it (square ``imgsz``, or rect shapes).
        plan: the frozen-prefix plan (see :func:`why_not_cacheable`).
        mode: ``"ram"`` or ``"disk"``.
        dtype: ``"fp16"`` or ``"fp32"``: how the outputs are stored.
        directory: where ``"disk"`` entries go (one ``<key>.pt`` per image).
        workers: loader processes of the build pass.
        batch: images per forward pass of the build; rect datasets are built in runs of equal shape within
            consecutive groups of ``batch`` items (the validation batches).
        amp: the autocast dtype of a mixed-precision training step (``torch.float16`` or ``torch.bfloat16``, on
            the model's device), or None: the prefix runs under the same autocast, its outputs keep that dtype.
        fold: compute the outputs with a folded copy of the prefix (:class:`FoldedPrefix`, as the trainer runs
            it with ``fold_frozen``); False: with the model's own blocks. Part of every entry's key.

    Raises CacheNotApplicable when ``plan`` is not cacheable, ValueError for an unknown mode, dtype or a disk
    mode without a directory.
    """

    def __init__(self, dataset: DetectionDataset, plan: FreezePlan, mode: str = "ram", dtype: str = "fp32",
                 directory: str | Path | None = None, workers: int = 0, batch: int = 16,
                 amp: torch.dtype | None = None, fold: bool = False) -> None:
        if mode not in MODES or dtype not in DTYPES:
            raise ValueError(f"cache mode {mode!r} / dtype {dtype!r}: choose from {', '.join(MODES)} / "
                             f"{', '.join(DTYPES)}")
        if mode == "disk" and directory is None:
            raise ValueError("a disk cache needs a directory")
        self.start = require_cacheable(plan)
        self.dataset, self.plan, self.mode, self.dtype = dataset, plan, mode, dtype
        self.workers, self.batch, self.amp, self.fold = workers, batch, amp, fold
        self.store = _RamStore() if mode == "ram" else _DiskStore(Path(directory))
        self.keys: list[str | None] = [None] * len(dataset)
        self.failures: dict[str, str] = {}  # key → error text of images that could not be read
        self.output_dtype = amp or torch.float32

    def refresh(self, model: YOLO) -> int:
        """Compute the entries whose key is not stored (all of them the first time; an image file, its labels or
        a frozen tensor that changed since), drop entries no key names any more; returns how many were computed.
        Computing puts ``model`` in the plan's training mode (frozen batch-norm in eval) and leaves it there."""
        context = json.dumps([weights_digest(self.plan, model), model.boundary(self.start), self.dtype]
                             + (["folded"] if self.fold else []))
        self.keys = [entry_key(self.dataset, p, context) for p in range(len(self.dataset))]
        live = {k for k in self.keys if k is not None}
        self.failures = {k: v for k, v in self.failures.items() if k in live}
        missing = [p for p, k in enumerate(self.keys) if k is not None and k not in self.failures
                   and not self.store.has(k)]
        if missing:
            self._build(model, missing)
        self.store.keep_only(live)
        return len(missing)

    def _build_batches(self, positions: list[int]) -> list[list[int]]:
        """``positions`` in build batches: at most ``batch`` items of one letterbox shape from one group of
        ``batch`` consecutive items."""
        batches: list[list[int]] = []
        for position in positions:
            last = batches[-1][-1] if batches else None
            if (last is None or len(batches[-1]) == self.batch or last // self.batch != position // self.batch
                    or (self.dataset.shapes[last] != self.dataset.shapes[position]).any()):
                batches.append([position])
            else:
                batches[-1].append(position)
        return batches

    @torch.no_grad()
    def _build(self, model: YOLO, positions: list[int]) -> None:
        """Run the frozen prefix over ``positions`` and store each image's outputs (own loader and generator)."""
        device = next(model.parameters()).device
        self.plan.set_train_mode(model)
        loader = DataLoader(self.dataset, batch_sampler=self._build_batches(positions), num_workers=self.workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(0),
                            worker_init_fn=seed_worker, pin_memory=device.type == "cuda")
        autocast = torch.autocast(device.type, dtype=self.amp) if self.amp else nullcontext()
        prefix = FoldedPrefix(model, self.start) if self.fold else partial(model.prefix_outputs, stop=self.start)
        where = {int(self.dataset.order[p]): p for p in positions}
        for batch in tqdm(loader, desc="caching frozen-prefix outputs", unit="batch", leave=False, disable=None):
            for index in batch.failed:
                self.failures[self.keys[where[index]]] = "could not be read when the cache was built"
            if not batch.meta:
                continue
            with autocast:
                outputs = prefix(batch.images.to(device, non_blocking=True).float() / 255)
            shape = tuple(batch.images.shape[-2:])
            for j, meta in enumerate(batch.meta):
                targets = batch.targets[batch.targets[:, 0] == j].clone()
                targets[:, 0] = 0
                features = {i: out[j].to("cpu", DTYPES[self.dtype], copy=True) for i, out in outputs.outputs.items()}
                self.store.put(self.keys[where[meta.index]], Entry(features, targets, meta, shape))
        if self.failures:
            LOGGER.warning("%d images could not be read for the frozen-prefix cache", len(self.failures))

    def batches(self, batch_sampler: Iterable[list[int]]) -> DataLoader:
        """A loader of :class:`FeatureBatch` es, one per list of item positions ``batch_sampler`` yields (e.g. a
        ``BatchSampler`` over the training ``DistributedSampler``: the same batches as the image loader).

        Read in this process, without worker processes (faster here: see ``benchmarks/bench_cache.py``).
        """
        items = _CachedItems(self.store, list(self.keys), [int(i) for i in self.dataset.order], dict(self.failures))
        return DataLoader(items, batch_sampler=batch_sampler, num_workers=0, collate_fn=self._collate)

    def _collate(self, items: Sequence[Entry | LoadFailure]) -> FeatureBatch:
        """Stack the entries' outputs per block and number their targets by position in the batch."""
        entries = [e for e in items if isinstance(e, Entry)]
        failed = [f.index for f in items if isinstance(f, LoadFailure)]
        if not entries:
            return FeatureBatch({}, torch.zeros((0, 6)), [], failed, (0, 0), self.start, self.output_dtype)
        features = {i: torch.stack([e.features[i] for e in entries]) for i in entries[0].features}
        targets = torch.cat([torch.cat((torch.full((len(e.targets), 1), float(j)), e.targets[:, 1:]), 1)
                             for j, e in enumerate(entries)])
        return FeatureBatch(features, targets, [e.meta for e in entries], failed, entries[0].shape, self.start,
                            self.output_dtype)

    def clear(self) -> None:
        """Drop every entry (``"disk"``: delete the directory)."""
        self.store.clear()


__all__ = ["CacheEstimate", "CacheNotApplicable", "CacheTooLarge", "DTYPES", "FEATURE_CACHE_DIR", "FeatureBatch",
           "FeatureCache", "MODES", "available_bytes", "estimate_cache", "estimate_run_cache", "feature_bytes",
           "phase_caches", "require_cacheable", "split_datasets", "why_not_cacheable"]


FEATURE_CACHE_DIR = "feature_cache"  # under the run folder: the disk entries of --cache-frozen disk


def split_datasets(model: YOLO, splits: dict[str, Sequence[ImageRecord]], imgsz: int, val_batch: int
                   ) -> dict[str, DetectionDataset]:
    """The images as the frozen prefix sees them: ``train`` as training serves them (square ``imgsz``), ``val`` as
    validation batches them (rectangular shapes for batches of ``val_batch`` images)."""
    stride = max(32, int(model.stride.max()))
    return {"train": DetectionDataset(splits["train"], imgsz, stride=stride),
            "val": DetectionDataset(splits["val"], imgsz, rect=True, batch_size=val_batch, stride=stride)}


def estimate_run_cache(model: YOLO, plan: FreezePlan, splits: dict[str, Sequence[ImageRecord]], imgsz: int,
                       val_batch: int, mode: str, dtype: str, run_dir: str | Path) -> CacheEstimate:
    """The size of a run's ``--cache-frozen mode`` (train and val images) against the available RAM or the free
    disk space at ``run_dir``, before anything is computed. Under ``torchrun`` every training process on this
    machine holds the training images' outputs in RAM (each epoch shuffles which images a process gets); only
    rank 0 validates.

    Raises CacheNotApplicable (with the reason) or CacheTooLarge (needed against available).
    """
    datasets = split_datasets(model, splits, imgsz, val_batch)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun: processes on this machine
    return estimate_cache(model, plan, [datasets["train"], datasets["val"]], mode, dtype,
                          Path(run_dir) / FEATURE_CACHE_DIR, copies=[processes, 1])


def phase_caches(model: YOLO, plan: FreezePlan, datasets: dict[str, DetectionDataset], batches: dict[str, int],
                 mode: str, dtype: str, run_dir: str | Path, workers: int, amp: torch.dtype | None,
                 fold: bool = False) -> dict[str, FeatureCache]:
    """The frozen-prefix caches of the train and val splits for one phase of a run (nothing computed yet: see
    :meth:`FeatureCache.refresh`); none in a phase with nothing frozen. A later phase's caches use the same folder:
    the entries of the previous phase, which no key names any more, go at their refresh. ``amp``: the training
    split's prefix runs under autocast of that dtype, as mixed-precision training steps do (validation runs in
    float32). ``fold``: build the entries with a folded copy of the prefix (:class:`FeatureCache`)."""
    if not plan.frozen:
        return {}
    return {split: FeatureCache(dataset, plan, mode, dtype, Path(run_dir) / FEATURE_CACHE_DIR / split, workers,
                                batches[split], amp=amp if split == "train" else None, fold=fold)
            for split, dataset in datasets.items()}
