"""CondConv (Yang et al., NeurIPS 2019): a per-sample, sigmoid-routed mix of ``n`` expert kernels.

``K(x) = sum_i r_i(x) W_i`` with ``r(x) = sigmoid(R · GAP(x) + b)``, one routing layer per conv.
Our own implementation from the paper (timm's ``CondConv2d`` is the same idea with static padding
helpers; this one shares the zoo's conversion and analysis machinery).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .dynamic_base import (
    DynamicConv2dBase,
    attention_param_names,
    check_positive_int,
    init_kernels_,
    mix_kernels,
    zero_sum_perturbation,
)

__all__ = ["CondConv2d", "CondLinear"]


def _neutral_routing_(routing: nn.Linear, num_experts: int) -> float:
    """Zero routing weights, bias so every gate is ``1/n``; returns the factor the experts need (n=1: 2)."""
    with torch.no_grad():
        routing.weight.zero_()
        if num_experts == 1:
            routing.bias.zero_()          # sigmoid(0) = 1/2: the single expert carries 2 W
            return 2.0
        routing.bias.fill_(-math.log(num_experts - 1))   # sigmoid(-log(n-1)) = 1/n
        return 1.0


class CondConv2d(DynamicConv2dBase):
    """CondConv drop-in for ``nn.Conv2d``: ``weight`` is ``(n, O, I/groups, kh, kw)``, ``routing`` a Linear(I, n).

    ``from_conv`` is function preserving: every expert is the source kernel plus a perturbation
    that sums to zero over the experts, and the routing starts at ``1/n`` for every expert
    (zero weights, bias ``-log(n-1)``), so ``sum_i r_i W_i = W`` exactly while the experts
    still receive different gradients.
    """

    method = "condconv"
    attention_modules = ("routing",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, num_experts: int = 8,
                 expert_noise: float = 0.01) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        check_positive_int(type(self).__name__, "num_experts", num_experts)
        self.num_experts = num_experts
        self.expert_noise = expert_noise
        self.weight = nn.Parameter(torch.empty(num_experts, *self.weight_shape))
        init_kernels_(self.weight)
        self.routing = nn.Linear(in_channels, num_experts)

    @torch.no_grad()
    def load_static_weight(self, weight: Tensor) -> None:
        """Experts = ``W`` + zero-sum noise (std ``expert_noise`` x std(W)), neutral routing: output = conv(x, W)."""
        self._check_weight(weight)
        factor = _neutral_routing_(self.routing, self.num_experts)
        std = weight.float().std() * self.expert_noise if weight.numel() > 1 else 0.0
        eps = zero_sum_perturbation(self.num_experts, weight.shape, 1.0, device=weight.device,
                                    dtype=weight.dtype) * std
        self.weight.copy_(factor * weight[None] + eps)

    def routing_weights(self, pooled: Tensor) -> Tensor:
        """Per-sample expert gates ``(B, n)`` in (0, 1)."""
        return torch.sigmoid(self.routing(pooled.to(self.routing.weight.dtype)))

    def dynamic_kernels(self, x: Tensor, pooled: Tensor) -> Tensor:
        r = self.routing_weights(pooled)
        return mix_kernels(r, self.weight)

    def candidate_kernels(self) -> Tensor:
        """The ``n`` expert kernels ``(n, O, I/groups, kh, kw)``."""
        return self.weight.detach()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_experts={self.num_experts}"


class CondLinear(nn.Module):
    """CondConv on a Linear (a 1x1 CondConv on a pooled vector): ``y = (sum_i r_i(x) W_i) x + b``.

    Used for the classifier of ``resnet18_condconv8x`` (the published ResNet-18 count includes it).
    Expects ``(B, in_features)`` inputs; the routing reads the input itself.
    """

    method = "condconv"
    attention_modules = ("routing",)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, num_experts: int = 8,
                 expert_noise: float = 0.01) -> None:
        super().__init__()
        check_positive_int(type(self).__name__, "num_experts", num_experts)
        self.in_features, self.out_features = in_features, out_features
        self.num_experts = num_experts
        self.expert_noise = expert_noise
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))
        init_kernels_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.routing = nn.Linear(in_features, num_experts)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> CondLinear:
        """A CondLinear computing exactly ``linear`` at init (see :class:`CondConv2d`)."""
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"CondLinear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, **options)
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            factor = _neutral_routing_(layer.routing, layer.num_experts)
            std = linear.weight.float().std() * layer.expert_noise
            eps = zero_sum_perturbation(layer.num_experts, linear.weight.shape, 1.0, device=linear.weight.device,
                                        dtype=linear.weight.dtype) * std.to(linear.weight.dtype)
            layer.weight.copy_(factor * linear.weight[None] + eps)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def no_weight_decay(self) -> set[str]:
        return attention_param_names(self, self.attention_modules)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"CondLinear({self.in_features}, {self.out_features}): expected (batch, "
                             f"{self.in_features}) input, got {tuple(x.shape)}")
        r = torch.sigmoid(self.routing(x))
        kernels = mix_kernels(r, self.weight)
        y = torch.bmm(kernels, x[:, :, None]).squeeze(-1)
        return y if self.bias is None else y + self.bias

    def candidate_kernels(self) -> Tensor:
        """The ``n`` expert matrices as 1x1 kernels ``(n, O, I, 1, 1)``."""
        return self.weight.detach()[..., None, None]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, num_experts={self.num_experts}"


