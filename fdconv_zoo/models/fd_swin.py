"""FDConv Swin Transformers: ``swin_{tiny,small,base}_patch4_window7_224_fdconv``, FDLinear in the MLPs.

Placement: ``mlp.fc1`` and ``mlp.fc2`` of every block become FDLinear, with the KSM global
branch sized from the block width C (``fd_ksm_width='min'``; see ``fd_convnext``). The MLP
sees ``(B, H*W, C)`` tokens, so KSM pools over the whole image of each sample. Attention
(``qkv``/``proj``) stays plain: it runs on ``(windows*B, 49, C)``, where an FD layer would
pool per window and build one kernel per window. Patch embed, patch merging and head stay plain.

Features: list/dict/hook extractors return **NHWC** maps (timm's Swin layout, ``output_fmt``
says so); pass ``feature_cls='getter'`` for NCHW. Input size is fixed at 224 unless the model
is built with ``dynamic_img_size=True`` (any size) or ``img_size=...``.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer import checkpoint_filter_fn as swin_filter

from ._fd_builder import (
    FDModelMixin,
    FDOptions,
    base_cfg,
    build_fd_model,
    fd_checkpoint_filter,
    fd_default_cfgs,
)

__all__ = ["SwinTransformerFD", "SWIN_FD_DEFAULTS"]

#: Both MLP layers of every block, KSM width from the block width; every field is a ``fd_<name>`` kwarg.
SWIN_FD_DEFAULTS = FDOptions(include=["layers.*.mlp.fc1", "layers.*.mlp.fc2"], exclude=[], use_fbm=False,
                             ksm_width="min")


class SwinTransformerFD(FDModelMixin, SwinTransformer):
    """timm's Swin Transformer with the MLP linears swapped for FDLinear after construction.

    ``fd_*`` kwargs as in :class:`~fdconv_zoo.models._fd_builder.FDOptions`.
    """

    fd_defaults = SWIN_FD_DEFAULTS


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return base_cfg(first_conv="patch_embed.proj", classifier="head.fc", crop_pct=0.9, fixed_input_size=True,
                    license="mit", **kwargs)


_TAGS = {
    "swin_tiny_patch4_window7_224": (("ms_in1k", "ms_in22k_ft_in1k"), "ms_in1k"),
    "swin_small_patch4_window7_224": (("ms_in1k", "ms_in22k_ft_in1k"), "ms_in1k"),
    "swin_base_patch4_window7_224": (("ms_in1k", "ms_in22k_ft_in1k"), "ms_in1k"),
}

default_cfgs = generate_default_cfgs({
    key: cfg
    for arch, (tags, default) in _TAGS.items()
    for key, cfg in fd_default_cfgs(arch, _cfg(), tags, default).items()
})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SwinTransformerFD:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (1, 1, 3, 1))))))
    return build_fd_model(
        SwinTransformerFD, variant, pretrained,
        pretrained_filter_fn=fd_checkpoint_filter(swin_filter),
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs)


_SWIN_T = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SWIN_S = dict(patch_size=4, window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_SWIN_B = dict(patch_size=4, window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


@register_model
def swin_tiny_patch4_window7_224_fdconv(pretrained: bool = False, **kwargs: Any) -> SwinTransformerFD:
    """Swin-T with FDLinear MLPs."""
    return _create("swin_tiny_patch4_window7_224_fdconv", pretrained, **dict(_SWIN_T, **kwargs))


@register_model
def swin_small_patch4_window7_224_fdconv(pretrained: bool = False, **kwargs: Any) -> SwinTransformerFD:
    """Swin-S with FDLinear MLPs."""
    return _create("swin_small_patch4_window7_224_fdconv", pretrained, **dict(_SWIN_S, **kwargs))


@register_model
def swin_base_patch4_window7_224_fdconv(pretrained: bool = False, **kwargs: Any) -> SwinTransformerFD:
    """Swin-B with FDLinear MLPs."""
    return _create("swin_base_patch4_window7_224_fdconv", pretrained, **dict(_SWIN_B, **kwargs))
