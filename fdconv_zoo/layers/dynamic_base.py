"""What the dynamic-convolution baselines (CondConv, DY-Conv, ODConv, KernelWarehouse) share.

Each baseline builds one kernel per sample from ``n`` candidate kernels and an attention over
the globally pooled input, then convolves. This module holds the common pieces: a drop-in
``nn.Conv2d`` shell (:class:`DynamicConv2dBase`), the per-sample convolution (one grouped conv
over the batch), a batch-of-one-safe squeeze MLP and the zero-sum perturbation used to make
``n`` identical copies of a kernel trainable without changing the function at init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer_args import pair
from .pooled_norm import PooledBatchNorm2d

__all__ = ["DynamicConv2dBase", "SqueezeMLP", "conv_args", "init_kernels_", "mix_kernels", "per_sample_conv2d",
           "zero_sum_perturbation"]


_INIT = {"skip": False}


def init_kernels_(weight: Tensor, init: str = "uniform") -> None:
    """Init each of ``weight``'s ``n`` kernels like ``nn.Conv2d`` (``uniform``) or Kaiming fan-out (``normal``).

    Skipped inside ``from_conv``, which overwrites the kernels anyway (keeps model building fast).
    """
    if _INIT["skip"]:
        return
    for w in weight.data:
        if init == "normal":
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)



def conv_args(conv: nn.Conv2d) -> dict:
    """The constructor arguments that rebuild ``conv``'s geometry (for ``from_conv``)."""
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None)


def zero_sum_perturbation(n: int, shape: Sequence[int], std: float, *, generator: torch.Generator | None = None,
                          device=None, dtype=None) -> Tensor:
    """``n`` Gaussian tensors of ``shape`` whose mean over the first axis is exactly zero (up to round-off).

    Copies ``W + eps_i`` of one kernel mixed with equal weights ``1/n`` give back ``W``, so the
    layer starts as the source conv, yet the copies differ: identical experts would get
    identical gradients and never separate.
    """
    if n < 2:
        return torch.zeros(max(n, 1), *shape, device=device, dtype=dtype)
    eps = torch.randn(n, *shape, generator=generator, device=device, dtype=torch.float64) * std
    eps = eps - eps.mean(dim=0, keepdim=True)
    return eps.to(dtype or torch.get_default_dtype())


def mix_kernels(weights: Tensor, bank: Tensor) -> Tensor:
    """``sum_n weights[b, n] * bank[n]`` for every sample, ``(B, *bank.shape[1:])``: one GEMM over the bank."""
    return (weights @ bank.flatten(1)).view(-1, *bank.shape[1:])


def per_sample_conv2d(x: Tensor, kernels: Tensor, bias: Tensor | None, stride, padding, dilation,
                      groups: int = 1) -> Tensor:
    """``conv2d(x[b], kernels[b])`` for every sample ``b``.

    ``kernels`` is ``(B, O, I // groups, kh, kw)``; a batch-shared kernel may have ``B = 1``
    (plain conv). Early layers (maps larger than the kernel's output count) run one grouped
    convolution over the batch; late layers, where a per-sample kernel outweighs the feature
    map, unfold the input and use one batched GEMM (much faster there on CPU, forward +
    backward).
    """
    batch, cin, height, width = x.shape
    if kernels.shape[0] == 1:
        return F.conv2d(x, kernels[0], bias, stride, padding, dilation, groups)
    cout, _, kh, kw = kernels.shape[1:]
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if groups == 1 and cout > out_h * out_w:
        cols = F.unfold(x, (kh, kw), dilation, padding, stride)                  # (B, I*kh*kw, L)
        y = torch.bmm(kernels.reshape(batch, cout, -1), cols).view(batch, cout, out_h, out_w)
    else:
        y = F.conv2d(x.reshape(1, batch * cin, height, width), kernels.reshape(batch * cout, *kernels.shape[2:]),
                     None, stride, padding, dilation, groups * batch)
        y = y.view(batch, cout, out_h, out_w)
    if bias is not None:
        y = y + bias.to(y.dtype)[None, :, None, None]
    return y


