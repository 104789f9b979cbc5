"""fdconv_zoo: Frequency Dynamic Convolution (CVPR 2025) as timm backbones."""

from . import models  # noqa: F401  (registers the *_fdconv models with timm)
from .checkpoints import convert_checkpoint
from .layers import FDConv2d, FDLinear
from .layers.conversion import ConversionReport, convert_to_fdconv, official_to_zoo, vanilla_to_fdconv
from .layers.fd_reference import set_fd_reference
from .models import FDOptions

__version__ = "0.1.0"
__all__ = [
    "ConversionReport", "FDConv2d", "FDLinear", "FDOptions", "__version__", "convert_checkpoint", "convert_to_fdconv",
    "official_to_zoo", "set_fd_reference", "vanilla_to_fdconv",
]
