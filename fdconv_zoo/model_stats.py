"""Parameter and compute table of the ``*_fdconv`` models (``scripts/model_table.py``, ``fdconv-zoo table``).

GMACs are measured with :class:`torch.utils.flop_counter.FlopCounterMode` on one 224 x 224
image (MACs = counted FLOPs / 2). They cover every convolution and matrix product, the
per-sample FD ones included (the grouped conv / batched GEMM with the synthesised kernels,
KSM's small linears, FBM's 3x3 attention convs). Not in GMACs: the FFTs (per-sample kernel
synthesis ``irfft2`` and FBM's band split), reported separately as an estimate of
``2.5 N log2 N`` real FLOPs per length-N real transform, and elementwise work (kernel
modulation, sigmoid gates), which FlopCounterMode does not count for any model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["ModelStats", "FD_VARIANTS", "count_params", "count_compute", "model_stats", "params_table",
           "write_params_table"]

#: Every registered FDConv variant, in table order.
FD_VARIANTS: tuple[str, ...] = (
    "resnet18_fdconv", "resnet34_fdconv", "resnet50_fdconv", "resnet101_fdconv", "resnet152_fdconv",
    "convnext_tiny_fdconv", "convnext_small_fdconv", "convnext_base_fdconv",
    "swin_tiny_patch4_window7_224_fdconv", "swin_small_patch4_window7_224_fdconv",
    "swin_base_patch4_window7_224_fdconv",
)


@dataclass
class ModelStats:
    """One table row: FD model vs its vanilla timm source."""

    arch: str
    base_arch: str
    params: int
    base_params: int
    gmacs: float | None
    base_gmacs: float | None
    fft_gflops: float | None
    fd_layers: int

    @property
    def extra_params(self) -> int:
        return self.params - self.base_params


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


def model_stats(arch: str, image_size: int = 224, compute: bool = True) -> ModelStats:
    """Build ``arch`` (an ``*_fdconv`` name) and its vanilla source, count parameters and compute."""
    import timm

    from . import models  # noqa: F401  (registers the FD models)

    base_arch = arch.removesuffix("_fdconv")
    fd = timm.create_model(arch, pretrained=False)
    base = timm.create_model(base_arch, pretrained=False)
    size = (3, image_size, image_size)
    gmacs = base_gmacs = fft = None
    if compute:
        gmacs, fft = count_compute(fd, size)
        base_gmacs, _ = count_compute(base, size)
    return ModelStats(arch, base_arch, count_params(fd), count_params(base), gmacs, base_gmacs, fft,
                      len(fd.fd_report.converted))


def _placement(arch: str) -> str:
    if arch.startswith("resnet"):
        return "block convs (spec)"
    return "mlp.fc1 + fc2, KSM C/16"


def params_table(rows: Iterable[ModelStats], image_size: int = 224) -> str:
    """Markdown table of the rows plus the counting notes."""
    rows = list(rows)
    out = [
        f"| model | FD layers | placement | params | vanilla params | extra params | GMACs @{image_size} "
        f"| vanilla GMACs | FFT GFLOPs (est.) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in rows:
        out.append(
            f"| `{r.arch}` | {r.fd_layers} | {_placement(r.arch)} | {r.params:,} | {r.base_params:,} | "
            f"+{r.extra_params:,} ({r.extra_params / 1e6:.2f}M, +{100 * r.extra_params / r.base_params:.1f}%) | "
            f"{num(r.gmacs)} | {num(r.base_gmacs)} | {num(r.fft_gflops)} |"
        )
    return "\n".join(out)


_HEADER = """# Parameters and compute of the FDConv models

Generated by `python scripts/model_table.py` (or `fdconv-zoo table`); do not edit by hand.
Default FD options: `kernel_num=64`, `min_channels=16`; FBM on 3x3 layers (ResNets only).

"""

_NOTES = """

## Placement

- **ResNet** (spec section 4, the authors' placement): `conv1`/`conv2`/`conv3` of every block in
  `layer1..4`, strided ones included; stem, `downsample` and `fc` stay plain; FBM on the 3x3 convs.
  ResNet-50: +3,647,120 = the paper's +3.6M.
- **ConvNeXt and Swin** (the paper gives about +3M for the tiny models, its code is unreleased):
  `mlp.fc1` **and** `mlp.fc2` of every block become `FDLinear` (a 1x1 FDConv on tokens; KSM pools
  over all positions of a sample), with the KSM global branch of both sized from the block width C:
  hidden = max(C/16, 16) (`fd_ksm_width='min'`). Why:
  - the token MLPs are the per-position linear maps of these networks, the counterpart of the 1x1/3x3
    convs FDConv replaces in ResNet, and they hold about two thirds of the block's weights;
  - both MLP layers, so every MLP weight gets frequency-diverse dynamic kernels; `fc1` alone reaches
    only +1.51M / +1.00M (ConvNeXt-T / Swin-T);
  - the spec's KSM rule (hidden = I/16) gives the 4C-wide `fc2` a branch four times wider than `fc1`'s:
    it alone is two thirds of the all-MLP +9.04M / +6.03M, for gates computed from the same pooled
    statistics. Sizing both from C keeps the block's 1/16 bottleneck and lands at **+3.55M (ConvNeXt-T)
    / +2.37M (Swin-T)**, the closest of the measured options to the paper's ~+3M on both;
  - Swin attention (`qkv`, `proj`) stays plain: it runs on (windows x B, 49, C) groups, where an FD
    layer would pool per window and synthesise one kernel per window (64 per image at 224);
    depthwise 7x7 convs (groups != 1), stems, downsamplers and heads stay plain as in ResNet.
  Other placements are model kwargs: `fd_include=[...globs]`, `fd_exclude`, `fd_ksm_width='in'` (spec
  rule), `fd_ksm_reduction`, `fd_kernel_num`, `fd_min_channels`; they are stored in `config.json`.

## Counting

- *extra params* = FDConv model minus its vanilla timm source (same head).
- *GMACs*: FlopCounterMode on one image, all convolutions and matrix products (FD ones included:
  per-sample grouped conv / batched GEMM with the synthesised kernels, KSM linears, FBM attention
  convs), MACs = FLOPs / 2. **Not counted** in GMACs: FFTs (per-sample kernel synthesis `irfft2`,
  FBM band split) -- given separately as *FFT GFLOPs (est.)*, 2.5 N log2 N real FLOPs per length-N
  real transform -- and elementwise work (kernel modulation, gates), as for any model measured
  this way.
"""


def write_params_table(path: str | Path, archs: Sequence[str] = FD_VARIANTS, image_size: int = 224,
                       compute: bool = True, progress: bool = False) -> str:
    """Measure ``archs`` and write the markdown table to ``path``; returns the text."""
    rows = []
    for arch in archs:
        rows.append(model_stats(arch, image_size, compute))
        if progress:
            r = rows[-1]
            print(f"{arch}: +{r.extra_params:,} params, {r.gmacs} GMACs", flush=True)
    text = _HEADER + params_table(rows, image_size) + _NOTES
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