class SqueezeMLP(nn.Module):
    """``relu(BN(W pooled))``: the hidden layer of ODConv's / KernelWarehouse's attention (a batch of one trains
    with the running statistics, see :class:`~fdconv_zoo.layers.pooled_norm.PooledBatchNorm2d`)."""

    def __init__(self, in_channels: int, hidden: int, *, norm: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, hidden, bias=not norm, device=device, dtype=dtype)
        self.bn = PooledBatchNorm2d(hidden, device=device, dtype=dtype) if norm else None

    def forward(self, pooled: Tensor) -> Tensor:
        h = self.fc(pooled)
        if self.bn is not None:
            h = self.bn(h)
        return F.relu(h)




def check_positive_int(owner: str, name: str, value: object) -> None:
    """The one error for a count (channels, kernels, experts) that is not a positive int."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


def check_temperature(owner: str, temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"{owner}: temperature must be > 0, got {temperature}")


def attention_param_names(module: nn.Module, attention_modules: tuple[str, ...]) -> set[str]:
    """Parameter names under ``module``'s attention sub-modules (timm's ``no_weight_decay`` convention).

    Decay on a routing head shrinks it towards uniform attention: it fights the method, not overfitting.
    """
    return {f"{name}.{p}" for name in attention_modules if isinstance(getattr(module, name, None), nn.Module)
            for p, _ in getattr(module, name).named_parameters()}


class DynamicConv2dBase(nn.Module):
    """A drop-in ``nn.Conv2d`` (zero padding) whose kernel is built per sample by :meth:`dynamic_kernels`.

    Subclasses implement ``dynamic_kernels(x, pooled) -> (B or 1, O, I // groups, kh, kw)``,
    ``load_static_weight(weight)`` (function preserving) and ``candidate_kernels()`` (the ``n``
    kernels the attention chooses from, for the diversity analysis).
    """

    method: str = "dynamic"
    supports_groups: bool = True
    #: sub-modules that compute attentions, not kernels: no weight decay (see ``no_weight_decay``)
    attention_modules: tuple[str, ...] = ()

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        owner = type(self).__name__
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            check_positive_int(owner, name, value)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{owner}: in_channels={in_channels} and out_channels={out_channels} must both be "
                             f"divisible by groups={groups}")
        if groups != 1 and not self.supports_groups:
            raise ValueError(f"{owner}({in_channels}, {out_channels}) got groups={groups}: {self.method} is "
                             "implemented for groups=1 only; keep this conv plain (the converters skip it)")
        if padding_mode != "zeros":
            raise ValueError(f"{owner} supports padding_mode='zeros' only, got {padding_mode!r}; pad the input "
                             "yourself")
        if isinstance(padding, str):
            raise ValueError(f"{owner}: string padding {padding!r} is not supported; pass explicit ints")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size", owner)
        if min(self.kernel_size) < 1:
            raise ValueError(f"{owner}: kernel_size must be >= 1, got {kernel_size!r}")
        self.stride = pair(stride, "stride", owner)
        self.padding = pair(padding, "padding", owner)
        self.dilation = pair(dilation, "dilation", owner)
        self.groups = groups
        self.padding_mode = padding_mode
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def no_weight_decay(self) -> set[str]:
        return attention_param_names(self, self.attention_modules)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        """Shape of one kernel, as ``nn.Conv2d.weight``."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options) -> DynamicConv2dBase:
        """A layer computing exactly ``conv`` at init (what each method allows; see the class docstring)."""
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"{cls.__name__}.from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        _INIT["skip"] = True
        try:
            layer = cls(**conv_args(conv), padding_mode=conv.padding_mode, **options)
        finally:
            _INIT["skip"] = False
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        layer.load_static_weight(conv.weight.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def load_static_weight(self, weight: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def candidate_kernels(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dynamic_kernels(self, x: Tensor, pooled: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_weight(self, weight: Tensor) -> None:
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(f"{type(self).__name__}: weight of shape {tuple(weight.shape)} does not fit, expected "
                             f"{self.weight_shape}")

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}({self.in_channels}, {self.out_channels}): expected input "
                             f"(batch, {self.in_channels}, H, W), got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        pooled = x.mean(dim=(2, 3))
        kernels = self.dynamic_kernels(x, pooled).to(x.dtype)
        return per_sample_conv2d(x, kernels, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"]
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        parts.append(f"bias={self.bias is not None}")
        return ", ".join(parts)
