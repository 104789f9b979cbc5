"""FDConv variants of timm's ResNet, ConvNeXt and Swin, registered with timm on import.

Importing this package (``import fdconv_zoo`` does) runs the ``@register_model`` decorators:
timm has no plugin auto-import, so ``timm.create_model('resnet50_fdconv')`` needs it first.
"""

from . import fd_convnext, fd_resnet, fd_swin
from ._fd_builder import FDOptions, apply_fdconv, fd_checkpoint_filter
from .fd_convnext import ConvNeXtFD
from .fd_resnet import ResNetFD
from .fd_swin import SwinTransformerFD

__all__ = [
    "ConvNeXtFD", "FDOptions", "ResNetFD", "SwinTransformerFD", "apply_fdconv", "fd_checkpoint_filter",
    "fd_convnext", "fd_resnet", "fd_swin",
]
