"""FDConv building blocks: FDW, KSM, FBM and the two drop-in layers."""

from .fbm import DEFAULT_CUTOFFS, FrequencyBandModulation, frequency_bands, low_pass_masks
from .fd_base import DynamicKernel, FDKernelBase
from .fdconv import FDConv2d
from .fdlinear import FDLinear
from .fdw import dft_to_weight, frequency_group_ids, synthesize_kernels, weight_to_dft
from .ksm import KSMGlobal, KSMLocal

__all__ = [
    "DEFAULT_CUTOFFS", "DynamicKernel", "FDConv2d", "FDKernelBase", "FDLinear", "FrequencyBandModulation",
    "KSMGlobal", "KSMLocal", "dft_to_weight", "frequency_bands", "frequency_group_ids", "low_pass_masks",
    "synthesize_kernels", "weight_to_dft",
]
