"""Kernel Spatial Modulation (docs/method.md, section 2): per-sample attentions from pooled features.

Module and parameter names follow the official checkpoint layout (``KSM_Global.fc``,
``KSM_Local.conv``, ...), so official and converted checkpoints load without remapping. Every
head starts at exactly zero, which makes every factor exactly 1 and ``a = 1/n``: a converted
layer reproduces its source convolution at init.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.metaformer import StarReLU
from torch import Tensor, nn

from ._ops.kernel_builder import matrix_times_batch
from .layer_args import hidden_channels
from .pooled_norm import PooledBatchNorm2d

__all__ = ["KSMGlobal", "KSMLocal", "ksm_hidden_channels", "local_kernel_size"]


def ksm_hidden_channels(in_channels: int, reduction: float = 0.0625, min_hidden: int = 16) -> int:
    """Width of the global branch: ``max(int(I * 0.0625), 16)``."""
    return hidden_channels(in_channels, reduction, min_hidden)


def local_kernel_size(in_channels: int) -> int:
    """ECA-style 1-D kernel size over channels (I=32 -> 3, 64..512 -> 5, 1024/2048 -> 7)."""
    return round(math.log2(in_channels) / 2 + 0.5) // 2 * 2 + 1


def _zero_(*modules: nn.Module) -> None:
    for m in modules:
        nn.init.zeros_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)


def _conv1x1(cin: int, cout: int, bias: bool, **dd) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias, **dd)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 conv's ``(out, in, 1, 1)`` weight on pooled vectors ``(B, C)``, as a linear layer in ``x``'s dtype."""
    return F.linear(x, weight.to(x.dtype).flatten(1), None if bias is None else bias.to(x.dtype))


class KSMGlobal(nn.Module):
    """Global branch: ``StarReLU(BN(fc(g)))`` feeding channel/filter/spatial/kernel heads."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, kernel_num: int,
                 temperature: float = 1.0, reduction: float = 0.0625, min_hidden: int = 16,
                 device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        hidden = ksm_hidden_channels(in_channels, reduction, min_hidden)
        self.kernel_size = kernel_size
        self.kernel_num = kernel_num
        self.temperature = temperature
        self.fc = _conv1x1(in_channels, hidden, False, **dd)
        self.bn = PooledBatchNorm2d(hidden, **dd)
        self.relu = StarReLU(**dd)
        self.channel_fc = _conv1x1(hidden, in_channels, True, **dd)
        self.filter_fc = _conv1x1(hidden, out_channels, True, **dd)
        self.spatial_fc = _conv1x1(hidden, kernel_size * kernel_size, True, **dd) if kernel_size > 1 else None
        self.kernel_fc = _conv1x1(hidden, kernel_num, True, **dd) if kernel_num > 1 else None
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out", nonlinearity="relu")
        _zero_(*(m for m in (self.channel_fc, self.filter_fc, self.spatial_fc, self.kernel_fc) if m is not None))

    def _gate(self, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``2 * sigmoid(head(h) / T)`` for one 1x1 head's weight and bias (TorchScript passes no modules)."""
        return 2.0 * torch.sigmoid(_linear(h, weight, bias) / self.temperature)

    def _norm(self, h: Tensor) -> Tensor:
        bn = self.bn
        if isinstance(bn, PooledBatchNorm2d):
            return bn(h)
        # swapped for a frozen BatchNorm by a framework (transformers' DETR, timm's freeze_batch_norm_2d):
        # the running statistics as that module applies them, in train and eval mode alike
        return bn(h[:, :, None, None]).flatten(1).to(h.dtype)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``pooled`` (B, I) -> channel (B, I), filter (B, O), spatial (B, k*k)|None, kernel (B, n)|None."""
        h = self.relu(self._norm(_linear(pooled, self.fc.weight, None)))
        channel = self._gate(h, self.channel_fc.weight, self.channel_fc.bias)
        filt = self._gate(h, self.filter_fc.weight, self.filter_fc.bias)
        spatial: Tensor | None = None
        if self.spatial_fc is not None:
            spatial = self._gate(h, self.spatial_fc.weight, self.spatial_fc.bias)
        kernel: Tensor | None = None
        if self.kernel_fc is not None:
            kernel = self._gate(h, self.kernel_fc.weight, self.kernel_fc.bias) / self.kernel_num
        return channel, filt, spatial, kernel


class KSMLocal(nn.Module):
    """Local branch: a 1-D conv over the channel axis of ``LayerNorm(g)``, one logit per kernel entry.

    The ``Conv1d(1 -> O*k*k)`` is evaluated as one GEMM of rank ``ks`` (weight ``(O*k*k, ks)``
    times the ``ks`` shifted copies of ``z``), several times faster than ``conv1d`` here.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.local_size = local_kernel_size(in_channels)
        self.norm = nn.LayerNorm(in_channels, **dd)
        self.conv = nn.Conv1d(1, out_channels * kernel_size * kernel_size, self.local_size,
                              padding=self.local_size // 2, bias=False, **dd)
        nn.init.zeros_(self.conv.weight)

    def windows(self, pooled: Tensor) -> Tensor:
        """``LayerNorm(pooled)`` in ``ks`` shifted copies, ``(B, ks, I)``: logits = ``weight (O*k*k, ks) @ windows``.

        Kept separate so the kernel builder can recompute the (kernel-sized) logits from these
        small factors in backward instead of storing them.
        """
        ks, cin = self.local_size, self.in_channels
        z = F.layer_norm(pooled, (cin,), self.norm.weight.to(pooled.dtype), self.norm.bias.to(pooled.dtype),
                         self.norm.eps)
        return F.pad(z, (ks // 2, ks // 2)).unfold(1, cin, 1)  # windows[b, t, i] = z[i + t - ks//2]

    def forward(self, pooled: Tensor) -> Tensor:
        """``pooled`` (B, I) -> logits ``(B, O, k, k, I)`` (the conv1d output, channel = o*k*k + p*k + q)."""
        k, ks, cin = self.kernel_size, self.local_size, self.in_channels
        windows = self.windows(pooled)
        logits = matrix_times_batch(self.conv.weight.to(windows.dtype).view(-1, ks), windows)
        return logits.view(-1, self.out_channels, k, k, cin)
