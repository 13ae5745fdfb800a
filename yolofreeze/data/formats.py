"""Readers for YOLO txt, COCO json and Pascal VOC xml datasets; each returns a ``DatasetInfo`` of ``ImageRecord``s.

Readers never raise on bad data: a bad box or image is skipped and counted in ``DatasetInfo.problems``.
They do raise ``DatasetNotFoundError`` up front when a folder the dataset description names is missing,
and ``ValueError`` for a description that cannot be understood (e.g. class names with gaps).
"""
from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from tqdm import tqdm

from ..names import class_names
from .records import (
    IMAGE_ERRORS,
    IMAGE_SUFFIXES,
    DatasetInfo,
    DatasetNotFoundError,
    ImageRecord,
    ProblemReport,
    clean_boxes,
    read_image_size,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

LAYOUTS = """\
  YOLO txt:   data.yaml (path, train, val, names) or a folder with images/<split>/ and labels/<split>/*.txt
  COCO json:  annotations/instances_<split>.json with images in <split>/ or images/<split>/
  Pascal VOC: Annotations/*.xml and JPEGImages/, optionally ImageSets/Main/{train,val}.txt"""


def _image_size(path: Path, problems: ProblemReport) -> tuple[int, int] | None:
    """``(width, height)`` from the header, or None after reporting an unreadable image."""
    try:
        return read_image_size(path)
    except IMAGE_ERRORS as error:
        problems.add("unreadable_image", path, str(error) or type(error).__name__)
        return None


def _progress(items: Sequence, desc: str) -> tqdm:
    """A progress bar over ``items`` that shows only on a terminal."""
    return tqdm(items, desc=desc, leave=False, disable=None)


# ----------------------------------------------------------------------------------------------- YOLO txt


def label_path(image: Path) -> Path:
    """YOLO label file of ``image``: the last ``images`` path component becomes ``labels``, the suffix ``.txt``.

    An image with no ``images`` component in its path has its label beside it.
    """
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _class_count(value: object, source: Path) -> int:
    """``nc`` of a data.yaml as a positive int (``3``, ``3.0`` and ``"3"`` are accepted)."""
    try:
        count = float(value)
    except (TypeError, ValueError):
        count = float("nan")
    if not count.is_integer() or count < 1:
        raise ValueError(f"{source}: 'nc: {value}' must be a positive whole number")
    return int(count)


def _yaml_names(config: dict, source: Path) -> list[str]:
    """Class names of a data.yaml: its ``names``, else ``class_0 .. class_{nc-1}`` from its ``nc``.

    Placeholders are named as the reference names them for an ``nc``-only data.yaml. Raises ValueError when
    the yaml has neither (the class count is never guessed from the labels), names are empty, or ``nc``
    disagrees with the number of names.
    """
    names = class_names(config.get("names"))
    count = _class_count(config["nc"], source) if config.get("nc") is not None else None
    if names is None and count is None:
        raise ValueError(f"{source}: needs 'names' (a list, or {{index: name}}) or 'nc' (the class count)")
    if names is not None and not names:
        raise ValueError(f"{source}: 'names' is empty; a dataset needs at least one class")
    if names is not None and count is not None and len(names) != count:
        raise ValueError(f"{source}: 'names' has {len(names)} entries but 'nc' is {count}")
    return names if names is not None else [f"class_{i}" for i in range(count)]


def _yolo_sources(source: Path, names_given: bool) -> tuple[Path, dict[str, list[Path]], list[str] | None]:
    """Dataset root, split -> image sources (folders or .txt lists), and names from a data.yaml (or None).

    A data.yaml must name its classes (``_yaml_names``) unless ``names_given``.
    """
    if source.is_dir() and (source / "data.yaml").is_file():
        source = source / "data.yaml"
    if source.is_file():
        with open(source, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a mapping with path, train, val and names")
        root = Path(config.get("path") or ".").expanduser()
        root = (root if root.is_absolute() else source.parent / root).resolve()
        splits = {}
        for split in SPLITS:
            entries = config.get(split)
            if entries:
                entries = [entries] if isinstance(entries, (str, Path)) else list(entries)
                splits[split] = [root / str(entry) for entry in entries]
        return root, splits, None if names_given else _yaml_names(config, source)
    images = source / "images"
    if not images.is_dir():
        raise DatasetNotFoundError(f"{source}: no data.yaml and no images/ folder; expected layout:\n{LAYOUTS}")
    subdirs = sorted(d for d in images.iterdir() if d.is_dir())
    splits = {d.name: [d] for d in subdirs} if subdirs else {"train": [images]}
    return source.resolve(), splits, None


def _list_images(source: Path) -> list[Path]:
    """Image files under a folder (recursive, sorted) or listed in a .txt file (relative to that file)."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    return [p if p.is_absolute() else source.parent / p for p in (Path(line) for line in lines if line)]


def _label_row(fields: list[str]) -> list[float] | None:
    """``[cls, cx, cy, w, h]`` (normalised) from one YOLO label row, or None when the row is malformed.

    A row of 5 numbers is a box ``cls cx cy w h``. A row of ``1 + 2k`` numbers with ``k >= 3`` is a polygon
    ``cls x1 y1 … xk yk`` (segmentation labels, as the reference accepts them: any row of more than 6 fields)
    and becomes its bounding box, the min and max of its points.
    """
    try:
        values = np.asarray([float(v) for v in fields], dtype=np.float64)
    except ValueError:
        return None
    if not values.size or not values[0].is_integer():
        return None
    if values.size == 5:
        return values.tolist()
    if values.size < 7 or values.size % 2 == 0:
        return None
    xs, ys = values[1::2], values[2::2]
    x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    return [values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def _read_label_file(path: Path, problems: ProblemReport, missing_dirs: set[Path]) -> np.ndarray | None:
    """Rows ``cls cx cy w h`` of a YOLO label file as ``(K, 5)`` float64; problems are reported, never raised.

    Polygon rows become their bounding boxes (``_label_row``). A file that mixes box rows and polygon rows
    cannot be read with confidence (a 5-number row could also be a 2-point polygon): like the reference, it is
    reported as ``bad_annotation`` and None is returned, so the image is skipped.
    """
    rows: list[list[float]] = []
    if not path.is_file():
        if path.parent.is_dir():
            problems.add("image_without_label", path)
        elif path.parent not in missing_dirs:
            missing_dirs.add(path.parent)
            problems.add("missing_label_dir", path.parent)
        return np.zeros((0, 5))
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        problems.add("bad_annotation", path, str(error))
        return np.zeros((0, 5))
    bad, polygons = 0, 0
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        row = _label_row(fields)
        if row is None:
            problems.add("bad_annotation", path, f"line {number}: expected 'cls cx cy w h' or a polygon "
                                                 f"'cls x1 y1 x2 y2 x3 y3 …', got {line.strip()!r}")
            bad += 1
            continue
        polygons += len(fields) > 5
        rows.append(row)
    if 0 < polygons < len(rows):
        problems.add("bad_annotation", path, f"mixes {len(rows) - polygons} box rows and {polygons} polygon "
                                             "rows (image skipped)")
        return None
    if not rows and not bad:
        problems.add("empty_label", path)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def _swap_images_dir(folder: Path) -> Path:
    """Label folder of an image folder (same rule as ``label_path``)."""
    return label_path(folder / "x.jpg").parent


def read_yolo(source: str | Path, names: Sequence[str] | None = None) -> DatasetInfo:
    """Read a YOLO txt dataset.

    Args:
        source: a data.yaml (``path`` relative to the yaml's folder, ``train``/``val``/``test`` each a folder,
            a .txt list of images or a list of those, ``names`` as list or ``{index: name}``), a folder holding
            one, or a folder with ``images/<split>/`` and ``labels/<split>/``.
        names: class names; override the yaml's. A data.yaml without them must have ``names`` or ``nc``
            (ValueError otherwise; ``nc`` alone names the classes ``class_0 .. class_{nc-1}``). Only a bare
            folder (no data.yaml) without ``names`` has its class count inferred from the largest class id
            found, classes named ``class_0 ..``, with a warning.

    Returns:
        ``DatasetInfo`` with ``format="yolo"``; label rows ``cls cx cy w h`` (normalised) become pixel xyxy boxes,
        polygon rows ``cls x1 y1 x2 y2 x3 y3 …`` their bounding boxes.
    """
    names = class_names(names)
    if names is not None and not names:
        raise ValueError("names is empty; a dataset needs at least one class")
    root, sources, yaml_names = _yolo_sources(Path(source), names is not None)
    missing = [str(p) for paths in sources.values() for p in paths if not p.exists()]
    if missing:
        raise DatasetNotFoundError(f"{source}: split sources not found: {missing}")
    names = names if names is not None else yaml_names
    problems = ProblemReport()
    missing_dirs: set[Path] = set()
    parsed: dict[str, list[tuple[Path, tuple[int, int], np.ndarray]]] = {}
    for split, paths in sources.items():
        entries = parsed[split] = []
        seen: dict[Path, Path] = {}
        images = [image for p in paths for image in _list_images(p)]
        for image in _progress(images, f"reading {split}"):
            label = label_path(image)
            if label in seen:
                problems.add("duplicate_image", image, f"same label file as {seen[label].name}")
                continue
            seen[label] = image
            size = _image_size(image, problems)
            rows = None if size is None else _read_label_file(label, problems, missing_dirs)
            if rows is not None:
                entries.append((image, size, rows))
        for folder in (p for p in paths if p.is_dir()):
            labels = _swap_images_dir(folder)
            if labels.is_dir():
                for orphan in sorted(set(labels.rglob("*.txt")) - set(seen)):
                    problems.add("label_without_image", orphan)
    if names is None:
        largest = max((int(rows[:, 0].max()) for e in parsed.values() for _, _, rows in e if len(rows)), default=-1)
        names = [f"class_{i}" for i in range(largest + 1)]
        log.warning("%s: no data.yaml and no class names given; %d classes inferred from the labels (class_0 ..)",
                    source, len(names))
    splits = {}
    for split, entries in parsed.items():
        records = splits[split] = []
        for image, (w, h), rows in entries:
            cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
            xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
            boxes, classes, flags = clean_boxes(xyxy, rows[:, 0], np.zeros(len(rows), bool), w, h, len(names),
                                                problems, label_path(image))
            records.append(ImageRecord(image, w, h, boxes, classes, flags, image_id=len(records) + 1))
    return DatasetInfo(root, "yolo", names, splits, problems)


# ----------------------------------------------------------------------------------------------- COCO json


def _coco_annotation_files(root: Path) -> dict[str, tuple[Path, str]]:
    """split -> (``instances_*.json``, the name after ``instances_``); a trailing year is dropped from the split."""
    files: dict[str, tuple[Path, str]] = {}
    for path in sorted((root / "annotations").glob("instances_*.json")):
        raw = path.stem[len("instances_"):]
        split = re.sub(r"\d{4}$", "", raw) or raw
        if split in files:
            log.warning("%s: split %r already read from %s; ignoring this file", path, split, files[split][0].name)
            continue
        files[split] = (path, raw)
    return files


def _coco_image_dir(root: Path, split: str, raw: str) -> Path:
    """First existing image folder among ``<raw>/``, ``images/<raw>/``, ``<raw>/images/`` (and the same for split)."""
    candidates = [c for name in dict.fromkeys([raw, split]) for c in (root / name, root / "images" / name,
                                                                   root / name / "images")]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(f"{root}: no image folder for split {split!r}; looked in "
                               + ", ".join(str(c) for c in candidates))


def _coco_box(annotation: dict) -> list[float] | None:
    """``x1, y1, x2, y2`` from a COCO ``bbox`` ``[x, y, w, h]``, or None when malformed."""
    bbox = annotation.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None
    return [x, y, x + w, y + h]


def _coco_split(data: dict, image_dir: Path, root: Path, index: dict[int, int], nc: int,
                problems: ProblemReport) -> list[ImageRecord]:
    """Records of one COCO json: images with readable files, their annotations mapped to class indices."""
    by_image: dict[object, list[dict]] = defaultdict(list)
    for annotation in data.get("annotations", []):
        by_image[annotation.get("image_id")].append(annotation)
    records: list[ImageRecord] = []
    seen_ids, seen_names = set(), set()
    for entry in _progress(data.get("images", []), f"reading {image_dir.name}"):
        image_id, file_name = entry.get("id"), entry.get("file_name")
        if not isinstance(image_id, int) or not isinstance(file_name, str):
            problems.add("bad_annotation", image_dir, f"image entry without integer id and file_name: {entry}")
            continue
        path = image_dir / file_name
        if image_id in seen_ids or file_name in seen_names:
            problems.add("duplicate_image", path, f"id {image_id}")
            continue
        seen_ids.add(image_id)
        seen_names.add(file_name)
        if not path.is_file() and (root / file_name).is_file():
            path = root / file_name
        size = _image_size(path, problems)
        if size is None:
            continue
        if entry.get("width") is not None and (entry.get("width"), entry.get("height")) != size:
            problems.add("size_mismatch", path,
                         f"json {entry.get('width')}x{entry.get('height')}, file {size[0]}x{size[1]}")
        xyxy, classes, flags = [], [], []
        for annotation in by_image.get(image_id, []):
            box, category = _coco_box(annotation), annotation.get("category_id")
            if box is None:
                problems.add("bad_annotation", path,
                             f"annotation {annotation.get('id')}: bbox {annotation.get('bbox')}")
            elif category not in index:
                problems.add("unknown_class", path, f"category_id {category}")
            else:
                xyxy.append(box)
                classes.append(index[category])
                flags.append(bool(annotation.get("iscrowd", 0)))
        if image_id not in by_image:
            problems.add("image_without_label", path)
        boxes, classes, flags = clean_boxes(np.asarray(xyxy).reshape(-1, 4), classes, flags, *size, nc, problems, path)
        records.append(ImageRecord(path, size[0], size[1], boxes, classes, flags, image_id))
    for image_id in sorted(set(by_image) - seen_ids, key=str):
        problems.add("label_without_image", image_dir, f"annotations for unknown image id {image_id}",
                     count=len(by_image[image_id]))
    return records


def read_coco(root: str | Path) -> DatasetInfo:
    """Read a COCO json dataset: ``annotations/instances_<split>.json`` plus an image folder per split.

    Image folders tried per split: ``<name>/``, ``images/<name>/``, ``<name>/images/`` where ``<name>`` is the
    part after ``instances_`` (e.g. ``train2017``) and then the split without its year (``train``).

    Returns:
        ``DatasetInfo`` with ``format="coco"``. Category ids, in sorted order, become class indices
        ``0..nc-1``; ``names`` keeps their names and ``category_ids[k]`` the original id of class ``k``.
        ``iscrowd`` becomes the per-box ignore flag; ``image_id`` is the json's image id.
    """
    root = Path(root).resolve()
    files = _coco_annotation_files(root)
    if not files:
        raise DatasetNotFoundError(f"{root}: no annotations/instances_*.json; expected layout:\n{LAYOUTS}")
    image_dirs = {split: _coco_image_dir(root, split, raw) for split, (_, raw) in files.items()}
    loaded = {}
    for split, (path, _) in files.items():
        with open(path, encoding="utf-8") as f:
            loaded[split] = json.load(f)
    categories: dict[int, str] = {}
    for split, data in loaded.items():
        for category in data.get("categories", []):
            cid, name = int(category["id"]), str(category["name"])
            if categories.setdefault(cid, name) != name:
                raise ValueError(f"category id {cid} is {categories[cid]!r} in one file and {name!r} in {split}")
    category_ids = sorted(categories)
    index = {cid: k for k, cid in enumerate(category_ids)}
    problems = ProblemReport()
    splits = {split: _coco_split(data, image_dirs[split], root, index, len(index), problems)
              for split, data in loaded.items()}
    return DatasetInfo(root, "coco", [categories[c] for c in category_ids], splits, problems, category_ids)


# ----------------------------------------------------------------------------------------------- Pascal VOC


VocObject = tuple[str, bool, list[float]]  # (name, difficult, [x1, y1, x2, y2])


def _voc_objects(xml: Path, problems: ProblemReport) -> tuple[list[VocObject], tuple[int, int]] | None:
    """Objects ``(name, difficult, [x1, y1, x2, y2])`` and annotated ``(width, height)`` of one VOC xml.

    Every coordinate moves by one pixel: ``x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax - 1, ymax - 1`` (the
    reference's VOC conversion; see ``read_voc``). Returns None (after reporting) when the file cannot be parsed.
    """
    try:
        tree = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as error:
        problems.add("bad_annotation", xml, str(error))
        return None
    objects = []
    for number, obj in enumerate(tree.iter("object"), 1):
        name, box = obj.findtext("name"), obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = bool(int(float(obj.findtext("difficult") or 0)))
        except (AttributeError, TypeError, ValueError, OverflowError):
            problems.add("bad_annotation", xml, f"object {number}: missing or non-numeric bndbox/difficult")
            continue
        if not name or not name.strip():
            problems.add("bad_annotation", xml, f"object {number}: no name")
            continue
        objects.append((name.strip(), difficult, [xmin - 1, ymin - 1, xmax - 1, ymax - 1]))
    try:
        size = (int(float(tree.findtext("size/width") or 0)), int(float(tree.findtext("size/height") or 0)))
    except (ValueError, OverflowError):
        size = (0, 0)
    return objects, size


def _voc_split_ids(root: Path, ids: list[str], val_fraction: float) -> dict[str, list[str]]:
    """Split lists from ``ImageSets/Main/{train,val,test}.txt``, else every ``1/val_fraction``-th id goes to val."""
    lists = {s: root / "ImageSets" / "Main" / f"{s}.txt" for s in SPLITS}
    found = {s: p for s, p in lists.items() if p.is_file()}
    if "train" in found or "val" in found:
        return {s: [line.split()[0] for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
                for s, p in found.items()}
    to_val = [int((i + 1) * val_fraction) > int(i * val_fraction) for i in range(len(ids))]
    return {"train": [i for i, v in zip(ids, to_val) if not v], "val": [i for i, v in zip(ids, to_val) if v]}


def read_voc(root: str | Path, names: Sequence[str] | None = None, val_fraction: float = 0.2) -> DatasetInfo:
    """Read a Pascal VOC dataset: ``Annotations/<id>.xml`` and ``JPEGImages/<id>.<ext>``.

    Args:
        root: folder holding ``Annotations/`` and ``JPEGImages/`` (e.g. ``VOCdevkit/VOC2012``).
        names: class names (objects with other names are reported as ``unknown_class``); default: every name
            found in the xml files of the splits read, sorted.
        val_fraction: without ``ImageSets/Main/{train,val}.txt``, the ids (xml and image stems, sorted) are
            split deterministically: each position where ``floor(i * val_fraction)`` steps up goes to val.

    Returns:
        ``DatasetInfo`` with ``format="voc"``; ``difficult`` becomes the per-box ignore flag.

    Box convention: VOC pixel indices start at 1, so every coordinate moves by one pixel:
    ``x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax - 1, ymax - 1`` (pixels, box width ``xmax - xmin``). This is
    what the reference's VOC.yaml conversion produces (centre ``(xmin + xmax) / 2 - 1``, width ``xmax - xmin``,
    normalised by the annotated size), so pixel boxes — and mAPs — agree with a dataset converted by it.
    Unlike that conversion, ``difficult`` objects are kept (flagged, ignored by the evaluation) rather than
    dropped, and boxes are taken in pixels of the image file, not rescaled when the annotated size differs
    (a ``size_mismatch`` problem is reported instead).
    """
    root = Path(root).resolve()
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise DatasetNotFoundError(f"{root}: no Annotations/ and JPEGImages/ folders; expected layout:\n{LAYOUTS}")
    problems = ProblemReport()
    images: dict[str, Path] = {}
    for path in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if path.stem in images:
            problems.add("duplicate_image", path, f"same id as {images[path.stem].name}")
        else:
            images[path.stem] = path
    xmls = {p.stem: p for p in ann_dir.glob("*.xml")}
    split_ids = _voc_split_ids(root, sorted(set(xmls) | set(images)), val_fraction)
    parsed = {i: _voc_objects(xmls[i], problems) for ids in split_ids.values() for i in dict.fromkeys(ids) if i in xmls}
    names = list(names) if names is not None else sorted({o[0] for p in parsed.values() if p for o in p[0]})
    index = {name: k for k, name in enumerate(names)}
    splits = {}
    for split, ids in split_ids.items():
        records = splits[split] = []
        seen: set[str] = set()
        for image_id in _progress(ids, f"reading {split}"):
            path, xml = images.get(image_id), xmls.get(image_id)
            if image_id in seen:
                problems.add("duplicate_image", path or image_id, f"id {image_id} listed twice in {split}")
                continue
            seen.add(image_id)
            if path is None:
                problems.add("label_without_image" if xml else "unreadable_image", xml or image_id,
                             "no image file for this id" if xml else "neither image nor annotation for this id")
                continue
            if xml is not None and parsed[image_id] is None:
                continue
            size = _image_size(path, problems)
            if size is None:
                continue
            objects, annotated = parsed[image_id] if xml is not None else ([], size)
            if xml is None:
                problems.add("image_without_label", path)
            elif not objects:
                problems.add("empty_label", xml)
            if annotated != size and min(annotated) > 0:
                problems.add("size_mismatch", path, f"xml {annotated[0]}x{annotated[1]}, file {size[0]}x{size[1]}")
            known = [o for o in objects if o[0] in index]
            for name in (o[0] for o in objects if o[0] not in index):
                problems.add("unknown_class", xml, f"name {name!r}")
            boxes, classes, flags = clean_boxes(np.asarray([o[2] for o in known]).reshape(-1, 4),
                                                [index[o[0]] for o in known], [o[1] for o in known],
                                                *size, len(names), problems, xml or path)
            records.append(ImageRecord(path, size[0], size[1], boxes, classes, flags, image_id=len(records) + 1))
    return DatasetInfo(root, "voc", names, splits, problems)


# ----------------------------------------------------------------------------------------------- dispatch


def detect_format(source: str | Path) -> str:
    """``"yolo"``, ``"coco"`` or ``"voc"`` from a yaml file or a folder's layout; raises DatasetNotFoundError."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in (".yaml", ".yml"):
        return "yolo"
    if source.is_dir():
        if any((source / "annotations").glob("instances_*.json")):
            return "coco"
        if (source / "Annotations").is_dir() and (source / "JPEGImages").is_dir():
            return "voc"
        if (source / "data.yaml").is_file() or (source / "images").is_dir():
            return "yolo"
    raise DatasetNotFoundError(f"{source}: not a dataset yaml or a folder with a known layout:\n{LAYOUTS}")


def read_dataset(source: str | Path, format: str | None = None, names: Sequence[str] | None = None) -> DatasetInfo:
    """Read a dataset in any supported format (detected from the layout unless ``format`` is given).

    ``names`` overrides or supplies class names for YOLO and VOC; COCO names come from its categories.
    """
    format = format or detect_format(source)
    if format == "coco" and names is not None:
        raise ValueError("COCO class names come from the json categories; do not pass names")
    if format == "yolo":
        info = read_yolo(source, names)
    elif format == "coco":
        info = read_coco(source)
    elif format == "voc":
        info = read_voc(source, names)
    else:
        raise ValueError(f"unknown dataset format {format!r}; expected 'yolo', 'coco' or 'voc'")
    if info.problems.total():
        log.info("%s: %d problems while reading (%s); python -m yolofreeze.check lists them", source,
                    info.problems.total(), ", ".join(f"{k} {n}" for k, n in sorted(info.problems.counts.items())))
    return info
