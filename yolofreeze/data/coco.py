"""Records -> COCO ground-truth dict, the input pycocotools' ``COCO`` class expects."""
from __future__ import annotations

from typing import Sequence

from .records import ImageRecord


def to_coco_gt(records: Sequence[ImageRecord], names: Sequence[str],
               category_ids: Sequence[int] | None = None) -> dict:
    """COCO ground truth for ``records`` (one split).

    Category-id convention: class index ``k`` (``0..nc-1``) has category id ``category_ids[k]``; by default
    ``k + 1`` (COCO ids start at 1). For COCO sources pass ``DatasetInfo.category_ids`` to keep the original
    ids. ``gt["categories"]`` lists the categories in class-index order, so ``gt["categories"][k]["id"]`` is
    the id to write for a detection of class ``k``.

    Boxes are ``bbox = [x, y, w, h]`` in original-image pixels; ``area`` is the box area ``w * h`` (for COCO
    sources this differs from the official segmentation area, which only shifts boxes between the small /
    medium / large ranges near their borders). Ignore-flagged boxes (iscrowd / VOC difficult) get
    ``iscrowd = 1``, the only ignore mark pycocotools honours. Annotation ids start at 1 (pycocotools treats
    id 0 as "unmatched").

    Args:
        records: images of one split; their ``image_id`` must be unique.
        names: class names, ``len(names) = nc``.
        category_ids: category id per class index, unique; default ``1..nc``.

    Returns:
        ``{"info", "images", "annotations", "categories"}`` ready for ``pycocotools.coco.COCO`` (set
        ``coco.dataset = gt; coco.createIndex()``).
    """
    category_ids = list(range(1, len(names) + 1)) if category_ids is None else [int(c) for c in category_ids]
    if len(category_ids) != len(names) or len(set(category_ids)) != len(category_ids):
        raise ValueError(f"need {len(names)} unique category ids, got {category_ids}")
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids repeat: records of several splits mixed?")
    images, annotations = [], []
    for record in records:
        images.append({"id": int(record.image_id), "file_name": record.path.name,
                       "width": int(record.width), "height": int(record.height)})
        for (x1, y1, x2, y2), cls, flag in zip(record.boxes.tolist(), record.classes.tolist(), record.flags.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": int(record.image_id),
                                "category_id": category_ids[cls], "bbox": [x1, y1, w, h], "area": w * h,
                                "iscrowd": int(flag)})
    categories = [{"id": cid, "name": str(name)} for cid, name in zip(category_ids, names)]
    return {"info": {"description": "yolofreeze ground truth"}, "images": images, "annotations": annotations,
            "categories": categories}
