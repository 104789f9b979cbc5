"""A small UPerNet-style (PPM + FPN) or plain FPN head over any ``features_only`` timm backbone.

Our own head, sized for quick comparisons of a backbone and its FDConv twin: lateral 1x1
convs, a top-down pathway, 3x3 smoothing, all levels upsampled to the finest one, a fused
3x3 and a 1x1 classifier. ``head='uper'`` replaces the coarsest lateral by a pyramid pooling
module (UPerNet, Xiao et al. 2018). GroupNorm keeps it independent of the per-process batch
(a batch of 1 with a 1x1 pooled bin would break BatchNorm) and of the process count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError

__all__ = ["create_backbone", "ConvNormAct", "SegmentationModel", "UPerHead", "create_segmentation_model",
           "sliding_window_logits", "whole_image_logits"]


class ConvNormAct(nn.Sequential):
    """conv (no bias) -> GroupNorm (>= 4 channels per group: valid on 1x1 maps) -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.GroupNorm(math.gcd(32, max(cout // 4, 1)), cout), nn.ReLU(inplace=True))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling on the coarsest map, fused back to ``channels``."""

    def __init__(self, cin: int, channels: int, scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.stages = nn.ModuleList(ConvNormAct(cin, channels, 1) for _ in self.scales)
        self.bottleneck = ConvNormAct(cin + len(self.scales) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        outs = [x]
        for scale, stage in zip(self.scales, self.stages, strict=True):
            y = stage(F.adaptive_avg_pool2d(x, scale))
            outs.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.bottleneck(torch.cat(outs, dim=1))


class UPerHead(nn.Module):
    """FPN decoder (+ PPM when ``use_ppm``) -> logits at the finest feature resolution."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 128, *, use_ppm: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        in_channels = list(in_channels)
        self.top = PyramidPooling(in_channels[-1], channels) if use_ppm else ConvNormAct(in_channels[-1], channels, 1)
        self.laterals = nn.ModuleList(ConvNormAct(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(channels * len(in_channels), channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        lat = [m(f) for m, f in zip(self.laterals, features[:-1], strict=True)] + [self.top(features[-1])]
        for i in range(len(lat) - 1, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear",
                                                    align_corners=False)
        outs = [m(x) for m, x in zip(self.smooth, lat[:-1], strict=True)] + [lat[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))


class SegmentationModel(nn.Module):
    """``features_only`` backbone + :class:`UPerHead`; logits at the input resolution.

    NHWC feature maps (Swin's list/hook wrappers) are permuted to NCHW here.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, head: str = "uper", channels: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if head not in ("uper", "fpn"):
            raise InputError(f"unknown head {head!r}; choose 'uper' or 'fpn'")
        info = backbone.feature_info
        self.backbone = backbone
        self.nhwc = str(getattr(backbone, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC")
        self.head = UPerHead(info.channels(), num_classes, channels, use_ppm=head == "uper", dropout=dropout)
        self.num_classes = num_classes
        self.output_stride = max(info.reduction())
        self.fixed_input_size = False  # True: the backbone only takes crop-sized inputs (evaluate by sliding)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.backbone(x)
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        logits = self.head(feats)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_backbone(backbone: str, *, out_indices: Sequence[int] = (-4, -3, -2, -1), crop_size: int | None = None,
                    init_from: str | None = None, pretrained: bool = False, **kwargs: Any) -> tuple[nn.Module, bool]:
    """``timm.create_model(backbone, features_only=True, ...)`` for a dense head, and whether its input size is fixed.

    Fixed-input-size backbones (Swin) are built for ``crop_size`` with ``dynamic_img_size`` so other sizes work
    too; where that is refused, the size stays fixed (True). ``init_from`` loads backbone weights before the
    features wrapper is applied (see :func:`~fdconv_zoo.training.modeling.create_model`).
    """
    import timm

    from .modeling import check_model_name, create_model

    check_model_name(backbone)
    args = dict(kwargs)
    fixed = False
    if not backbone.startswith(("hf-hub:", "local-dir:")):
        cfg = timm.models.get_pretrained_cfg(backbone.split(".", 1)[0])
        fixed = bool(getattr(cfg, "fixed_input_size", False))
    if fixed and crop_size:
        args.setdefault("img_size", crop_size)
    common = dict(features_only=True, out_indices=tuple(out_indices), init_from=init_from, pretrained=pretrained)
    try:
        return create_model(backbone, **common, **(dict(args, dynamic_img_size=True) if fixed else args)), False
    except InputError:
        if not fixed:
            raise
        return create_model(backbone, **common, **args), True   # no dynamic_img_size: evaluate with sliding windows


def create_segmentation_model(backbone: str, num_classes: int, *, head: str = "uper", channels: int = 128,
                              out_indices: Sequence[int] = (-4, -3, -2, -1), crop_size: int | None = None,
                              init_from: str | None = None, pretrained: bool = False, dropout: float = 0.1,
                              **kwargs: Any) -> SegmentationModel:
    """A :class:`SegmentationModel` over :func:`create_backbone`'s features."""
    net, fixed = create_backbone(backbone, out_indices=out_indices, crop_size=crop_size, init_from=init_from,
                                 pretrained=pretrained, **kwargs)
    model = SegmentationModel(net, num_classes, head=head, channels=channels, dropout=dropout)
    model.fixed_input_size = fixed
    return model


def whole_image_logits(model: nn.Module, images: Tensor, output_stride: int = 32) -> Tensor:
    """Logits for whole images, zero-padded (bottom/right) to a multiple of ``output_stride`` and cropped back."""
    h, w = images.shape[-2:]
    ph = (output_stride - h % output_stride) % output_stride
    pw = (output_stride - w % output_stride) % output_stride
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    return model(x)[..., :h, :w]


def sliding_window_logits(model: nn.Module, images: Tensor, num_classes: int, crop: int,
                          stride: int | None = None) -> Tensor:
    """Average logits over ``crop x crop`` windows every ``stride`` pixels (mmseg's ``slide`` mode)."""
    stride = stride or max(1, crop * 2 // 3)
    b, _, h, w = images.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    hh, ww = x.shape[-2:]
    out = x.new_zeros(b, num_classes, hh, ww, dtype=torch.float32)
    count = x.new_zeros(1, 1, hh, ww, dtype=torch.float32)
    rows = list(range(0, max(hh - crop, 0) + 1, stride))
    cols = list(range(0, max(ww - crop, 0) + 1, stride))
    if rows[-1] + crop < hh:
        rows.append(hh - crop)
    if cols[-1] + crop < ww:
        cols.append(ww - crop)
    for top in rows:
        for left in cols:
            logits = model(x[:, :, top:top + crop, left:left + crop]).float()
            out[:, :, top:top + crop, left:left + crop] += logits
            count[:, :, top:top + crop, left:left + crop] += 1
    return (out / count)[..., :h, :w]
