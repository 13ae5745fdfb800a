"""Detection heads: DFL box decoding, anchors, the YOLOv8 ``Detect`` head and the YOLOv10 ``V10Detect`` head.

Shapes used throughout: ``B`` batch, ``A = sum(H_i * W_i)`` anchors over the pyramid levels,
``nc`` classes, ``reg_max = 16`` distribution bins per box side.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .conv import Conv


class DFL(nn.Module):
    """Distribution focal loss integral: expected value of a softmax over ``reg_max`` bins.

    ``(B, 4 * reg_max, A)`` logits → ``(B, 4, A)`` distances in grid units (0 … reg_max - 1).
    Implemented as a frozen 1x1 convolution with weights ``0, 1, …, reg_max - 1`` (official key ``dfl.conv.weight``).
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.reg_max = reg_max
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        probs = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)  # (B, reg_max, 4, A)
        return self.conv(probs).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: torch.Tensor, offset: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell-centre anchor points for each level.

    Args:
        feats: per-level maps ``(B, C, H_i, W_i)`` (only their sizes are used).
        strides: ``(L,)`` pixels per cell for each level.
        offset: 0.5 puts the anchor in the middle of its cell.

    Returns:
        points ``(A, 2)`` as ``(x, y)`` in grid units of their level, and strides ``(A, 1)``.
    """
    points, stride_per_anchor = [], []
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[-2:]
        dev, dt = feat.device, feat.dtype
        ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dt) + offset,
                                torch.arange(w, device=dev, dtype=dt) + offset, indexing="ij")
        points.append(torch.stack((xs, ys), -1).view(-1, 2))
        stride_per_anchor.append(torch.full((h * w, 1), float(stride), device=dev, dtype=dt))
    return torch.cat(points), torch.cat(stride_per_anchor)


def dist2bbox(distance: torch.Tensor, points: torch.Tensor, xywh: bool = True, dim: int = -1) -> torch.Tensor:
    """Turn (left, top, right, bottom) distances from anchor points into boxes (xywh or xyxy), same units."""
    lt, rb = distance.chunk(2, dim)
    top_left, bottom_right = points - lt, points + rb
    if xywh:
        return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim)
    return torch.cat((top_left, bottom_right), dim)


def box_branch(c_in: int, c_mid: int, reg_max: int) -> nn.Sequential:
    """Regression branch of one level: two 3x3 Convs and a 1x1 to ``4 * reg_max`` logits."""
    return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, 4 * reg_max, 1))


def cls_branch_v8(c_in: int, c_mid: int, nc: int) -> nn.Sequential:
    """YOLOv8 classification branch: two 3x3 Convs and a 1x1 to ``nc`` logits."""
    return nn.Sequential(Conv(c_in, c_mid, 3), Conv(c_mid, c_mid, 3), nn.Conv2d(c_mid, nc, 1))


def cls_branch_v10(c_in: int, c_mid: int, nc: int) -> nn.Sequential:
    """YOLOv10 lightweight classification branch: (depthwise 3x3 → pointwise 1x1) twice, then 1x1 to ``nc``."""
    return nn.Sequential(
        nn.Sequential(Conv(c_in, c_in, 3, g=c_in), Conv(c_in, c_mid, 1)),
        nn.Sequential(Conv(c_mid, c_mid, 3, g=c_mid), Conv(c_mid, c_mid, 1)),
        nn.Conv2d(c_mid, nc, 1),
    )


class Detect(nn.Module):
    """YOLOv8 anchor-free decoupled head over ``L`` pyramid levels.

    Train mode: list of ``L`` raw maps ``(B, 4 * reg_max + nc, H_i, W_i)`` (box logits first).
    Eval mode: decoded ``(B, 4 + nc, A)``: boxes as ``(cx, cy, w, h)`` in input pixels, then sigmoid class scores.
    Both from one pass (validation loss and detections): ``decode_maps(maps(feats))``.
    """

    cls_branch = staticmethod(cls_branch_v8)

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), reg_max: int = 16):
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), reg_max
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        c_box, c_cls = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(box_branch(c, c_box, reg_max) for c in ch)
        self.cv3 = nn.ModuleList(self.cls_branch(c, c_cls, nc) for c in ch)
        self.dfl = DFL(reg_max)
        self._anchor_cache = None  # (key, (points, strides)) of the last decoded map sizes

    @staticmethod
    def run_branches(feats: list[torch.Tensor], box: nn.ModuleList, cls: nn.ModuleList) -> list[torch.Tensor]:
        """Per level: ``cat(box(x), cls(x))`` → ``(B, 4 * reg_max + nc, H_i, W_i)``."""
        return [torch.cat((b(x), c(x)), 1) for x, b, c in zip(feats, box, cls)]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor] | torch.Tensor:
        maps = self.maps(feats)
        return maps if self.training else self.decode_maps(maps)

    def maps(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The train-format output in any mode: ``L`` raw maps ``(B, 4 * reg_max + nc, H_i, W_i)``."""
        return self.run_branches(feats, self.cv2, self.cv3)

    def decode_maps(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """What eval mode returns, from :meth:`maps`' output: ``(B, 4 + nc, A)``, see :meth:`decode`."""
        return self.decode(maps)

    def decode(self, raw: list[torch.Tensor]) -> torch.Tensor:
        """Raw per-level maps → ``(B, 4 + nc, A)`` with xywh boxes in input pixels and sigmoid scores."""
        b = raw[0].shape[0]
        flat = torch.cat([r.view(b, self.no, -1) for r in raw], 2)  # (B, no, A)
        box_logits, cls_logits = flat.split((4 * self.reg_max, self.nc), 1)
        points, strides = self.anchors(raw)
        boxes = dist2bbox(self.dfl(box_logits), points.T.unsqueeze(0), xywh=True, dim=1) * strides.T
        return torch.cat((boxes, cls_logits.sigmoid()), 1)

    def anchors(self, raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``make_anchors`` for these map sizes, computed once per (sizes, device, dtype) and then reused; computed
        afresh while being traced for export, so the exported graph derives them from the input's shape."""
        if torch.jit.is_tracing():
            return make_anchors(raw, self.stride)
        key = (tuple(r.shape[-2:] for r in raw), raw[0].device, raw[0].dtype)
        if self._anchor_cache is None or self._anchor_cache[0] != key:
            self._anchor_cache = (key, make_anchors(raw, self.stride))
        return self._anchor_cache[1]

    def branch_pairs(self) -> list[tuple[nn.ModuleList, nn.ModuleList]]:
        """(box, cls) branch lists whose last-layer biases get the prior initialisation."""
        return [(self.cv2, self.cv3)]

    @torch.no_grad()
    def bias_init(self) -> None:
        """Prior biases: box logits 2.0; class logits ``log(5 / nc / (640 / s)^2)`` (≈0.01 objects per cell at 640 px)."""
        for box, cls in self.branch_pairs():
            for b, c, s in zip(box, cls, self.stride.tolist()):
                b[-1].bias.fill_(2.0)
                c[-1].bias.fill_(math.log(5 / self.nc / (640 / s) ** 2))


class V10Detect(Detect):
    """YOLOv10 dual-assignment head: a one-to-many branch (``cv2``/``cv3``) and a one-to-one copy.

    The one-to-one branch (``one2one_cv2``/``one2one_cv3``) sees *detached* features in training,
    so its gradient never reaches the backbone. Train mode returns
    ``{"one2many": [maps], "one2one": [maps]}``; eval mode decodes one branch only, ``(B, 4 + nc, A)`` as in
    :class:`Detect`: ``eval_branch`` ``"one2one"`` (default, the paper's NMS-free output: post-process with
    top-k) or ``"one2many"`` (post-process with NMS, like the installed reference unless ``nms=False``).
    :meth:`maps` runs both branches in any mode (for a validation loss), :meth:`decode_maps` decodes
    ``eval_branch`` from them.
    """

    cls_branch = staticmethod(cls_branch_v10)
    BRANCHES = ("one2one", "one2many")

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), reg_max: int = 16):
        super().__init__(nc, ch, reg_max)
        self.one2one_cv2 = copy.deepcopy(self.cv2)
        self.one2one_cv3 = copy.deepcopy(self.cv3)
        self.eval_branch = "one2one"

    def forward(self, feats: list[torch.Tensor]) -> dict[str, list[torch.Tensor]] | torch.Tensor:
        if self.training:
            return self.maps(feats)
        return self.decode(self.run_branches(feats, *self.branch(self.eval_branch)))

    def branch(self, name: str) -> tuple[nn.ModuleList, nn.ModuleList]:
        """The (box, cls) branch lists of ``"one2many"`` or ``"one2one"``."""
        return (self.cv2, self.cv3) if name == "one2many" else (self.one2one_cv2, self.one2one_cv3)

    def maps(self, feats: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Both branches' raw maps ``{"one2many": [...], "one2one": [...]}``, each ``L`` maps
        ``(B, 4 * reg_max + nc, H_i, W_i)``; the one-to-one branch sees detached features in train mode only."""
        one2one_feats = [f.detach() for f in feats] if self.training else feats
        return {"one2many": self.run_branches(feats, *self.branch("one2many")),
                "one2one": self.run_branches(one2one_feats, *self.branch("one2one"))}

    def decode_maps(self, maps: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        """The ``eval_branch`` of :meth:`maps`' output decoded: ``(B, 4 + nc, A)``, see :meth:`Detect.decode`."""
        return self.decode(maps[self.eval_branch])

    def branch_pairs(self) -> list[tuple[nn.ModuleList, nn.ModuleList]]:
        return [self.branch(name) for name in ("one2many", "one2one")]
