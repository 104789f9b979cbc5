"""Dynamic-convolution baselines (CondConv, DY-Conv, ODConv, KernelWarehouse): opt-in.

``import fdconv_zoo.baselines`` registers the ``resnet{18,50}_{condconv8x,dyconv4x,odconv1x,odconv4x,kw1x,kw4x}``
models with timm; ``import fdconv_zoo`` alone registers only the ``*_fdconv`` models.
"""

from . import models
from .models import BASELINE_VARIANTS, KW_PRESETS, PAPERS, ResNetDyn, vanilla_to_dynamic
from .surgery import (
    METHODS,
    anneal_dynamic_layers,
    convert_to_dynamic,
    dynamic_layers,
    dynamic_skip_reason,
    kw_cell_sizes,
    kw_share_warehouses,
)

__all__ = [
    "BASELINE_VARIANTS", "KW_PRESETS", "METHODS", "PAPERS", "ResNetDyn", "anneal_dynamic_layers", "convert_to_dynamic",
    "dynamic_layers", "dynamic_skip_reason", "kw_cell_sizes", "kw_share_warehouses", "models", "vanilla_to_dynamic",
]
