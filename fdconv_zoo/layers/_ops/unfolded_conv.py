"""Per-sample convolution as im2col + one batched GEMM, for layers whose kernel outweighs the feature map.

Autograd through ``unfold -> scale -> permute -> bmm`` keeps two copies of the ``k*k``-times-larger
input columns alive for backward (the unscaled ones for the scale's gradient, the permuted ones for
the kernel's). This Function keeps the input itself and rebuilds the columns in backward: one cheap
copy of a small late-layer map, for about ``2*k*k`` input maps less memory per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..fdw import compute_dtype
from .per_sample_gemm import tokens_times_kernel

__all__ = ["kernel_times_columns", "unfolded_conv"]

Pair = tuple[int, int]


def _columns(x: Tensor, k: int, stride: Pair, padding: Pair, dilation: Pair) -> Tensor:
    """``(B, k, I, k, L)``: unfolded input with the kernel row first, matching the kernel's M layout (o, p, i, q)."""
    batch, cin = x.shape[:2]
    cols = F.unfold(x, k, dilation, padding, stride).view(batch, cin, k, k, -1)  # (B, i, p, q, L)
    return cols.permute(0, 2, 1, 3, 4).contiguous()


def _scaled(cols: Tensor, in_scale: Tensor | None) -> Tensor:
    """Columns times the per-sample ``(B, I, k, k)`` input factor (channel x spatial), in place."""
    return cols if in_scale is None else cols.mul_(in_scale.permute(0, 2, 1, 3)[..., None])


def kernel_times_columns(kernel: Tensor, cols: Tensor, bias: Tensor | None, channels_last: bool) -> Tensor:
    """``kernel @ cols (+ bias)`` as ``(B, O, L)``; for channels_last computed as ``(B, L, O)`` (NHWC) and
    returned transposed, so the caller's memory format comes for free."""
    y = tokens_times_kernel(cols.transpose(1, 2), kernel, bias, channels_first=not channels_last)
    return y.transpose(1, 2) if channels_last else y


class _UnfoldedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, in_scale: Tensor | None, bias: Tensor | None, k: int,
                stride: Pair, padding: Pair, dilation: Pair, out_size: Pair, channels_last: bool) -> Tensor:
        dtype = compute_dtype(x)
        batch, y_len = x.shape[0], out_size[0] * out_size[1]
        with torch.autocast(x.device.type, enabled=False):
            scale = None if in_scale is None else in_scale.to(dtype)
            cols = _scaled(_columns(x.to(dtype), k, stride, padding, dilation), scale).view(batch, -1, y_len)
            weight = kernel.to(dtype)
            full = weight.expand(batch, -1, -1)
            bias_dtype = None if bias is None else bias.dtype
            bias = None if bias is None else bias.to(dtype)
            y = kernel_times_columns(full, cols, bias, channels_last)
        ctx.save_for_backward(x, weight, in_scale)
        ctx.meta = (k, stride, padding, dilation, x.shape[-2:], dtype, kernel.dtype, bias_dtype)
        return y.view(batch, -1, *out_size)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, in_scale = ctx.saved_tensors
        k, stride, padding, dilation, size, dtype, kernel_dtype, bias_dtype = ctx.meta
        need_x, need_kernel, need_scale, need_bias = ctx.needs_input_grad[:4]
        batch, cin = x.shape[:2]
        grad = grad.to(dtype).flatten(2)                                       # (B, O, L), any strides
        scale = None if in_scale is None else in_scale.to(dtype)
        grads: list[Tensor | None] = [None] * 10
        cols = _columns(x.to(dtype), k, stride, padding, dilation) if need_kernel or need_scale else None
        if need_x or need_scale:
            full = weight.expand(batch, -1, -1)
            d_cols = torch.bmm(full.transpose(1, 2), grad).view(batch, k, cin, k, -1)  # (B, p, i, q, L)
            if need_scale:
                grads[2] = torch.einsum("bpiql,bpiql->bipq", d_cols, cols).to(in_scale.dtype)
            if need_x:
                d_cols = _scaled(d_cols, scale).permute(0, 2, 1, 3, 4).reshape(batch, cin * k * k, -1)
                grads[0] = F.fold(d_cols, size, k, dilation, padding, stride).to(x.dtype)
            del d_cols
        if need_kernel:
            d_kernel = torch.bmm(grad, _scaled(cols, scale).view(batch, k * cin * k, -1).transpose(1, 2))
            grads[1] = (d_kernel if weight.shape[0] == batch else d_kernel.sum(0, keepdim=True)).to(kernel_dtype)
        if need_bias and bias_dtype is not None:
            grads[3] = grad.sum((0, 2)).to(bias_dtype)
        return tuple(grads)


def unfolded_conv(x: Tensor, kernel: Tensor, in_scale: Tensor | None, bias: Tensor | None, kernel_size: int,
                  stride: Pair, padding: Pair, dilation: Pair, out_size: Pair, channels_last: bool = False) -> Tensor:
    """``y_b = conv2d(x_b * in_scale_b, kernel_b) + bias`` for every sample, ``(B, O, *out_size)``.

    ``kernel`` is ``(B or 1, O, k*I*k)`` with columns in the FDW M order ``(p, i, q)``; ``in_scale`` an
    optional ``(B, I, k, k)`` factor on the input taps; ``padding`` symmetric ``(top, left)``. With
    ``channels_last`` the result is a channels-last view, as from the GEMM.
    """
    return _UnfoldedConv.apply(x, kernel, in_scale, bias, kernel_size, tuple(stride), tuple(padding),
                               tuple(dilation), tuple(out_size), channels_last)
