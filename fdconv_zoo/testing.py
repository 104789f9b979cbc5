"""Helpers for checking converted networks (used by the tests and ``fdconv-zoo demo``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_norms_", "max_relative_error"]


@torch.no_grad()
def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm/LayerNorm non-trivial affine parameters and running statistics.

    timm zero-initialises the last norm of each residual branch, which would make a
    function-preservation check pass without the converted layers doing anything.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return (torch.rand(t.shape, generator=gen) * (high - low) + low).to(t)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(rand(m.running_mean, -0.2, 0.2))
            m.running_var.copy_(rand(m.running_var, 0.5, 1.5))
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            m.weight.copy_(rand(m.weight, 0.5, 1.5))
            m.bias.copy_(rand(m.bias, -0.2, 0.2))
    return model


def max_relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |output - reference| / max |reference|``: the spec's function-preservation metric."""
    return ((output.double() - reference.double()).abs().max() / reference.double().abs().max().clamp_min(1e-30)).item()
