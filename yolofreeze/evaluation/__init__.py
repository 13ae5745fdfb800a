"""Predictions → scores: :mod:`.postprocess` (NMS for YOLOv8, top-k for YOLOv10's one-to-one head),
:mod:`.evaluate` (COCO json → pycocotools, precision / recall as the reference reports them), :mod:`.detect`
(detections on image files, drawn)."""
