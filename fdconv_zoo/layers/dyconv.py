"""DY-Conv (Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020).

``K(x) = sum_k pi_k(x) W_k`` with ``pi = softmax(FC(ReLU(FC(GAP(x)))) / T)``: K parallel kernels
(K = 4 in the paper), a squeeze-excitation style attention (reduction 4) and a softmax with a
temperature the paper anneals from 30 to 1 over the first 10 epochs (:func:`set_temperature`).
Our own implementation from the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .dynamic_base import (
    DynamicConv2dBase,
    check_positive_int,
    check_temperature,
    init_kernels_,
    mix_kernels,
    zero_sum_perturbation,
)
from .layer_args import hidden_channels

__all__ = ["DyConv2d", "set_temperature", "annealed_temperature"]


class DyConv2d(DynamicConv2dBase):
    """DY-Conv drop-in for ``nn.Conv2d``: ``weight`` ``(K, O, I/groups, kh, kw)`` and ``attention`` (FC-ReLU-FC).

    ``from_conv`` is function preserving: the last attention FC starts at zero (uniform
    ``1/K`` attention for any temperature) and the K kernels are the source kernel plus
    zero-sum perturbations.
    """

    method = "dyconv"
    attention_modules = ("attention",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, num_kernels: int = 4,
                 reduction: float = 0.25, min_hidden: int = 4, temperature: float = 1.0,
                 kernel_noise: float = 0.01) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        check_positive_int("DyConv2d", "num_kernels", num_kernels)
        check_temperature("DyConv2d", temperature)
        self.num_kernels = num_kernels
        self.temperature = float(temperature)
        self.kernel_noise = kernel_noise
        hidden = hidden_channels(in_channels, reduction, min_hidden)
        self.attention = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, num_kernels))
        self.weight = nn.Parameter(torch.empty(num_kernels, *self.weight_shape))
        init_kernels_(self.weight)

    @torch.no_grad()
    def load_static_weight(self, weight: Tensor) -> None:
        """Kernels = ``W`` + zero-sum noise, uniform attention: output = ``conv(x, W)``."""
        self._check_weight(weight)
        last = self.attention[-1]
        last.weight.zero_()
        last.bias.zero_()
        std = weight.float().std() * self.kernel_noise if weight.numel() > 1 else 0.0
        eps = zero_sum_perturbation(self.num_kernels, weight.shape, 1.0, device=weight.device,
                                    dtype=weight.dtype) * std
        self.weight.copy_(weight[None] + eps)

    def kernel_attention(self, pooled: Tensor) -> Tensor:
        """Per-sample softmax attention ``(B, K)`` over the kernels."""
        return torch.softmax(self.attention(pooled.to(self.weight.dtype)) / self.temperature, dim=1)

    def dynamic_kernels(self, x: Tensor, pooled: Tensor) -> Tensor:
        a = self.kernel_attention(pooled)
        return mix_kernels(a, self.weight)

    def candidate_kernels(self) -> Tensor:
        """The K parallel kernels ``(K, O, I/groups, kh, kw)``."""
        return self.weight.detach()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_kernels={self.num_kernels}, temperature={self.temperature:g}"


def annealed_temperature(epoch: float, *, start: float = 30.0, end: float = 1.0, epochs: float = 10.0) -> float:
    """DY-Conv/ODConv's schedule: linear from ``start`` to ``end`` over the first ``epochs`` epochs, then ``end``."""
    if epochs <= 0:
        return end
    t = min(max(epoch / epochs, 0.0), 1.0)
    return start + (end - start) * t


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the softmax temperature of every DY-Conv/ODConv layer of ``model``; returns how many were set."""
    check_temperature("set_temperature", temperature)
    count = 0
    for m in model.modules():
        if getattr(m, "method", None) in ("dyconv", "odconv"):
            m.temperature = float(temperature)
            count += 1
    return count
