"""Datasets: readers (YOLO txt, COCO json, Pascal VOC xml) -> records -> letterboxed batches.

``resolve_dataset(spec)`` reads a data.yaml, a dataset folder or a registered name into a ``DatasetInfo``;
``build_dataloader(info.splits["train"], ...)`` turns its records into ``Batch`` es; ``check_dataset`` and
``format_report`` summarise it; ``to_coco_gt`` gives pycocotools ground truth.
"""
from .augment import PRESETS as AUGMENT_PRESETS, AugmentSettings
from .coco import to_coco_gt
from .demo import DEMO_NAMES, demo_root, ensure_demo_dataset, write_demo_dataset
from .formats import (
                     detect_format,
                     label_path,
                     read_coco,
                     read_dataset,
                     read_voc,
                     read_yolo,
)
from .health import DatasetReport, SplitSummary, check_dataset, format_report
from .loader import (
                     PAD_VALUE,
                     Batch,
                     DetectionDataset,
                     ImageMeta,
                     LoadFailure,
                     Sample,
                     build_dataloader,
                     collate,
                     decode_image,
                     letterbox,
                     letterbox_from_original,
                     load_image,
                     rect_batch_shapes,
                     resize_long_side,
)
from .records import (
                     PROBLEM_KINDS,
                     DatasetInfo,
                     DatasetNotFoundError,
                     ImageRecord,
                     ProblemReport,
                     read_image_size,
)
from .registry import COCO80_NAMES, NAMED_DATASETS, dataset_bases, resolve_dataset

__all__ = [
    "AUGMENT_PRESETS", "AugmentSettings", "Batch", "COCO80_NAMES", "DEMO_NAMES", "DatasetInfo", "DatasetNotFoundError", "DatasetReport",
    "DetectionDataset", "ImageMeta", "ImageRecord", "LoadFailure", "NAMED_DATASETS", "PAD_VALUE", "PROBLEM_KINDS",
    "ProblemReport", "Sample", "SplitSummary", "build_dataloader", "check_dataset", "collate", "dataset_bases",
    "decode_image", "demo_root", "detect_format", "ensure_demo_dataset", "format_report", "label_path", "letterbox",
    "letterbox_from_original",
    "load_image", "read_coco", "read_dataset", "read_image_size", "read_voc", "read_yolo", "rect_batch_shapes",
    "resize_long_side", "resolve_dataset", "to_coco_gt", "write_demo_dataset",
]
