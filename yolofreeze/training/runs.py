"""Run directories and the per-epoch ``results.csv``, in the conventions users of the reference know.

A training run writes into ``runs/train/<name>/`` (never over an earlier run: ``name2``, ``name3`` …).
``results.csv`` has one row per epoch with the reference's column names, then yolofreeze's own columns, then
the columns only some runs have (``lr/<group>`` of ``--lr-mult`` groups).
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Mapping

import yaml

# The reference's results.csv columns, in its order.
REFERENCE_COLUMNS = (
    "epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "val/box_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2",
)
# Ours, after them: wall time of the epoch's training pass; peak memory in MiB (the process's resident set on any
# device; CUDA allocated and reserved, reset each epoch, NaN without CUDA); the mean over the epoch's optimiser steps
# of the gradient L2 norm of the whole model and of each part (NaN with --grad-norms off); how many blocks were frozen
# during the epoch (it changes with --unfreeze and --freeze auto); the seconds the training loop waited for its next
# batch (data loading that the workers did not hide); wall time of the epoch's validation (loss, detection,
# pycocotools scoring), outside epoch_seconds.
EXTRA_COLUMNS = ("epoch_seconds", "memory/peak_rss_mb", "memory/cuda_allocated_mb", "memory/cuda_reserved_mb",
                 "grad_norm/total", "grad_norm/backbone", "grad_norm/neck", "grad_norm/head", "frozen_blocks",
                 "data_wait_seconds", "val_seconds")
RESULTS_COLUMNS = REFERENCE_COLUMNS + EXTRA_COLUMNS


def new_run_dir(base: str | Path, name: str) -> Path:
    """Create and return ``base/name``, or ``base/name2``, ``base/name3`` … when it already exists.

    The folder is created atomically (``mkdir`` without ``exist_ok``), so two runs started together never
    share one.
    """
    if not name or Path(name).name != name:
        raise ValueError(f"run name {name!r} must be a plain folder name (no '/')")
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for candidate in [name] + [f"{name}{n}" for n in range(2, 10_000)]:
        try:
            (base / candidate).mkdir()
            return base / candidate
        except FileExistsError:
            continue
    raise ValueError(f"{base}: no free run name left for {name!r}")


def write_args(run_dir: Path, args: Mapping[str, object]) -> Path:
    """``args.yaml``: every setting of the run, as plain yaml (paths as strings)."""
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    path = run_dir / "args.yaml"
    path.write_text(yaml.safe_dump(plain, sort_keys=False), encoding="utf-8")
    return path


def results_columns(row: Mapping[str, float]) -> list[str]:
    """A results row's columns in file order: ``RESULTS_COLUMNS``, then the run-specific ones in the row's order."""
    return list(RESULTS_COLUMNS) + [c for c in row if c not in RESULTS_COLUMNS]


def append_results(path: Path, row: Mapping[str, float]) -> None:
    """Append one epoch to ``results.csv`` (header written with the first row).

    Args:
        path: the csv file.
        row: a value for every name in ``RESULTS_COLUMNS`` (NaN for a value not measured, e.g. CUDA memory on a
            CPU), optionally followed by run-specific columns; written in ``RESULTS_COLUMNS`` order, then the
            others in the row's order.

    A file written by an older version, whose header lacks standard columns added since (a resumed run), is first
    rewritten with them (NaN in its earlier rows).

    Raises:
        ValueError: a standard column is missing, or the columns differ from the file's header otherwise.
    """
    missing = set(RESULTS_COLUMNS) - set(row)
    if missing:
        raise ValueError(f"results row: missing {sorted(missing)}")
    columns = results_columns(row)
    new = not path.is_file()
    if not new:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        added = set(columns) - set(header)
        if set(header) - set(columns) or added - set(RESULTS_COLUMNS):
            raise ValueError(f"results row columns differ from {path}'s header: {sorted(set(columns) ^ set(header))}")
        if header != columns:
            _rewrite_with(path, columns)
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(columns)
        writer.writerow([_format(column, row[column]) for column in columns])


def _rewrite_with(path: Path, columns: list[str]) -> None:
    """Rewrite ``path`` (atomically) in ``columns`` order, NaN where a row has no value."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([row.get(column) or "nan" for column in columns] for row in rows)
    os.replace(tmp, path)


def _format(column: str, value: float) -> str:
    if column == "epoch":
        return str(int(value))
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6g}"


def read_results(path: str | Path) -> dict[str, list[float]]:
    """``results.csv`` as ``{column: [value per epoch]}`` (floats; NaN where not measured)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {column: [] for column in RESULTS_COLUMNS}
    return {column: [float(r[column]) for r in rows] for column in rows[0]}


def keep_epochs(path: Path, epochs_done: int) -> None:
    """Cut a per-epoch csv (``results.csv``, ``grad_norms.csv``: a header with an ``epoch`` column) back to the rows
    of epochs ``1 … epochs_done``, byte for byte (a resumed run redoes the later ones). No file: nothing to do."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if int(float(r[column])) <= epochs_done]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)
