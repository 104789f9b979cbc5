"""FDConv2d: a drop-in ``nn.Conv2d`` with Frequency Dynamic Convolution (docs/method.md)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._ops.per_sample_gemm import tokens_times_kernel
from ._ops.unfolded_conv import unfolded_conv
from .fbm import DEFAULT_CUTOFFS, FrequencyBandModulation
from .fd_base import DynamicKernel, FDKernelBase, KernelFactors, pooled_mean, skip_weight_init
from .fd_reference import conv2d_per_sample, use_reference
from .fdw import compute_dtype, real_dtype
from .layer_args import pair

__all__ = ["FDConv2d"]



def _square_kernel(kernel_size) -> int:
    kh, kw = pair(kernel_size, "kernel_size", "FDConv2d")
    if kh != kw or kh < 1:
        raise ValueError(
            f"FDConv2d supports square kernels only, got kernel_size={kernel_size!r}: FDW reshapes the "
            "kernel to (O*k, I*k); keep non-square convs plain (convert_to_fdconv skips them)"
        )
    return kh


class FDConv2d(FDKernelBase):
    """Frequency Dynamic Convolution, a drop-in for ``nn.Conv2d`` (``groups=1``, zero padding).

    Per sample it builds ``K_b = W_b * lambda_b * channel * filter * spatial`` (FDW x KSM) and
    convolves the FBM-modulated input with it. The per-sample kernel is built in the FDW "M
    layout" and never permuted: late layers (kernel larger than the feature map) unfold the
    input and use one batched GEMM; early layers use a grouped convolution. The rank-1 channel,
    spatial and filter factors go on the kernel or on the activations, whichever is smaller (same math).
    Layers with a large spectrum build and apply their kernels one sample at a time
    (``fd_base.PER_SAMPLE_SPECTRUM_BYTES``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], stride=1,
                 padding: int | Sequence[int] | str = 0, dilation=1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, kernel_num: int = 64, use_fbm: bool = True,
                 fbm_cutoffs: Sequence[float] = DEFAULT_CUTOFFS, fbm_lowfreq_att: bool = False,
                 temperature: float = 1.0, ksm_reduction: float = 0.0625, ksm_min_hidden: int = 16,
                 recompute_kernel: bool = False, reference: bool | None = None, device=None, dtype=None) -> None:
        k = _square_kernel(kernel_size)
        if groups != 1:
            raise ValueError(
                f"FDConv2d({in_channels}, {out_channels}, k={k}) got groups={groups}: FDConv supports groups=1 "
                "only (grouped and depthwise convs cannot host FDW); keep this conv plain"
            )
        if padding_mode != "zeros":
            raise ValueError(
                f"FDConv2d supports padding_mode='zeros' only, got {padding_mode!r}; pad the input yourself"
            )
        super().__init__(in_channels, out_channels, k, bias, kernel_num=kernel_num, temperature=temperature,
                         ksm_reduction=ksm_reduction, ksm_min_hidden=ksm_min_hidden,
                         recompute_kernel=recompute_kernel, reference=reference, device=device, dtype=dtype)
        self.kernel_size = (k, k)
        self.stride = pair(stride, "stride", "FDConv2d")
        self.dilation = pair(dilation, "dilation", "FDConv2d")
        self.groups = 1
        self.padding_mode = padding_mode
        self.padding = padding
        self._pad = self._explicit_padding(padding, k)
        self.FBM = (FrequencyBandModulation(in_channels, fbm_cutoffs, fbm_lowfreq_att, device=device, dtype=dtype)
                    if use_fbm and k == 3 else None)

    def _explicit_padding(self, padding, k: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding; 'same' may be asymmetric for even kernels."""
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if self.stride != (1, 1):
                raise ValueError("FDConv2d: padding='same' needs stride=1, as in nn.Conv2d")
            totals = [d * (k - 1) for d in self.dilation]
            (th, tw) = totals
            return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        if isinstance(padding, str):
            raise ValueError(f"FDConv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
        ph, pw = pair(padding, "padding", "FDConv2d")
        return (pw, pw, ph, ph)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options) -> FDConv2d:
        """An FDConv2d computing exactly ``conv`` at init (weights moved into the FDW spectrum)."""
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"FDConv2d.from_conv needs an nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(
                f"FDConv2d.from_conv: conv {conv} has groups={conv.groups}; FDConv supports groups=1 only "
                "(grouped and depthwise convs cannot host FDW). Keep it plain or exclude it from conversion"
            )
        if conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(
                f"FDConv2d.from_conv: conv {conv} has a non-square kernel {conv.kernel_size}; FDConv needs k x k. "
                "Keep it plain or exclude it from conversion"
            )
        with skip_weight_init():
            layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                        device=conv.weight.device, dtype=conv.weight.dtype, **options)
        layer.load_spatial_weight(conv.weight)
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def extra_repr(self) -> str:
        k = self.kernel_size[0]
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={self.stride}"]
        if any(self._pad):
            parts.append(f"padding={self.padding}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        parts.append(f"bias={self.bias is not None}, kernel_num={self.kernel_num}, fbm={self.FBM is not None}")
        return ", ".join(parts)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(
                f"{self._describe()}: expected a 4-D input (batch, channels, height, width), got shape "
                f"{tuple(x.shape)}; add a batch dimension, or use FDLinear for (..., C) token tensors"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self._describe()}: expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); check the previous layer or build with in_channels={x.shape[1]}"
            )

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.forward_reference(x)
        else:
            return self._forward(x)

    def forward_reference(self, x: Tensor) -> Tensor:
        """``conv2d(FBM(x), K_b) + bias`` for every sample ``b``, in plain torch ops (``fd_reference``)."""
        kernels = self.reference_kernels(x.mean([2, 3], dtype=real_dtype(x.dtype)))
        if self.FBM is not None:
            x = self.FBM.forward_reference(x)
        return conv2d_per_sample(x, kernels, self.bias, self.stride, self._pad, self.dilation)

    def _forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if x.shape[0] == 0:   # nn.Conv2d's contract: an empty batch gives an empty, differentiable output
            weight = self.static_weight().to(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.conv2d(F.pad(x, self._pad), weight, bias, self.stride, 0, self.dilation)
        if use_reference(self.reference):
            return self.forward_reference(x)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        factors = self.kernel_factors(pooled_mean(x, (2, 3)))
        if self.FBM is None:
            y = self._apply_in_chunks(self._apply_kernel, x, factors, channels_last)
        else:
            y = self._apply_in_chunks(self._apply_kernel, self.FBM(x), factors, channels_last)
        if channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    def _apply_kernel(self, x: Tensor, factors: KernelFactors, channels_last: bool) -> Tensor:
        return self._convolve(x, self.build_kernel(factors, compute_dtype(x)), channels_last)

    def _convolve(self, x: Tensor, dk: DynamicKernel, channels_last: bool) -> Tensor:
        """``conv(x, kernel * channel * spatial) * filter + bias`` per sample.

        The rank-1 factors go wherever they cost less (docs/method.md, section 2): on the kernel when it is
        smaller than the activation they would otherwise scale (early layers: one small pass instead
        of a pass over a large feature map), on the activations when it is larger (late layers).
        """
        k = self.kernel_size[0]
        (left, right, top, bottom) = self._pad
        if left != right or top != bottom:
            x = F.pad(x, (left, right, top, bottom))
            left = top = 0
        batch, cin, height, width = x.shape
        out_h = (height + 2 * top - self.dilation[0] * (k - 1) - 1) // self.stride[0] + 1
        out_w = (width + 2 * left - self.dilation[1] * (k - 1) - 1) // self.stride[1] + 1
        cout = self.out_channels
        if k == 1 and top == left == 0:  # the input map itself is the GEMM operand
            tokens = x[:, :, ::self.stride[0], ::self.stride[1]].flatten(2).transpose(1, 2)   # (B, L, I)
            in_scale = dk.channel if dk.spatial is None else dk.channel * dk.spatial.view(-1, 1)
            y = tokens_times_kernel(tokens, dk.kernel.view(-1, cout, cin), self.bias, in_scale, dk.filter,
                                    channels_first=not channels_last)
            return (y.transpose(1, 2) if channels_last else y).view(batch, cout, out_h, out_w)
        kernel_entries = cout * cin * k * k
        fold_input = kernel_entries < cin * height * width
        fold_output = kernel_entries < cout * out_h * out_w
        bias = None if self.bias is None else self.bias.to(x.dtype)   # autocast casts it with the GEMM/conv
        fused_bias = bias if fold_output else None

        if cout > out_h * out_w:  # late layers: the kernel is the big tensor, move the input instead
            in_scale = None
            if not fold_input:
                in_scale = dk.channel[:, :, None, None].expand(-1, -1, k, k)
                if dk.spatial is not None:
                    in_scale = in_scale * dk.spatial[:, None]
            kernel = self._folded_kernel(dk, fold_input, fold_output).reshape(-1, cout, k * cin * k)
            y = unfolded_conv(x, kernel, in_scale, fused_bias, k, self.stride, (top, left), self.dilation,
                              (out_h, out_w), channels_last)
        else:  # early layers: small kernels, large maps -> one grouped convolution
            weight = self._grouped_weight(dk, fold_input, fold_output, batch)
            xs = (x if fold_input else x * dk.channel[:, :, None, None]).reshape(1, batch * cin, height, width)
            y = F.conv2d(xs, weight, None if fused_bias is None else fused_bias.repeat(batch), self.stride,
                         (top, left), self.dilation, groups=batch).view(batch, cout, out_h, out_w)
        return self._finish(y, dk, bias, fold_output)

    def _folded_kernel(self, dk: DynamicKernel, fold_input: bool, fold_output: bool) -> Tensor:
        """The per-sample kernel as ``(B, O, k, I, k)`` (M layout), with the factors ``_convolve`` folds into it."""
        k, cout, cin = self.kernel_size[0], self.out_channels, self.in_channels
        kernel = dk.kernel.view(-1, cout, k, cin, k)                   # M layout: (o, p, i, q)
        if fold_input:
            in_factor = dk.channel[:, None, :, None]
            if dk.spatial is not None:
                in_factor = in_factor * dk.spatial[:, :, None, :]
            kernel = kernel * in_factor[:, None]
        if fold_output:
            kernel = kernel * dk.filter[:, :, None, None, None]
        return kernel

    def _grouped_weight(self, dk: DynamicKernel, fold_input: bool, fold_output: bool, batch: int) -> Tensor:
        """The weight of the grouped convolution over the batch, ``(B*O, I, k, k)``."""
        k, cout, cin = self.kernel_size[0], self.out_channels, self.in_channels
        kernel = self._folded_kernel(dk, fold_input, fold_output).permute(0, 1, 3, 2, 4)
        if not fold_input and dk.spatial is not None:
            kernel = kernel * dk.spatial[:, None, None]
        return kernel.expand(batch, -1, -1, -1, -1).reshape(batch * cout, cin, k, k)

    @staticmethod
    def _finish(y: Tensor, dk: DynamicKernel, bias: Tensor | None, filter_done: bool) -> Tensor:
        """The filter factor and bias where they were not folded into the kernel."""
        if filter_done:
            return y
        y = y * dk.filter[:, :, None, None].to(y.dtype)
        return y if bias is None else y + bias.to(y.dtype)[None, :, None, None]
