"""FDConv building blocks (FDW, KSM, FBM, the two drop-in layers) and the dynamic-conv baseline layers."""

from .condconv import CondConv2d, CondLinear
from .dyconv import DyConv2d
from .fbm import DEFAULT_CUTOFFS, FrequencyBandModulation, frequency_bands, low_pass_masks
from .fd_base import DynamicKernel, FDKernelBase
from .fdconv import FDConv2d
from .fdlinear import FDLinear
from .fdw import dft_to_weight, frequency_group_ids, synthesize_kernels, weight_to_dft
from .kernel_warehouse import KernelWarehouse, KWConv2d
from .ksm import KSMGlobal, KSMLocal
from .odconv import ODConv2d

__all__ = [
    "CondConv2d", "CondLinear", "DyConv2d", "KWConv2d", "KernelWarehouse", "ODConv2d",
    "DEFAULT_CUTOFFS", "DynamicKernel", "FDConv2d", "FDKernelBase", "FDLinear", "FrequencyBandModulation",
    "KSMGlobal", "KSMLocal", "dft_to_weight", "frequency_bands", "frequency_group_ids", "low_pass_masks",
    "synthesize_kernels", "weight_to_dft",
]
