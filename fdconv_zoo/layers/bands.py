"""The band edges of FBM (docs/method.md, section 3): which frequencies each low-pass keeps, decided exactly."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import Tensor

__all__ = ["DEFAULT_CUTOFFS", "cutoff_edge_is_kept", "cutoff_rule", "exact_low_pass_masks", "kept_count",
           "kept_frequencies", "low_pass_masks"]

DEFAULT_CUTOFFS = (0.25, 0.125, 0.0625)

_MASK_CACHE: dict[tuple, Tensor] = {}


def low_pass_masks(height: int, width: int, cutoffs: Sequence[float], device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """The low-pass masks of docs/method.md (section 3) on the rFFT grid of the actual size, ``(len(c), H, W//2+1)``.

    ``m_c(u, v) = 1`` where both ``|fy[u]|`` and ``|fx[v]|`` pass :func:`kept_frequencies`'s edge rule.
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
    rules = [cutoff_rule(c) for c in cutoffs]
    return exact_low_pass_masks(height, width, rules, torch.device("cpu")).to(device=device, dtype=dtype)


def exact_low_pass_masks(height: int, width: int, rules: list[tuple[int, int, bool]], device: torch.device) -> Tensor:
    """The masks of :func:`low_pass_masks` from each cutoff's :func:`cutoff_rule`, uncached, boolean.

    ``|fftfreq(n) * n|`` is ``min(u, n - u)`` at index ``u``: the row and column frequencies as exact integers.
    """
    rows = torch.arange(height, device=device)
    fy = torch.minimum(rows, height - rows)
    fx = torch.arange(width // 2 + 1, device=device)
    masks = [(fy[:, None] < kept_count(height, r[0], r[1], r[2])) & (fx[None, :] < kept_count(width, r[0], r[1], r[2]))
             for r in rules]
    return torch.stack(masks)


def cutoff_edge_is_kept(cutoff: float) -> bool:
    """Whether a frequency exactly on ``cutoff`` passes the low-pass (docs/method.md, section 3).

    The authors' code keeps ``|f| < c + 1e-8`` in float32, where ``0.25 + 1e-8`` rounds back to ``0.25``
    but ``0.125 + 1e-8`` and ``0.0625 + 1e-8`` do not: the edge is dropped at 1/4, kept at 1/8 and 1/16.
    """
    def float32(value: float) -> float:
        return struct.unpack("f", struct.pack("f", value))[0]

    return float32(cutoff + 1e-8) > float32(cutoff)


@torch.compiler.assume_constant_result
def cutoff_rule(cutoff: float) -> tuple[int, int, bool]:
    """``cutoff`` as an exact ratio ``num / den`` and its edge rule: constants, also while dynamo traces."""
    num, den = Fraction(cutoff).as_integer_ratio()
    return num, den, cutoff_edge_is_kept(cutoff)


def kept_frequencies(size: int, cutoff: float) -> int:
    """How many of the frequencies ``u / size``, ``u = 0 .. (size-1)//2``, pass the low-pass ``cutoff``.

    Decided in exact integer arithmetic against the cutoff, with the edge rule of
    :func:`cutoff_edge_is_kept`, not with float ``fftfreq`` values, which round across the edge at
    some sizes (``u = size/4`` falls just below 1/4 in float32 at 164, 188, 220, ...).
    """
    return kept_count(size, *cutoff_rule(cutoff))


def kept_count(size: int, num: int, den: int, edge_kept: bool) -> int:
    """:func:`kept_frequencies` for the cutoff ``num / den`` with its edge rule, in integers only."""
    scaled = num * size
    below = -(-scaled // den)                             # u / size < num / den
    on_edge = edge_kept and scaled % den == 0             # u = size * num / den is an integer frequency
    return min(below + int(on_edge), (size + 1) // 2)
