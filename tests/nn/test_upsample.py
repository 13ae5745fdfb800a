"""The upsampling module: ``nn.Upsample``'s results in either memory layout, channels-last kept channels-last."""
from __future__ import annotations

import pytest
import torch

from yolofreeze.nn import Upsample


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
@pytest.mark.parametrize("scale", [2, 3])
def test_upsample_gives_nn_upsample_values_and_gradients_in_either_layout(layout, scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, 7, generator=gen).contiguous(memory_format=layout).requires_grad_()
    reference, ours = torch.nn.Upsample(None, scale, "nearest"), Upsample(None, scale, "nearest")
    expected, got = reference(x), ours(x)
    grad = torch.randn(expected.shape, generator=gen)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    (got_grad,) = torch.autograd.grad(got, x, grad)

    assert torch.equal(got, expected)  # copies of the input values: exact
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-6, atol=1e-6)  # sums of s*s values, any order
    channels_last = layout == torch.channels_last
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert got_grad.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert repr(ours) == repr(reference)


def test_other_modes_run_nn_upsample():
    x = torch.rand(1, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    ours, reference = Upsample(None, 2, "bilinear"), torch.nn.Upsample(None, 2, "bilinear")
    assert torch.equal(ours(x), reference(x))
