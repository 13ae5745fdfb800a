"""Building blocks of the YOLOv8 / YOLOv10 backbone and neck.

All blocks map ``(B, c1, H, W)`` to ``(B, c2, H', W')``; only SCDown changes the resolution
(``H' = ceil(H / s)``). Attribute names follow the official checkpoints so that
``state_dict()`` keys line up one for one (``cv1``, ``cv2``, ``m``, ``attn``, ``ffn`` ...).
"""
from __future__ import annotations

import torch
from torch import nn

from .conv import Conv, SiLU, fuse_conv_bn


class Bottleneck(nn.Module):
    """Two 3x3 Convs with an optional residual: ``x + cv2(cv1(x))`` when ``shortcut`` and ``c1 == c2``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 3)
        self.cv2 = Conv(hidden, c2, 3, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convolutions and ``n`` chained inner blocks (the YOLOv8 workhorse).

    ``cv1`` (1x1) makes ``2c`` channels, split into two halves; each inner block transforms the
    last half and all ``2 + n`` pieces are concatenated and fused by ``cv2`` (1x1) into ``c2``.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(self.inner_block(shortcut, g) for _ in range(n))

    def inner_block(self, shortcut: bool, g: int) -> nn.Module:
        """One of the ``n`` blocks applied in sequence to ``c``-channel maps."""
        return Bottleneck(self.c, self.c, shortcut, g, e=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max-pools (= pools of 5, 9, 13) concatenated.

    ``cv1`` halves the channels (with SiLU, as in the released v8/v10 weights), ``cv2`` maps
    the ``4 * c1/2`` concatenated channels to ``c2``. Resolution is unchanged.
    """

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1)
        self.cv2 = Conv(hidden * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [self.cv1(x)]
        for _ in range(3):
            pooled.append(self.m(pooled[-1]))
        return self.cv2(torch.cat(pooled, 1))


class SCDown(nn.Module):
    """YOLOv10 spatial-channel decoupled downsampling: 1x1 Conv to ``c2``, then a depthwise ``k x k`` stride-``s`` Conv."""

    def __init__(self, c1: int, c2: int, k: int, s: int):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1)
        self.cv2 = Conv(c2, c2, k, s, g=c2, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class RepVGGDW(nn.Module):
    """Large-kernel depthwise block: ``SiLU(dw7x7(x) + dw3x3(x))``; :meth:`fuse` merges both into one 7x7."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv(channels, channels, 7, 1, 3, g=channels, act=False)
        self.conv1 = Conv(channels, channels, 3, 1, 1, g=channels, act=False)
        self.dim = channels
        self.act = SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is None:
            return self.act(self.conv(x))
        return self.act(self.conv(x) + self.conv1(x))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold both batch-norms and add the 3x3 kernel (zero-padded to 7x7) into the 7x7 one."""
        if self.conv1 is None:
            return
        big = fuse_conv_bn(self.conv.conv, self.conv.bn)
        small = fuse_conv_bn(self.conv1.conv, self.conv1.bn)
        big.weight.add_(nn.functional.pad(small.weight, [2, 2, 2, 2]))
        big.bias.add_(small.bias)
        self.conv.conv, self.conv.bn = big, None
        self.conv1 = None


class CIB(nn.Module):
    """YOLOv10 compact inverted block: dw3x3 → 1x1 → (dw3x3 | RepVGGDW) → 1x1 → dw3x3, with residual.

    ``lk`` selects the large-kernel RepVGGDW in the middle. Residual when ``shortcut`` and ``c1 == c2``.
    """

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, lk: bool = False):
        super().__init__()
        hidden = 2 * int(c2 * e)
        self.cv1 = nn.Sequential(
            Conv(c1, c1, 3, g=c1),
            Conv(c1, hidden, 1),
            RepVGGDW(hidden) if lk else Conv(hidden, hidden, 3, g=hidden),
            Conv(hidden, c2, 1),
            Conv(c2, c2, 3, g=c2),
        )
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return x + y if self.add else y


class C2fCIB(C2f):
    """C2f whose inner blocks are CIBs (YOLOv10's rank-guided replacement in deep stages)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, lk: bool = False, g: int = 1,
                 e: float = 0.5):
        self.lk = lk
        super().__init__(c1, c2, n, shortcut, g, e)

    def inner_block(self, shortcut: bool, g: int) -> nn.Module:
        return CIB(self.c, self.c, shortcut, e=1.0, lk=self.lk)


class Attention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions of a ``(B, C, H, W)`` map, plus a depthwise positional term.

    Queries and keys have ``key_dim = head_dim * attn_ratio`` channels per head, values ``head_dim``.
    Output: ``proj(attention(v) + pe(v))``, same shape as the input.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, h * w).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, heads, N, N)
        out = (v @ weights.transpose(-2, -1)).view(b, c, h, w) + self.pe(v.reshape(b, c, h, w))
        return self.proj(out)


class PSA(nn.Module):
    """YOLOv10 partial self-attention: attention + feed-forward on one half of the channels only.

    ``cv1`` (1x1) gives ``2c`` channels split into ``a`` and ``b``; ``b`` passes through
    ``b + attn(b)`` and ``b + ffn(b)``; ``cv2`` fuses ``[a, b]`` back to ``c1`` channels.
    """

    def __init__(self, c1: int, c2: int, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"PSA keeps the channel count: got c1={c1}, c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.attn = Attention(self.c, num_heads=self.c // 64, attn_ratio=0.5)
        self.ffn = nn.Sequential(Conv(self.c, 2 * self.c, 1), Conv(2 * self.c, self.c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((a, b), 1))
