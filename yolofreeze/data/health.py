"""Dataset summary and checks: images and instances per class and split, plus every problem met while reading."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .loader import decode_image
from .records import IMAGE_ERRORS, DatasetInfo, ProblemReport


@dataclass
class SplitSummary:
    """Counts for one split.

    Attributes:
        images: number of records.
        images_without_boxes: records with no box (background images).
        instances: ``(nc,)`` int64 boxes per class, ignored boxes included.
        ignored: boxes flagged "ignore in evaluation" (iscrowd / difficult).
    """

    images: int
    images_without_boxes: int
    instances: np.ndarray
    ignored: int


@dataclass
class DatasetReport:
    """What ``check_dataset`` found: per-split counts, all problems, and the images a full decode rejected."""

    names: list[str]
    splits: dict[str, SplitSummary]
    problems: ProblemReport
    bad_paths: list[Path]


def _decodes(path: Path) -> str | None:
    """None when the whole image decodes with the loader's own decoder, else the error text."""
    try:
        decode_image(path)
    except IMAGE_ERRORS as error:
        return str(error) or type(error).__name__
    return None


def check_dataset(info: DatasetInfo, decode: bool = False) -> DatasetReport:
    """Summarise ``info`` and collect its problems.

    Args:
        info: a dataset as returned by the readers.
        decode: also decode every image fully (slow: readers only parse headers and check file tails);
            failures are reported as ``unreadable_image`` and listed in ``bad_paths``, so that
            ``info.without(report.bad_paths)`` drops them.

    Returns:
        ``DatasetReport``; its problems are the reader's plus ``split_overlap`` (same file in several splits).
    """
    problems = ProblemReport()
    problems.merge(info.problems)
    splits = {}
    first_split: dict[Path, str] = {}
    for split, records in info.splits.items():
        classes = np.concatenate([r.classes for r in records] or [np.zeros(0, np.int64)])
        splits[split] = SplitSummary(images=len(records),
                                     images_without_boxes=sum(len(r.classes) == 0 for r in records),
                                     instances=np.bincount(classes, minlength=info.nc).astype(np.int64),
                                     ignored=int(sum(r.flags.sum() for r in records)))
        for record in records:
            other = first_split.setdefault(record.path, split)
            if other != split:
                problems.add("split_overlap", record.path, f"{other} and {split}")
    bad_paths = []
    if decode:
        for path in tqdm(list(first_split), desc="decoding images", leave=False, disable=None):
            error = _decodes(path)
            if error is not None:
                problems.add("unreadable_image", path, error)
                bad_paths.append(path)
    return DatasetReport(list(info.names), splits, problems, bad_paths)


def format_report(report: DatasetReport) -> str:
    """Text table (one row per class, one column per split, then totals) followed by the problem list."""
    splits = list(report.splits)
    label_width = max([len(n) for n in report.names] + [len("without boxes")]) + 2
    width = max([len(s) for s in splits] + [7]) + 2
    lines = [f"{'class':<{label_width}}" + "".join(f"{s:>{width}}" for s in splits)]

    def row(label: str, values: list[int]) -> str:
        return f"{label:<{label_width}}" + "".join(f"{v:>{width}}" for v in values)

    for k, name in enumerate(report.names):
        lines.append(row(name, [int(report.splits[s].instances[k]) for s in splits]))
    lines.append(row("all boxes", [int(report.splits[s].instances.sum()) for s in splits]))
    lines.append(row("ignored boxes", [report.splits[s].ignored for s in splits]))
    lines.append(row("images", [report.splits[s].images for s in splits]))
    lines.append(row("without boxes", [report.splits[s].images_without_boxes for s in splits]))
    lines.append("")
    lines.append(f"problems ({report.problems.total()}):")
    lines.append(report.problems.format())
    return "\n".join(lines)

