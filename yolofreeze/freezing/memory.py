"""Where the memory of one training step goes, and so why freezing a prefix of the network saves it.

A training step holds four kinds of tensors:

- **parameters**: every weight of the model, frozen or not;
- **gradients**: one tensor per *trainable* parameter (same size), made by ``backward()``;
- **optimiser state**: for Nesterov SGD one momentum buffer per trainable parameter (same size again);
- **saved activations**: what autograd keeps from the forward pass for the backward pass (layer inputs,
  batch-norm statistics, activation inputs …). A frozen block whose input needs no gradient records no graph and
  saves nothing, so freezing blocks ``0 … N-1`` drops their activations, usually the largest share at full
  resolution, besides their gradients and momentum.

:func:`profile_training_step` measures all four on a copy of a model for one real step (forward, loss, backward,
one optimiser step); :class:`SavedTensorCounter` does the counting of saved activations through
``torch.autograd.graph.saved_tensors_hooks``; :func:`format_memory` prints the result as a table. All sizes are in
bytes; the table shows MiB (2**20 bytes). :func:`profile_plan_memory` measures one step per phase of a freeze plan
(``--unfreeze``), :func:`memory_record` is a run's ``memory.json``.
"""
from __future__ import annotations

import copy
import dataclasses
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..model import YOLO
from .plan import FreezePlan

MIB = 2**20
StorageKey = tuple[str, int]


