"""FDLinear: a 1x1 FDConv on token tensors ``(B, ..., C)`` (ConvNeXt and Swin MLPs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._ops.per_sample_gemm import tokens_times_kernel
from .fd_base import FDKernelBase, KernelFactors, pooled_mean, skip_weight_init
from .fd_reference import linear_per_sample, use_reference
from .fdw import compute_dtype, real_dtype

__all__ = ["FDLinear"]


class FDLinear(FDKernelBase):
    """A drop-in for ``nn.Linear`` whose weight is an FDConv ``k = 1`` kernel, one per sample.

    KSM pools over every token position of a sample (all axes between batch and channels), so
    ``(B, H, W, C)`` NHWC maps and ``(B, L, C)`` sequences are both handled. There is no FBM:
    a 1x1 layer has no kernel frequency bands to modulate (docs/method.md, section 3).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, kernel_num: int = 64,
                 temperature: float = 1.0, ksm_reduction: float = 0.0625, ksm_min_hidden: int = 16,
                 recompute_kernel: bool = False, reference: bool | None = None, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, 1, bias, kernel_num=kernel_num, temperature=temperature,
                         ksm_reduction=ksm_reduction, ksm_min_hidden=ksm_min_hidden,
                         recompute_kernel=recompute_kernel, reference=reference, device=device, dtype=dtype)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> FDLinear:
        """An FDLinear computing exactly ``linear`` at init."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"FDLinear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        with skip_weight_init():
            layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                        device=linear.weight.device, dtype=linear.weight.dtype, **options)
        layer.load_spatial_weight(linear.weight)
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel_num={self.kernel_num}")

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.forward_reference(x)
        else:
            return self._forward(x)

    def forward_reference(self, x: Tensor) -> Tensor:
        """``tokens_b @ K_b^T + bias`` with KSM pooled over every token position of a sample, in plain torch ops."""
        tokens = x.reshape(x.shape[0], -1, self.in_channels)
        kernels = self.reference_kernels(tokens.mean(1, dtype=real_dtype(x.dtype)))
        y = linear_per_sample(tokens, kernels[:, :, :, 0, 0], self.bias)
        return y.view(list(x.shape[:-1]) + [self.out_channels])

    def _forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{self._describe()}: expected (batch, ..., {self.in_features}) tokens with channels last, got "
                f"shape {tuple(x.shape)}; for NCHW feature maps use FDConv2d"
            )
        batch = x.shape[0]
        if batch == 0:        # nn.Linear's contract: an empty batch gives an empty, differentiable output
            weight = self.static_weight().view(self.out_features, self.in_features).to(x.dtype)
            return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))
        if use_reference(self.reference):
            return self.forward_reference(x)
        tokens = x.reshape(batch, -1, self.in_features)                      # (B, T, I)
        factors = self.kernel_factors(pooled_mean(tokens, (1,)))
        y = self._apply_in_chunks(self._apply_kernel, tokens, factors)
        return y.view(*x.shape[:-1], self.out_features)

    def _apply_kernel(self, tokens: Tensor, factors: KernelFactors) -> Tensor:
        """``(tokens * channel) @ K^T * filter + bias``; :func:`tokens_times_kernel` puts each rank-1 factor
        on whichever of kernel and tokens is smaller (early stages have far more tokens than kernel entries)."""
        dk = self.build_kernel(factors, compute_dtype(tokens))
        kernel = dk.kernel.view(-1, self.out_features, self.in_features)
        return tokens_times_kernel(tokens, kernel, self.bias, dk.channel, dk.filter)
