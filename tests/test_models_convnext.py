"""FDConv ConvNeXts: placement, converted Hub tag, features_only (pretrained) feeding an FPN."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import pytest
import timm
import torch
from torchvision.ops import FeaturePyramidNetwork

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.hub.stats import count_params
from fdconv_zoo.layers import FDLinear
from fdconv_zoo.tools.testing import (
    assert_feature_maps,
    max_relative_error,
    offline_hf_hub,
    randomize_norms_,
    save_timm_model_to_fake_hub,
)

CHANNELS, REDUCTIONS = [96, 192, 384, 768], [4, 8, 16, 32]


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory: pytest.TempPathFactory) -> Iterator[torch.nn.Module]:
    """A random convnext_tiny filed offline as timm/convnext_tiny.fb_in1k (norms and layer scales randomised:
    at timm's init the 1e-6 layer scale would hide the MLPs and make the check trivial)."""
    torch.manual_seed(0)
    model = randomize_norms_(timm.create_model("convnext_tiny")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gamma"):
                p.uniform_(0.5, 1.5)
    with offline_hf_hub(tmp_path_factory.mktemp("hf_hub")) as cache:
        save_timm_model_to_fake_hub(model, cache, "timm/convnext_tiny.fb_in1k")
        yield model


def test_converted_tag_reproduces_vanilla_logits(vanilla: torch.nn.Module) -> None:
    fd = timm.create_model("convnext_tiny_fdconv.fb_in1k", pretrained=True).eval()
    # placement: both MLP linears of all 18 blocks; depthwise 7x7, stem, downsamplers, head stay plain
    assert len(fd.fd_report.converted) == 36
    assert all(n.endswith(("mlp.fc1", "mlp.fc2")) for n in fd.fd_report.converted)
    block = fd.stages[2].blocks[0]
    assert isinstance(block.mlp.fc1, FDLinear) and isinstance(block.mlp.fc2, FDLinear)
    assert type(block.conv_dw) is torch.nn.Conv2d and type(fd.head.fc) is torch.nn.Linear
    # KSM width from the block width C = 384 for both fc1 (384->1536) and fc2 (1536->384)
    assert block.mlp.fc1.KSM_Global.fc.out_channels == block.mlp.fc2.KSM_Global.fc.out_channels == 24
    assert count_params(fd) - count_params(vanilla) == 3_548_808  # published in MODEL_CARDS/params.md

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert max_relative_error(fd(x), vanilla(x)) <= 1e-4


def test_features_only_pretrained_feeds_fpn(vanilla: torch.nn.Module) -> None:
    """features_only with pretrained=True (weights load before the wrapper), NCHW taps, into an FPN."""
    feats = timm.create_model("convnext_tiny_fdconv.fb_in1k", pretrained=True, features_only=True).eval()
    assert feats.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.3"]
    outputs = assert_feature_maps(feats, CHANNELS, REDUCTIONS)
    x, out = outputs[(64, 96)]
    with torch.no_grad():
        ref = vanilla.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(out, ref, strict=True):
        assert max_relative_error(a, b) <= 1e-4

    fpn = FeaturePyramidNetwork(feats.feature_info.channels(), out_channels=16)
    feats.train()
    pyramid = fpn(OrderedDict((str(i), f) for i, f in enumerate(feats(torch.randn(1, 3, 32, 64)))))
    assert [tuple(o.shape) for o in pyramid.values()] == [(1, 16, 8, 16), (1, 16, 4, 8), (1, 16, 2, 4), (1, 16, 1, 2)]
    sum(o.square().mean() for o in pyramid.values()).backward()
    assert feats.stages_3.blocks[0].mlp.fc2.dft_weight.grad is not None


@pytest.mark.parametrize("arch, width", [("convnext_small_fdconv", 96), ("convnext_base_fdconv", 128)])
def test_features_bigger_variants(arch: str, width: int) -> None:
    """feature_info + one small non-square forward; feature_info does not depend on depth, so one block
    a stage keeps this cheap (full depth at two sizes: the slow test below)."""
    model = timm.create_model(arch, features_only=True, depths=(1, 1, 1, 1)).eval()
    assert_feature_maps(model, [width, 2 * width, 4 * width, 8 * width], REDUCTIONS, sizes=((64, 96),))


@pytest.mark.slow
@pytest.mark.parametrize("arch, width", [("convnext_small_fdconv", 96), ("convnext_base_fdconv", 128)])
def test_features_bigger_variants_full_depth(arch: str, width: int) -> None:
    model = timm.create_model(arch, features_only=True, out_indices=(0, 1, 2, 3)).eval()
    assert_feature_maps(model, [width, 2 * width, 4 * width, 8 * width], REDUCTIONS)
