"""Whole timm networks converted to FDConv reproduce their source, in eval and in train mode.

In train mode BatchNorm uses batch statistics of tiny maps, which amplifies float32 round-off:
timm's own ResNet-50 differs from its float64 evaluation by ~3e-5 there. So float32 is held
to 1e-5 or twice the source network's own float32 error, whichever is larger, and float64
(where round-off vanishes) to 1e-9: the converted network computes the same function.
"""

import copy

import pytest
import timm
import torch

from fdconv_zoo.layers.conversion import convert_to_fdconv
from fdconv_zoo.tools.testing import max_relative_error, randomize_norms_

NETWORKS = {
    "resnet18": (dict(), dict(include=["layer*"], exclude=["*downsample*"]), 64),
    "resnet50": (dict(), dict(include=["layer*"], exclude=["*downsample*"]), 64),
    "convnext_tiny": (dict(), dict(include=["stages.*.mlp.*"]), 64),
    "swin_tiny_patch4_window7_224": (dict(img_size=56), dict(include=["layers.*.mlp.*"]), 56),
}


def _pair(name: str, train: bool, dtype: torch.dtype = torch.float32):
    kwargs, placement, size = NETWORKS[name]
    torch.manual_seed(0)
    plain = randomize_norms_(timm.create_model(name, **kwargs)).train(train).to(dtype)
    fd = copy.deepcopy(plain)
    assert convert_to_fdconv(fd, **placement).converted
    return plain, fd, torch.randn(2, 3, size, size, dtype=dtype)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_converted_network_matches_source_float32(name, train):
    plain, fd, x = _pair(name, train)
    with torch.no_grad():
        reference = plain(x)
        floor = max_relative_error(reference, copy.deepcopy(plain).double()(x.double()))
        assert max_relative_error(fd(x), reference) <= max(1e-5, 2 * floor)


@pytest.mark.parametrize("name", ["resnet50", "convnext_tiny"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_converted_network_matches_source_float64(name, train):
    plain, fd, x = _pair(name, train, torch.float64)
    with torch.no_grad():
        assert max_relative_error(fd(x), plain(x)) <= 1e-9
