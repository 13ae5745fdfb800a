"""``resolve_dataset``: a data.yaml, a dataset folder, or a registered name -> ``DatasetInfo``.

Registered names (case-insensitive): ``insplad``, ``coco``, ``coco8`` and ``demo``. Named datasets are
looked for under ``$YOLOFREEZE_DATASETS`` (when set), ``./datasets`` and ``datasets/`` of the project checkout,
whatever the current directory; ``demo`` is generated on first use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..names import COCO80_NAMES
from .demo import ensure_demo_dataset
from .formats import LAYOUTS, detect_format, read_dataset
from .records import DatasetInfo, DatasetNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NamedDataset:
    """A dataset known by name: its folder under a datasets base, format, expected layout and origin."""

    folder: str
    format: str
    layout: str
    download: str
    names: tuple[str, ...] | None = None
    extra_places: tuple[str, ...] = ()  # relative to PROJECT_ROOT


NAMED_DATASETS = {
    "insplad": NamedDataset(
        folder="InsPLAD-det", format="coco",
        layout="InsPLAD-det/annotations/instances_{train,val}.json with images in "
               "InsPLAD-det/{train,val}/ (or images/{train,val}/)",
        download="https://github.com/andreluizbvs/InsPLAD (InsPLAD-det.zip, Google Drive link in the README)"),
    "coco": NamedDataset(
        folder="coco", format="coco",
        layout="coco/annotations/instances_{train,val}2017.json with images in coco/{train,val}2017/ "
               "(or coco/images/{train,val}2017/)",
        download="https://cocodataset.org (2017 Train/Val images and Train/Val annotations)"),
    "coco8": NamedDataset(
        folder="coco8", format="yolo", names=tuple(COCO80_NAMES),
        layout="coco8/images/{train,val}/*.jpg and coco8/labels/{train,val}/*.txt",
        download="the Ultralytics coco8 sample (first 4 train + 4 val images of COCO train2017)",
        extra_places=("../shared/data/coco8",)),  # relative to the project checkout
}


def dataset_bases() -> list[Path]:
    """Folders that hold named datasets: ``$YOLOFREEZE_DATASETS`` (if set), ``./datasets``, the checkout's ``datasets``."""
    env = os.environ.get("YOLOFREEZE_DATASETS")
    bases = [Path(env).expanduser()] if env else []
    bases += [Path("datasets"), PROJECT_ROOT / "datasets"]
    return list({base.resolve(): base for base in bases}.values())


def _has_layout(folder: Path, format: str) -> bool:
    """Whether ``folder`` exists and looks like a dataset of ``format``."""
    try:
        return folder.is_dir() and detect_format(folder) == format
    except DatasetNotFoundError:
        return False


def _resolve_named(key: str) -> DatasetInfo:
    """Read the registered dataset ``key`` from the first place that has it; raise with every place tried."""
    entry = NAMED_DATASETS[key]
    places = [base / entry.folder for base in dataset_bases()]
    places += [(PROJECT_ROOT / p).resolve() for p in entry.extra_places]
    for place in places:
        if _has_layout(place, entry.format):
            return read_dataset(place, entry.format, entry.names)
    looked = "\n".join(f"  {p.resolve()} ({'exists, wrong layout' if p.exists() else 'missing'})" for p in places)
    raise DatasetNotFoundError(
        f"dataset {key!r} not found. Looked in:\n{looked}\nExpected layout: {entry.layout}\n"
        f"Download: {entry.download}\nPut it under one of those places or set YOLOFREEZE_DATASETS to the "
        f"folder that holds {entry.folder}/.")


def resolve_dataset(spec: str | Path) -> DatasetInfo:
    """Read the dataset that ``spec`` names.

    Args:
        spec: an existing data.yaml or dataset folder (format detected from its layout: see
            ``formats.LAYOUTS``), or a registered name, case-insensitive: ``insplad`` (InsPLAD-det, COCO json),
            ``coco`` (COCO 2017, COCO json), ``coco8`` (YOLO txt, 80 COCO names; also found in
            ``../shared/data/coco8``) or ``demo`` (generated into ``demo.demo_root()`` when missing).
            An existing path wins over a name.

    Raises:
        DatasetNotFoundError: nothing at ``spec``; the message lists the places looked at, the expected
            layout and where to download the dataset.
    """
    path = Path(spec).expanduser()
    if path.exists():
        return read_dataset(path)
    key = str(spec).strip().lower()
    if key == "demo":
        return read_dataset(ensure_demo_dataset(), "yolo")
    if key in NAMED_DATASETS:
        return _resolve_named(key)
    raise DatasetNotFoundError(
        f"dataset {str(spec)!r} not found: {path.resolve()} does not exist and it is not a registered name "
        f"({', '.join(sorted([*NAMED_DATASETS, 'demo']))}). A path should be a data.yaml or a folder laid out as:\n"
        + LAYOUTS)
