"""FDConv Swin: placement, converted Hub tag at a dynamic non-224 size, NHWC/NCHW features into an FPN."""

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

ARCH = "swin_tiny_patch4_window7_224"
CHANNELS, REDUCTIONS = [96, 192, 384, 768], [4, 8, 16, 32]


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory: pytest.TempPathFactory) -> Iterator[torch.nn.Module]:
    """A random Swin-T (norms randomised) filed offline as timm/swin_tiny_patch4_window7_224.ms_in1k.

    Built with ``dynamic_img_size=True`` only so it can run at the tiny test sizes; the weights
    are the same tensors as a fixed-size model's.
    """
    torch.manual_seed(0)
    model = randomize_norms_(timm.create_model(ARCH, dynamic_img_size=True)).eval()
    with offline_hf_hub(tmp_path_factory.mktemp("hf_hub")) as cache:
        save_timm_model_to_fake_hub(model, cache, f"timm/{ARCH}.ms_in1k")
        yield model


def test_converted_tag_reproduces_vanilla_logits(vanilla: torch.nn.Module) -> None:
    fd = timm.create_model(f"{ARCH}_fdconv.ms_in1k", pretrained=True, dynamic_img_size=True).eval()
    assert len(fd.fd_report.converted) == 24  # mlp.fc1 + mlp.fc2 of the 12 blocks
    block = fd.layers[2].blocks[1]
    assert isinstance(block.mlp.fc1, FDLinear) and isinstance(block.mlp.fc2, FDLinear)
    assert type(block.attn.qkv) is torch.nn.Linear and type(fd.layers[2].downsample.reduction) is torch.nn.Linear
    assert count_params(fd) - count_params(vanilla) == 2_365_872  # published in MODEL_CARDS/params.md

    x = torch.randn(2, 3, 64, 96)  # not 224: dynamic_img_size
    with torch.no_grad():
        assert max_relative_error(fd(x), vanilla(x)) <= 1e-4


def test_fixed_size_without_dynamic_img_size() -> None:
    """Swin keeps timm's fixed 224 input unless built with dynamic_img_size (or img_size=...)."""
    model = timm.create_model(f"{ARCH}_fdconv", depths=(1, 1, 1, 1), fd_kernel_num=4)
    assert model.pretrained_cfg["fixed_input_size"] is True
    with pytest.raises(AssertionError):
        model(torch.randn(1, 3, 64, 64))


def test_features_nhwc_pretrained(vanilla: torch.nn.Module) -> None:
    """Default features_only wrapper: NHWC maps (timm's Swin layout), pretrained weights loaded."""
    feats = timm.create_model(f"{ARCH}_fdconv.ms_in1k", pretrained=True, features_only=True,
                              dynamic_img_size=True).eval()
    assert str(feats.output_fmt) in ("NHWC", "Format.NHWC")
    outputs = assert_feature_maps(feats, CHANNELS, REDUCTIONS)
    x, out = outputs[(64, 96)]
    assert out[0].shape == (1, 16, 24, 96)  # NHWC
    with torch.no_grad():
        ref = vanilla.forward_intermediates(x, intermediates_only=True)  # NCHW only
    for a, b in zip(out, ref, strict=True):
        assert max_relative_error(a, b.permute(0, 2, 3, 1)) <= 1e-4


def test_features_nchw_getter_feeds_fpn() -> None:
    """``feature_cls='getter'`` gives NCHW maps, ready for torchvision's FPN; trains end to end.

    One block a stage (same taps as full depth) keeps the training step cheap.
    """
    feats = timm.create_model(f"{ARCH}_fdconv", features_only=True, feature_cls="getter", dynamic_img_size=True,
                              depths=(1, 1, 1, 1))
    assert feats.feature_info.channels() == CHANNELS and feats.feature_info.reduction() == REDUCTIONS
    fpn = FeaturePyramidNetwork(CHANNELS, out_channels=16)
    maps = feats(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, c, 64 // r, 96 // r) for c, r in zip(CHANNELS, REDUCTIONS,
                                                                                        strict=True)]
    pyramid = fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
    sum(o.square().mean() for o in pyramid.values()).backward()
    assert feats.model.layers[3].blocks[0].mlp.fc2.dft_weight.grad is not None


@pytest.mark.parametrize("arch, width", [("swin_small_patch4_window7_224_fdconv", 96),
                                         ("swin_base_patch4_window7_224_fdconv", 128)])
def test_features_bigger_variants(arch: str, width: int) -> None:
    """feature_info + one small non-square forward; feature_info does not depend on depth, so one block
    a stage keeps this cheap (full depth at two sizes: the slow test below)."""
    model = timm.create_model(arch, features_only=True, dynamic_img_size=True, depths=(1, 1, 1, 1)).eval()
    assert_feature_maps(model, [width, 2 * width, 4 * width, 8 * width], REDUCTIONS, sizes=((64, 96),))


@pytest.mark.slow
@pytest.mark.parametrize("arch, width", [("swin_small_patch4_window7_224_fdconv", 96),
                                         ("swin_base_patch4_window7_224_fdconv", 128)])
def test_features_bigger_variants_full_depth(arch: str, width: int) -> None:
    model = timm.create_model(arch, features_only=True, dynamic_img_size=True).eval()
    assert_feature_maps(model, [width, 2 * width, 4 * width, 8 * width], REDUCTIONS)
