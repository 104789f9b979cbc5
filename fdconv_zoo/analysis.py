"""Looking inside FDConv: FDW basis kernels, their diversity, and the FBM frequency bands of a feature map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .layers.fbm import DEFAULT_CUTOFFS, frequency_bands
from .layers.fd_base import FDKernelBase
from .layers.fdw import spectral_scale, synthesize_kernels

__all__ = ["basis_kernels", "basis_cosine_similarity", "band_decomposition"]


@torch.no_grad()
def basis_kernels(layer: FDKernelBase) -> Tensor:
    """The ``n`` FDW basis kernels ``irfft2(mask_g * s * P)``, shape ``(n, O, I, k, k)``.

    They have disjoint frequency support and sum to the layer's static kernel. Memory is ``n``
    times the kernel: meant for analysis, not for the forward pass.
    """
    n, k = layer.kernel_num, layer.KSM_Local.kernel_size
    cout, cin = layer.out_channels, layer.in_channels
    eye = torch.eye(n, device=layer.dft_weight.device, dtype=torch.float32) / n
    scale = float(n * spectral_scale(cout, cin))
    m = synthesize_kernels(layer.dft_weight, eye if n > 1 else None, layer.group_ids_t, cin * k, scale)
    return m.view(n, cout, k, cin, k).permute(0, 1, 3, 2, 4).contiguous()


@torch.no_grad()
def basis_cosine_similarity(layer: FDKernelBase) -> Tensor:
    """Pairwise cosine similarity of the FDW basis kernels, ``(n, n)``; off-diagonal ~0 by construction."""
    flat = basis_kernels(layer).flatten(1).double()
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (flat @ flat.t()).float()


@torch.no_grad()
def band_decomposition(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> Tensor:
    """FBM's octave bands of a feature map ``(B, C, H, W)``, highest first: ``(B, J+1, C, H, W)``, summing to ``x``."""
    return torch.stack(frequency_bands(x, cutoffs), dim=1)
