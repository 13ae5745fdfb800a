"""A run's freeze record, ``freeze_audit.json``: the plan's per-block audit, the integrity proof per phase and,
with ``--freeze auto``, the decision timeline.

``integrity.phases`` holds, for each phase of training (one without ``--unfreeze`` or an adaptive freeze), its
first epoch (1-based), its frozen blocks, the SHA-256 of every frozen tensor when it began
(:meth:`FreezePlan.digest`) and the epochs after which they were checked (:func:`verify_phase`). ``decisions``
holds each decision of the adaptive rule (:func:`record_decision`): after which epoch and optimiser step, the
prefix before and after, the threshold and the evidence per block. A resumed run keeps what the run recorded, so
a change before the kill is caught too. The trainer calls these functions; the file is the only state.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..model import YOLO
from .auto import Decision
from .plan import FreezePlan, verify_digests


def _phase_record(plan: FreezePlan, model: YOLO, epoch: int) -> dict:
    return {"first_epoch": epoch + 1, "frozen_blocks": sorted(plan.frozen), "digests": plan.digest(model),
            "verified_after_epochs": []}


def _write(path: Path, audit: dict) -> None:
    path.write_text(json.dumps(audit, indent=1), encoding="utf-8")


def write_audit(path: Path, schedule: FreezePlan, plan: FreezePlan, model: YOLO, epoch: int) -> None:
    """Write the audit of ``schedule`` (its first phase's blocks, with the later phases) to ``path``, keeping the
    integrity record and decisions already there (a resumed run); a new run's record starts with ``plan``, the
    phase in force at ``epoch`` (0-based)."""
    audit = schedule.audit(model)
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        audit["integrity"], audit["decisions"] = recorded["integrity"], recorded.get("decisions", [])
    else:
        audit["integrity"], audit["decisions"] = {"phases": [_phase_record(plan, model, epoch)]}, []
    _write(path, audit)


def record_decision(path: Path, decision: Decision, epoch: int, step: int) -> None:
    """Add the adaptive rule's ``decision`` taken after ``epoch`` (0-based) at optimiser step ``step`` (replacing
    the record of a decision at or after ``epoch`` that a killed run left)."""
    audit = json.loads(path.read_text(encoding="utf-8"))
    kept = [d for d in audit.get("decisions", []) if d["epoch"] <= epoch]
    audit["decisions"] = kept + [{"epoch": epoch + 1, "step": step, **decision.to_dict()}]
    _write(path, audit)


def record_phase(path: Path, plan: FreezePlan, model: YOLO, epoch: int) -> None:
    """Add the phase ``plan`` that begins at ``epoch`` (0-based) with the digests of its frozen tensors now
    (replacing the record of a phase at or after ``epoch`` that a killed run left)."""
    audit = json.loads(path.read_text(encoding="utf-8"))
    phases = [p for p in audit["integrity"]["phases"] if p["first_epoch"] <= epoch]
    audit["integrity"]["phases"] = phases + [_phase_record(plan, model, epoch)]
    _write(path, audit)


def verify_phase(path: Path, plan: FreezePlan, model: YOLO, epoch: int) -> None:
    """Check every frozen tensor of the current phase against its digest at the phase's start and record the
    check after ``epoch`` (0-based). Raises FrozenTensorChanged naming the tensors that moved."""
    audit = json.loads(path.read_text(encoding="utf-8"))
    phase = audit["integrity"]["phases"][-1]
    verify_digests(phase["digests"], plan.digest(model), f"by the end of epoch {epoch + 1}")
    phase["verified_after_epochs"].append(epoch + 1)
    _write(path, audit)
