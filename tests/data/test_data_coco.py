"""to_coco_gt: records -> pycocotools ground truth with a documented category-id convention."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolofreeze.data import ImageRecord, to_coco_gt


def _record(image_id, boxes, classes, flags=None):
    n = len(classes)
    return ImageRecord(Path(f"/x/{image_id}.jpg"), 100, 80, np.array(boxes, np.float32).reshape(-1, 4),
                       np.array(classes, np.int64), np.array(flags or [False] * n, bool), image_id)


RECORDS = [_record(1, [[10, 10, 50, 40], [60, 5, 90, 70]], [0, 1]),
           _record(2, [[0, 0, 100, 80], [20, 20, 30, 30]], [1, 0], [False, True]),
           _record(3, [], [])]


def _evaluate(gt: dict, detections: list) -> float:
    """AP@[.5:.95] from pycocotools (its prints silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def test_default_category_ids_are_class_index_plus_one_and_boxes_are_xywh():
    gt = to_coco_gt(RECORDS, ["a", "b"])
    assert gt["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    assert [i["id"] for i in gt["images"]] == [1, 2, 3]
    assert gt["images"][0] == {"id": 1, "file_name": "1.jpg", "width": 100, "height": 80}
    first, second, third, crowd = gt["annotations"]
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3, 4]
    assert first["bbox"] == [10, 10, 40, 30] and first["area"] == 1200 and first["category_id"] == 1
    assert second["category_id"] == 2 and third["category_id"] == 2
    assert crowd["iscrowd"] == 1 and first["iscrowd"] == 0


def test_custom_category_ids_are_used_in_class_order():
    gt = to_coco_gt(RECORDS, ["a", "b"], category_ids=[17, 4])
    assert [(c["id"], c["name"]) for c in gt["categories"]] == [(17, "a"), (4, "b")]
    assert [a["category_id"] for a in gt["annotations"]] == [17, 4, 4, 17]
    with pytest.raises(ValueError):
        to_coco_gt(RECORDS, ["a", "b"], category_ids=[3, 3])


def test_perfect_detections_score_one_and_missing_ones_less():
    gt = to_coco_gt(RECORDS, ["a", "b"], category_ids=[17, 4])
    ids = [c["id"] for c in gt["categories"]]  # class index -> category id
    detections = [{"image_id": r.image_id, "category_id": ids[c], "score": 0.9,
                   "bbox": [x1, y1, x2 - x1, y2 - y1]}
                  for r in RECORDS for (x1, y1, x2, y2), c, f in zip(r.boxes.tolist(), r.classes.tolist(), r.flags)
                  if not f]
    assert _evaluate(gt, detections) == pytest.approx(1.0)
    assert _evaluate(gt, detections[1:]) < 0.9


def test_repeated_image_ids_are_rejected():
    with pytest.raises(ValueError, match="image ids"):
        to_coco_gt([RECORDS[0], RECORDS[0]], ["a", "b"])
