"""torchvision's Faster R-CNN / Mask R-CNN over a zoo backbone's ``features_only`` maps and an FPN."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .errors import InputError
from .seg_head import create_backbone

__all__ = ["FeaturePyramidBackbone", "create_detection_model"]


class FeaturePyramidBackbone(nn.Module):
    """A timm ``features_only`` network followed by torchvision's FPN (plus a max-pooled level).

    torchvision's detectors take any module that returns an ordered dict of maps and says its
    ``out_channels``; the map names ``'0'..'3'`` are the ones their RoI pooling reads.
    """

    def __init__(self, body: nn.Module, channels: int = 256) -> None:
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def create_detection_model(backbone: str, num_classes: int, *, masks: bool = False, min_size: int = 800,
                           max_size: int = 1333, fpn_channels: int = 256, out_indices: Sequence[int] = (-4, -3, -2, -1),
                           init_from: str | None = None, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Faster R-CNN (Mask R-CNN with ``masks``) for ``num_classes`` object classes over ``backbone``.

    The detector resizes images to ``min_size`` / ``max_size`` and normalises them with the backbone's own
    mean and std (its timm data config).
    """
    from timm.data import resolve_model_data_config
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    if len(out_indices) != 4:
        raise InputError(f"the detector's RoI pooling reads four feature levels, got out_indices={list(out_indices)}")
    body, fixed = create_backbone(backbone, out_indices=out_indices, crop_size=min_size, init_from=init_from,
                                  pretrained=pretrained, feature_cls="getter", **kwargs)
    if fixed:
        raise InputError(f"{backbone} takes a fixed input size only; the detector resizes images freely. Use a "
                         "backbone with a dynamic input size (ResNet, ConvNeXt, Swin)")
    data = resolve_model_data_config(body)
    detector = MaskRCNN if masks else FasterRCNN
    return detector(FeaturePyramidBackbone(body, fpn_channels), num_classes=num_classes + 1, min_size=min_size,
                    max_size=max_size, image_mean=list(data["mean"]), image_std=list(data["std"]))
