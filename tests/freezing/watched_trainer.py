"""A trainer whose epochs are watched from inside (shared by the freeze-schedule and adaptive-freezing tests)."""
from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from yolofreeze.freezing.cache import FeatureBatch
from yolofreeze.freezing.plan import block_of
from yolofreeze.training.trainer import Trainer
from yolofreeze.weights.checkpoints import load_checkpoint


class Interrupted(Exception):
    """Raised after an epoch's checkpoint, like a killed run."""


class Watched(Trainer):
    """Notes per epoch (1-based) what requires gradients, what the optimiser holds and has state for, whether those
    two sets are the same parameters, which blocks' weights moved and whether the batches came from the frozen-prefix
    cache; records every batch's losses ``(3,)``; stops like a killed run after epoch ``stop_after``."""

    stop_after: int | None = None

    def train_epoch(self, epoch):
        params = dict(self.model.named_parameters())
        in_optimizer = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        before = {k: v.clone() for k, v in params.items()}
        self.seen = getattr(self, "seen", {})
        self.seen[epoch + 1] = {
            "requires_grad": {block_of(n) for n, p in params.items() if p.requires_grad},
            "in_optimizer": {block_of(n) for n, p in params.items() if id(p) in in_optimizer},
            "with_state": {block_of(n) for n, p in params.items() if p in self.optimizer.state},
            "exactly": {n for n, p in params.items() if p.requires_grad} == {n for n, p in params.items()
                                                                              if id(p) in in_optimizer}}
        row = super().train_epoch(epoch)
        self.seen[epoch + 1]["moved"] = {block_of(n) for n, p in params.items() if not torch.equal(before[n], p)}
        return row

    def train_step(self, batch, epoch, index):
        parts = super().train_step(batch, epoch, index)
        self.losses = getattr(self, "losses", [])
        self.losses.append(torch.stack([parts[k].detach().float() for k in ("box", "cls", "dfl")]))
        self.from_cache = getattr(self, "from_cache", set())
        if isinstance(batch, FeatureBatch):
            self.from_cache.add(epoch + 1)
        return parts

    def save_epoch(self, epoch, row, best):
        super().save_epoch(epoch, row, best)
        if self.stop_after == epoch + 1:
            raise Interrupted


def killed_then_resumed(make: Callable[..., Watched], stop_after: int) -> Watched:
    """A run (``make(stop_after=…)``) killed after epoch ``stop_after``, then rebuilt by ``make()`` in the same run
    folder, restored from its ``last.pt`` and finished; returns the resumed trainer."""
    killed = make(stop_after=stop_after)
    with pytest.raises(Interrupted):
        killed.fit()
    resumed = make()
    resumed.restore(load_checkpoint(resumed.weights_dir / "last.pt"))
    resumed.fit()
    return resumed


def assert_same_run(resumed: Watched, uninterrupted: Watched) -> None:
    """Every epoch the resumed run trained looked as in the uninterrupted run, the final weights agree within 1e-6
    and so does the integrity record of ``freeze_audit.json``."""
    for epoch in resumed.seen:
        assert resumed.seen[epoch] == uninterrupted.seen[epoch], epoch
    ours, theirs = resumed.model.state_dict(), uninterrupted.model.state_dict()
    worst = max((ours[k].double() - theirs[k].double()).abs().max().item() for k in ours if ours[k].is_floating_point())
    assert worst <= 1e-6
    audit, reference = (json.loads(t.audit_path.read_text()) for t in (resumed, uninterrupted))
    assert audit["integrity"] == reference["integrity"]
