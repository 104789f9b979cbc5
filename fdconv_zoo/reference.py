"""A straightforward formulation of FDConv, shaped like the authors' code, for checking and benchmarking.

It reads the parameters of an :class:`FDConv2d` / :class:`FDLinear` but recomputes everything
the plain way: groups from a Python sort of ``(key, index)`` pairs, a Python loop over groups
with index-put into the spectrum, one ``irfft2`` of its Hermitian part, the local modulation
materialised at ``(B, O, I, k, k)`` and multiplied in with every other factor, FBM with one
inverse FFT and one conv per band, and one convolution per sample. Slow on purpose. It shares
with the layers only the two definitions the spec states as rules (the Hermitian part ``H`` and
the low-pass edge rule), each checked against the spec on its own in the tests.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from .layers.fbm import kept_frequencies
from .layers.fd_base import FDKernelBase
from .layers.fdconv import FDConv2d
from .layers.fdlinear import FDLinear
from .layers.fdw import hermitian_part

__all__ = ["reference_group_members", "reference_forward"]


@functools.lru_cache(maxsize=64)
def reference_group_members(rows: int, cols: int, num_groups: int) -> list[tuple[Tensor, Tensor]]:
    """Row/column indices of each frequency group, from a plain Python sort (spec 1.3-1.5).

    Cached (treat the result as read-only): the Python sort takes seconds on a 512-channel layer and
    benchmarks call the reference repeatedly."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd when first built in inference mode
        return _group_members(rows, cols, num_groups)


def _group_members(rows: int, cols: int, num_groups: int) -> list[tuple[Tensor, Tensor]]:
    half = cols // 2 + 1
    entries = []
    for u in range(rows):
        signed = u if u < (rows + 1) // 2 else u - rows
        for v in range(half):
            entries.append(((signed * cols) ** 2 + (v * rows) ** 2, u * half + v))
    entries.sort()  # by key, ties by row-major flat index: a stable sort
    total = len(entries)
    base, extra = divmod(total, num_groups)
    group_of, start = {}, 0
    for g in range(num_groups):
        size = base + (1 if g < extra else 0)
        for _, flat in entries[start:start + size]:
            group_of[flat] = g
        start += size
    groups = []
    for g in range(num_groups):
        flat = torch.tensor(sorted(f for f, h in group_of.items() if h == g), dtype=torch.int64)
        groups.append((flat // half, flat % half))
    return groups


def _attention(layer: FDKernelBase, pooled: Tensor):
    ksm = layer.KSM_Global
    h = F.conv2d(pooled[:, :, None, None], ksm.fc.weight)
    if layer.training and pooled.shape[0] > 1:
        h = ksm.bn(h)
    else:
        bn = ksm.bn
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    h = ksm.relu(h)

    def gate(head):
        return 2 * torch.sigmoid(F.conv2d(h, head.weight, head.bias).flatten(1) / ksm.temperature)

    channel, filt = gate(ksm.channel_fc), gate(ksm.filter_fc)
    spatial = gate(ksm.spatial_fc) if ksm.spatial_fc is not None else None
    kernel_att = gate(ksm.kernel_fc) / layer.kernel_num if ksm.kernel_fc is not None else None
    return channel, filt, spatial, kernel_att


def _reference_kernels(layer: FDKernelBase, pooled: Tensor) -> Tensor:
    """Per-sample kernels ``(B, O, I, k, k)`` with every KSM factor multiplied in."""
    batch = pooled.shape[0]
    cout, cin, k, n = layer.out_channels, layer.in_channels, layer.KSM_Local.kernel_size, layer.kernel_num
    channel, filt, spatial, kernel_att = _attention(layer, pooled)

    local = layer.KSM_Local
    z = local.norm(pooled)[:, None, :]                                  # (B, 1, I)
    logits = F.conv1d(z, local.conv.weight, padding=local.local_size // 2)  # (B, O*k*k, I)
    lam = 2 * torch.sigmoid(logits).view(batch, cout, k, k, cin).permute(0, 1, 4, 2, 3)

    rows, cols = cout * k, cin * k
    s = max(min(cout, cin) // 2, 1)
    param = torch.view_as_complex(layer.dft_weight[0].contiguous())
    spectrum = torch.zeros(batch, rows, cols // 2 + 1, dtype=param.dtype)
    if kernel_att is None:
        spectrum = spectrum + param * s
    else:
        for g, (u, v) in enumerate(reference_group_members(rows, cols, n)):
            spectrum[:, u, v] = param[u, v] * (n * s) * kernel_att[:, g:g + 1]
    weight = torch.fft.irfft2(hermitian_part(spectrum, cols), s=(rows, cols))
    weight = weight.view(batch, cout, k, cin, k).permute(0, 1, 3, 2, 4)

    kernel = weight * lam * channel[:, None, :, None, None] * filt[:, :, None, None, None]
    if spatial is not None:
        kernel = kernel * spatial.view(batch, 1, 1, k, k)
    return kernel


def _reference_fbm(fbm, x: Tensor) -> Tensor:
    height, width = x.shape[-2:]
    fy = torch.fft.fftfreq(height, d=1.0 / height).abs()[:, None]    # |u| as exact integers
    fx = torch.arange(width // 2 + 1)[None, :]
    spectrum = torch.fft.rfft2(x, norm="ortho")
    lows = [x]
    for c in fbm.cutoffs:
        mask = ((fy < kept_frequencies(height, c)) & (fx < kept_frequencies(width, c))).to(x.dtype)
        lows.append(torch.fft.irfft2(spectrum * mask, s=(height, width), norm="ortho"))
    out = lows[-1]
    for j, conv in enumerate(fbm.freq_weight_conv_list):
        gain = 2 * torch.sigmoid(F.conv2d(x, conv.weight, conv.bias, padding=1))
        band = lows[j] - lows[j + 1] if j < len(fbm.cutoffs) else lows[-1]
        out = out + gain * band - (band if j == len(fbm.cutoffs) else 0)
    return out


def reference_forward(layer: FDKernelBase, x: Tensor) -> Tensor:
    """The output of ``layer`` on ``x``, computed the straightforward way."""
    if isinstance(layer, FDLinear):
        tokens = x.reshape(x.shape[0], -1, layer.in_features)
        kernel = _reference_kernels(layer, tokens.mean(1))[..., 0, 0]          # (B, O, I)
        y = torch.stack([tokens[b] @ kernel[b].t() for b in range(x.shape[0])])
        if layer.bias is not None:
            y = y + layer.bias
        return y.view(*x.shape[:-1], layer.out_features)
    if not isinstance(layer, FDConv2d):
        raise TypeError(f"reference_forward takes FDConv2d or FDLinear, got {type(layer).__name__}")
    kernel = _reference_kernels(layer, x.mean(dim=(2, 3)))
    if layer.FBM is not None:
        x = _reference_fbm(layer.FBM, x)
    left, right, top, bottom = layer._pad
    x = F.pad(x, (left, right, top, bottom))
    outs = [F.conv2d(x[b:b + 1], kernel[b], layer.bias, layer.stride, 0, layer.dilation) for b in range(x.shape[0])]
    return torch.cat(outs)
