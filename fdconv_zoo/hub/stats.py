"""The numbers a model card reports, measured on the model itself: parameters, parameters FDConv adds, GMACs.

GMACs are measured with :class:`torch.utils.flop_counter.FlopCounterMode` on one image (MACs = counted
FLOPs / 2). They cover every convolution and matrix product, the per-sample FD ones included. Not in
GMACs: the FFTs (kernel synthesis and FBM's band split), counted apart as about ``2.5 N log2 N`` real
FLOPs per length-N real transform, and elementwise work, which FlopCounterMode counts for no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..layers.conversion import fd_layers

__all__ = ["count_params", "count_extra_params", "count_compute", "count_gmacs", "card_stats"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def _fft_flops(x_shape, dim, *args, out_shape=None, real_input: bool = True, **kwargs) -> int:
    # A length-N real transform ~ 2.5 N log2 N real FLOPs (half of a complex one's 5 N log2 N).
    shape = x_shape if real_input else out_shape
    n = math.prod(shape[d] for d in dim)
    batch = math.prod(shape) // max(n, 1)
    return int(batch * 2.5 * n * math.log2(max(n, 2)))


def _fft_ops() -> dict:
    aten = torch.ops.aten
    return {
        aten._fft_r2c: lambda *a, **k: _fft_flops(*a, real_input=True, **k),
        aten._fft_c2r: lambda *a, **k: _fft_flops(*a, real_input=False, **k),
        aten._fft_c2c: lambda *a, **k: 2 * _fft_flops(*a, real_input=True, **k),
    }


@torch.no_grad()
def count_compute(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> tuple[float, float]:
    """``(GMACs, FFT GFLOPs)`` of one forward pass on a single image of ``input_size`` (eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    fft_ops = _fft_ops()
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=fft_ops)
    x = torch.randn(1, *input_size)
    with counter:
        model(x)
    model.train(was_training)
    per_op = counter.get_flop_counts()["Global"]
    fft = sum(v for op, v in per_op.items() if any(op is f or str(op) == str(f) for f in fft_ops))
    total = counter.get_total_flops()
    return (total - fft) / 2e9, fft / 1e9


def count_extra_params(model: nn.Module) -> int:
    """Parameters FDConv adds over the plain network: per FD layer, its total minus ``O*I*k*k``.

    Counted on the FD model alone (the plain kernel and the bias are what the layer replaced),
    so no plain twin has to be built.
    """
    extra = 0
    for layer in fd_layers(model).values():
        k = layer.KSM_Local.kernel_size
        total = sum(p.numel() for p in layer.parameters())
        bias = layer.bias.numel() if layer.bias is not None else 0
        extra += total - bias - layer.out_channels * layer.in_channels * k * k
    return extra


def count_gmacs(model: nn.Module, input_size: Sequence[int]) -> float:
    """GMACs of one forward at batch 1, FFTs excluded: the same count as MODEL_CARDS/params.md."""
    return count_compute(model, tuple(input_size))[0]


def card_stats(model: nn.Module, input_size: Sequence[int] | None = None, gmacs: float | None = None) -> dict:
    """``{params, extra_params, gmacs, input_size}`` measured on ``model`` (GMACs skipped if given)."""
    input_size = tuple(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return dict(params=count_params(model), extra_params=count_extra_params(model),
                gmacs=round(float(gmacs if gmacs is not None else count_gmacs(model, input_size)), 3),
                input_size=list(input_size))
