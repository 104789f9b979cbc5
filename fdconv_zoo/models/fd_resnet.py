"""FDConv ResNets: ``resnet{18,34,50,101,152}_fdconv``.

Placement (spec section 4, the paper's): ``conv1``/``conv2``/``conv3`` of every block in
``layer1..4``, strided ones included; the 7x7 stem, ``downsample`` and ``fc`` stay plain. 3x3
FD layers get FBM. ResNet-50: 25,557,032 -> 29,204,152 parameters (+3,647,120).
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ._fd_builder import (
    FDModelMixin,
    FDOptions,
    base_cfg,
    build_fd_model,
    fd_checkpoint_filter,
    fd_default_cfgs,
)

__all__ = ["ResNetFD", "RESNET_FD_DEFAULTS"]

#: The spec's placement; every field is a ``fd_<name>`` model kwarg.
RESNET_FD_DEFAULTS = FDOptions(include=["layer*"], exclude=["*downsample*"], use_fbm=True, ksm_width="in")


class ResNetFD(FDModelMixin, ResNet):
    """timm's ResNet with the block convs swapped for FDConv2d after construction.

    Accepts every ResNet kwarg plus ``fd_kernel_num``, ``fd_min_channels``, ``fd_use_fbm``,
    ``fd_include``, ``fd_exclude``, ``fd_ksm_reduction``, ``fd_ksm_width`` (see
    :class:`~fdconv_zoo.models._fd_builder.FDOptions`); ``fd_report`` lists what was converted.
    """

    fd_defaults = RESNET_FD_DEFAULTS


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(first_conv="conv1", classifier="fc", **kwargs)


# (arch, converted timm tags, default tag): timm's main ImageNet-1k recipes (RSB a1/a1h/a2/a3, torchvision).
_TAGS = {
    "resnet18": (("a1_in1k", "a2_in1k", "a3_in1k", "tv_in1k"), "a1_in1k"),
    "resnet34": (("a1_in1k", "a2_in1k", "a3_in1k", "bt_in1k", "tv_in1k"), "a1_in1k"),
    "resnet50": (("a1_in1k", "a1h_in1k", "a2_in1k", "a3_in1k", "tv2_in1k", "tv_in1k"), "a1_in1k"),
    "resnet101": (("a1h_in1k", "a1_in1k", "a2_in1k", "a3_in1k", "tv2_in1k", "tv_in1k"), "a1h_in1k"),
    "resnet152": (("a1h_in1k", "a1_in1k", "a2_in1k", "a3_in1k", "tv2_in1k", "tv_in1k"), "a1h_in1k"),
}

default_cfgs = generate_default_cfgs({
    key: cfg
    for arch, (tags, default) in _TAGS.items()
    for key, cfg in fd_default_cfgs(arch, _cfg(), tags, default).items()
})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> ResNetFD:
    return build_fd_model(ResNetFD, variant, pretrained, pretrained_filter_fn=fd_checkpoint_filter(None),
                                **kwargs)


@register_model
def resnet18_fdconv(pretrained: bool = False, **kwargs: Any) -> ResNetFD:
    """ResNet-18 with FDConv in every block conv (+0.57M parameters)."""
    return _create("resnet18_fdconv", pretrained, **dict(dict(block=BasicBlock, layers=(2, 2, 2, 2)), **kwargs))


@register_model
def resnet34_fdconv(pretrained: bool = False, **kwargs: Any) -> ResNetFD:
    """ResNet-34 with FDConv in every block conv."""
    return _create("resnet34_fdconv", pretrained, **dict(dict(block=BasicBlock, layers=(3, 4, 6, 3)), **kwargs))


@register_model
def resnet50_fdconv(pretrained: bool = False, **kwargs: Any) -> ResNetFD:
    """ResNet-50 with FDConv in every block conv (+3,647,120 parameters, the paper's +3.6M)."""
    return _create("resnet50_fdconv", pretrained, **dict(dict(block=Bottleneck, layers=(3, 4, 6, 3)), **kwargs))


@register_model
def resnet101_fdconv(pretrained: bool = False, **kwargs: Any) -> ResNetFD:
    """ResNet-101 with FDConv in every block conv."""
    return _create("resnet101_fdconv", pretrained, **dict(dict(block=Bottleneck, layers=(3, 4, 23, 3)), **kwargs))


@register_model
def resnet152_fdconv(pretrained: bool = False, **kwargs: Any) -> ResNetFD:
    """ResNet-152 with FDConv in every block conv."""
    return _create("resnet152_fdconv", pretrained, **dict(dict(block=Bottleneck, layers=(3, 8, 36, 3)), **kwargs))
