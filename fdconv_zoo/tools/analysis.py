"""Looking inside FDConv and the dynamic-conv baselines: candidate kernels, their diversity, FBM bands, per-layer cost.

The numerical helpers need only torch; the ``plot_*`` functions need matplotlib (the
``analysis`` extra) and :func:`sample_image` scikit-image (it ships the sample photos, no
download). ``fdconv-zoo analyze`` drives them all.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..layers._ops.kernel_builder import synthesize_kernels
from ..layers.fbm import DEFAULT_CUTOFFS, frequency_bands
from ..layers.fd_base import FDKernelBase
from ..layers.fdw import conjugate_pairs, spectral_scale

__all__ = [
    "BasisSimilarity", "LayerRow", "band_decomposition", "basis_cosine_similarity", "basis_kernels",
    "candidate_kernels", "shared_frequency_pairs",
    "analyze_model", "kernel_cosine_similarity", "layer_rows", "plot_fbm_bands", "plot_fdw_group_spectra",
    "plot_similarity", "sample_image", "write_layer_table",
]


@torch.no_grad()
def basis_kernels(layer: FDKernelBase) -> Tensor:
    """The ``n`` FDW basis kernels ``irfft2(mask_g * s * P)``, shape ``(n, O, I, k, k)``.

    They sum to the layer's static kernel, and have disjoint frequency support except where a conjugate
    pair straddles two groups (:func:`shared_frequency_pairs`). Memory is ``n``
    times the kernel: meant for analysis, not for the forward pass.
    """
    n, k = layer.kernel_num, layer.KSM_Local.kernel_size
    cout, cin = layer.out_channels, layer.in_channels
    eye = torch.eye(n, device=layer.dft_weight.device, dtype=torch.float32) / n
    scale = float(n * spectral_scale(cout, cin))
    m = synthesize_kernels(layer.dft_weight, eye if n > 1 else None, layer.group_ids, cin * k, scale)
    return m.view(n, cout, k, cin, k).permute(0, 1, 3, 2, 4).contiguous()


class BasisSimilarity(NamedTuple):
    """What :func:`basis_cosine_similarity` measured on one layer's FDW basis."""

    matrix: Tensor                      #: (n, n) pairwise cosine similarity
    largest_disjoint: float             #: max |cos| over pairs of groups that share no frequency
    largest_shared: float               #: max |cos| over pairs that share one (0.0 when none do)
    shared_pairs: list[tuple[int, int]]  #: group pairs a conjugate pair straddles, ``(low, high)``

    def __str__(self) -> str:
        shared = (f"{self.largest_shared:.1e} at the {len(self.shared_pairs)} pairs sharing a frequency"
                  if self.shared_pairs else "no pair shares a frequency")
        return f"max |cos| {self.largest_disjoint:.1e} between disjoint groups; {shared}"


def shared_frequency_pairs(group_ids: Tensor, cols: int) -> list[tuple[int, int]]:
    """Pairs of groups whose borders split a conjugate pair ``(u, v)``, ``(-u, v)`` of a self-conjugate column.

    Those two groups' basis kernels share the real frequency of the pair (spec 1.5, 1.7); every
    other pair of groups has disjoint frequency support.
    """
    first, second = conjugate_pairs(group_ids.shape[0], cols)
    ids = group_ids.flatten().long().cpu()
    a, b = ids[first], ids[second]
    split = a != b
    return sorted({(int(lo), int(hi)) for lo, hi in zip(torch.minimum(a, b)[split], torch.maximum(a, b)[split],
                                                           strict=True)})


@torch.no_grad()
def basis_cosine_similarity(layer: FDKernelBase) -> BasisSimilarity:
    """Pairwise cosine similarity of the FDW basis kernels, with what it measures split by kind of pair.

    Pairs of groups with disjoint frequency support are orthogonal up to round-off; the few pairs a
    conjugate pair straddles (:func:`shared_frequency_pairs`) are not, by the authors' grouping.
    """
    matrix = kernel_cosine_similarity(basis_kernels(layer))
    n = matrix.shape[0]
    shared = shared_frequency_pairs(layer.group_ids, layer.in_channels * layer.KSM_Local.kernel_size)
    off = matrix.abs().double()
    off.fill_diagonal_(0.0)
    in_shared = torch.zeros(n, n, dtype=torch.bool)
    for lo, hi in shared:
        in_shared[lo, hi] = in_shared[hi, lo] = True
    largest_shared = float(off[in_shared].max()) if shared else 0.0
    return BasisSimilarity(matrix, float(off.masked_fill(in_shared, 0.0).max()), largest_shared, shared)


