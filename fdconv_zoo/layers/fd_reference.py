"""The FDConv layers in plain torch ops, autograd by torch: the meaning of ``FDConv2d`` and ``FDLinear``.

Each step of ``docs/method.md`` is one function here. The layers' fast path (``_ops/``: hand-written
backward passes, per-sample chunks, factors moved onto whichever tensor is smaller) is proven equal to
this one by the tests, forward and every gradient; :func:`use_reference` says which one a layer runs.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from timm.layers import is_exportable, is_scriptable
from torch import Tensor

from .bands import low_pass_masks
from .fdw import hermitian_part, real_dtype, spectral_scale

__all__ = ["set_fd_reference", "use_reference", "fdw_kernels", "local_modulation", "aggregated_kernels",
           "band_modulation", "fdconv2d_forward", "fdlinear_forward"]

_USE_REFERENCE = os.environ.get("FDCONV_ZOO_REFERENCE", "0") == "1"


def set_fd_reference(enable: bool = True) -> None:
    """Run every FD layer without a per-layer choice through the reference formulation (like timm's
    ``set_fused_attn``); the environment variable ``FDCONV_ZOO_REFERENCE=1`` sets it at import."""
    global _USE_REFERENCE
    _USE_REFERENCE = enable


def use_reference(layer_choice: bool | None = None) -> bool:
    """The implementation a layer runs: its own ``reference`` option if set, else the global switch; timm's
    scriptable and exportable modes always take the reference."""
    if is_scriptable() or is_exportable():
        return True
    return _USE_REFERENCE if layer_choice is None else layer_choice


def fdw_kernels(layer, gains: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Section 1: ``irfft2(H(n * s * G * P))`` per sample, as ``(B, O, I, k, k)`` kernels (``(1, ...)`` static)."""
    out_channels, in_channels, k = layer.out_channels, layer.in_channels, layer._k
    rows, cols = out_channels * k, in_channels * k
    spectrum = torch.view_as_complex(layer.dft_weight[0].to(dtype).contiguous())
    scale = spectral_scale(out_channels, in_channels)
    if gains is None:
        spectrum = (scale * spectrum).unsqueeze(0)
    else:
        gain_map = gains.to(dtype)[:, layer.group_ids.long()]                          # (B, rows, cols//2+1)
        spectrum = (layer.kernel_num * scale) * gain_map * spectrum
    matrix = torch.fft.irfft2(hermitian_part(spectrum, cols), s=(rows, cols))          # (B, O*k, I*k)
    return matrix.view(-1, out_channels, k, in_channels, k).permute(0, 1, 3, 2, 4)


def local_modulation(layer, pooled: Tensor) -> Tensor:
    """Section 2, local branch: ``lambda = 2 * sigmoid(L)`` as ``(B, O, I, k, k)``."""
    logits = layer.KSM_Local(pooled)                                                  # (B, O, k, k, I)
    return 2.0 * torch.sigmoid(logits).permute(0, 1, 4, 2, 3)


def aggregated_kernels(layer, pooled: Tensor) -> Tensor:
    """Section 2: ``K_b = W_b * lambda_b * channel_b * filter_b * spatial_b``, ``(B, O, I, k, k)``, in the FFT dtype."""
    k = layer._k
    with torch.autocast(pooled.device.type, enabled=False):
        pooled = pooled.to(real_dtype(layer.dft_weight.dtype))
        channel, filt, spatial, gains = layer.KSM_Global(pooled)
        kernel = fdw_kernels(layer, gains, pooled.dtype) * local_modulation(layer, pooled)
        kernel = kernel * channel[:, None, :, None, None] * filt[:, :, None, None, None]
        if spatial is not None:
            kernel = kernel * spatial.view(-1, 1, 1, k, k)
    return kernel


def band_modulation(fbm, x: Tensor) -> Tensor:
    """Section 3: ``x' = sum_j A_j * band_j + L_J`` with the exact per-size low-pass masks, FFTs in float32."""
    height, width = x.shape[-2:]
    dtype = real_dtype(x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        spectrum = torch.fft.rfft2(x.to(dtype), norm="ortho")
        masks = low_pass_masks(height, width, fbm.cutoffs, device=x.device, dtype=dtype)
        lows = [x.to(dtype)] + [torch.fft.irfft2(spectrum * m, s=(height, width), norm="ortho") for m in masks]
    gains = [2.0 * torch.sigmoid(conv(x)).to(dtype) for conv in fbm.freq_weight_conv_list]
    out = gains[-1] * lows[-1] if fbm.lowfreq_att else lows[-1]
    for j in range(len(masks)):
        out = out + gains[j] * (lows[j] - lows[j + 1])
    return out.to(x.dtype)


def _compute_dtype(x: Tensor) -> torch.dtype:
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def fdconv2d_forward(layer, x: Tensor) -> Tensor:
    """``conv2d(FBM(x), K_b) + bias`` for every sample ``b``: one grouped convolution over the batch."""
    batch = x.shape[0]
    kernel = aggregated_kernels(layer, x.mean((2, 3), dtype=real_dtype(x.dtype)))
    if layer.FBM is not None:
        x = band_modulation(layer.FBM, x)
    dtype = _compute_dtype(x)
    weight = kernel.to(dtype).reshape(batch * layer.out_channels, layer.in_channels, *layer.kernel_size)
    bias = None if layer.bias is None else layer.bias.to(dtype).repeat(batch)
    x = F.pad(x, layer._pad)
    y = F.conv2d(x.reshape(1, -1, *x.shape[-2:]), weight, bias, layer.stride, 0, layer.dilation, groups=batch)
    return y.view(batch, layer.out_channels, *y.shape[-2:])


def fdlinear_forward(layer, x: Tensor) -> Tensor:
    """``tokens_b @ K_b^T + bias`` with KSM pooled over every token position of a sample."""
    batch = x.shape[0]
    tokens = x.reshape(batch, -1, layer.in_features)
    kernel = aggregated_kernels(layer, tokens.mean(1, dtype=real_dtype(x.dtype)))[..., 0, 0]     # (B, O, I)
    dtype = _compute_dtype(x)
    y = torch.bmm(tokens.to(dtype), kernel.to(dtype).transpose(1, 2))
    if layer.bias is not None:
        y = y + layer.bias.to(dtype)
    return y.view(*x.shape[:-1], layer.out_features)
