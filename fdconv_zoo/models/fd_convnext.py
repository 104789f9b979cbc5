"""FDConv ConvNeXts: ``convnext_{tiny,small,base}_fdconv``, FDLinear in the token MLPs.

Placement: ``mlp.fc1`` and ``mlp.fc2`` of every block (all stages) become FDLinear; the 7x7
depthwise convs (groups != 1), the 4x4 stem, the 2x2 downsamplers and the head stay plain. The
KSM global branch of each MLP layer is sized from the block width C (``fd_ksm_width='min'``,
hidden = max(C/16, 16)) instead of the spec's input width, which would give the 4C-wide ``fc2``
four times the attention capacity of the rest of the block and two thirds of the extra
parameters (ConvNeXt-T: +3.55M instead of +9.0M; fc1 only would be +1.5M). See
``MODEL_CARDS/params.md``.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from timm.models.convnext import ConvNeXt
from timm.models.convnext import checkpoint_filter_fn as convnext_filter

from ._fd_builder import (
    FDModelMixin,
    FDOptions,
    base_cfg,
    build_fd_model,
    fd_checkpoint_filter,
    fd_default_cfgs,
)

__all__ = ["ConvNeXtFD", "CONVNEXT_FD_DEFAULTS"]

#: Both MLP layers of every block, KSM width from the block width; every field is a ``fd_<name>`` kwarg.
CONVNEXT_FD_DEFAULTS = FDOptions(include=["stages.*.mlp.fc1", "stages.*.mlp.fc2"], exclude=[], use_fbm=False,
                                 ksm_width="min")


class ConvNeXtFD(FDModelMixin, ConvNeXt):
    """timm's ConvNeXt with the MLP linears swapped for FDLinear (NHWC tokens) after construction.

    ``fd_*`` kwargs as in :class:`~fdconv_zoo.models._fd_builder.FDOptions`. With
    ``conv_mlp=True`` the MLP layers are 1x1 convs and become FDConv2d instead.
    """

    fd_defaults = CONVNEXT_FD_DEFAULTS


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(first_conv="stem.0", classifier="head.fc", test_input_size=(3, 288, 288), test_crop_pct=1.0,
                    **kwargs)


# ImageNet-1k classifiers only (the 384 px fine-tunes and in22k/in12k heads are left out).
_TAGS = {
    "convnext_tiny": (("fb_in1k", "fb_in22k_ft_in1k", "in12k_ft_in1k"), "fb_in1k"),
    "convnext_small": (("fb_in1k", "fb_in22k_ft_in1k", "in12k_ft_in1k"), "fb_in1k"),
    "convnext_base": (("fb_in1k", "fb_in22k_ft_in1k"), "fb_in1k"),
}

default_cfgs = generate_default_cfgs({
    key: cfg
    for arch, (tags, default) in _TAGS.items()
    for key, cfg in fd_default_cfgs(arch, _cfg(), tags, default).items()
})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> ConvNeXtFD:
    return build_fd_model(
        ConvNeXtFD, variant, pretrained,
        pretrained_filter_fn=fd_checkpoint_filter(convnext_filter),
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **kwargs)


@register_model
def convnext_tiny_fdconv(pretrained: bool = False, **kwargs: Any) -> ConvNeXtFD:
    """ConvNeXt-T with FDLinear MLPs."""
    args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    return _create("convnext_tiny_fdconv", pretrained, **dict(args, **kwargs))


@register_model
def convnext_small_fdconv(pretrained: bool = False, **kwargs: Any) -> ConvNeXtFD:
    """ConvNeXt-S with FDLinear MLPs."""
    args = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
    return _create("convnext_small_fdconv", pretrained, **dict(args, **kwargs))


@register_model
def convnext_base_fdconv(pretrained: bool = False, **kwargs: Any) -> ConvNeXtFD:
    """ConvNeXt-B with FDLinear MLPs."""
    args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create("convnext_base_fdconv", pretrained, **dict(args, **kwargs))
