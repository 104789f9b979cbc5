"""The fast path of FDW x KSM-local: per-sample kernels in the M layout with a hand-written backward.

Proven equal to ``fd_reference.fdw_kernels`` times the local modulation of
``fd_reference.aggregate_kernels`` by the tests, forward and gradients. Every step stays in the
parameter's own layout (``(O*k, I*k)``), so no kernel-sized permute is ever needed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fdw import real_dtype, self_conjugate_columns

__all__ = ["synthesize_kernels", "kernel_from_spectrum", "matrix_times_batch", "modulated_kernels"]


def synthesize_kernels(dft_weight: Tensor, gains: Tensor | None, group_ids: Tensor, cols: int,
                       scale: float) -> Tensor:
    """Per-sample FDW kernels in M layout, ``(B, rows, cols)`` (``(1, ...)`` if static), at least float32.

    The spectrum is ``scale * G * P`` with gain map ``G = gains[:, group_ids]``, or ``G = 1``
    when ``gains`` is None (one static kernel); ``group_ids`` is :func:`frequency_group_ids`
    (int64 or int32).
    """
    dtype = real_dtype(dft_weight.dtype if gains is None else torch.promote_types(dft_weight.dtype, gains.dtype))
    return _fdw_kernels(dft_weight[0].to(dtype), None if gains is None else gains.to(dtype), group_ids, cols, scale)


def _gain_map(gains: Tensor, group_ids: Tensor, scale: float) -> Tensor:
    """``scale * gains[:, group_ids]`` as a complex ``(B, rows, cols//2+1)`` map: one gather from the group ids.

    Complex, so that multiplying the complex spectrum by it converts no kernel-sized map (torch would
    make a complex copy of a real one inside the product). One sample (as large layers run): a 1-D
    ``index_select``, faster than gathering along dim 1, and faster again with int32 ids (half the
    index bytes to read). A batch: ``gather`` with an expanded int64 index, the faster one there.
    """
    ids = group_ids.view(-1)
    scaled = (gains * scale).to(torch.promote_types(gains.dtype, torch.complex64))
    if scaled.shape[0] == 1:
        flat = scaled.view(-1).index_select(0, ids)
    else:
        flat = torch.gather(scaled, 1, ids.long().expand(scaled.shape[0], -1))
    return flat.view(-1, *group_ids.shape)


#: Source bytes per sample from which :func:`_transposed` copies in bands, and the size of a band.
BANDED_TRANSPOSE_MIN_BYTES = 4 << 20
TRANSPOSE_BAND_BYTES = 1 << 20


def _transposed(x: Tensor) -> Tensor:
    """``x.transpose(-1, -2).contiguous()``, in bands of source rows when ``x`` is large.

    A transpose copy writes destination rows and reads source columns: one cache line per source row,
    at a stride of ``x.shape[-1]`` entries. After a rows-long FFT that stride is a multiple of 4 KiB,
    so the lines of a long column compete for a few cache sets and are fetched again for each
    destination row. Copying ~1 MiB bands of source rows keeps them cached, about three times faster
    at ResNet-50's layer4 shapes. A CPU measure: on an accelerator each band would be one more kernel
    launch, for no gain.
    """
    rows, cols = x.shape[-2:]
    row_bytes = cols * x.element_size()
    if x.device.type != "cpu" or rows * row_bytes < BANDED_TRANSPOSE_MIN_BYTES:
        return x.transpose(-1, -2).contiguous()
    out = x.new_empty(*x.shape[:-2], cols, rows)
    band = max(TRANSPOSE_BAND_BYTES // row_bytes, 1)
    for start in range(0, rows, band):
        out[..., start:start + band].copy_(x[..., start:start + band, :].transpose(-1, -2))
    return out


def _rows_transform(spectrum: Tensor, inverse: bool) -> Tensor:
    """The complex FFT over the rows (dim -2) of ``(B, rows, half)``, result in the same layout.

    torch runs an FFT along a strided axis several times slower than along the contiguous one, and a
    transpose copy of a complex tensor is cheap (about one pass), so: transpose, FFT, transpose
    back. Everything else in the kernel build and its backward stays contiguous in the
    parameter's own layout.
    """
    spectrum_t = spectrum.transpose(-1, -2).contiguous()
    if inverse:
        spectrum_t = torch.fft.ifft(spectrum_t, dim=-1)
    else:
        spectrum_t = torch.fft.fft(spectrum_t, dim=-1, norm="forward")
    return _transposed(spectrum_t)


def kernel_from_spectrum(spectrum: Tensor, cols: int) -> Tensor:
    """``irfft2(H(S))`` of a ``(B, rows, cols//2+1)`` complex spectrum, ``(B, rows, cols)``: the per-sample inverse
    FFT every FDW kernel costs, each 1-D pass on contiguous data (``benchmark.fft_floor`` times this).

    ``H`` (:func:`hermitian_part_`) is applied between the two passes, where it is cheapest: the inverse FFT
    over the rows of a column's Hermitian part is the real part of that column's inverse FFT.
    """
    rows_done = _rows_transform(spectrum, inverse=True)
    for v in self_conjugate_columns(cols):
        torch.view_as_real(rows_done)[..., v, 1] = 0.0
    return torch.fft.irfft(rows_done, n=cols, dim=-1)


def _fdw_kernels(dft: Tensor, gains: Tensor | None, group_ids: Tensor, cols: int, scale: float) -> Tensor:
    """``irfft2(H(scale * G * P))`` from ``dft`` ``(rows, half, 2)``: ``(B, rows, cols)`` in M layout."""
    spectrum = torch.view_as_complex(dft)
    if gains is None:
        spectrum = (spectrum * scale).unsqueeze(0)
    else:   # in the map's buffer: one fresh kernel-sized tensor less per sample (bitwise the same)
        spectrum = _gain_map(gains, group_ids, scale).mul_(spectrum)
    return kernel_from_spectrum(spectrum, cols)


def _block_weight(local_weight: Tensor, out_channels: int, k: int) -> Tensor:
    """``(O*k*k, ks)`` with rows ``(o, p, q)`` -> ``(O*k, ks*k)`` with entry ``[(o, p), (s, q)]``."""
    ks = local_weight.shape[1]
    return local_weight.view(out_channels * k, k, ks).transpose(1, 2).reshape(out_channels * k, ks * k)


def _block_windows(windows: Tensor, k: int) -> Tensor:
    """``(B, ks, I)`` -> ``(B, ks*k, I*k)``, entry ``[(s, q'), (i, q)] = windows[s, i] * (q == q')``."""
    batch, ks, cin = windows.shape
    eye = torch.eye(k, dtype=windows.dtype, device=windows.device)
    return (windows[:, :, None, :, None] * eye[:, None, :]).reshape(batch, ks * k, cin * k)


def matrix_times_batch(matrix: Tensor, batch: Tensor) -> Tensor:
    """``matrix @ batch[b]`` for every ``b``: ``(m, r)`` x ``(B, r, n)`` -> contiguous ``(B, m, n)``.

    Not ``torch.matmul``: when the 2-D operand requires grad (any parameter, even under no_grad or
    inference_mode), matmul folds the batch into one GEMM of the transposed problem and copies the
    result back to row-major. For the KSM local logits that copy is kernel-sized and costs many times the
    GEMM itself.
    """
    return torch.bmm(matrix.expand(batch.shape[0], -1, -1), batch)


def _local_gate(local_weight: Tensor, windows: Tensor, out_channels: int, k: int) -> Tensor:
    """``sigmoid`` of the KSM local logits, contiguous in the M layout ``(B, O*k, I*k)``.

    One GEMM against block-diagonal windows writes the logits straight in kernel order: a
    rank-``ks`` GEMM in channel order plus a transposed view was several times slower, and every
    elementwise pass over the transposed gate paid for the strides again.
    """
    return matrix_times_batch(_block_weight(local_weight, out_channels, k), _block_windows(windows, k)).sigmoid_()


def _group_sums(per_bin: Tensor, ids: Tensor, num_groups: int) -> Tensor:
    """``(B, bins)`` summed over each frequency group, ``(B, num_groups)``: the gains' gradient.

    One sample on the CPU (large layers): ``bincount`` reads int32 ids as they are, faster than
    ``index_add_`` with int64 ids or than converting the ids first. ``index_add_`` with int32 ids is far
    slower, so a batch converts the ids; so does an accelerator, where ``bincount`` is not deterministic,
    and ``torch.compile``, whose weighted ``bincount`` gave wrong sums (torch 2.15; the compiled-vs-eager
    test with per-sample chunks).
    """
    if per_bin.shape[0] == 1 and per_bin.device.type == "cpu" and not torch.compiler.is_compiling():
        return torch.bincount(ids, weights=per_bin[0], minlength=num_groups).unsqueeze(0)
    return per_bin.new_zeros(per_bin.shape[0], num_groups).index_add_(1, ids.long(), per_bin)


class _ModulatedKernels(torch.autograd.Function):
    """``K_b = irfft2(scale * G_b * P) * sigmoid(L_b)`` (FDW times the KSM local gate), memory-lean.

    Autograd through the plain ops keeps about four kernel-sized tensors per sample alive (gain
    map, FDW kernel, gate, product). Here backward needs only ``K`` itself, which the following
    matmul keeps anyway: the gate is recomputed from its rank-``ks`` inputs (a tiny GEMM), and
    ``fdw * gate * (1 - gate) = K * (1 - gate)`` needs no FDW kernel. The adjoints of the two
    inverse FFTs are forward FFTs (one ``rfft2`` of the kernel gradient per sample).

    With ``out_dtype`` (bfloat16/float16: the GEMM's dtype under autocast or in a half-precision model)
    the last product writes ``K`` in that dtype, and that is the copy backward keeps: the float32 ``K``
    and the GEMM's own cast of it were both kept before, 6 bytes per entry instead of 2.
    """

    @staticmethod
    def forward(ctx, dft: Tensor, gains: Tensor | None, local_weight: Tensor, windows: Tensor,
                group_ids: Tensor, out_channels: int, k: int, scale: float,
                out_dtype: torch.dtype | None = None) -> Tensor:
        fdw = _fdw_kernels(dft[0], gains, group_ids, windows.shape[-1] * k, scale)
        gate = _local_gate(local_weight, windows, out_channels, k)
        if out_dtype is not None and out_dtype != fdw.dtype:
            kernel = torch.mul(fdw, gate, out=fdw.new_empty(torch.broadcast_shapes(fdw.shape, gate.shape),
                                                            dtype=out_dtype))
        else:
            kernel = fdw.mul_(gate) if fdw.shape[0] == gate.shape[0] else fdw * gate
        ctx.save_for_backward(dft, gains, local_weight, windows, group_ids, kernel)
        ctx.meta = (out_channels, k, scale)
        return kernel

    @staticmethod
    def backward(ctx, grad: Tensor):
        dft, gains, local_weight, windows, group_ids, kernel = ctx.saved_tensors
        out_channels, k, scale = ctx.meta
        dft = dft[0]                                                     # (rows, half, 2); grads keep the leading 1
        rows, half = dft.shape[:2]
        cin = windows.shape[-1]
        cols = cin * k
        gate = _local_gate(local_weight, windows, out_channels, k)     # recomputed: a small GEMM, (B, rows, cols)
        grad = grad.reshape(-1, rows, cols)                              # K's dtype; products below are float32
        grads = [None] * 9
        need_spectrum = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        d_fdw = grad * gate if need_spectrum else None                   # the FDW kernel's gradient
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            # d logits = grad * fdw * gate * (1 - gate) = K * (grad - d_fdw), in the gate's own buffer
            # (backward allocates as few kernel-sized temporaries as it can; a frozen spectrum needs no d_fdw)
            if d_fdw is None:
                d_logits = gate.neg_().add_(1.0).mul_(grad).mul_(kernel)
            else:
                d_logits = torch.sub(grad, d_fdw, out=gate).mul_(kernel)
            ks = local_weight.shape[1]
            if ctx.needs_input_grad[2]:  # the (s, q) diagonal blocks of d_logits @ block_windows^T
                d_block = torch.matmul(d_logits, _block_windows(windows, k).transpose(1, 2)).sum(0)
                grads[2] = d_block.view(rows, ks, k).transpose(1, 2).reshape(-1, ks)
            if ctx.needs_input_grad[3]:
                d_block = matrix_times_batch(_block_weight(local_weight, out_channels, k).t(), d_logits)
                grads[3] = d_block.view(-1, ks, k, cin, k).diagonal(dim1=2, dim2=4).sum(-1)
            del d_logits
        del gate
        if need_spectrum:
            if gains is None:
                d_fdw = d_fdw.sum(0, keepdim=True)
            # adjoint of irfft(n=cols): rfft / cols, interior bins doubled; adjoint of ifft: fft / rows
            weights = torch.full((half,), 2.0, dtype=d_fdw.dtype, device=d_fdw.device)
            weights[0] = 1.0
            if cols % 2 == 0:
                weights[-1] = 1.0
            d_half = torch.fft.rfft(d_fdw, dim=-1, norm="forward").mul_(weights)
            del d_fdw
            d_spec = _rows_transform(d_half, inverse=False)                  # (B, rows, half) complex
            del d_half
            if gains is None:
                grads[0] = torch.view_as_real(d_spec.mul_(scale).sum(0, keepdim=True))
            else:
                # both products write into buffers backward already holds, not fresh kernel-sized ones
                # (fewer page faults on the CPU than fresh kernel-sized allocations)
                if ctx.needs_input_grad[0]:  # in the gain map's buffer
                    weighted = _gain_map(gains, group_ids, scale).mul_(d_spec)
                    weighted = weighted if weighted.shape[0] == 1 else weighted.sum(0, keepdim=True)
                    grads[0] = torch.view_as_real(weighted)
                if ctx.needs_input_grad[1]:  # Re(dS * conj(P)) per bin, summed over each frequency group
                    pairs = torch.view_as_real(d_spec).mul_(dft)                 # last use of d_spec
                    per_bin = torch.add(pairs[..., 0], pairs[..., 1]).view(pairs.shape[0], -1)
                    del pairs
                    grads[1] = _group_sums(per_bin, group_ids.view(-1), gains.shape[-1]).mul_(scale)
        return tuple(grads)


def modulated_kernels(dft_weight: Tensor, gains: Tensor | None, local_weight: Tensor, windows: Tensor,
                      group_ids: Tensor, out_channels: int, kernel_size: int, scale: float,
                      out_dtype: torch.dtype | None = None) -> Tensor:
    """Per-sample kernels in M layout, ``(B, O*k, I*k)``: FDW kernel times the KSM local gate ``sigmoid(L)``.

    ``gains`` (B, n) or None (static FDW kernel), ``local_weight`` (O*k*k, ks) and ``windows``
    (B, ks, I) give the local logits ``L = local_weight @ windows``; ``dft_weight`` is the
    ``(1, rows, half, 2)`` parameter. All in float32/float64; the kernel comes out in ``out_dtype``
    if given (the dtype it is used in). See :class:`_ModulatedKernels`.
    """
    return _ModulatedKernels.apply(dft_weight, gains, local_weight, windows, group_ids, out_channels,
                                   kernel_size, float(scale), out_dtype)
