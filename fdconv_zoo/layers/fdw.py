"""Fourier Disjoint Weight (spec section 1): the spectrum parameter and its frequency groups.

The kernel of an ``(O, I, k, k)`` convolution is stored as the 2-D rFFT of its "M layout"
``W.permute(0, 2, 1, 3).reshape(O*k, I*k)`` (rows: out channel x kernel row, columns: in channel
x kernel column). Every function here works in that layout, which is also the layout the
per-sample kernels are built in, so no permutes of kernel-sized tensors are ever needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "real_dtype",
    "spectral_scale",
    "conjugate_pairs",
    "frequency_group_ids",
    "weight_to_dft",
    "dft_to_weight",
    "synthesize_kernels",
]


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype FFT work runs in: float32 for half/bfloat16 (and under autocast), float64 kept."""
    return torch.promote_types(dtype, torch.float32)


def spectral_scale(out_channels: int, in_channels: int) -> int:
    """The official divisor ``s = min(O, I) // 2`` (clamped to 1 so 1-channel layers stay finite)."""
    return max(min(out_channels, in_channels) // 2, 1)


def _signed_index(n: int) -> Tensor:
    """``fftfreq(n, d=1/n)`` as exact integers: 0, 1, ..., -1."""
    idx = torch.arange(n, dtype=torch.int64)
    return torch.where(idx < (n + 1) // 2, idx, idx - n)


def conjugate_pairs(rows: int, cols: int) -> tuple[Tensor, Tensor]:
    """Bins of the rFFT grid that hold the same real frequency: ``(u, v)`` and ``(-u, v)`` on the
    self-conjugate columns (``v = 0``, and ``v = cols/2`` for even ``cols``). Returns flat indices ``(a, b)``."""
    half = cols // 2 + 1
    columns = [0] + ([cols // 2] if cols % 2 == 0 and cols > 1 else [])
    u = torch.arange(1, (rows + 1) // 2, dtype=torch.int64)
    first = torch.cat([u * half + v for v in columns])
    second = torch.cat([(rows - u) * half + v for v in columns])
    return first, second


def frequency_group_ids(rows: int, cols: int, num_groups: int) -> Tensor:
    """Group id of every rFFT bin of a ``rows x cols`` matrix, shape ``(rows, cols // 2 + 1)``.

    Bins are ordered by radius with the exact integer key ``(u * cols)^2 + (v * rows)^2`` and a
    stable sort over the row-major index, then cut into ``num_groups`` near-equal contiguous
    chunks (``torch.tensor_split`` semantics), so the grouping is identical on every device.

    One refinement keeps the spec's disjointness promise (section 1.7): on the self-conjugate
    columns, ``(u, v)`` and ``(-u, v)`` have equal radius and are one real frequency for
    ``irfft2``; where a chunk border falls between them (44 times in ResNet-50), the later bin
    joins its partner's group, so no two groups ever share a frequency.
    """
    half = cols // 2 + 1
    num_bins = rows * half
    if num_groups < 1:
        raise ValueError(f"kernel_num must be >= 1, got {num_groups}")
    if num_groups > num_bins:
        raise ValueError(
            f"kernel_num={num_groups} is larger than the {num_bins} frequency bins of a "
            f"{rows}x{cols} FDW spectrum: use kernel_num <= {num_bins}"
        )
    u = _signed_index(rows) * cols
    v = torch.arange(half, dtype=torch.int64) * rows
    key = (u[:, None] ** 2 + v[None, :] ** 2).flatten()
    order = torch.argsort(key, stable=True)
    base, extra = divmod(num_bins, num_groups)
    sizes = torch.full((num_groups,), base, dtype=torch.int64)
    sizes[:extra] += 1
    sorted_ids = torch.repeat_interleave(torch.arange(num_groups, dtype=torch.int64), sizes)
    ids = torch.empty(num_bins, dtype=torch.int64)
    ids[order] = sorted_ids
    first, second = conjugate_pairs(rows, cols)
    joined = torch.minimum(ids[first], ids[second])
    ids[first], ids[second] = joined, joined
    if torch.bincount(ids, minlength=num_groups).min() == 0:
        raise ValueError(
            f"kernel_num={num_groups} leaves a group of a {rows}x{cols} FDW spectrum empty once conjugate "
            f"frequencies are kept together (it has {num_bins - first.numel()} distinct real frequencies): "
            "use a smaller kernel_num"
        )
    return ids.view(rows, half)


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
    spectrum = spectrum * spectral_scale(out_channels, in_channels)
    m = torch.fft.irfft2(spectrum, s=(out_channels * k, in_channels * k))
    return m.view(out_channels, k, in_channels, k).permute(0, 2, 1, 3).contiguous()


def synthesize_kernels(dft_weight: Tensor, gains: Tensor | None, group_ids_t: Tensor, cols: int,
                       scale: float) -> Tensor:
    """Per-sample FDW kernels in M layout, ``(B, rows, cols)`` (``(1, ...)`` if static), at least float32.

    The spectrum is ``scale * G * P`` with gain map ``G = gains[:, group_ids]``, or ``G = 1``
    when ``gains`` is None (one static kernel); ``group_ids_t`` is :func:`frequency_group_ids`
    transposed, ``(cols//2+1, rows)``. The spectrum is built transposed so both 1-D inverse FFTs run along the
    contiguous axis (about 1.5x faster than ``irfft2`` on CPU for the large layers).
    """
    dtype = real_dtype(dft_weight.dtype if gains is None else torch.promote_types(dft_weight.dtype, gains.dtype))
    spectrum_t = torch.view_as_complex(dft_weight[0].to(dtype).contiguous()).t().contiguous()
    if gains is None:
        spectrum_t = (spectrum_t * scale).unsqueeze(0)
    else:
        half, rows = group_ids_t.shape
        gain_map_t = (gains.to(dtype) * scale).index_select(1, group_ids_t.view(-1)).view(-1, half, rows, 1)
        spectrum_t = torch.view_as_complex(torch.view_as_real(spectrum_t) * gain_map_t)
    rows_time = torch.fft.ifft(spectrum_t, dim=-1)
    return torch.fft.irfft(rows_time.transpose(-1, -2), n=cols, dim=-1)