def storage_key(tensor: torch.Tensor) -> StorageKey:
    """``(device, address)`` of the storage under ``tensor``: the same for all views of one block of memory."""
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def _unchanged(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


class SavedTensorCounter:
    """Counts the bytes of the storages autograd saves for the backward pass inside a ``with`` block.

    Every tensor a recorded operation saves passes through a pack hook that returns ``tensor.detach()``: an alias
    of the same storage (no copy, no change to what backward computes; autograd re-attaches the graph on unpacking).
    Keeping the tensor itself would tie a saved output to its own ``grad_fn`` in a reference cycle that Python's
    garbage collector cannot see, so a graph never back-propagated would never be freed.

    Each underlying storage counts once however many tensors or views of it are saved, with its full size
    (``untyped_storage().nbytes()``). Storages of ``exclude`` are not counted: give the model's parameters and
    buffers (they are counted as parameters, not activations) and the input batch (the caller holds it anyway).

    When the block ends, :attr:`saved_bytes` is the total of the storages autograd still holds for backward at that
    moment: a saved tensor whose graph was already freed inside the block (an unused branch) no longer counts, and
    a storage freed and its address reused counts with its new size.

    Example::

        with SavedTensorCounter(exclude=[*model.parameters(), *model.buffers(), images]) as counter:
            total, _ = criterion(model(images), targets, images.shape[-2:])
        counter.saved_bytes   # activations held for total.backward()
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {storage_key(t) for t in exclude}
        self._held: dict[StorageKey, tuple[int, list[weakref.ref]]] = {}
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None
        self.saved_bytes: int | None = None

    def __enter__(self) -> SavedTensorCounter:
        self._held.clear()
        self.saved_bytes = None
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unchanged)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._hooks.__exit__(*exc_info)
        self._hooks = None
        self.saved_bytes = self.held_bytes()
        self._held.clear()

    def held_bytes(self) -> int:
        """Bytes of the counted storages that at least one saved tensor still refers to, now."""
        return sum(nbytes for nbytes, savers in self._held.values() if any(ref() is not None for ref in savers))

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        alias = tensor.detach()
        if key in self._excluded:
            return alias
        nbytes, savers = self._held.get(key, (0, []))
        savers = [ref for ref in savers if ref() is not None]
        if not savers:  # a storage seen for the first time (or its address reused after the first one died)
            nbytes = tensor.untyped_storage().nbytes()
        self._held[key] = nbytes, [*savers, weakref.ref(alias)]
        return alias


@dataclass(frozen=True)
class MemoryBreakdown:
    """The memory of one training step, in bytes.

    Attributes:
        device: where the step ran (``"cpu"``, ``"cuda:0"``).
        batch: images in the batch.
        imgsz: long side of the batch's images, pixels (training batches are square).
        parameters_bytes: all parameters of the model, frozen ones included.
        trainable_parameters_bytes: parameters with ``requires_grad``.
        gradients_bytes: measured: the ``.grad`` tensors after ``backward()``.
        optimizer_state_bytes: measured: the tensors in ``optimizer.state`` after one step (SGD: momentum).
        saved_activations_bytes: counted by :class:`SavedTensorCounter` at the end of forward + loss.
        peak_bytes: CUDA only: the most memory allocated during the step beyond what was allocated before it
            (``torch.cuda.max_memory_allocated``; includes the copy of the model, temporaries and workspaces);
            None on CPU.
    """

    device: str
    batch: int
    imgsz: int
    parameters_bytes: int
    trainable_parameters_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    saved_activations_bytes: int
    peak_bytes: int | None

    @property
    def estimated_total_bytes(self) -> int:
        """Parameters + gradients + optimiser state + saved activations."""
        return (self.parameters_bytes + self.gradients_bytes + self.optimizer_state_bytes
                + self.saved_activations_bytes)

    def to_dict(self) -> dict:
        """Plain ``{name: int | str | None}`` (JSON-able), the estimated total included."""
        return {**dataclasses.asdict(self), "estimated_total_bytes": self.estimated_total_bytes}

    @classmethod
    def from_dict(cls, data: dict) -> MemoryBreakdown:
        """The inverse of :meth:`to_dict` (``estimated_total_bytes`` is recomputed); ValueError when a field is
        missing."""
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"memory breakdown lacks {', '.join(missing)}")
        return cls(**{name: data[name] for name in names})


def format_memory(breakdown: MemoryBreakdown) -> str:
    """An aligned table of ``breakdown`` in MiB, each part as a percentage of the estimated total, then the peak."""
    total = breakdown.estimated_total_bytes
    parts = [("parameters (all)", breakdown.parameters_bytes), ("gradients", breakdown.gradients_bytes),
             ("optimizer state", breakdown.optimizer_state_bytes),
             ("saved activations", breakdown.saved_activations_bytes), ("estimated total", total)]
    lines = [f"memory of one training step on {breakdown.device}: batch {breakdown.batch}, imgsz {breakdown.imgsz}",
             f"{'part':<20} {'MiB':>10} {'% of total':>10}"]
    for name, nbytes in parts:
        lines.append(f"{name:<20} {nbytes / MIB:>10.2f} {_percent(nbytes, total):>10}")
        if name == "parameters (all)":
            lines.append(f"{'  of which trainable':<20} {breakdown.trainable_parameters_bytes / MIB:>10.2f}")
    if breakdown.peak_bytes is None:
        lines.append(f"{'peak':<20} {'-':>10} {'':>10}  not measured on CPU (estimate = sum)")
    else:
        lines.append(f"{'peak':<20} {breakdown.peak_bytes / MIB:>10.2f} {_percent(breakdown.peak_bytes, total):>10}"
                     f"  measured (CUDA)")
    return "\n".join(lines)


def _percent(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def profile_training_step(model: nn.Module, criterion: Callable, images: torch.Tensor, targets: torch.Tensor,
                          build_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                          set_train_mode: Callable[[nn.Module], object]) -> MemoryBreakdown:
    """Measure one training step of a copy of ``model``: parameters, gradients, optimiser state, saved activations.

    On ``copy.deepcopy(model)`` (gradients cleared): ``set_train_mode(copy)`` (a FreezePlan's, so frozen batch-norm
    stays in eval mode), forward and ``criterion(outputs, targets, (H, W))`` under a :class:`SavedTensorCounter`,
    ``backward()``, then ``build_optimizer(copy).step()`` once. Frozen parameters are those with
    ``requires_grad=False``. ``model`` itself, its gradients and batch-norm statistics and the torch random state
    are left as they were; on CUDA the peak-memory statistics of the device are reset.

    Args:
        model: a :class:`yolofreeze.model.YOLO` (any module whose train-mode output ``criterion`` takes).
        criterion: ``(outputs, targets, (H, W)) -> (total, parts)``, e.g. ``yolofreeze.training.loss.build_loss(model)``.
        images: ``(B, 3, H, W)`` float in ``[0, 1]`` on the model's device.
        targets: ``(M, 6)`` ``[batch_index, cls, cx, cy, w, h]`` normalised, as the loader's ``Batch.targets``.
        build_optimizer: the optimiser over the copy's trainable parameters, e.g.
            ``lambda m: build_optimizer(m, TrainConfig(), plan.trainable)``.
        set_train_mode: puts the copy in training mode, e.g. ``plan.set_train_mode``.

    Raises ValueError for images or targets of the wrong shape or type, or images not on the model's device.
    """
    _check_batch(model, images, targets)
    device = images.device
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[_cuda_index(device)] if cuda else []):
        baseline = _cuda_allocated(device) if cuda else 0
        breakdown = _measure_step(model, criterion, images, targets, build_optimizer, set_train_mode)
    if cuda:
        torch.cuda.synchronize(device)
        breakdown = dataclasses.replace(breakdown, peak_bytes=torch.cuda.max_memory_allocated(device) - baseline)
    return breakdown


def _measure_step(model: nn.Module, criterion: Callable, images: torch.Tensor, targets: torch.Tensor,
                  build_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                  set_train_mode: Callable[[nn.Module], object]) -> MemoryBreakdown:
    """The step of :func:`profile_training_step` (peak left None); everything it makes is freed on return."""
    network = copy.deepcopy(model)
    for param in network.parameters():
        param.grad = None
    set_train_mode(network)
    with SavedTensorCounter(exclude=[*network.parameters(), *network.buffers(), images]) as counter:
        total, _ = criterion(network(images), targets, tuple(images.shape[-2:]))
    total.backward()
    optimizer = build_optimizer(network)
    optimizer.step()
    params = list(network.parameters())
    state = [value for entry in optimizer.state.values() for value in entry.values() if torch.is_tensor(value)]
    return MemoryBreakdown(
        device=str(images.device), batch=images.shape[0], imgsz=max(images.shape[-2:]),
        parameters_bytes=_nbytes(params), trainable_parameters_bytes=_nbytes(p for p in params if p.requires_grad),
        gradients_bytes=_nbytes(p.grad for p in params if p.grad is not None), optimizer_state_bytes=_nbytes(state),
        saved_activations_bytes=counter.saved_bytes, peak_bytes=None)


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.nbytes for t in tensors)


def _check_batch(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> None:
    if not (torch.is_tensor(images) and images.ndim == 4 and images.shape[1] == 3 and images.is_floating_point()):
        raise ValueError(f"images must be a float tensor (B, 3, H, W), got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if not (torch.is_tensor(targets) and targets.ndim == 2 and targets.shape[1] == 6):
        raise ValueError(f"targets must be a tensor (M, 6) [batch_index, cls, cx, cy, w, h], got "
                         f"{tuple(targets.shape) if torch.is_tensor(targets) else type(targets).__name__}")
    weight = next(model.parameters(), None)
    if weight is not None and weight.device != images.device:
        raise ValueError(f"images are on {images.device}, the model on {weight.device}")


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _cuda_allocated(device: torch.device) -> int:
    """Bytes allocated on ``device`` now; resets its peak statistics so that the next peak starts from here."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


@dataclass(frozen=True)
class PhaseMemory:
    """The memory of one training step in the phase of a plan that begins at ``first_epoch`` (0-based)."""

    first_epoch: int
    plan: FreezePlan
    breakdown: MemoryBreakdown


def profile_plan_memory(model: YOLO, schedule: FreezePlan, criterion: Callable, images: torch.Tensor,
                        targets: torch.Tensor, make_optimizer: Callable[[nn.Module, FreezePlan], torch.optim.Optimizer]
                        ) -> list[PhaseMemory]:
    """One measured training step per phase of ``schedule`` (:func:`profile_training_step` on a copy of ``model``
    with that phase's frozen blocks and batch-norm policy). ``images (B, 3, H, W)`` in [0, 1] and ``targets (M, 6)``
    on the model's device; ``criterion`` as the training loss; ``make_optimizer(model_copy, phase_plan)`` builds the
    run's optimiser over what the phase trains."""
    def measure(plan: FreezePlan) -> MemoryBreakdown:
        return profile_training_step(model, criterion, images, targets, lambda m: make_optimizer(m, plan),
                                     lambda m: plan.set_train_mode(plan.apply(m)))

    return [PhaseMemory(first, schedule.at(first), measure(schedule.at(first))) for first, _ in schedule.phases()]


def memory_record(model: YOLO, schedule: FreezePlan, phases: list[PhaseMemory]) -> dict:
    """``memory.json``: the breakdown of the phase with the largest estimated total (the run's peak; the only
    phase without ``--unfreeze``) with ``arch``, its ``frozen_blocks`` and ``frozen_bn``; with more than one
    phase, ``phases``: each phase's ``first_epoch`` (1-based), ``frozen_blocks`` and breakdown."""
    peak = max(phases, key=lambda p: p.breakdown.estimated_total_bytes)
    record = {**peak.breakdown.to_dict(), "arch": model.arch, "frozen_blocks": sorted(peak.plan.frozen),
              "frozen_bn": schedule.frozen_bn}
    if len(phases) > 1:
        record["phases"] = [{"first_epoch": p.first_epoch + 1, "frozen_blocks": sorted(p.plan.frozen),
                             **p.breakdown.to_dict()} for p in phases]
    return record


def format_plan_memory(phases: list[PhaseMemory]) -> str:
    """The first phase's memory table (:func:`format_memory`), then with ``--unfreeze`` one line per phase."""
    lines = [format_memory(phases[0].breakdown)]
    for phase in phases if len(phases) > 1 else ():
        b = phase.breakdown
        lines.append(f"from epoch {phase.first_epoch + 1} (frozen: {phase.plan.label}): estimated total "
                     f"{b.estimated_total_bytes / 2**20:.2f} MiB (gradients {b.gradients_bytes / 2**20:.2f}, "
                     f"optimizer state {b.optimizer_state_bytes / 2**20:.2f}, saved activations "
                     f"{b.saved_activations_bytes / 2**20:.2f})")
    return "\n".join(lines)
