"""YOLOv8 written out by hand: a read-along companion of the yaml-built :class:`yolofreeze.model.YOLO`.

The training code builds its networks from ``models/yolov8.yaml``, where each row names its inputs by
block index (``[[-1, 6], 1, Concat, [1]]``), so it is hard to see where the pyramid levels meet. This
class builds the same 23 blocks from the same parts, in the same order (block ``N`` is ``model.N``,
so ``state_dict()`` keys and shapes are identical and the two load each other's weights), and writes
the data flow out in :meth:`YOLOv8.forward`. Shapes below for yolov8n at 640 x 640 (``C x H x W``):

    backbone         image             3x640x640
                   0 Conv s2          16x320x320  P1/2
                   1 Conv s2          32x160x160  P2/4
                   2 C2f              32x160x160
                   3 Conv s2          64x80x80    P3/8
                   4 C2f              64x80x80    p3 -----------------------.
                   5 Conv s2         128x40x40    P4/16                     |
                   6 C2f             128x40x40    p4 -------------------.   |
                   7 Conv s2         256x20x20    P5/32                 |   |
                   8 C2f             256x20x20                          |   |
                   9 SPPF            256x20x20    p5 -----------.       |   |
    top-down FPN  10 Upsample x2     256x40x40                  |       |   |
                  11 Concat + p4     384x40x40 <----------------+-------'   |
                  12 C2f             128x40x40    n4 -----------+---.       |
                  13 Upsample x2     128x80x80                  |   |       |
                  14 Concat + p3     192x80x80 <----------------+---+-------'
                  15 C2f              64x80x80    o3 (P3 out)   |   |
    bottom-up PAN 16 Conv s2          64x40x40                  |   |
                  17 Concat + n4     192x40x40 <----------------+---'
                  18 C2f             128x40x40    o4 (P4 out)   |
                  19 Conv s2         128x20x20                  |
                  20 Concat + p5     384x20x20 <----------------'
                  21 C2f             256x20x20    o5 (P5 out)
    head          22 Detect(o3, o4, o5)  train: 3 maps 144x80x80, 144x40x40, 144x20x20 (144 = 4*16 box bins + nc)
                                         eval:  84x8400 (xywh in pixels + 80 scores; 8400 = 80*80 + 40*40 + 20*20)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import SPPF, C2f
from .conv import Concat, Conv, Upsample
from .head import Detect

# scale -> (depth, width, max_channels), as in models/yolov8.yaml
SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}


class YOLOv8(nn.Module):
    """YOLOv8 detector for ``nc`` classes at scale ``n``, ``s``, ``m``, ``l`` or ``x``.

    Input ``(B, 3, H, W)``, ``H`` and ``W`` multiples of 32. Output as :class:`yolofreeze.model.YOLO`'s:
    train mode a list of 3 raw maps ``(B, 4*16 + nc, H/s, W/s)`` for s = 8, 16, 32; eval mode the
    decoded ``(B, 4 + nc, A)`` with ``A = sum(H/s * W/s)``.
    """

    def __init__(self, scale: str = "n", nc: int = 80):
        super().__init__()
        depth, width, max_channels = SCALES[scale]

        def ch(c: int) -> int:  # channels: the yaml's c scaled by width, capped, rounded up to a multiple of 8
            return math.ceil(min(c, max_channels) * width / 8) * 8

        def n(repeats: int) -> int:  # inner blocks of a C2f, scaled by depth
            return max(round(repeats * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)  # P1/2 ... P5/32
        self.model = nn.ModuleList([
            Conv(3, c1, 3, 2),                      # 0  P1/2 stem
            Conv(c1, c2, 3, 2),                     # 1  P2/4
            C2f(c2, c2, n(3), True),                # 2
            Conv(c2, c3, 3, 2),                     # 3  P3/8
            C2f(c3, c3, n(6), True),                # 4  -> p3
            Conv(c3, c4, 3, 2),                     # 5  P4/16
            C2f(c4, c4, n(6), True),                # 6  -> p4
            Conv(c4, c5, 3, 2),                     # 7  P5/32
            C2f(c5, c5, n(3), True),                # 8
            SPPF(c5, c5, 5),                        # 9  SPPF -> p5
            Upsample(None, 2, "nearest"),           # 10 top-down FPN: P5 -> P4 size
            Concat(1),                              # 11 [up(p5), p4]
            C2f(c5 + c4, c4, n(3)),                 # 12 -> n4
            Upsample(None, 2, "nearest"),           # 13 P4 -> P3 size
            Concat(1),                              # 14 [up(n4), p3]
            C2f(c4 + c3, c3, n(3)),                 # 15 -> o3 (P3 output)
            Conv(c3, c3, 3, 2),                     # 16 bottom-up PAN: P3 -> P4 size
            Concat(1),                              # 17 [down(o3), n4]
            C2f(c3 + c4, c4, n(3)),                 # 18 -> o4 (P4 output)
            Conv(c4, c4, 3, 2),                     # 19 P4 -> P5 size
            Concat(1),                              # 20 [down(o4), p5]
            C2f(c4 + c5, c5, n(3)),                 # 21 -> o5 (P5 output)
            Detect(nc, (c3, c4, c5)),               # 22 Detect head on o3, o4, o5
        ])
        self.model[22].stride = torch.tensor([8.0, 16.0, 32.0])
        self.model[22].bias_init()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """``x`` ``(B, 3, H, W)`` → train: 3 maps ``(B, 64 + nc, H/s, W/s)``; eval: ``(B, 4 + nc, A)``."""
        m = self.model
        # backbone: (B, c, H/s, W/s) with s = 2, 4, 8 (p3), 16 (p4), 32 (p5)
        x = m[2](m[1](m[0](x)))              # (B, c2, H/4, W/4)
        p3 = m[4](m[3](x))                   # (B, c3, H/8, W/8)
        p4 = m[6](m[5](p3))                  # (B, c4, H/16, W/16)
        p5 = m[9](m[8](m[7](p4)))            # (B, c5, H/32, W/32)
        # top-down FPN: coarse meaning flows to the finer maps
        n4 = m[12](m[11]([m[10](p5), p4]))   # (B, c4, H/16, W/16)
        o3 = m[15](m[14]([m[13](n4), p3]))   # (B, c3, H/8, W/8)
        # bottom-up PAN: fine detail flows back to the coarser maps
        o4 = m[18](m[17]([m[16](o3), n4]))   # (B, c4, H/16, W/16)
        o5 = m[21](m[20]([m[19](o4), p5]))   # (B, c5, H/32, W/32)
        return m[22]([o3, o4, o5])
