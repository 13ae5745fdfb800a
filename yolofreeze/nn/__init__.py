"""Building blocks only (no training logic)."""
from .blocks import CIB, PSA, SPPF, Attention, Bottleneck, C2f, C2fCIB, RepVGGDW, SCDown
from .conv import Concat, Conv, DWConv, fuse_conv_bn
from .head import DFL, Detect, V10Detect, dist2bbox, make_anchors

__all__ = [
    "Attention", "Bottleneck", "C2f", "C2fCIB", "CIB", "Concat", "Conv", "DFL", "DWConv", "Detect", "PSA",
    "RepVGGDW", "SCDown", "SPPF", "V10Detect", "dist2bbox", "fuse_conv_bn", "make_anchors",
]
