"""FDConv building blocks (FDW, KSM, FBM, the two drop-in layers) and the dynamic-conv baseline layers."""

from timm.layers import register_notrace_module

from ._ops.kernel_builder import synthesize_kernels
from .condconv import CondConv2d, CondLinear
from .dyconv import DyConv2d
from .fbm import DEFAULT_CUTOFFS, FrequencyBandModulation, frequency_bands, low_pass_masks
from .fd_base import DynamicKernel, FDKernelBase
from .fdconv import FDConv2d
from .fdlinear import FDLinear
from .fdw import dft_to_weight, frequency_group_ids, weight_to_dft
from .kernel_warehouse import KernelWarehouse, KWConv2d
from .ksm import KSMGlobal, KSMLocal
from .odconv import ODConv2d

# Leaves for timm's FX feature extraction (feature_cls='fx'): these layers branch on input shapes
# (the cheaper contraction order, FBM on/off), which symbolic tracing cannot follow.
for _layer in (FDConv2d, FDLinear, CondConv2d, CondLinear, DyConv2d, KWConv2d, ODConv2d):
    register_notrace_module(_layer)
del _layer

__all__ = [
    "CondConv2d", "CondLinear", "DyConv2d", "KWConv2d", "KernelWarehouse", "ODConv2d",
    "DEFAULT_CUTOFFS", "DynamicKernel", "FDConv2d", "FDKernelBase", "FDLinear", "FrequencyBandModulation",
    "KSMGlobal", "KSMLocal", "dft_to_weight", "frequency_bands", "frequency_group_ids", "low_pass_masks",
    "synthesize_kernels", "weight_to_dft",
]
