"""What FDConv2d and FDLinear share: the FDW spectrum, KSM, and the per-sample kernel builder."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ._ops.kernel_builder import modulated_kernels
from .fd_reference import aggregate_kernels, fdw_kernels
from .fdw import dft_to_weight, frequency_group_ids, real_dtype, spectral_scale, weight_to_dft
from .ksm import KSMGlobal, KSMLocal

__all__ = ["FDKernelBase", "DynamicKernel", "KernelFactors"]

#: Per-sample spectrum size (bytes, complex64) from which kernels are built and applied one sample at a
#: time. A whole batch's kernel temporaries (tens of MiB) sit above glibc's mmap threshold and are
#: page-faulted in again on every forward; one sample's are recycled, and used while still in cache.
#: Below this size the batch is cheaper in one go (Python overhead per sample dominates).
PER_SAMPLE_SPECTRUM_BYTES = 2 << 20

#: Largest chunk spectrum (bytes, complex64) on an accelerator. The two CPU reasons for one sample at a
#: time do not hold there (CUDA's caching allocator recycles blocks; caches are not the point), and every
#: per-sample op is a kernel launch, so chunks are as large as this bound on their temporaries allows.
ACCELERATOR_CHUNK_SPECTRUM_BYTES = 256 << 20

# Set by ``from_conv``/``from_linear``, which overwrite the spectrum at once: skips a Kaiming
# init and its FFT (per layer, as large as the conversion itself).
_SKIP_WEIGHT_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("fd_skip_weight_init", default=False)


@contextlib.contextmanager
def skip_weight_init() -> Iterator[None]:
    """Build FD layers with an uninitialised ``dft_weight``, for callers that load one right after."""
    token = _SKIP_WEIGHT_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_WEIGHT_INIT.reset(token)


def pooled_mean(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``x.mean(dims)`` in at least float32, for KSM, written as a sum divided afterwards.

    Same values (torch's CPU mean is this sum and division), cheaper backward: autograd's mean
    backward materialises an input-sized ``grad / n``, while the sum's is an expanded view that is
    added straight into the layer's input gradient (one pass over an input-sized tensor, not two).
    """
    count = 1
    for d in dims:   # a loop, not math.prod over a generator: dynamo traces this without a break
        count *= x.shape[d]
    return x.sum(dim=dims, dtype=torch.promote_types(x.dtype, torch.float32)) / count


class DynamicKernel(NamedTuple):
    """Per-sample kernel in M layout plus the rank-1 factors that are applied to activations.

    ``kernel`` is ``(B, O*k, I*k)`` = FDW kernel * sigmoid(local logits); ``channel`` (B, I)
    already carries the local branch's factor 2; ``spatial`` is ``(B, k, k)`` or None.
    """

    kernel: Tensor
    channel: Tensor
    filter: Tensor
    spatial: Tensor | None


class KernelFactors(NamedTuple):
    """KSM's per-sample outputs: everything the kernel builder needs, all of size O(B * (I + O + n))."""

    channel: Tensor
    filter: Tensor
    spatial: Tensor | None
    gains: Tensor | None
    windows: Tensor