@torch.no_grad()
def band_decomposition(x: Tensor, cutoffs: Sequence[float] = DEFAULT_CUTOFFS) -> Tensor:
    """FBM's octave bands of a feature map ``(B, C, H, W)``, highest first: ``(B, J+1, C, H, W)``, summing to ``x``."""
    return torch.stack(frequency_bands(x, cutoffs), dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Any dynamic layer: candidate kernels, diversity, per-layer cost


def _dynamic_types() -> tuple[type, ...]:
    from ..layers.condconv import CondLinear
    from ..layers.dynamic_base import DynamicConv2dBase

    return (FDKernelBase, DynamicConv2dBase, CondLinear)


@torch.no_grad()
def candidate_kernels(layer: nn.Module) -> Tensor:
    """The kernels a dynamic layer's attention chooses from, ``(n, ...)``.

    FDConv: the FDW basis (:func:`basis_kernels`); CondConv/DY-Conv/ODConv: the parallel kernels;
    KernelWarehouse: the warehouse cells. ``n = 1`` for single-kernel layers (ODConv 1x).
    """
    if isinstance(layer, FDKernelBase):
        return basis_kernels(layer)
    if hasattr(layer, "candidate_kernels"):
        return layer.candidate_kernels()
    raise ValueError(f"{type(layer).__name__} is not a dynamic-conv layer (FDConv, CondConv, DY-Conv, ODConv, KW)")


@torch.no_grad()
def kernel_cosine_similarity(kernels: Tensor) -> Tensor:
    """Pairwise cosine similarity ``(n, n)`` of ``n`` kernels (any shape after the first axis), in float64."""
    flat = kernels.flatten(1).double()
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (flat @ flat.t()).float()


def _off_diagonal_abs(sim: Tensor) -> Tensor:
    n = sim.shape[0]
    return sim.abs()[~torch.eye(n, dtype=torch.bool)] if n > 1 else sim.new_zeros(0)


@dataclass
class LayerRow:
    """One row of the per-layer table."""

    name: str
    kind: str
    shape: str
    params: int
    extra_params: int
    gmacs: float | None
    candidates: int | None = None
    mean_abs_cos: float | None = None
    max_abs_cos: float | None = None


def _plain_params(m: nn.Module) -> int:
    if isinstance(m, FDKernelBase):
        k = m.KSM_Local.kernel_size
        return m.out_channels * m.in_channels * k * k + (m.bias.numel() if m.bias is not None else 0)
    if hasattr(m, "weight_shape"):
        return math.prod(m.weight_shape) + (m.out_channels if m.bias is not None else 0)
    if hasattr(m, "in_features"):
        return m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)
    return sum(p.numel() for p in m.parameters(recurse=False))


def _shape(m: nn.Module) -> str:
    if isinstance(m, FDKernelBase):
        k = m.KSM_Local.kernel_size
        return f"{m.in_channels}->{m.out_channels} k{k}"
    if hasattr(m, "in_channels"):
        return f"{m.in_channels}->{m.out_channels} k{m.kernel_size[0]}"
    return f"{m.in_features}->{m.out_features}"


@torch.no_grad()
def layer_rows(model: nn.Module, input_size: Sequence[int] = (3, 224, 224), *, diversity: bool = True,
               max_kernel_elements: int = 40_000_000) -> list[LayerRow]:
    """Params, extra params over the plain conv, GMACs (one image) and kernel diversity of every dynamic layer.

    GMACs come from ``FlopCounterMode`` per module (MACs = FLOPs / 2; FFTs and elementwise work are
    not counted, as in ``model_stats``). Diversity = mean/max ``|cos|`` between distinct candidate
    kernels; skipped (None) where ``n x kernel size`` exceeds ``max_kernel_elements`` (FDConv's
    64-kernel basis of a 512x512x3x3 layer is 151M floats).
    """
    from torch.utils.flop_counter import FlopCounterMode

    layers = {n: m for n, m in model.named_modules() if isinstance(m, _dynamic_types())}
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.randn(1, *input_size))
    model.train(was_training)
    flops = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for name, m in layers.items():
        params = sum(p.numel() for p in m.parameters())
        layer_flops = flops.get(f"{root}.{name}")
        row = LayerRow(name, type(m).__name__, _shape(m), params, params - _plain_params(m),
                       None if layer_flops is None else sum(layer_flops.values()) / 2e9)
        if diversity:
            n = getattr(m, "kernel_num", None) or getattr(m, "num_kernels", None) or getattr(m, "num_experts", None)
            size = _plain_params(m) * (n or 1)
            if size <= max_kernel_elements or not isinstance(m, FDKernelBase):
                kernels = candidate_kernels(m)
                off = _off_diagonal_abs(kernel_cosine_similarity(kernels))
                row.candidates = kernels.shape[0]
                if off.numel():
                    row.mean_abs_cos, row.max_abs_cos = float(off.mean()), float(off.max())
        rows.append(row)
    return rows


