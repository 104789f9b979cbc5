"""The FDConv layers in plain torch ops, autograd by torch: the meaning of ``FDConv2d`` and ``FDLinear``.

Each step of ``docs/method.md`` is one function here, on tensors only (TorchScript compiles them); the
layers' ``forward_reference`` methods compose them with KSM and FBM's own heads. The layers' fast path
(``_ops/``: hand-written backward passes, per-sample chunks, factors moved onto whichever tensor is
smaller) is proven equal to this one by the tests, forward and every gradient; :func:`use_reference`
says which one a layer runs.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from timm.layers import is_exportable, is_scriptable
from torch import Tensor

from .fdw import compute_dtype, hermitian_part, real_dtype, spectral_scale

__all__ = ["set_fd_reference", "use_reference", "fdw_kernels", "aggregate_kernels", "band_modulation",
           "conv2d_per_sample", "linear_per_sample"]

_USE_REFERENCE = os.environ.get("FDCONV_ZOO_REFERENCE", "0") == "1"


def set_fd_reference(enable: bool = True) -> None:
    """Run every FD layer without a per-layer choice through the reference formulation (like timm's
    ``set_fused_attn``); the environment variable ``FDCONV_ZOO_REFERENCE=1`` sets it at import."""
    global _USE_REFERENCE
    _USE_REFERENCE = enable


def use_reference(layer_choice: bool | None = None) -> bool:
    """The implementation a layer runs: its own ``reference`` option if set, else the global switch; timm's
    scriptable and exportable modes (and TorchScript itself) always take the reference."""
    if is_scriptable() or is_exportable():
        return True
    return _USE_REFERENCE if layer_choice is None else layer_choice


def fdw_kernels(dft_weight: Tensor, group_ids: Tensor, gains: Tensor | None, out_channels: int,
                in_channels: int, k: int) -> Tensor:
    """Section 1: ``irfft2(H(n * s * G * P))`` per sample, as ``(B, O, I, k, k)`` kernels (``(1, ...)`` static).

    ``dft_weight`` is the ``(1, O*k, I*k//2+1, 2)`` parameter in the FFT dtype, ``gains`` KSM's ``(B, n)``
    kernel attention (None: a layer with one group, gain 1).
    """
    rows, cols = out_channels * k, in_channels * k
    parts = dft_weight[0]                                  # (rows, cols//2+1, 2): real and imaginary parts
    scale = spectral_scale(out_channels, in_channels)
    if gains is None:
        parts = (scale * parts).unsqueeze(0)
    else:   # real gains scale both parts (kept real: TorchScript's autodiff mistypes real x complex)
        gain_map = gains[:, group_ids.long()].unsqueeze(-1)                            # (B, rows, cols//2+1, 1)
        parts = (gains.shape[1] * scale) * gain_map * parts
    spectrum = torch.view_as_complex(parts.contiguous())
    matrix = torch.fft.irfft2(hermitian_part(spectrum, cols), s=(rows, cols))          # (B, O*k, I*k)
    return matrix.view(-1, out_channels, k, in_channels, k).permute(0, 1, 3, 2, 4)


def aggregate_kernels(fdw: Tensor, local_logits: Tensor, channel: Tensor, filt: Tensor,
                      spatial: Tensor | None) -> Tensor:
    """Section 2: ``K_b = W_b * lambda_b * channel_b * filter_b * spatial_b``, ``(B, O, I, k, k)``.

    ``lambda = 2 * sigmoid(L)`` from the local logits ``(B, O, k, k, I)``; ``spatial`` is ``(B, k*k)``.
    """
    k = fdw.shape[-1]
    kernel = fdw * (2.0 * torch.sigmoid(local_logits).permute(0, 1, 4, 2, 3))
    kernel = kernel * channel[:, None, :, None, None] * filt[:, :, None, None, None]
    if spatial is not None:
        kernel = kernel * spatial.view(-1, 1, 1, k, k)
    return kernel


def band_modulation(x: Tensor, gains: list[Tensor], masks: Tensor) -> Tensor:
    """Section 3: ``x' = sum_j A_j * (L_{j-1} - L_j) + L_J``, with ``L_0 = x`` and ``L_j`` the low-pass of ``x`` by
    ``masks[j-1]``; one more gain than masks multiplies ``L_J`` too. FFTs in float32 (float64 kept)."""
    height, width = x.shape[-2], x.shape[-1]
    dtype = real_dtype(x.dtype)
    signal = x.to(dtype)
    spectrum = torch.fft.rfft2(signal, norm="ortho")
    lows = [signal]
    for j in range(masks.shape[0]):
        lows.append(torch.fft.irfft2(spectrum * masks[j].to(dtype), s=(height, width), norm="ortho"))
    last = len(lows) - 1
    out = gains[last].to(dtype) * lows[last] if len(gains) > last else lows[last]
    for j in range(last):
        out = out + gains[j].to(dtype) * (lows[j] - lows[j + 1])
    return out.to(x.dtype)


def conv2d_per_sample(x: Tensor, kernels: Tensor, bias: Tensor | None, stride: list[int],
                      padding: list[int], dilation: list[int]) -> Tensor:
    """``conv2d(x_b, K_b) + bias`` for every sample ``b``: one grouped convolution over the batch.

    ``padding`` is ``(left, right, top, bottom)``; the convolution runs in :func:`fdw.compute_dtype`.
    """
    batch, out_channels = x.shape[0], kernels.shape[1]
    dtype = compute_dtype(x)
    weight = kernels.to(dtype).flatten(0, 1)                                           # (B*O, I, k, k)
    batch_bias = None if bias is None else bias.to(dtype).repeat(batch)
    x = F.pad(x, padding)
    y = F.conv2d(x.reshape(1, -1, x.shape[-2], x.shape[-1]), weight, batch_bias, stride, 0, dilation, batch)
    return y.view(batch, out_channels, y.shape[-2], y.shape[-1])


def linear_per_sample(tokens: Tensor, kernels: Tensor, bias: Tensor | None) -> Tensor:
    """``tokens_b @ K_b^T + bias``: ``(B, T, I)`` tokens, ``(B, O, I)`` kernels."""
    dtype = compute_dtype(tokens)
    y = torch.bmm(tokens.to(dtype), kernels.to(dtype).transpose(1, 2))
    return y if bias is None else y + bias.to(dtype)
