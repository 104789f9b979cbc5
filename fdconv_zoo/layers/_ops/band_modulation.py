"""The fast path of FBM: separable low-pass GEMMs instead of FFTs, and a backward that keeps only the input.

Proven equal to ``fd_reference.band_modulation`` (the masked FFTs of docs/method.md) by the tests,
forward and gradients.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..bands import DEFAULT_CUTOFFS, kept_frequencies
from ..fdw import real_dtype

__all__ = ["low_pass_list", "low_pass_stack", "frequency_bands", "fbm", "fbm_no_grad"]


def autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """The autocast state in effect on ``device_type``, for :func:`autocast_as` to restore in backward.

    Backward usually runs outside autocast; recomputing the forward's bands and gains there without
    restoring its state would run the gain conv in float32, not in the forward's dtype (as
    ``torch.utils.checkpoint`` restores it too).
    """
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def autocast_as(state: tuple[str, bool, torch.dtype]) -> torch.autocast:
    """Autocast as it was when :func:`autocast_state` captured ``state``."""
    device_type, enabled, dtype = state
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


def _band_basis(size: int, cutoffs: Sequence[float], device, dtype: torch.dtype) -> tuple[Tensor, list[int]]:
    """Orthonormal real Fourier basis of the frequencies ``|f| < max(cutoffs)`` on ``size`` samples, ``(size, r)``.

    Columns are ordered by frequency (DC, cos 1, sin 1, cos 2, ...), so the basis of a smaller
    cutoff is a leading block; returns the rank of every cutoff too. ``U[:, :r] U[:, :r]^T`` is
    exactly the 1-D low-pass ``ifft(mask * fft(.))`` (cutoffs <= 1/2 never keep the Nyquist bin).
    """
    ranks = [2 * kept_frequencies(size, c) - 1 for c in cutoffs]
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


def _low_pass_bases(height: int, width: int, cutoffs: Sequence[float], device, dtype: torch.dtype):
    """The row and column bases of the largest cutoff and every cutoff's ``(row, column)`` ranks."""
    rows, row_ranks = _cached_band_basis(height, cutoffs, device, dtype)
    cols, col_ranks = _cached_band_basis(width, cutoffs, device, dtype)
    return rows, cols, list(zip(row_ranks, col_ranks, strict=True))