class FDKernelBase(nn.Module):
    """FDW + KSM for an ``(O, I, k, k)`` kernel (a Linear is ``k = 1``).

    Parameter names are the official ones (``dft_weight``, ``bias``, ``KSM_Global``,
    ``KSM_Local``); the frequency-group map is a non-persistent buffer, rebuilt from the shape.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool, *,
                 kernel_num: int = 64, temperature: float = 1.0, ksm_reduction: float = 0.0625,
                 ksm_min_hidden: int = 16, recompute_kernel: bool = False, reference: bool | None = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        sizes = (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size))
        for name, value in sizes:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
        dd = dict(device=device, dtype=dtype)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_num = kernel_num
        k = kernel_size
        rows, cols = out_channels * k, in_channels * k
        try:
            group_ids = self._group_ids(k, device)
        except ValueError as err:
            raise ValueError(f"{self._describe(k)}: {err}") from None
        self.register_buffer("group_ids", group_ids, persistent=False)
        self.dft_weight = nn.Parameter(torch.empty(1, rows, cols // 2 + 1, 2, **dd))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        self.KSM_Global = KSMGlobal(in_channels, out_channels, k, kernel_num, temperature,
                                    ksm_reduction, ksm_min_hidden, **dd)
        self.KSM_Local = KSMLocal(in_channels, out_channels, k, **dd)
        self._fd_name = ""
        #: training: rebuild the per-sample kernels in backward instead of keeping them (one more FFT per
        #: sample for ~one kernel per sample less memory); a runtime choice, not saved with the weights
        self.recompute_kernel = recompute_kernel
        #: run the plain reference formulation (``fd_reference``) instead of the fast path; None: the global
        #: switch (``fd_reference.set_fd_reference``). A runtime choice, not saved with the weights
        self.reference = reference
        if not _SKIP_WEIGHT_INIT.get():
            weight = torch.empty(out_channels, in_channels, k, k)
            nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
            self.load_spatial_weight(weight)

    @property
    def _k(self) -> int:
        return self.KSM_Local.kernel_size

    def _group_ids(self, k: int, device) -> Tensor:
        # int32: the per-sample gain-map gather reads half the index bytes, and the buffer is half the size
        # (int64 is about the size of dft_weight); where backward uses index_add_, it converts (fdw._group_sums)
        ids = frequency_group_ids(self.out_channels * k, self.in_channels * k, self.kernel_num)
        return ids.to(device=device, dtype=torch.int32)

    def init_non_persistent_buffers(self) -> None:
        """Rebuild the frequency-group map, which checkpoints do not hold (timm's hook; e.g. after building the
        model on the meta device and ``to_empty()``, see ``timm.models.reinit_non_persistent_buffers``)."""
        self.group_ids = self._group_ids(self._k, self.dft_weight.device)

    def _describe(self, k: int | None = None) -> str:
        k = self._k if k is None else k
        name = f"layer '{self._fd_name}' " if getattr(self, "_fd_name", "") else ""
        return f"{name}{type(self).__name__}({self.in_channels}, {self.out_channels}, k={k})"

    @torch.no_grad()
    def load_spatial_weight(self, weight: Tensor) -> None:
        """Set the FDW spectrum from a plain kernel ``(O, I, k, k)`` or ``(O, I)`` (function preserving)."""
        k = self._k
        expected = (self.out_channels, self.in_channels, k, k)
        if weight.dim() == 2:
            weight = weight[:, :, None, None]
        if tuple(weight.shape) != expected:
            raise ValueError(
                f"{self._describe()}: weight of shape {tuple(weight.shape)} does not fit, expected {expected}"
            )
        self.dft_weight.copy_(weight_to_dft(weight).to(self.dft_weight))

    def static_weight(self) -> Tensor:
        """The kernel with neutral attention (``a = 1/n``, no modulation), ``(O, I, k, k)`` float32."""
        return dft_to_weight(self.dft_weight, self.out_channels, self.in_channels, self._k)

    def kernel_factors(self, pooled: Tensor) -> KernelFactors:
        """KSM on pooled features ``(B, I)``, in float32 (float64 kept). Stateful (BatchNorm): run once."""
        with torch.autocast(pooled.device.type, enabled=False):
            pooled = pooled.to(real_dtype(self.dft_weight.dtype))
            channel, filt, spatial, gains = self.KSM_Global(pooled)
            return KernelFactors(channel, filt, spatial, gains, self.KSM_Local.windows(pooled))

    def build_kernel(self, factors: KernelFactors, dtype: torch.dtype | None = None) -> DynamicKernel:
        """FDW x local gate from KSM's factors: a pure function, safe to recompute in backward.

        ``dtype``: the dtype the kernel and factors are used in (the GEMM's: autocast's, or a
        half-precision input's). The kernel is written in it directly, so backward keeps that copy only.
        """
        with torch.autocast(factors.channel.device.type, enabled=False):
            work = factors.channel.dtype
            local = self.KSM_Local
            scale = spectral_scale(self.out_channels, self.in_channels)
            if factors.gains is not None:
                scale *= self.kernel_num
            # contiguous: model.to(memory_format=torch.channels_last) restrides the 4-D spectrum parameter too
            kernel = modulated_kernels(self.dft_weight.to(work).contiguous(), factors.gains,
                                       local.conv.weight.to(work).view(-1, local.local_size), factors.windows,
                                       self.group_ids, self.out_channels, self._k, float(scale), dtype)
            spatial = factors.spatial
            if spatial is not None:
                spatial = spatial.view(-1, self._k, self._k)
            dk = DynamicKernel(kernel, 2.0 * factors.channel, factors.filter, spatial)
            if dtype is not None:
                dk = DynamicKernel(*(t if t is None else t.to(dtype) for t in dk))
        return dk

    def reference_kernels(self, pooled: Tensor) -> Tensor:
        """Every sample's kernel ``K_b`` (docs/method.md, sections 1-2) from pooled features ``(B, I)``, in plain
        torch ops: ``(B, O, I, k, k)`` in float32 (float64 kept), KSM outside autocast."""
        if torch.jit.is_scripting():
            return self._reference_kernels(pooled)
        else:
            with torch.autocast(pooled.device.type, enabled=False):
                return self._reference_kernels(pooled)

    def _reference_kernels(self, pooled: Tensor) -> Tensor:
        pooled = pooled.to(real_dtype(self.dft_weight.dtype))
        channel, filt, spatial, gains = self.KSM_Global(pooled)
        fdw = fdw_kernels(self.dft_weight.to(pooled.dtype), self.group_ids, gains, self.out_channels,
                          self.in_channels, self._k)
        return aggregate_kernels(fdw, self.KSM_Local(pooled), channel, filt, spatial)

    def _recomputing(self) -> bool:
        return self.recompute_kernel and self.training and torch.is_grad_enabled()

    def _samples_per_chunk(self, batch: int, device: torch.device) -> int:
        rows, half = self.dft_weight.shape[1:3]
        spectrum_bytes = rows * half * 8
        if device.type != "cpu":
            return max(1, min(batch, ACCELERATOR_CHUNK_SPECTRUM_BYTES // spectrum_bytes))
        return 1 if spectrum_bytes >= PER_SAMPLE_SPECTRUM_BYTES else max(batch, 1)

    def _apply_in_chunks(self, apply: Callable[..., Tensor], inputs: Tensor, factors: KernelFactors,
                         *args) -> Tensor:
        """``apply(inputs, factors, *args)`` over batch chunks (see ``PER_SAMPLE_SPECTRUM_BYTES``), each
        checkpointed when ``recompute_kernel`` is on, so backward also holds one chunk's kernel at a time."""
        batch = inputs.shape[0]
        step = self._samples_per_chunk(batch, inputs.device)
        recompute = self._recomputing()
        if step >= batch:   # one chunk: no slicing, whose backward zero-fills a copy
            chunks = [(inputs, factors)]
        else:               # split's backward is one concatenation, not a zero-filled input per chunk
            parts = [t if t is None else t.split(step) for t in factors]
            chunks = [(x, KernelFactors(*(None if p is None else p[i] for p in parts)))
                      for i, x in enumerate(inputs.split(step))]
        outputs = []
        for chunk in chunks:
            if recompute:
                outputs.append(checkpoint(apply, *chunk, *args, use_reentrant=False))
            else:
                outputs.append(apply(*chunk, *args))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
