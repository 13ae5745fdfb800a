"""How the study's report tells runs apart: one key for a report row and for the run it came from."""
from __future__ import annotations


def key(row: dict) -> tuple[str, str, str, str, int]:
    """``(dataset, model, augment, strategy, seed)`` of a report row."""
    return row["dataset"], row["model"], row.get("augment", "none"), row["strategy"], row.get("seed", 0)


def run_key(run) -> tuple[str, str, str, str, int]:
    """:func:`key` of the row of a ``StudyRun``."""
    return run.dataset, run.model, getattr(run, "augment", "none"), run.strategy, getattr(run, "seed", 0)