def low_pass_list(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> list[Tensor]:
    """Low-passed copies ``L_1..L_J`` of ``x`` (B, C, H, W), each ``(B, C, H, W)`` in float32 (float64 kept).

    The mask ``max(|fy|, |fx|) < c`` is separable, so ``L_c = U_c U_c^T x V_c V_c^T`` with the
    real Fourier bases of the kept frequencies: small GEMMs on the shared coefficients
    ``U^T x V`` instead of a 2-D FFT and one inverse FFT per cutoff (same result, several
    times faster on CPU). Runs outside autocast whatever the input dtype.
    """
    dtype = real_dtype(x.dtype)
    rows, cols, ranks = _low_pass_bases(*x.shape[-2:], cutoffs, x.device, dtype)
    with torch.autocast(x.device.type, enabled=False):
        coeff = torch.matmul(rows.t(), torch.matmul(x.to(dtype), cols))            # (B, C, r_H, r_W)
        # (U_a C) V_b^T: the large product is then one GEMM over all rows, 15-45% faster than U_a (C V_b^T)
        return [torch.matmul(torch.matmul(rows[:, :a], coeff[..., :a, :b]), cols[:, :b].t()) for a, b in ranks]


def low_pass_stack(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> Tensor:
    """:func:`low_pass_list` stacked, ``(B, J, C, H, W)``."""
    return torch.stack(low_pass_list(x, cutoffs), dim=1)


def frequency_bands(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> list[Tensor]:
    """Octave bands of ``x``, highest first: ``[x - L_1, L_1 - L_2, ..., L_J]`` (they sum to ``x``)."""
    lows = low_pass_list(x, cutoffs)
    previous = [x.to(lows[0].dtype), *lows[:-1]]
    return [hi - lo for hi, lo in zip(previous, lows, strict=True)] + [lows[-1]]


def _flipped_taps(weight: Tensor) -> Tensor:
    """The ``(M, I, 3, 3)`` gain conv weight as ``(M*9, I)``, taps flipped: rows in ``F.fold``'s column order."""
    return weight.flip(2, 3).permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def _gain_logits(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``conv2d(x, weight, bias, padding=1)`` for FBM's few (1-4) gain maps: one GEMM, then ``F.fold``.

    oneDNN runs a 3x3 convolution with so few output channels far below its GEMM speed. The ``(M*9, I)``
    GEMM over the map gives every tap's contribution, and ``fold`` (col2im) sums the shifted taps:
    faster at ResNet-50's shapes. Its backward is the same two steps transposed (``unfold``).
    """
    taps = torch.matmul(_flipped_taps(weight).to(x.dtype), x.flatten(2))        # (B, M*9, H*W)
    logits = F.fold(taps, tuple(x.shape[-2:]), 3, padding=1)
    return logits + bias.to(logits.dtype)[:, None, None]


def _bands_and_gains(x: Tensor, weight: Tensor, bias: Tensor, cutoffs: Sequence[float]) -> tuple[list[Tensor], Tensor]:
    """The low-passed copies ``L_1..L_J`` and the gain maps ``2 * sigmoid(conv3x3(x))``, in FFT precision."""
    lows = low_pass_list(x, cutoffs)
    gains = 2.0 * torch.sigmoid(_gain_logits(x, weight, bias)).to(lows[0].dtype)
    return lows, gains


def _band_coefficients(gains: Tensor, num_lows: int) -> list[Tensor]:
    """``c_j`` in ``x' = A_0 x + sum_j c_j L_j``: ``sum_j A_j (L_{j-1} - L_j) + A_J L_J`` regrouped by low-pass copy."""
    ones = 1.0 if gains.shape[1] == num_lows else gains[:, num_lows:]   # A_J: a gain map with lowfreq_att, else 1
    return [(gains[:, j + 1:j + 2] if j + 1 < num_lows else ones) - gains[:, j:j + 1] for j in range(num_lows)]


def _modulated(x: Tensor, lows: list[Tensor], gains: Tensor) -> Tensor:
    # fused multiply-adds into one fresh buffer: one pass per band over the map instead of three
    out = gains[:, :1] * x.to(lows[0].dtype)
    for low, coefficient in zip(lows, _band_coefficients(gains, len(lows)), strict=True):
        out.addcmul_(coefficient, low)
    return out.to(x.dtype)


class _BandModulation(torch.autograd.Function):
    """FBM with a hand-written backward that keeps only ``x``: the bands and gains are recomputed there.

    Autograd through the plain ops would keep the ``J`` low-passed copies and the gain maps, several
    input-sized tensors per layer. The recomputation runs in the forward's autocast state, so it gives
    the forward's values.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, cutoffs: tuple[float, ...]) -> Tensor:
        ctx.autocast = autocast_state(x.device.type)
        ctx.cutoffs = cutoffs
        ctx.save_for_backward(x, weight, bias)
        return _modulated(x, *_bands_and_gains(x, weight, bias, cutoffs))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, bias = ctx.saved_tensors
        with torch.no_grad(), autocast_as(ctx.autocast):
            lows, gains = _bands_and_gains(x, weight, bias, ctx.cutoffs)
        dtype = lows[0].dtype
        grad = grad.to(dtype)
        xf = x.to(dtype)
        scratch = torch.empty_like(grad)    # every product with the gradient below: fresh pages once, not 7 times
        # d A_j = sum_c dx' (L_{j-1} - L_j), with L_0 = x
        sums = []                           # (B, H, W) each; a loop, not a comprehension capturing `scratch`:
        for band in (xf, *lows):            # dynamo cannot trace the `del` of a closure's variable
            sums.append(torch.mul(grad, band, out=scratch).sum(1))
        num_lows = len(lows)
        del lows
        d_gains = torch.stack([sums[j] - sums[j + 1] if j < num_lows else sums[j]
                               for j in range(gains.shape[1])], dim=1)
        # d x' / d x through the bands: A_0 dx' + sum_j L_j^T (c_j dx'), each L_j a symmetric projection
        # U_a U_a^T . V_b V_b^T, so the c_j dx' are projected onto the shared coefficients and expanded once
        d_x = None
        if ctx.needs_input_grad[0]:
            d_x = gains[:, :1] * grad
            rows, cols, ranks = _low_pass_bases(*x.shape[-2:], ctx.cutoffs, x.device, dtype)
            d_coeff = None
            for (a, b), coefficient in zip(ranks, _band_coefficients(gains, num_lows), strict=True):
                projected = torch.matmul(torch.mul(coefficient, grad, out=scratch), cols[:, :b])
                part = torch.matmul(rows[:, :a].t(), projected)
                if d_coeff is None:
                    d_coeff = part      # the first cutoff is the largest: its rank is the coefficients' size
                else:
                    d_coeff[..., :a, :b] += part
            d_x.add_(torch.matmul(torch.matmul(rows, d_coeff), cols.t()))
        del scratch
        d_logits = d_gains.mul_(gains).mul_(1.0 - 0.5 * gains)       # A = 2 sigmoid(z): dA/dz = A (1 - A / 2)
        # the gain conv's backward, transposed: unfold, then GEMMs with the taps
        columns = F.unfold(d_logits, 3, padding=1)                                  # (B, M*9, H*W)
        if d_x is not None:
            d_x = d_x.add_(torch.matmul(_flipped_taps(weight).to(dtype).t(), columns).view_as(d_x)).to(x.dtype)
        d_taps = torch.matmul(columns, xf.flatten(2).transpose(1, 2)).sum(0)         # (M*9, I)
        d_weight = d_taps.view(weight.shape[0], 3, 3, -1).permute(0, 3, 1, 2).flip(2, 3)
        d_bias = d_logits.sum((0, 2, 3))
        return d_x, d_weight.to(weight.dtype), d_bias.to(bias.dtype), None


def fbm(x: Tensor, weight: Tensor, bias: Tensor, cutoffs: tuple[float, ...]) -> Tensor:
    """FBM's output; under autograd its backward keeps only ``x`` (:class:`_BandModulation`)."""
    if torch.is_grad_enabled():
        return _BandModulation.apply(x, weight, bias, cutoffs)
    return fbm_no_grad(x, weight, bias, cutoffs)


def fbm_no_grad(x: Tensor, weight: Tensor, bias: Tensor, cutoffs: Sequence[float]) -> Tensor:
    """FBM's output outside autograd's graph."""
    return _modulated(x, *_bands_and_gains(x, weight, bias, cutoffs))
