"""Fourier Disjoint Weight (docs/method.md, section 1): the spectrum parameter and its frequency groups.

The kernel of an ``(O, I, k, k)`` convolution is stored as the 2-D rFFT of its "M layout"
``W.permute(0, 2, 1, 3).reshape(O*k, I*k)`` (rows: out channel x kernel row, columns: in channel
x kernel column). These are the definitions; ``_ops/kernel_builder.py`` builds the per-sample
kernels fast, in the same layout.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "real_dtype",
    "compute_dtype",
    "spectral_scale",
    "self_conjugate_columns",
    "conjugate_pairs",
    "hermitian_part",
    "hermitian_part_",
    "frequency_group_ids",
    "weight_to_dft",
    "dft_to_weight",
]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype FFT work runs in: float32 for half/bfloat16 (and under autocast), float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype a GEMM or convolution on ``x`` runs in: autocast's where it is on, else ``x``'s own.

    TorchScript has no per-device autocast query; a scripted layer computes in ``x``'s dtype.
    """
    if torch.jit.is_scripting():
        return x.dtype
    else:
        device = x.device.type
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def spectral_scale(out_channels: int, in_channels: int) -> int:
    """The official divisor ``s = min(O, I) // 2`` (clamped to 1 so 1-channel layers stay finite)."""
    return max(min(out_channels, in_channels) // 2, 1)


def _signed_index(n: int) -> Tensor:
    """``fftfreq(n, d=1/n)`` as exact integers: 0, 1, ..., -1."""
    idx = torch.arange(n, dtype=torch.int64, device="cpu")
    return torch.where(idx < (n + 1) // 2, idx, idx - n)


def self_conjugate_columns(cols: int) -> list[int]:
    """The rFFT columns whose bins ``(u, v)`` and ``(-u, v)`` hold one real frequency: ``v = 0``, and
    ``v = cols/2`` when ``cols`` is even."""
    columns = [0]
    if cols % 2 == 0:
        columns.append(cols // 2)
    return columns


def conjugate_pairs(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """Flat indices ``(a, b)`` of the bins ``(u, v)`` and ``(-u, v)``, ``u > 0``, of the self-conjugate columns."""
    half = cols // 2 + 1
    u = torch.arange(1, (rows + 1) // 2, dtype=torch.int64)
    first = torch.cat([u * half + v for v in self_conjugate_columns(cols)])
    second = torch.cat([(rows - u) * half + v for v in self_conjugate_columns(cols)])
    return first, second


def hermitian_part_(spectrum: Tensor, cols: int) -> Tensor:
    """The Hermitian part ``H`` (docs/method.md, section 1), in place on a ``(..., rows, cols//2+1)`` half spectrum.

    On the self-conjugate columns ``S(u, v) <- (S(u, v) + conj(S(-u, v))) / 2``; other columns are
    unchanged. ``irfft2`` of the result is what torch's CPU ``irfft2`` makes of any half spectrum;
    computing it explicitly makes the kernel the same on every FFT backend (cuFFT is free to treat a
    non-Hermitian column otherwise).
    """
    for v in self_conjugate_columns(cols):
        column = spectrum[..., v]
        mirrored = column.flip(-1).roll(1, dims=-1)             # S(-u mod rows, v)
        spectrum[..., v] = (column + mirrored.conj()) / 2
    return spectrum


def hermitian_part(spectrum: Tensor, cols: int) -> Tensor:
    """:func:`hermitian_part_` on a copy (differentiable)."""
    return hermitian_part_(spectrum.clone(), cols)


def frequency_group_ids(rows: int, cols: int, num_groups: int) -> Tensor:
    """Group id of every rFFT bin of a ``rows x cols`` matrix, ``(rows, cols // 2 + 1)`` (docs/method.md, section 1).

    Bins are ordered by radius with the exact integer key ``(u * cols)^2 + (v * rows)^2`` and a
    stable sort over the row-major index, then cut into ``num_groups`` near-equal contiguous
    chunks (``torch.tensor_split`` semantics): the authors' groups, bin for bin, identical on
    every device. A conjugate pair of the self-conjugate columns may straddle a chunk border, as in
    the authors' code (their checkpoints were trained so); the kernel is then built from the
    Hermitian part of the spectrum (:func:`hermitian_part_`).
    """
    return _cached_group_ids(rows, cols, num_groups).clone()


def _group_ids(rows: int, cols: int, num_groups: int) -> Tensor:
    half = cols // 2 + 1
    num_bins = rows * half
    if num_groups < 1:
        raise ValueError(f"kernel_num must be >= 1, got {num_groups}")
    if num_groups > num_bins:
        raise ValueError(
            f"kernel_num={num_groups} is larger than the {num_bins} frequency bins of a "
            f"{rows}x{cols} FDW spectrum: use kernel_num <= {num_bins}"
        )
    cpu = dict(dtype=torch.int64, device="cpu")   # also inside a `with torch.device("meta")` model build
    u = _signed_index(rows) * cols
    v = torch.arange(half, **cpu) * rows
    key = (u[:, None] ** 2 + v[None, :] ** 2).flatten()
    order = torch.argsort(key, stable=True)
    base, extra = divmod(num_bins, num_groups)
    sizes = torch.full((num_groups,), base, **cpu)
    sizes[:extra] += 1
    sorted_ids = torch.repeat_interleave(torch.arange(num_groups, **cpu), sizes)
    ids = torch.empty(num_bins, **cpu)
    ids[order] = sorted_ids
    return ids.view(rows, half)


@functools.lru_cache(maxsize=256)
def _cached_group_ids(rows: int, cols: int, num_groups: int) -> Tensor:
    # The argsort over every bin was over half of a ResNet-50 build; a network repeats few shapes.
    with torch.inference_mode(False), torch.no_grad():
        return _group_ids(rows, cols, num_groups)


def weight_to_dft(weight: Tensor) -> Tensor:
    """Spatial kernel ``(O, I, k, k)`` (or Linear ``(O, I)``) to the official ``dft_weight``.

    Returns ``(1, O*k, I*k//2 + 1, 2)`` in float32: ``rfft2(M) / s`` as real/imag pairs.
    """
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"expected a square (O, I, k, k) or (O, I) weight, got shape {tuple(weight.shape)}")
    out_ch, in_ch, k, _ = weight.shape
    m = weight.detach().to(real_dtype(weight.dtype)).permute(0, 2, 1, 3).reshape(out_ch * k, in_ch * k)
    spectrum = torch.fft.rfft2(m) / spectral_scale(out_ch, in_ch)
    return torch.view_as_real(spectrum).unsqueeze(0).contiguous()


def dft_to_weight(dft_weight: Tensor, out_channels: int, in_channels: int, kernel_size: int) -> Tensor:
    """Inverse of :func:`weight_to_dft`: the static kernel ``(O, I, k, k)`` in float32."""
    k = kernel_size
    expected = (1, out_channels * k, in_channels * k // 2 + 1, 2)
    if tuple(dft_weight.shape) != expected:
        raise ValueError(
            f"dft_weight has shape {tuple(dft_weight.shape)}, expected {expected} for a "
            f"{out_channels}x{in_channels} k={k} layer"
        )
    spectrum = torch.view_as_complex(dft_weight[0].to(real_dtype(dft_weight.dtype)).contiguous())
    spectrum = hermitian_part_(spectrum * spectral_scale(out_channels, in_channels), in_channels * k)
    m = torch.fft.irfft2(spectrum, s=(out_channels * k, in_channels * k))
    return m.view(out_channels, k, in_channels, k).permute(0, 2, 1, 3).contiguous()
