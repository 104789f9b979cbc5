"""``(tokens * in_scale) @ K^T * out_scale + bias`` with per-sample kernels: FDLinear's GEMM, and 1x1 FDConv's.

One Function, for two things plain autograd does badly here:

- **Memory.** KSM's channel (``in_scale``) and filter (``out_scale``) attentions go on the kernel
  or on the tokens, whichever is smaller. Autograd keeps the scaled product it feeds the GEMM: one
  more kernel or input per layer, up to two. This Function keeps only the unscaled tokens and kernel,
  which their producers keep anyway. Backward rebuilds the product, one pass over the smaller operand.
- **Layout.** ``bmm(tokens, K.transpose(1, 2))`` returns the kernel gradient as the transpose of a
  contiguous ``(B, I, O)`` product: strides ``(O*I, 1, O)``. Every later pass of the kernel builder
  runs along the kernel's last axis and ran several times slower on that layout. Here the kernel gradient is
  ``grad^T @ tokens``, which comes out contiguous in the kernel's own layout.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..fdw import compute_dtype

__all__ = ["tokens_times_kernel"]

#: With the output factor on the output, backward needs ``sum_t grad * (x @ K^T)`` for its gradient. Where
#: the kernel is more than this many times the output (``I > 2 T``), the GEMM's output is kept for that
#: (output-sized memory); otherwise it comes from the kernel gradient at the cost of two kernel-sized passes.
OUTPUT_KEPT_ABOVE = 2


def _per_output(values: Tensor, channels_first: bool) -> Tensor:
    """``(..., O)`` values broadcast over the tokens of a ``(B, O, T)`` or ``(B, T, O)`` output."""
    return values.unsqueeze(-1) if channels_first else values.unsqueeze(-2)


def _scaled_kernel(kernel: Tensor, in_scale: Tensor | None, out_scale: Tensor | None) -> Tensor:
    """``kernel[b] * out_scale[b][:, None] * in_scale[b][None, :]`` (a new tensor only if a factor is given)."""
    if in_scale is not None:
        kernel = kernel * in_scale[:, None, :]
    if out_scale is not None:
        kernel = kernel * out_scale[:, :, None]
    return kernel


def _gemm(operand: Tensor, weight: Tensor, bias: Tensor | None, channels_first: bool) -> Tensor:
    """``operand[b] @ weight[b]^T (+ bias)``, as ``(B, O, T)`` if ``channels_first`` else ``(B, T, O)``."""
    weight = weight.expand(operand.shape[0], -1, -1)
    if channels_first:
        a, b = weight, operand.transpose(1, 2)
    else:
        a, b = operand, weight.transpose(1, 2)
    return torch.bmm(a, b) if bias is None else torch.baddbmm(_per_output(bias, channels_first), a, b)


class _ScaledKernelGemm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens: Tensor, kernel: Tensor, bias: Tensor | None, in_scale: Tensor | None,
                out_scale: Tensor | None, channels_first: bool) -> Tensor:
        dtype = compute_dtype(tokens)
        count, (out_features, in_features) = tokens.shape[1], kernel.shape[1:]
        in_on_kernel = in_scale is not None and out_features < count    # kernel (O x I) smaller than tokens (T x I)
        out_on_kernel = out_scale is not None and in_features < count    # kernel smaller than the output (T x O)
        scale_output = out_scale is not None and not out_on_kernel
        # the output factor's gradient: from the kept GEMM output, or from the kernel's gradient (see backward)
        keep_output = scale_output and in_features > OUTPUT_KEPT_ABOVE * count
        with torch.autocast(tokens.device.type, enabled=False):
            operand = tokens if in_scale is None or in_on_kernel else tokens * in_scale[:, None, :]
            weight = _scaled_kernel(kernel, in_scale if in_on_kernel else None, out_scale if out_on_kernel else None)
            fused_bias = None if bias is None or scale_output else bias.to(dtype)
            y = _gemm(operand.to(dtype), weight.to(dtype), fused_bias, channels_first)
            unscaled = y if keep_output else None
            if scale_output:
                out = _per_output(out_scale.to(dtype), channels_first)
                y = y * out if keep_output else y.mul_(out)
                if bias is not None:
                    y.add_(_per_output(bias.to(dtype), channels_first))
        ctx.save_for_backward(tokens, kernel, in_scale, out_scale, unscaled)
        ctx.meta = (dtype, in_on_kernel, out_on_kernel, scale_output, channels_first,
                    None if bias is None else bias.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        tokens, kernel, in_scale, out_scale, unscaled = ctx.saved_tensors
        dtype, in_on_kernel, out_on_kernel, scale_output, channels_first, bias_dtype = ctx.meta
        need_tokens, need_kernel, need_bias, need_in, need_out = ctx.needs_input_grad[:5]
        batch = tokens.shape[0]
        token_axis = -1 if channels_first else -2
        grads: list[Tensor | None] = [None] * 6
        grad = grad.to(dtype)
        if need_bias:
            grads[2] = grad.sum((0, token_axis)).to(bias_dtype)
        raw_grad = grad
        if scale_output:            # out_scale went on the output
            if need_out and unscaled is not None:
                grads[4] = (grad * unscaled).sum(token_axis, dtype=out_scale.dtype)
            grad = grad * _per_output(out_scale.to(dtype), channels_first)
        in_on_tokens = in_scale is not None and not in_on_kernel
        kernel_in = in_scale if in_on_kernel else None
        # scaling the output equals scaling the kernel's rows: without the kept output, the kernel-side
        # gradients below treat out_scale as a kernel factor and give its gradient too
        out_as_kernel_factor = out_on_kernel or (scale_output and unscaled is None)
        kernel_out = out_scale if out_as_kernel_factor else None

        if need_tokens or (need_in and in_on_tokens):
            weight = _scaled_kernel(kernel, kernel_in, out_scale if out_on_kernel else None)
            weight = weight.to(dtype).expand(batch, -1, -1)
            if channels_first:   # in the tokens' own (transposed) layout
                d_operand = torch.bmm(weight.transpose(1, 2), grad).transpose(1, 2)
            else:
                d_operand = torch.bmm(grad, weight)
            del weight
            if in_on_tokens:
                d_operand = d_operand.to(torch.promote_types(tokens.dtype, in_scale.dtype))
                if need_in:
                    grads[3] = (d_operand * tokens).sum(1).to(in_scale.dtype)
                d_operand = d_operand * in_scale[:, None, :]
            grads[0] = d_operand.to(tokens.dtype)
            del d_operand

        factor_on_kernel_grads = (need_in and kernel_in is not None) or (need_out and kernel_out is not None)
        if need_kernel or factor_on_kernel_grads:
            operand = (tokens * in_scale[:, None, :] if in_on_tokens else tokens).to(dtype)
            kernel_grad = raw_grad if out_as_kernel_factor else grad
            grad_t = kernel_grad if channels_first else kernel_grad.transpose(1, 2)     # (B, O, T)
            d_weight = torch.bmm(grad_t, operand).to(kernel.dtype)                      # (B, O, I), contiguous
            del operand
            if factor_on_kernel_grads:   # d weight = d kernel * out (x) in; each factor's gradient contracts the rest
                work = kernel.dtype   # a half-precision kernel with float32 factors: contract in float32
                for factor in (kernel_in, kernel_out):
                    work = work if factor is None else torch.promote_types(work, factor.dtype)
                products = d_weight.to(work) * kernel
                if need_out and kernel_out is not None:   # sum_i products[b, o, i] * in[b, i]
                    grads[4] = (products.sum(-1) if kernel_in is None
                                else (products @ kernel_in.to(work)[:, :, None])[..., 0])
                if need_in and kernel_in is not None:     # sum_o out[b, o] * products[b, o, i]
                    grads[3] = (products.sum(1) if kernel_out is None
                                else (kernel_out.to(work)[:, None, :] @ products)[:, 0])
                del products
            if need_kernel:
                if kernel_out is not None:
                    d_weight.mul_(kernel_out[:, :, None])
                if kernel_in is not None:
                    d_weight.mul_(kernel_in[:, None, :])
                grads[1] = d_weight if kernel.shape[0] == batch else d_weight.sum(0, keepdim=True)
        return tuple(grads)


def tokens_times_kernel(tokens: Tensor, kernel: Tensor, bias: Tensor | None = None, in_scale: Tensor | None = None,
                        out_scale: Tensor | None = None, channels_first: bool = False) -> Tensor:
    """``(tokens[b] * in_scale[b]) @ kernel[b]^T * out_scale[b] + bias``: ``(B, T, I)`` x ``(B or 1, O, I)``.

    Returns ``(B, T, O)``, or ``(B, O, T)`` with ``channels_first`` (a 1x1 conv on NCHW columns, which
    are then ``tokens.transpose(1, 2)``). ``in_scale`` is ``(B, I)``, ``out_scale`` ``(B, O)``. Each
    factor goes on whichever of kernel and activations is smaller. The GEMM runs in autocast's dtype
    and the factor products in their own, as autograd would do them. See the module docstring for
    what backward keeps.
    """
    return _ScaledKernelGemm.apply(tokens, kernel, bias, in_scale, out_scale, channels_first)
