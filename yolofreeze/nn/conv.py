"""Convolution primitives: Conv (conv → batch-norm → SiLU), depthwise Conv, Concat, and BN fusion.

Every convolution in YOLOv8/v10 is a bias-free ``nn.Conv2d`` followed by ``nn.BatchNorm2d``
(eps 1e-3, momentum 0.03) and a SiLU, except where the activation is switched off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class SiLU(nn.Module):
    """``x * sigmoid(x)``, in place wherever autograd records nothing (inference, a frozen prefix), out of place
    where it does: a recorded in-place SiLU makes autograd keep a copy of its input for the backward pass (one more
    pass over the map: 3.6 % of a yolov8n training step at 320 px on CPU), out of place it keeps the input itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not (x.requires_grad and torch.is_grad_enabled()))


class Conv(nn.Module):
    """Conv2d(bias=False) → BatchNorm2d → SiLU (or identity).

    Input ``(B, c1, H, W)`` → output ``(B, c2, ceil(H/s), ceil(W/s))`` with "same" padding ``k // 2``.
    After :meth:`fuse` the batch-norm is folded into the convolution and ``bn`` is removed.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None:
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the batch-norm into the convolution (inference only; outputs unchanged to ~1e-6)."""
        if self.bn is not None:
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None


class Upsample(nn.Upsample):
    """``nn.Upsample`` (same arguments, same results), with nearest-neighbour upsampling of a channels-last map by an
    integer factor ``s`` done as a broadcast in that layout: ``(B, C, H, W)`` → ``(B, C, s H, s W)``, each value
    repeated over an ``s × s`` block, the output channels-last too. PyTorch's CPU kernel would convert the
    channels-last gradient to NCHW and back in the backward pass (3 % of a yolov8n training step at 640 px); here
    the backward is a sum over each block. Other layouts and modes run ``nn.Upsample`` itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_factor
        if (self.mode != "nearest" or self.size is not None or isinstance(scale, tuple) or not float(scale).is_integer()
                or x.ndim != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        s = int(scale)
        batch, channels, height, width = x.shape
        nhwc = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(batch, height, s, width, s, channels)
        return nhwc.reshape(batch, height * s, width * s, channels).permute(0, 3, 1, 2)


class Concat(nn.Module):
    """Concatenate a list of ``(B, Ci, H, W)`` maps along ``dim`` (channels by default)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new Conv2d (with bias) equal to ``bn(conv(x))`` in eval mode.

    ``w' = w * γ / sqrt(var + eps)``, ``b' = β + (b - mean) * γ / sqrt(var + eps)``.
    """
    fused = nn.utils.skip_init(  # no random initialisation: nothing drawn from the global generator
        nn.Conv2d, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    fused.weight.requires_grad_(False)
    fused.bias.requires_grad_(False)
    return fused
