"""The one record type every reader produces, the problem report readers fill, and the box checks they share.

Coordinates everywhere in this module are in pixels of the image *as displayed*: with its EXIF orientation
applied, as the loader decodes it and as YOLO labels are normalised (a 640x480 JPEG tagged "rotate 90°"
is 480x640). A box is ``x1, y1, x2, y2`` with ``0 <= x1 < x2 <= width``.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

# What PIL raises for a missing, foreign, corrupt, truncated or absurdly large image file.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

EXIF_ORIENTATION = 0x0112  # EXIF tag 274
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # orientations that turn the image by 90° (width <-> height)

# Boxes that stick out of the image by at most this many pixels are clipped silently (rounding noise of
# normalised labels); beyond it the clip is counted as a "clipped_box" problem.
CLIP_TOLERANCE_PX = 0.5

PROBLEM_KINDS = {
    "unreadable_image": "image missing, empty, unreadable, corrupt or truncated (image skipped)",
    "duplicate_image": "same image name or id twice in a split (later copy skipped)",
    "label_without_image": "label file or annotation whose image does not exist (skipped)",
    "image_without_label": "image without a label file or annotations (kept, no boxes)",
    "empty_label": "label file without any box (kept, no boxes)",
    "missing_label_dir": "labels directory for an images directory does not exist (images kept, no boxes)",
    "bad_annotation": "malformed label row, annotation entry or xml file (skipped)",
    "unknown_class": "class id outside 0..nc-1, unknown category id or class name (box skipped)",
    "degenerate_box": "non-finite coordinates or zero/negative width or height (box skipped)",
    "outside_box": "box does not overlap the image (box skipped)",
    "clipped_box": "box partly outside the image, clipped to it (box kept)",
    "size_mismatch": "annotated image size differs from the file's own size (file size used)",
    "split_overlap": "same image file in more than one split (kept in both)",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset, or a folder its description points to, does not exist; the message says where we looked."""


