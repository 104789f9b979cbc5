"""fdconv_zoo: Frequency Dynamic Convolution (CVPR 2025) as timm backbones."""

from . import models  # noqa: F401  (registers the *_fdconv models with timm)
from .layers import FDConv2d, FDLinear

__version__ = "0.1.0"
__all__ = ["FDConv2d", "FDLinear", "__version__"]
