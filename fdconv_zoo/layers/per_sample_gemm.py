"""``tokens @ K^T`` with per-sample kernels: FDLinear's GEMM, and channels-last 1x1 FDConv's.

Autograd's ``bmm(tokens, K.transpose(1, 2))`` returns the kernel gradient as the transpose of a
contiguous ``(B, I, O)`` product, so it reaches the kernel builder with strides ``(O*I, 1, O)``.
Everything there runs along the kernel's last axis (the local-gate products, the per-sample
``rfft`` of the FDW adjoint), and on that layout each pass ran 3-7x slower. Here the kernel
gradient is ``grad^T @ tokens``, a GEMM that writes it contiguous in the kernel's own layout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["autocast_gemm_dtype", "tokens_times_kernel"]


def autocast_gemm_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would give a GEMM on ``x`` (``x``'s own outside autocast), for custom Functions
    that run their GEMMs with autocast off and cast by hand."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class _TokensTimesKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens: Tensor, kernel: Tensor, bias: Tensor | None) -> Tensor:
        dtype = autocast_gemm_dtype(tokens)
        with torch.autocast(tokens.device.type, enabled=False):
            tokens_c, kernel_c = tokens.to(dtype), kernel.to(dtype)
            kernel_t = kernel_c.expand(tokens.shape[0], -1, -1).transpose(1, 2)
            if bias is None:
                y = torch.bmm(tokens_c, kernel_t)
            else:
                y = torch.baddbmm(bias.to(dtype), tokens_c, kernel_t)
        ctx.save_for_backward(tokens_c, kernel_c)
        ctx.dtypes = (tokens.dtype, kernel.dtype, None if bias is None else bias.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        tokens, kernel = ctx.saved_tensors
        tokens_dtype, kernel_dtype, bias_dtype = ctx.dtypes
        grad = grad.to(tokens.dtype)
        d_tokens = d_kernel = d_bias = None
        if ctx.needs_input_grad[0]:
            d_tokens = torch.bmm(grad, kernel.expand(grad.shape[0], -1, -1)).to(tokens_dtype)
        if ctx.needs_input_grad[1]:
            d_kernel = torch.bmm(grad.transpose(1, 2), tokens)               # (B, O, I), contiguous
            if kernel.shape[0] != grad.shape[0]:
                d_kernel = d_kernel.sum(0, keepdim=True)
            d_kernel = d_kernel.to(kernel_dtype)
        if ctx.needs_input_grad[2]:
            d_bias = grad.sum((0, 1)).to(bias_dtype)
        return d_tokens, d_kernel, d_bias


def tokens_times_kernel(tokens: Tensor, kernel: Tensor, bias: Tensor | None = None) -> Tensor:
    """``tokens[b] @ kernel[b]^T (+ bias)``: ``(B, T, I)`` x ``(B or 1, O, I)`` -> ``(B, T, O)``.

    Same values as ``torch.baddbmm``/``torch.bmm`` (under autocast too: the GEMM runs in autocast's
    dtype); the kernel's gradient comes back contiguous (see the module docstring).
    """
    return _TokensTimesKernel.apply(tokens, kernel, bias)
