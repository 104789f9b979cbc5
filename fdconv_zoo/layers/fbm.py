"""Frequency Band Modulation (spec section 3): spatially varying gains on octave bands of the input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fdw import real_dtype

__all__ = ["DEFAULT_CUTOFFS", "low_pass_masks", "low_pass_stack", "frequency_bands", "FrequencyBandModulation"]

DEFAULT_CUTOFFS = (0.25, 0.125, 0.0625)

_MASK_CACHE: dict[tuple, Tensor] = {}


def low_pass_masks(height: int, width: int, cutoffs: Sequence[float], device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Exact masks ``max(|fy|, |fx|) < c`` on the rFFT grid of the actual size, ``(len(c), H, W//2+1)``.

    Cached per size, cutoffs and device (the official code resizes a 64x64 mask instead).
    """
    key = (height, width, tuple(float(c) for c in cutoffs), str(torch.device(device or "cpu")), dtype)
    mask = _MASK_CACHE.get(key)
    if mask is None:
        with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
            mask = _build_masks(height, width, cutoffs, device, dtype)
        _MASK_CACHE[key] = mask
    return mask


def _build_masks(height: int, width: int, cutoffs: Sequence[float], device, dtype: torch.dtype) -> Tensor:
    fy = torch.fft.fftfreq(height, dtype=torch.float64).abs()
    fx = torch.fft.rfftfreq(width, dtype=torch.float64).abs()
    radius = torch.maximum(fy[:, None], fx[None, :])
    return torch.stack([radius < c for c in cutoffs]).to(device=device, dtype=dtype)


def low_pass_stack(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> Tensor:
    """Low-passed copies ``L_1..L_J`` of ``x`` (B, C, H, W) in one batched inverse FFT: ``(B, J, C, H, W)``.

    Runs in float32 (float64 kept) whatever the input dtype or autocast state.
    """
    height, width = x.shape[-2:]
    dtype = real_dtype(x.dtype)
    masks = low_pass_masks(height, width, cutoffs, x.device, dtype)
    with torch.autocast(x.device.type, enabled=False):
        spectrum = torch.fft.rfft2(x.to(dtype), norm="ortho")
        return torch.fft.irfft2(spectrum.unsqueeze(1) * masks[:, None], s=(height, width), norm="ortho")


def frequency_bands(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> list[Tensor]:
    """Octave bands of ``x``, highest first: ``[x - L_1, L_1 - L_2, ..., L_J]`` (they sum to ``x``)."""
    lows = low_pass_stack(x, cutoffs).unbind(1)
    previous = [x.to(lows[0].dtype), *lows[:-1]]
    return [hi - lo for hi, lo in zip(previous, lows, strict=True)] + [lows[-1]]


class FrequencyBandModulation(nn.Module):
    """``x' = sum_j A_j * H_j + L_J`` with ``A_j = 2 * sigmoid(conv3x3(x))``, zero-initialised (``x' = x``)."""

    def __init__(self, in_channels: int, cutoffs: Sequence[float] = DEFAULT_CUTOFFS,
                 lowfreq_att: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        self.cutoffs = tuple(float(c) for c in cutoffs)
        decreasing = list(self.cutoffs) == sorted(self.cutoffs, reverse=True)
        if not self.cutoffs or any(not 0.0 < c <= 0.5 for c in self.cutoffs) or not decreasing:
            raise ValueError(f"FBM cutoffs must be decreasing values in (0, 0.5], got {cutoffs}")
        self.lowfreq_att = lowfreq_att
        num_maps = len(self.cutoffs) + int(lowfreq_att)
        self.freq_weight_conv_list = nn.ModuleList(
            nn.Conv2d(in_channels, 1, 3, padding=1, bias=True, device=device, dtype=dtype) for _ in range(num_maps)
        )
        for conv in self.freq_weight_conv_list:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        weight = torch.cat([c.weight for c in self.freq_weight_conv_list])
        bias = torch.cat([c.bias for c in self.freq_weight_conv_list])
        lows = low_pass_stack(x, self.cutoffs)
        gains = 2.0 * torch.sigmoid(F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1)).to(lows.dtype)
        num_bands = len(self.cutoffs)
        # sum_j A_j (L_{j-1} - L_j) + A_low L_J, regrouped as one coefficient per low-pass copy.
        out = gains[:, :1] * x.to(lows.dtype)
        for j in range(num_bands):
            next_gain = gains[:, j + 1:j + 2] if j + 1 < gains.shape[1] else 1.0
            out = out + (next_gain - gains[:, j:j + 1]) * lows[:, j]
        return out.to(x.dtype)
