"""The network's building blocks (:mod:`.conv`, :mod:`.blocks`, :mod:`.head`) and :mod:`.yolov8`, a hand-written YOLOv8
over them to read alongside the yaml-built :class:`yolofreeze.model.YOLO`. No training logic."""
from .blocks import CIB, PSA, SPPF, Attention, Bottleneck, C2f, C2fCIB, RepVGGDW, SCDown
from .conv import Concat, Conv, SiLU, Upsample, fuse_conv_bn
from .head import DFL, Detect, V10Detect, dist2bbox, make_anchors

__all__ = [
    "Attention", "Bottleneck", "C2f", "C2fCIB", "CIB", "Concat", "Conv", "DFL", "Detect", "PSA",
    "RepVGGDW", "SCDown", "SPPF", "SiLU", "Upsample", "V10Detect", "dist2bbox", "fuse_conv_bn", "make_anchors",
]