class ProblemReport:
    """Counts of problems met while reading a dataset, per kind (see ``PROBLEM_KINDS``), with example paths.

    Readers never raise on bad data: they skip the bad box or image and ``add`` it here.
    """

    def __init__(self, max_examples: int = 5) -> None:
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, path: Path | str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` problems of ``kind`` found in ``path``; keeps the first few paths as examples."""
        if kind not in PROBLEM_KINDS:
            raise KeyError(f"unknown problem kind {kind!r}; known: {sorted(PROBLEM_KINDS)}")
        if count <= 0:
            return
        self.counts[kind] += count
        examples = self.examples.setdefault(kind, [])
        text = f"{path} ({detail})" if detail else str(path)
        if len(examples) < self.max_examples:
            examples.append(text)
        log.debug("%s: %s", kind, text)

    def merge(self, other: ProblemReport) -> None:
        """Add the counts and examples of ``other`` to this report."""
        for kind, n in other.counts.items():
            self.counts[kind] += n
            mine = self.examples.setdefault(kind, [])
            mine.extend(other.examples.get(kind, [])[: self.max_examples - len(mine)])

    def total(self) -> int:
        """Number of problems of all kinds."""
        return sum(self.counts.values())

    def format(self) -> str:
        """Multi-line text: one line per kind with its count and meaning, then the example paths."""
        if not self.counts:
            return "no problems found"
        lines = []
        for kind in sorted(self.counts):
            lines.append(f"{kind:<20} {self.counts[kind]:>7}  {PROBLEM_KINDS[kind]}")
            lines.extend(f"{'':<30}e.g. {example}" for example in self.examples.get(kind, []))
        return "\n".join(lines)


@dataclass(eq=False)
class ImageRecord:
    """One image and its boxes.

    Attributes:
        path: image file.
        width, height: size in pixels from the file header, EXIF orientation applied (see ``read_image_size``).
        boxes: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels of the original image, inside the image.
        classes: ``(N,)`` int64 contiguous class indices ``0..nc-1``.
        flags: ``(N,)`` bool, True = ignore this box in evaluation (COCO ``iscrowd``, VOC ``difficult``).
        image_id: integer id, unique within a split (the COCO id for COCO sources, else 1-based position).
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    flags: np.ndarray
    image_id: int

    def __post_init__(self) -> None:
        n = len(self.classes)
        if self.boxes.shape != (n, 4) or self.flags.shape != (n,):
            raise ValueError(f"{self.path}: boxes {self.boxes.shape}, classes {self.classes.shape} and "
                             f"flags {self.flags.shape} disagree")


@dataclass(eq=False)
class DatasetInfo:
    """A dataset as read from disk: class names and the records of each split.

    Attributes:
        root: dataset folder (or the folder of its data.yaml).
        format: ``"yolo"``, ``"coco"`` or ``"voc"``.
        names: class names; index ``k`` is class ``k``.
        splits: split name (``"train"``, ``"val"``, ``"test"``) -> records, in reading order.
        problems: what was skipped, clipped or missing while reading.
        category_ids: source category id of each class index (COCO sources), else None.
    """

    root: Path
    format: str
    names: list[str]
    splits: dict[str, list[ImageRecord]]
    problems: ProblemReport = field(default_factory=ProblemReport)
    category_ids: list[int] | None = None

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def without(self, paths: Iterable[Path]) -> DatasetInfo:
        """A copy whose splits leave out the records of the given image paths (e.g. images a full decode rejected)."""
        drop = {Path(p) for p in paths}
        splits = {name: [r for r in records if r.path not in drop] for name, records in self.splits.items()}
        return replace(self, splits=splits)


def _looks_complete(path: Path, image_format: str | None) -> bool:
    """Cheap end-of-file check: JPEG should end with the EOI marker, PNG with the IEND chunk."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read().rstrip(b"\x00")
    if image_format == "JPEG":
        return tail.endswith(b"\xff\xd9")
    if image_format == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    return True


def _orientation(image: Image.Image) -> int:
    """EXIF orientation tag (1-8; 1 when absent or unreadable) without decoding the pixels.

    PNG: only an eXIf chunk before the pixel data is seen (a later one would need a full decode).
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels as displayed (EXIF orientation applied), without decoding the pixels.

    Orientations 5-8 turn the image by 90°, so the header's width and height swap. Files whose tail looks
    truncated (JPEG without end-of-image marker, PNG without IEND) are decoded fully to decide, so files
    with harmless trailing bytes pass and truly truncated ones fail.

    Raises:
        one of ``IMAGE_ERRORS``: the file is missing, empty, not an image, truncated or too large.
    """
    with Image.open(path) as image:
        size = image.size
        if not _looks_complete(path, image.format):
            image.load()
        if _orientation(image) in TRANSPOSED_ORIENTATIONS:
            size = size[::-1]
    if min(size) <= 0:
        raise ValueError(f"image size {size}")
    return size


def clean_boxes(boxes: np.ndarray, classes: np.ndarray, flags: np.ndarray, width: int, height: int, nc: int,
                problems: ProblemReport, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop invalid boxes, clip the rest to the image, and report each dropped or clipped box once.

    Args:
        boxes: ``(N, 4)`` float, ``x1, y1, x2, y2`` in pixels as annotated.
        classes: ``(N,)`` integer class indices (anything outside ``0..nc-1`` is dropped).
        flags: ``(N,)`` bool ignore flags.
        width, height: image size in pixels.
        nc: number of classes.
        problems: report that receives ``degenerate_box``, ``unknown_class``, ``outside_box`` and ``clipped_box``.
        path: file the boxes came from (for the report).

    Returns:
        ``boxes (M, 4) float32`` clipped to ``[0, width] x [0, height]``, ``classes (M,) int64``, ``flags (M,) bool``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).reshape(-1)
    flags = np.asarray(flags, dtype=bool).reshape(-1)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        proper = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    known = proper & (classes >= 0) & (classes < nc)
    clipped = np.clip(np.nan_to_num(boxes), 0.0, [width, height, width, height])
    overlaps = known & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    moved = overlaps & (np.abs(clipped - np.nan_to_num(boxes)).max(axis=1) > CLIP_TOLERANCE_PX)
    problems.add("degenerate_box", path, count=int((~proper).sum()))
    problems.add("unknown_class", path, f"classes {sorted(set(classes[proper & ~known].tolist()))}",
                 count=int((proper & ~known).sum()))
    problems.add("outside_box", path, count=int((known & ~overlaps).sum()))
    problems.add("clipped_box", path, count=int(moved.sum()))
    return clipped[overlaps].astype(np.float32), classes[overlaps], flags[overlaps]

