"""FDConv written straight from the spec (docs/method.md), in float64, sharing no code with the layers.

Tests feed it the parameters of a layer (read by their official checkpoint names) and compare.
Everything is the plain formula: numpy's stable sort on the exact integer key, the Hermitian part
as an explicit loop over conjugate bins, low-pass masks from integer comparisons, one ``irfft2``
per sample, one convolution per sample.
"""

from __future__ import annotations

import copy
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The FBM cutoffs and whether a frequency exactly on each is kept (the authors' float32
#: ``|f| < c + 1e-8``: ``0.25 + 1e-8`` rounds to ``0.25``, the other two sums do not).
EDGE_KEPT = {Fraction(1, 4): False, Fraction(1, 8): True, Fraction(1, 16): True}


def spec_group_ids(rows: int, cols: int, n: int) -> np.ndarray:
    """Spec 1.4-1.5: stable sort on ``(u' cols)^2 + (v rows)^2``, then ``n`` near-equal chunks."""
    half = cols // 2 + 1
    u = np.arange(rows, dtype=np.int64)
    u = np.where(u < (rows + 1) // 2, u, u - rows)
    v = np.arange(half, dtype=np.int64)
    key = ((u[:, None] * cols) ** 2 + (v[None, :] * rows) ** 2).ravel()
    order = np.argsort(key, kind="stable")
    ids = np.empty(rows * half, dtype=np.int64)
    for g, chunk in enumerate(np.array_split(order, n)):
        ids[chunk] = g
    return ids.reshape(rows, half)


def spec_hermitian_part(spectrum: Tensor, cols: int) -> Tensor:
    """Spec 1.6's ``H`` on ``(..., rows, cols//2+1)``: a bin-by-bin loop over the self-conjugate columns."""
    out = spectrum.clone()
    rows = spectrum.shape[-2]
    columns = [0, cols // 2] if cols % 2 == 0 else [0]
    for v in columns:
        for u in range(rows):
            out[..., u, v] = (spectrum[..., u, v] + spectrum[..., (-u) % rows, v].conj()) / 2
    return out


def spec_low_pass_mask(size: int, cutoff: Fraction) -> np.ndarray:
    """1-D mask over ``fftfreq(size)``: ``|u'| / size < c``, or ``== c`` where the edge is kept (spec 3.2)."""
    u = np.abs(np.where(np.arange(size) < (size + 1) // 2, np.arange(size), np.arange(size) - size))
    scaled, edge = u * cutoff.denominator, size * cutoff.numerator
    return (scaled < edge) | ((scaled == edge) & EDGE_KEPT[cutoff])


def spec_low_pass_mask_2d(height: int, width: int, cutoff: Fraction) -> Tensor:
    rows = spec_low_pass_mask(height, cutoff)
    cols = spec_low_pass_mask(width, cutoff)[: width // 2 + 1]
    return torch.from_numpy(rows[:, None] & cols[None, :])


def _ksm(layer: nn.Module, params: dict[str, Tensor], pooled: Tensor, k: int, n: int):
    """Spec section 2, eval-mode BatchNorm (running statistics)."""
    p = params
    h = pooled @ p["KSM_Global.fc.weight"].flatten(1).t()
    eps = layer.KSM_Global.bn.eps
    h = (h - p["KSM_Global.bn.running_mean"]) / torch.sqrt(p["KSM_Global.bn.running_var"] + eps)
    h = h * p["KSM_Global.bn.weight"] + p["KSM_Global.bn.bias"]
    h = p["KSM_Global.relu.scale"] * torch.relu(h) ** 2 + p["KSM_Global.relu.bias"]
    temperature = layer.KSM_Global.temperature

    def head(name):
        return 2 * torch.sigmoid((h @ p[f"KSM_Global.{name}.weight"].flatten(1).t() + p[f"KSM_Global.{name}.bias"])
                                 / temperature)

    channel, filt = head("channel_fc"), head("filter_fc")
    spatial = head("spatial_fc") if k > 1 else torch.ones(pooled.shape[0], 1, dtype=pooled.dtype)   # k*k factors
    gains = head("kernel_fc") / n if n > 1 else torch.ones(pooled.shape[0], 1, dtype=pooled.dtype)
    z = F.layer_norm(pooled, (pooled.shape[1],), p["KSM_Local.norm.weight"], p["KSM_Local.norm.bias"],
                     layer.KSM_Local.norm.eps)
    local_weight = p["KSM_Local.conv.weight"]
    logits = F.conv1d(z[:, None], local_weight, padding=local_weight.shape[-1] // 2)   # (B, O*k*k, I)
    return channel, filt, spatial, gains, 2 * torch.sigmoid(logits)


def spec_kernels(layer: nn.Module, pooled: Tensor) -> Tensor:
    """Per-sample kernels ``(B, O, I, k, k)`` of spec sections 1-2, float64."""
    params = {name: t.detach().double() for name, t in layer.state_dict().items()}
    cout, cin = layer.out_channels, layer.in_channels
    k, n = layer.KSM_Local.kernel_size, layer.kernel_num
    channel, filt, spatial, gains, local = _ksm(layer, params, pooled.double(), k, n)
    batch, rows, cols = pooled.shape[0], cout * k, cin * k
    s = min(cout, cin) // 2
    dft = params["dft_weight"][0]
    P = torch.complex(dft[..., 0], dft[..., 1])
    ids = torch.from_numpy(spec_group_ids(rows, cols, n))
    S = (n * s) * gains[:, ids] * P
    W = torch.fft.irfft2(spec_hermitian_part(S, cols), s=(rows, cols))
    W = W.view(batch, cout, k, cin, k).permute(0, 1, 3, 2, 4)
    lam = local.view(batch, cout, k, k, cin).permute(0, 1, 4, 2, 3)
    return W * lam * channel[:, None, :, None, None] * filt[:, :, None, None, None] * spatial.view(batch, 1, 1, k, k)


def spec_fbm(layer: nn.Module, x: Tensor) -> Tensor:
    """Spec section 3 on ``x`` (B, C, H, W), float64."""
    fbm = layer.FBM
    height, width = x.shape[-2:]
    X = torch.fft.rfft2(x, norm="ortho")
    lows = [x]
    for c in fbm.cutoffs:
        mask = spec_low_pass_mask_2d(height, width, Fraction(c)).to(x.dtype)
        lows.append(torch.fft.irfft2(X * mask, s=(height, width), norm="ortho"))
    convs = [(m.weight.detach().double(), m.bias.detach().double()) for m in fbm.freq_weight_conv_list]
    gains = [2 * torch.sigmoid(F.conv2d(x, w, b, padding=1)) for w, b in convs]
    out = sum(gains[j] * (lows[j] - lows[j + 1]) for j in range(len(fbm.cutoffs)))
    return out + (gains[-1] * lows[-1] if fbm.lowfreq_att else lows[-1])


def spec_conv_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """An ``FDConv2d``'s output from the spec, float64, one convolution per sample."""
    x = x.double()
    kernels = spec_kernels(layer, x.mean(dim=(2, 3)))
    if layer.FBM is not None:
        x = spec_fbm(layer, x)
    bias = None if layer.bias is None else layer.bias.detach().double()
    return torch.cat([F.conv2d(x[b:b + 1], kernels[b], bias, layer.stride, layer.padding, layer.dilation)
                      for b in range(x.shape[0])])


def spec_linear_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """An ``FDLinear``'s output from the spec, float64: a 1x1 FDConv on tokens pooled over every position."""
    tokens = x.double().reshape(x.shape[0], -1, layer.in_features)
    kernels = spec_kernels(layer, tokens.mean(1))[..., 0, 0]          # (B, O, I)
    y = tokens @ kernels.transpose(1, 2)
    if layer.bias is not None:
        y = y + layer.bias.detach().double()
    return y.reshape(*x.shape[:-1], layer.out_features)


class SpecLayer(nn.Module):
    """Stands in for an FD layer inside a float64 network: runs the spec forward on its parameters."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self.layer, "in_features"):
            return spec_linear_forward(self.layer, x)
        return spec_conv_forward(self.layer, x)


def spec_network(model: nn.Module, fd_types: tuple[type, ...]) -> nn.Module:
    """A float64 copy of ``model`` (eval mode) whose FD layers compute the spec forward."""
    net = copy.deepcopy(model).double().eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, fd_types):
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, SpecLayer(module))
    return net


def perturb_fd_parameters_(model: nn.Module, fd_types: tuple[type, ...], seed: int = 0,
                           scale: float = 0.3) -> nn.Module:
    """Move every FD parameter off its neutral init, ``dft_weight`` too (no longer Hermitian), and give every
    BatchNorm non-trivial statistics: the state of a trained network."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, fd_types):
                for name, p in module.named_parameters():
                    noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
                    if name == "dft_weight":
                        p.add_(noise * p.std() * scale)
                    elif name != "bias":
                        p.add_(noise * scale)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=gen)
                module.running_var.uniform_(0.5, 1.5, generator=gen)
    return model
