"""ODConv (Li et al., "Omni-Dimensional Dynamic Convolution", ICLR 2022).

``K(x) = sum_i a_w,i (a_s ⊙ a_c ⊙ a_f ⊙ W_i)``: ``n`` kernels and four attentions computed from
``GAP(x)`` through one squeeze layer (FC -> BN -> ReLU, reduction 1/16, at least 16 wide):
spatial (k x k, sigmoid), input channel (I, sigmoid), filter (O, sigmoid) and kernel (n,
softmax; absent for ``n = 1``). Temperature as in DY-Conv. Our own implementation from the
paper. The channel and filter attentions are rank-1, so they scale the input and the output
instead of the kernel (same math, cheaper).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .dynamic_base import (
    DynamicConv2dBase,
    SqueezeMLP,
    check_positive_int,
    check_temperature,
    init_kernels_,
    mix_kernels,
    per_sample_conv2d,
    zero_sum_perturbation,
)
from .layer_args import hidden_channels

__all__ = ["ODConv2d"]


class ODConv2d(DynamicConv2dBase):
    """ODConv drop-in for ``nn.Conv2d`` (``groups=1``): ``weight`` ``(n, O, I, kh, kw)`` and ``attention``.

    Function preservation (``from_conv``): the attention heads start at zero, so every sigmoid
    attention is exactly 1/2 and the kernel attention uniform. The paper's attentions are plain
    sigmoids (no 2x), so the stored kernels are the source kernel times ``2^a`` (``a`` = number
    of sigmoid attentions: channel, filter, and spatial when k > 1), plus zero-sum perturbations
    across the ``n`` kernels. The output then equals the source conv exactly at init.
    """

    method = "odconv"
    attention_modules = ("squeeze", "channel_fc", "filter_fc", "spatial_fc", "kernel_fc")
    supports_groups = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, num_kernels: int = 1,
                 reduction: float = 0.0625, min_hidden: int = 16, temperature: float = 1.0,
                 kernel_noise: float = 0.01) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        check_positive_int("ODConv2d", "num_kernels", num_kernels)
        check_temperature("ODConv2d", temperature)
        self.num_kernels = num_kernels
        self.temperature = float(temperature)
        self.kernel_noise = kernel_noise
        hidden = hidden_channels(in_channels, reduction, min_hidden)
        kh, kw = self.kernel_size
        self.squeeze = SqueezeMLP(in_channels, hidden)
        self.channel_fc = nn.Linear(hidden, in_channels)
        self.filter_fc = nn.Linear(hidden, out_channels)
        self.spatial_fc = nn.Linear(hidden, kh * kw) if kh * kw > 1 else None
        self.kernel_fc = nn.Linear(hidden, num_kernels) if num_kernels > 1 else None
        self.weight = nn.Parameter(torch.empty(num_kernels, *self.weight_shape))
        init_kernels_(self.weight, "normal")

    def _heads(self) -> list[nn.Linear]:
        return [h for h in (self.channel_fc, self.filter_fc, self.spatial_fc, self.kernel_fc) if h is not None]

    @torch.no_grad()
    def load_static_weight(self, weight: Tensor) -> None:
        """Zero heads (attentions 1/2, uniform 1/n); kernels ``2^a W`` + zero-sum noise: output = ``conv(x, W)``."""
        self._check_weight(weight)
        for head in self._heads():
            head.weight.zero_()
            head.bias.zero_()
        sigmoid_heads = 2 + (self.spatial_fc is not None)
        scaled = weight * (2.0 ** sigmoid_heads)
        std = scaled.float().std() * self.kernel_noise if weight.numel() > 1 else 0.0
        eps = zero_sum_perturbation(self.num_kernels, weight.shape, 1.0, device=weight.device,
                                    dtype=weight.dtype) * std
        self.weight.copy_(scaled[None] + eps)

    def attentions(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(channel (B, I), filter (B, O), spatial (B, kh, kw) or None, kernel (B, n) or None)``."""
        h = self.squeeze(pooled.to(self.weight.dtype))
        t = self.temperature
        channel = torch.sigmoid(self.channel_fc(h) / t)
        filt = torch.sigmoid(self.filter_fc(h) / t)
        spatial = None if self.spatial_fc is None else torch.sigmoid(self.spatial_fc(h) / t).view(-1, *self.kernel_size)
        kernel = None if self.kernel_fc is None else torch.softmax(self.kernel_fc(h) / t, dim=1)
        return channel, filt, spatial, kernel

    def _kernels(self, spatial: Tensor | None, kernel: Tensor | None) -> Tensor:
        if kernel is None:
            w = self.weight                                         # (1, O, I, kh, kw), shared over the batch
        else:
            w = mix_kernels(kernel, self.weight)
        if spatial is not None:
            w = w * spatial[:, None, None]
        return w

    def dynamic_kernels(self, x: Tensor, pooled: Tensor) -> Tensor:
        """The full per-sample kernel (channel and filter attentions folded in); forward() avoids building it."""
        channel, filt, spatial, kernel = self.attentions(pooled)
        return self._kernels(spatial, kernel) * filt[:, :, None, None, None] * channel[:, None, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        channel, filt, spatial, kernel = self.attentions(x.mean(dim=(2, 3)))
        kernels = self._kernels(spatial, kernel).to(x.dtype)
        y = per_sample_conv2d(x * channel[:, :, None, None].to(x.dtype), kernels, None, self.stride, self.padding,
                              self.dilation)
        y = y * filt[:, :, None, None].to(y.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)[None, :, None, None]
        return y

    def candidate_kernels(self) -> Tensor:
        """The ``n`` parallel kernels ``(n, O, I, kh, kw)``."""
        return self.weight.detach()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_kernels={self.num_kernels}, temperature={self.temperature:g}"


