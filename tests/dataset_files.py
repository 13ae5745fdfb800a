"""Small datasets written to disk in the three layouts (YOLO txt, COCO json, Pascal VOC xml), shared by the data,
evaluation and class-name tests: the same images and boxes in each layout (:data:`SPEC`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["damper", "defect", "insulator"]  # sorted, as VOC collects them

# The synthetic dataset every writer below writes: split -> [(stem, (width, height), boxes xyxy px, classes, flags)].
SPEC = {
    "train": [
        ("a", (64, 48), [[4.25, 6.5, 30.75, 40.0], [33.0, 1.5, 63.0, 20.25]], [0, 2], [False, True]),
        ("b", (40, 72), [[0.0, 0.0, 40.0, 72.0]], [1], [False]),
        ("c", (56, 56), [], [], []),
    ],
    "val": [
        ("d", (80, 32), [[10.5, 3.25, 70.0, 29.5], [1.0, 1.0, 9.0, 9.0], [60.0, 20.0, 79.5, 31.0]], [2, 1, 0],
         [False, False, False]),
    ],
}


def write_image(path: Path, size, seed: int = 0, source: Path | None = None) -> Path:
    """Write a small noisy RGB image (JPEG or PNG by suffix), or link to an existing image ``source``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        path.symlink_to(source)
        return path
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut to 60% of its bytes (header intact, pixels missing)."""
    write_image(path, (64, 64), seed=5)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    return path


def write_yolo(root: Path, spec=SPEC, names=NAMES, images: dict[str, Path] | None = None) -> Path:
    """YOLO txt: images/<split>/<stem>.jpg, labels/<split>/<stem>.txt, data.yaml (names as a dict).

    ``images`` (stem -> existing image file) links real images instead of writing noise; same in every writer.
    """
    for split, items in spec.items():
        for i, (stem, (w, h), boxes, classes, _) in enumerate(items):
            write_image(root / "images" / split / f"{stem}.jpg", (w, h), seed=i, source=(images or {}).get(stem))
            rows = [f"{c} {(x1 + x2) / 2 / w:.9f} {(y1 + y2) / 2 / h:.9f} {(x2 - x1) / w:.9f} {(y2 - y1) / h:.9f}"
                    for (x1, y1, x2, y2), c in zip(boxes, classes)]
            label = root / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(rows) + ("\n" if rows else ""))
    names_yaml = "".join(f"  {k}: {n}\n" for k, n in enumerate(names))
    splits_yaml = "".join(f"{split}: images/{split}\n" for split in spec)
    (root / "data.yaml").write_text(f"path: .\n{splits_yaml}names:\n{names_yaml}")
    return root / "data.yaml"


def write_coco(root: Path, spec=SPEC, names=NAMES, category_ids=(3, 7, 11), extra_images=None,
               extra_annotations=None, images: dict[str, Path] | None = None) -> Path:
    """COCO json: annotations/instances_<split>.json, images in <split>/; categories listed in shuffled order."""
    categories = [{"id": cid, "name": n} for cid, n in zip(category_ids, names)][::-1]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    sources = images or {}
    for split, items in spec.items():
        images, annotations = [], []
        for i, (stem, (w, h), boxes, classes, flags) in enumerate(items):
            write_image(root / split / f"{stem}.jpg", (w, h), seed=i, source=sources.get(stem))
            images.append({"id": 100 + i, "file_name": f"{stem}.jpg", "width": w, "height": h})
            for (x1, y1, x2, y2), c, f in zip(boxes, classes, flags):
                annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": category_ids[c],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": int(f)})
        images += (extra_images or {}).get(split, [])
        annotations += (extra_annotations or {}).get(split, [])
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def voc_xml(stem: str, size, objects) -> str:
    """VOC annotation text; ``objects`` = [(name, difficult, (xmin, ymin, xmax, ymax))] in VOC 1-based pixels."""
    body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, d, b in objects)
    return (f"<annotation><filename>{stem}.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{body}</annotation>")


def write_voc(root: Path, spec=SPEC, names=NAMES, split_lists: bool = True,
              images: dict[str, Path] | None = None) -> Path:
    """Pascal VOC: Annotations/<stem>.xml (1-based: xmin = x1 + 1, xmax = x2 + 1), JPEGImages/<stem>.jpg,
    ImageSets/Main/<split>.txt."""
    for split, items in spec.items():
        for i, (stem, size, boxes, classes, flags) in enumerate(items):
            write_image(root / "JPEGImages" / f"{stem}.jpg", size, seed=i, source=(images or {}).get(stem))
            objects = [(names[c], f, (x1 + 1, y1 + 1, x2 + 1, y2 + 1))
                       for (x1, y1, x2, y2), c, f in zip(boxes, classes, flags)]
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, size, objects))
        if split_lists:
            (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s[0]}\n" for s in items))
    return root


