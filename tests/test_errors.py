"""Bad input gets a ValueError that names the layer and the fix."""

import pytest
import torch
from torch import nn

from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers.conversion import convert_to_fdconv


def test_wrong_channel_count_names_layer_and_fix():
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.Conv2d(32, 64, 3))
    convert_to_fdconv(model, kernel_num=4)
    with pytest.raises(ValueError, match=r"layer '1' FDConv2d\(32, 64, k=3\): expected 32 input channels, got 16.*"
                                         r"build with in_channels=16"):
        model[1](torch.randn(1, 16, 8, 8))


def test_non_4d_input():
    with pytest.raises(ValueError, match=r"FDConv2d\(32, 32, k=3\): expected a 4-D input .* got shape \(32, 8, 8\)"):
        FDConv2d(32, 32, 3, kernel_num=4)(torch.randn(32, 8, 8))


def test_fdlinear_wrong_features():
    with pytest.raises(ValueError, match=r"expected \(batch, \.\.\., 32\) tokens .* got shape \(2, 5, 16\)"):
        FDLinear(32, 64, kernel_num=4)(torch.randn(2, 5, 16))


def test_from_conv_rejects_groups_and_non_square_kernels():
    with pytest.raises(ValueError, match=r"groups=32.*Keep it plain or exclude it"):
        FDConv2d.from_conv(nn.Conv2d(32, 32, 3, groups=32))
    with pytest.raises(ValueError, match=r"non-square kernel \(1, 3\).*Keep it plain"):
        FDConv2d.from_conv(nn.Conv2d(32, 32, (1, 3)))
    with pytest.raises(ValueError, match=r"square kernels only"):
        FDConv2d(32, 32, (3, 5))


def test_kernel_num_larger_than_bins_names_the_layer():
    with pytest.raises(ValueError, match=r"FDConv2d\(4, 4, k=3\): kernel_num=200 is larger than the 84 frequency bins"):
        FDConv2d(4, 4, 3, kernel_num=200)
