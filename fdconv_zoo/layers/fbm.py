"""Frequency Band Modulation (spec section 3): spatially varying gains on octave bands of the input."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .fdw import real_dtype

__all__ = [
    "DEFAULT_CUTOFFS", "low_pass_masks", "low_pass_list", "low_pass_stack", "frequency_bands",
    "FrequencyBandModulation",
]

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
    fy = torch.fft.fftfreq(height, d=1.0 / height, dtype=torch.float64).abs()   # exact integers |u'|
    fx = torch.arange(width // 2 + 1, dtype=torch.float64)
    masks = [(fy[:, None] < _kept_frequencies(height, c)) & (fx[None, :] < _kept_frequencies(width, c))
             for c in cutoffs]
    return torch.stack(masks).to(device=device, dtype=dtype)


def _kept_frequencies(size: int, cutoff: float) -> int:
    """How many of the frequencies ``u / size``, ``u = 0 .. (size-1)//2``, are ``< cutoff``, decided exactly.

    Integer arithmetic, not float ``fftfreq`` values, which round across the border at some sizes
    (e.g. 196 x 1/4 in float64): the spec's mask is the exact one.
    """
    return min(math.ceil(cutoff * size), (size + 1) // 2)


def _band_basis(size: int, cutoffs: Sequence[float], device, dtype: torch.dtype) -> tuple[Tensor, list[int]]:
    """Orthonormal real Fourier basis of the frequencies ``|f| < max(cutoffs)`` on ``size`` samples, ``(size, r)``.

    Columns are ordered by frequency (DC, cos 1, sin 1, cos 2, ...), so the basis of a smaller
    cutoff is a leading block; returns the rank of every cutoff too. ``U[:, :r] U[:, :r]^T`` is
    exactly the 1-D low-pass ``ifft(mask * fft(.))`` (cutoffs <= 1/2 never keep the Nyquist bin).
    """
    ranks = [2 * _kept_frequencies(size, c) - 1 for c in cutoffs]
    count = (max(ranks) + 1) // 2
    t = torch.arange(size, dtype=torch.float64)[:, None]
    angle = 2 * torch.pi * t * torch.arange(1, count, dtype=torch.float64)[None] / size
    pairs = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1).flatten(1) * (2.0 / size) ** 0.5
    basis = torch.cat([torch.full((size, 1), size ** -0.5, dtype=torch.float64), pairs], dim=1)
    return basis.to(device=device, dtype=dtype), ranks


_BASIS_CACHE: dict[tuple, tuple[Tensor, list[int]]] = {}


def _cached_band_basis(size: int, cutoffs: Sequence[float], device, dtype: torch.dtype) -> tuple[Tensor, list[int]]:
    if torch.compiler.is_compiling():  # traced once into the graph; no Python-side cache mutation
        return _band_basis(size, cutoffs, device, dtype)
    key = (size, tuple(cutoffs), str(device), dtype)
    hit = _BASIS_CACHE.get(key)
    if hit is None:
        with torch.inference_mode(False):  # cached tensors must stay usable by autograd later
            hit = _BASIS_CACHE[key] = _band_basis(size, cutoffs, device, dtype)
    return hit


def low_pass_list(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> list[Tensor]:
    """Low-passed copies ``L_1..L_J`` of ``x`` (B, C, H, W), each ``(B, C, H, W)`` in float32 (float64 kept).

    The mask ``max(|fy|, |fx|) < c`` is separable, so ``L_c = U_c U_c^T x V_c V_c^T`` with the
    real Fourier bases of the kept frequencies: small GEMMs on the shared coefficients
    ``U^T x V`` instead of a 2-D FFT and one inverse FFT per cutoff (same result, several
    times faster on CPU). Runs outside autocast whatever the input dtype.
    """
    height, width = x.shape[-2:]
    dtype = real_dtype(x.dtype)
    rows, row_ranks = _cached_band_basis(height, cutoffs, x.device, dtype)
    cols, col_ranks = _cached_band_basis(width, cutoffs, x.device, dtype)
    with torch.autocast(x.device.type, enabled=False):
        coeff = torch.matmul(rows.t(), torch.matmul(x.to(dtype), cols))            # (B, C, r_H, r_W)
        return [torch.matmul(rows[:, :a], torch.matmul(coeff[..., :a, :b], cols[:, :b].t()))
                for a, b in zip(row_ranks, col_ranks, strict=True)]


def low_pass_stack(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> Tensor:
    """:func:`low_pass_list` stacked, ``(B, J, C, H, W)``."""
    return torch.stack(low_pass_list(x, cutoffs), dim=1)


def frequency_bands(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> list[Tensor]:
    """Octave bands of ``x``, highest first: ``[x - L_1, L_1 - L_2, ..., L_J]`` (they sum to ``x``)."""
    lows = low_pass_list(x, cutoffs)
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
        if torch.is_grad_enabled():
            # Backward would keep J band-limited copies of x; recomputing them (small GEMMs) is cheaper.
            return checkpoint(self.modulate, x, use_reentrant=False)
        return self.modulate(x)

    def modulate(self, x: Tensor) -> Tensor:
        """The forward pass without the checkpoint around it (what backward recomputes)."""
        weight = torch.cat([c.weight for c in self.freq_weight_conv_list])
        bias = torch.cat([c.bias for c in self.freq_weight_conv_list])
        lows = low_pass_list(x, self.cutoffs)
        gains = 2.0 * torch.sigmoid(F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), padding=1)).to(lows[0].dtype)
        num_bands = len(self.cutoffs)
        # sum_j A_j (L_{j-1} - L_j) + A_low L_J, regrouped as one coefficient per low-pass copy.
        # (fused multiply-adds into one fresh buffer: one pass per band over the map instead of three)
        out = gains[:, :1] * x.to(lows[0].dtype)
        for j in range(num_bands):
            next_gain = gains[:, j + 1:j + 2] if j + 1 < gains.shape[1] else 1.0
            out.addcmul_(next_gain - gains[:, j:j + 1], lows[j])
        return out.to(x.dtype)