def write_layer_table(rows: Sequence[LayerRow], path: str | Path, *, title: str = "") -> str:
    """Markdown table of ``rows`` (plus a total) written to ``path``; returns the text."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    out = [f"# {title}", ""] if title else []
    out += ["| layer | type | shape | params | extra params | GMACs | candidates | mean abs cos | max abs cos |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| `{r.name}` | {r.kind} | {r.shape} | {r.params:,} | {r.extra_params:+,} | {num(r.gmacs, '.4f')} "
                   f"| {num(r.candidates, 'd')} | {num(r.mean_abs_cos, '.3g')} | {num(r.max_abs_cos, '.3g')} |")
    gm = [r.gmacs for r in rows if r.gmacs is not None]
    out.append(f"| **total ({len(rows)} layers)** | | | {sum(r.params for r in rows):,} | "
               f"{sum(r.extra_params for r in rows):+,} | {sum(gm):.3f} | | | |")
    text = "\n".join(out) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


# ----------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, the `analysis` extra)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plots need matplotlib: pip install 'fdconv-zoo[analysis]'") from err
    return plt


def sample_image(name: str = "astronaut", size: int = 224) -> Tensor:
    """A real photo from scikit-image's bundled samples (no download) or an image file, ``(1, 3, size, size)``,
    normalised with the ImageNet mean/std."""
    import numpy as np

    if Path(name).is_file():
        from PIL import Image

        array = np.asarray(Image.open(name).convert("RGB"))
    else:
        try:
            from skimage import data
        except ImportError as err:
            raise ImportError("sample photos need scikit-image: pip install 'fdconv-zoo[analysis]'") from err
        if not hasattr(data, name):
            raise ValueError(f"unknown sample image {name!r}: use a scikit-image sample (astronaut, coffee, chelsea) "
                             "or an image file path")
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        array = array[..., :3]
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()[None] / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    return (x - mean) / std


def plot_similarity(sim: Tensor, path: str | Path, title: str) -> Path:
    """Heatmap of a pairwise cosine-similarity matrix, colour range [-1, 1]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(sim.numpy(), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("kernel")
    ax.set_ylabel("kernel")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def plot_fdw_group_spectra(layer: FDKernelBase, path: str | Path, title: str = "") -> Path:
    """FDW of one FDConv layer: the frequency-group map, the log-magnitude spectrum and energy per group."""
    plt = _pyplot()
    spec = torch.view_as_complex(layer.dft_weight[0].float().contiguous()).abs()
    groups = layer.group_ids.cpu()
    energy = torch.zeros(layer.kernel_num).index_add_(0, groups.flatten().long(), spec.flatten().square().cpu())
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].imshow(groups.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    axes[0].set_title(f"frequency group of each rFFT bin ({layer.kernel_num} groups)", fontsize=8)
    im = axes[1].imshow(torch.log10(spec.cpu() + 1e-12).numpy(), aspect="auto", cmap="magma", interpolation="nearest")
    axes[1].set_title("log10 |spectrum| (rows: out x k, cols: in x k / 2 + 1)", fontsize=8)
    fig.colorbar(im, ax=axes[1])
    axes[2].bar(range(layer.kernel_num), (energy / energy.sum().clamp_min(1e-30)).numpy())
    axes[2].set_title("share of spectral energy per group (low -> high frequency)", fontsize=8)
    axes[2].set_xlabel("group")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


@torch.no_grad()
def plot_fbm_bands(model: nn.Module, image: Tensor, path: str | Path, layer_name: str) -> Path:
    """FBM's octave bands of the feature map entering ``layer_name`` (an FDConv layer) for ``image``.

    Shows the image, the channel-mean absolute value of each band (high to low) and, where the
    layer's FBM attention maps exist, their values (2 sigmoid(conv3x3(x)): 1 at a neutral init).
    """
    plt = _pyplot()
    layer = model.get_submodule(layer_name)
    captured: dict[str, Tensor] = {}
    handle = layer.register_forward_pre_hook(lambda mod, args: captured.setdefault("x", args[0].detach()))
    was_training = model.training
    model.eval()
    try:
        model(image)
    finally:
        handle.remove()
        model.train(was_training)
    x = captured["x"].float()
    bands = band_decomposition(x)[0]                                   # (J+1, C, H, W), highest first
    labels = ["[1/4, 1/2]", "[1/8, 1/4]", "[1/16, 1/8]", "[0, 1/16] (low)"][: bands.shape[0]]
    fig, axes = plt.subplots(1, bands.shape[0] + 1, figsize=(3 * (bands.shape[0] + 1), 3.2))
    img = image[0].permute(1, 2, 0)
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    axes[0].imshow(img.numpy())
    axes[0].set_title("input", fontsize=8)
    for ax, band, label in zip(axes[1:], bands, labels, strict=True):
        ax.imshow(band.abs().mean(0).numpy(), cmap="inferno")
        ax.set_title(f"band {label} cycles/px\nmean |x| over {band.shape[0]} ch", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"FBM bands at the input of {layer_name} ({tuple(x.shape[-2:])})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def analyze_model(model: nn.Module, out_dir: str | Path, *, title: str = "", image: str = "astronaut",
                  image_size: int = 224, max_plots: int = 4, plots: bool = True,
                  max_kernel_elements: int = 40_000_000) -> dict[str, Any]:
    """Everything ``fdconv-zoo analyze`` writes into ``out_dir``: ``layers.md``, ``summary.json`` and PNGs.

    PNGs (``plots=True``): a diversity heatmap for up to ``max_plots`` layers with more than one
    candidate kernel (the first of each stage first), FDW group spectra and FBM band maps over a
    real photo for FDConv models. Returns the summary (also written as JSON).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = layer_rows(model, (3, image_size, image_size), max_kernel_elements=max_kernel_elements)
    if not rows:
        raise ValueError(f"{title or type(model).__name__} has no dynamic-conv layers to analyze (FDConv, CondConv, "
                         "DY-Conv, ODConv or KernelWarehouse); pass an *_fdconv or baseline model name")
    table = write_layer_table(rows, out / "layers.md", title=title)
    files = ["layers.md"]
    if plots:
        layers = dict(model.named_modules())
        diverse = [r for r in rows if r.candidates and r.candidates > 1]
        firsts = [r for r in diverse if r.name.split(".")[-1] in ("conv1", "fc1") and ".0." in r.name]
        by_name = {r.name: r for r in diverse}
        for r in [by_name[n] for n in dict.fromkeys(r.name for r in [*firsts, *diverse])][:max_plots]:
            sim = kernel_cosine_similarity(candidate_kernels(layers[r.name]))
            f = f"diversity_{r.name.replace('.', '_')}.png"
            plot_similarity(sim, out / f, f"{title} {r.name}: cosine similarity of {r.candidates} candidate kernels\n"
                                          f"mean |cos| off-diagonal {r.mean_abs_cos:.3g}")
            files.append(f)
        fd = [r.name for r in rows if isinstance(layers[r.name], FDKernelBase)]
        for name in fd[:max_plots]:
            f = f"fdw_spectra_{name.replace('.', '_')}.png"
            plot_fdw_group_spectra(layers[name], out / f, f"{title} {name}")
            files.append(f)
        fbm = [name for name in fd if getattr(layers[name], "FBM", None) is not None]
        if fbm:
            img = sample_image(image, image_size)
            for name in fbm[:2]:
                f = f"fbm_bands_{name.replace('.', '_')}.png"
                plot_fbm_bands(model, img, out / f, name)
                files.append(f)
    summary = dict(
        model=title, layers=len(rows), params=sum(p.numel() for p in model.parameters()),
        extra_params=sum(r.extra_params for r in rows),
        gmacs_dynamic_layers=sum(r.gmacs or 0.0 for r in rows),
        mean_abs_cos={r.name: r.mean_abs_cos for r in rows if r.mean_abs_cos is not None}, files=files,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    summary["table"] = table
    return summary
