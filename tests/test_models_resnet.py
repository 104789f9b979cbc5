"""FDConv ResNets: converted Hub tags, features_only, parameter counts."""

from __future__ import annotations

import pytest
import timm
import torch

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.hub.stats import count_params
from fdconv_zoo.layers import FDConv2d
from fdconv_zoo.tools.testing import (
    assert_feature_maps,
    max_relative_error,
    randomize_norms_,
    save_timm_model_to_fake_hub,
)


def test_placement_and_converted_tag(fake_hub) -> None:
    """`resnet18_fdconv.a1_in1k` reads timm/resnet18.a1_in1k, converts it on load, gives the vanilla logits."""
    torch.manual_seed(0)
    vanilla = randomize_norms_(timm.create_model("resnet18")).eval()
    save_timm_model_to_fake_hub(vanilla, fake_hub, "timm/resnet18.a1_in1k")
    fd = timm.create_model("resnet18_fdconv.a1_in1k", pretrained=True).eval()

    converted = fd.fd_report.converted  # spec section 4: block convs only
    assert len(converted) == 16 and all(name.startswith("layer") for name in converted)
    assert not any("downsample" in n for n in converted) and "conv1" not in converted
    assert isinstance(fd.layer2[0].conv1, FDConv2d) and fd.layer2[0].conv1.stride == (2, 2)
    assert fd.layer1[0].conv1.FBM is not None  # 3x3: FBM on
    assert type(fd.layer2[0].downsample[0]) is torch.nn.Conv2d and type(fd.conv1) is torch.nn.Conv2d

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert max_relative_error(fd(x), vanilla(x)) <= 1e-4

        # features_only loads the same weights (they load before the wrapper is applied)
        feats = timm.create_model("resnet18_fdconv.a1_in1k", pretrained=True, features_only=True).eval()
        ref = vanilla.forward_intermediates(x, intermediates_only=True)
        for a, b in zip(feats(x), ref, strict=True):
            assert max_relative_error(a, b) <= 1e-4
        assert_feature_maps(feats, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
        assert feats.feature_info.module_name() == ["act1", "layer1", "layer2", "layer3", "layer4"]

        # new head / new input channels: timm's adaptation runs after our filter
        adapted = timm.create_model("resnet18_fdconv.a1_in1k", pretrained=True, num_classes=7, in_chans=1)
        assert adapted(torch.randn(1, 1, 64, 64)).shape == (1, 7)


def test_resnet50_features_and_parameter_count() -> None:
    """Spec section 4: 25,557,032 -> 29,204,152 parameters (+3,647,120, the paper's +3.6M).

    Counted on the features_only model (one build for both checks) plus the plain fc head.
    """
    model = timm.create_model("resnet50_fdconv", features_only=True).eval()
    assert len([m for m in model.modules() if isinstance(m, FDConv2d)]) == 48
    fc = 2048 * 1000 + 1000
    params = count_params(model) + fc
    assert abs(params - 25_557_032 - 3_647_120) <= 0.001 * 3_647_120
    assert params == 29_204_152
    assert_feature_maps(model, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32])


def test_features_resnet34() -> None:
    model = timm.create_model("resnet34_fdconv", features_only=True, layers=(1, 1, 1, 1)).eval()
    assert_feature_maps(model, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32])


@pytest.mark.parametrize("arch", ["resnet101_fdconv", "resnet152_fdconv"])
def test_features_big_variants(arch: str) -> None:
    """feature_info + one small non-square forward; feature_info does not depend on depth, so one block
    a stage keeps this cheap (full depth at two sizes: the slow test below)."""
    model = timm.create_model(arch, features_only=True, out_indices=(2, 3, 4), layers=(1, 1, 1, 1)).eval()
    assert_feature_maps(model, [512, 1024, 2048], [8, 16, 32], sizes=((64, 96),))


@pytest.mark.slow
@pytest.mark.parametrize("arch, wide", [("resnet34_fdconv", 1), ("resnet101_fdconv", 4), ("resnet152_fdconv", 4)])
def test_features_full_depth(arch: str, wide: int) -> None:
    model = timm.create_model(arch, features_only=True).eval()
    assert_feature_maps(model, [64, 64 * wide, 128 * wide, 256 * wide, 512 * wide], [2, 4, 8, 16, 32])
