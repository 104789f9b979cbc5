"""Dynamic-convolution baselines on timm's ResNet: ``resnet{18,50}_{condconv8x,dyconv4x,odconv1x,odconv4x,kw1x,kw4x}``.

Each model is timm's ResNet with convs swapped in place after construction (like the
``*_fdconv`` models), with the papers' placements (BASELINES.md):

* **CondConv 8x**: the convs of the last three residual blocks (ResNet-50: all of layer4,
  +90.0M as in the FDConv paper's detection table); ``resnet18_condconv8x`` also makes the
  classifier an 8-expert layer, which the published ImageNet ResNet-18 count (+69.66M) includes.
  ``dyn_classifier`` switches that.
* **DY-Conv 4x**: every conv of ``layer1..4`` (block convs and downsample).
* **ODConv 1x/4x**: every block conv (``conv1/2/3``), downsample plain.
* **KernelWarehouse 1x/4x**: block convs except ``layer1.0.conv1``, plus the strided
  downsample convs; one warehouse per stage and kernel size. The paper's cell layout is not
  reproducible from its text, so the cell size (a divisor of the group's channel gcd) and
  the attention width are set per network to land on the published counts (see
  ``KW_PRESETS``).

All are function preserving at init (``from_conv``), so vanilla timm weights load through
``fd_checkpoint_filter``-style conversion on the fly and the network reproduces them.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn

from ..layers.condconv import CondLinear
from ..models._fd_builder import base_cfg, build_fd_model
from .surgery import METHODS, convert_to_dynamic, dynamic_layers, kw_cell_sizes, kw_share_warehouses

__all__ = ["ResNetDyn", "BASELINE_VARIANTS", "KW_PRESETS", "PAPERS", "vanilla_to_dynamic"]

PAPERS: dict[str, dict[str, str]] = {
    "condconv": dict(paper_name="CondConv: Conditionally Parameterized Convolutions for Efficient Inference",
                     paper_ids="arXiv:1904.04971",
                     origin_url="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/condconv"),
    "dyconv": dict(paper_name="Dynamic Convolution: Attention over Convolution Kernels", paper_ids="arXiv:1912.03458",
                   origin_url="https://arxiv.org/abs/1912.03458"),
    "odconv": dict(paper_name="Omni-Dimensional Dynamic Convolution", paper_ids="arXiv:2209.07947",
                   origin_url="https://github.com/OSVAI/ODConv"),
    "kw": dict(paper_name="KernelWarehouse: Rethinking the Design of Dynamic Convolution",
               paper_ids="arXiv:2406.07879", origin_url="https://github.com/OSVAI/KernelWarehouse"),
}

#: KernelWarehouse cell divisors per kernel size ``{k: (out_div, in_div)}`` and attention reduction, per block type.
KW_PRESETS: dict[str, dict[str, Any]] = {
    "bottleneck": dict(divisors={1: (1, 2), 3: (4, 4)}, reduction=1 / 16),
    "basic": dict(divisors={1: (1, 1), 3: (1, 2)}, reduction=1 / 8),
}

#: suffix -> (method, multiplier): experts (CondConv), kernels (DY-Conv, ODConv) or warehouse size (KW).
BASELINE_VARIANTS: dict[str, tuple[str, float]] = {
    "condconv8x": ("condconv", 8), "dyconv4x": ("dyconv", 4), "odconv1x": ("odconv", 1), "odconv4x": ("odconv", 4),
    "kw1x": ("kw", 1), "kw4x": ("kw", 4),
}


def _stage_of(name: str) -> str:
    return name.split(".", 1)[0]


class ResNetDyn(ResNet):
    """timm's ResNet with one dynamic-conv baseline swapped in after construction.

    Extra kwargs: ``dyn_method`` (condconv | dyconv | odconv | kw), ``dyn_mult`` (experts /
    kernels / warehouse multiplier), ``dyn_classifier`` (CondConv on ``fc``). ``dyn_report``
    lists what was converted; ``dyn_warehouses`` the KW warehouse sizes.
    """

    def __init__(self, *args: Any, dyn_method: str = "odconv", dyn_mult: float = 1,
                 dyn_classifier: bool | None = None, **kwargs: Any) -> None:
        if dyn_method not in METHODS:
            raise ValueError(f"dyn_method must be one of {sorted(METHODS)}, got {dyn_method!r}")
        if dyn_mult <= 0:
            raise ValueError(f"dyn_mult must be > 0, got {dyn_mult}")
        super().__init__(*args, **kwargs)
        blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(len(getattr(self, f"layer{i}")))]
        basic = isinstance(self.layer1[0], BasicBlock)
        if dyn_classifier is None:
            dyn_classifier = dyn_method == "condconv" and basic
        self.dyn_warehouses: dict[str, int] = {}
        if dyn_method == "condconv":
            include = [f"{b}.conv*" for b in blocks[-3:]] + (["fc"] if dyn_classifier else [])
            report = convert_to_dynamic(self, "condconv", include=include, num_experts=int(dyn_mult))
        elif dyn_method == "dyconv":
            report = convert_to_dynamic(self, "dyconv", include=["layer*"], num_kernels=int(dyn_mult))
        elif dyn_method == "odconv":
            report = convert_to_dynamic(self, "odconv", include=["layer*.conv*"], num_kernels=int(dyn_mult))
        else:
            preset = KW_PRESETS["basic" if basic else "bottleneck"]
            include, exclude = ["layer*.conv*", "layer*.downsample.0"], ["layer1.0.conv1"]
            convs = {n: m for n, m in self.named_modules()
                     if type(m) is nn.Conv2d and n.startswith("layer") and n != "layer1.0.conv1"
                     and (".conv" in n or (n.endswith("downsample.0") and tuple(m.stride) != (1, 1)))}

            def group(name: str, m: nn.Module) -> str:
                return f"{_stage_of(name)}_k{m.kernel_size[0]}"

            cells = kw_cell_sizes(convs, group, preset["divisors"])
            report = convert_to_dynamic(
                self, "kw", include=include, exclude=exclude, strided_only=["*downsample*"], mult=float(dyn_mult),
                reduction=preset["reduction"],
                layer_options=lambda n, m: dict(cell_out=cells[n][0], cell_in=cells[n][1]))
            self.dyn_warehouses = kw_share_warehouses(self, group, float(dyn_mult))
        self.dyn_method = dyn_method
        self.dyn_report = report
        self._model_args = dict(getattr(self, "_model_args", {}), dyn_method=dyn_method, dyn_mult=dyn_mult,
                                dyn_classifier=dyn_classifier)


def vanilla_to_dynamic(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A timm ``pretrained_filter_fn``: plain ``<layer>.weight`` tensors become the baseline layers' init.

    Each plain kernel goes through the layer's function-preserving ``load_static_weight`` (or
    ``CondLinear.from_linear``) on ``model`` itself, and every baseline-only tensor is then taken
    from ``model``; the result loads strictly and reproduces the plain network. Checkpoints
    already in the baseline layout (no plain-shaped ``weight``) pass through unchanged.
    """
    own = model.state_dict()
    layers = dynamic_layers(model)
    plain = {}
    for n in layers:
        w, mine = state_dict.get(f"{n}.weight"), own.get(f"{n}.weight")
        if w is not None and (mine is None or w.dim() != mine.dim()):   # KW layers have no own `weight`
            plain[n] = w
    if not plain and all(k in state_dict for k in own):
        return dict(state_dict)
    with torch.no_grad():
        for name, weight in plain.items():
            layer = layers[name]
            if isinstance(layer, CondLinear):
                src = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
                src.weight.copy_(weight)
                layer.weight.copy_(CondLinear.from_linear(src, num_experts=layer.num_experts,
                                                          expert_noise=layer.expert_noise).weight)
            else:
                layer.load_static_weight(weight.to(layer.bias.dtype if layer.bias is not None else torch.float32))
    own = model.state_dict()
    out = {k: v for k, v in state_dict.items() if k in own}
    prefixes = tuple(f"{n}." for n in layers)
    for key, value in own.items():
        if key not in out or (key.startswith(prefixes) and not key.endswith(".bias")):
            out[key] = value.detach().clone()
    return out


def _cfg(method: str) -> dict[str, Any]:
    cfg = base_cfg(first_conv="conv1", classifier="fc", **PAPERS[method])
    cfg["notes"] = "Needs `import fdconv_zoo` before timm.create_model. Random init only (no trained weights)."
    return cfg


default_cfgs = generate_default_cfgs({
    f"resnet{depth}_{suffix}": _cfg(method) for depth in (18, 50) for suffix, (method, _) in BASELINE_VARIANTS.items()
})


def _create(depth: int, suffix: str, pretrained: bool, **kwargs: Any) -> ResNetDyn:
    method, mult = BASELINE_VARIANTS[suffix]
    block, layers = (BasicBlock, (2, 2, 2, 2)) if depth == 18 else (Bottleneck, (3, 4, 6, 3))
    args = dict(block=block, layers=layers, dyn_method=method, dyn_mult=mult)
    return build_fd_model(ResNetDyn, f"resnet{depth}_{suffix}", pretrained,
                                pretrained_filter_fn=vanilla_to_dynamic, **dict(args, **kwargs))


@register_model
def resnet18_condconv8x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, CondConv 8 experts in the last three blocks and the classifier (+69.7M)."""
    return _create(18, "condconv8x", pretrained, **kwargs)


@register_model
def resnet50_condconv8x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, CondConv 8 experts in layer4's convs (+90.0M)."""
    return _create(50, "condconv8x", pretrained, **kwargs)


@register_model
def resnet18_dyconv4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, DY-Conv 4 kernels in every layer1-4 conv (+33.8M)."""
    return _create(18, "dyconv4x", pretrained, **kwargs)


@register_model
def resnet50_dyconv4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, DY-Conv 4 kernels in every layer1-4 conv (+75.3M)."""
    return _create(50, "dyconv4x", pretrained, **kwargs)


@register_model
def resnet18_odconv1x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, ODConv 1 kernel in every block conv (+0.25M)."""
    return _create(18, "odconv1x", pretrained, **kwargs)


@register_model
def resnet50_odconv1x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, ODConv 1 kernel in every block conv (+3.08M)."""
    return _create(50, "odconv1x", pretrained, **kwargs)


@register_model
def resnet18_odconv4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, ODConv 4 kernels in every block conv (+33.2M)."""
    return _create(18, "odconv4x", pretrained, **kwargs)


@register_model
def resnet50_odconv4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, ODConv 4 kernels in every block conv (+65.1M)."""
    return _create(50, "odconv4x", pretrained, **kwargs)


@register_model
def resnet18_kw1x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, KernelWarehouse 1x (+0.24M)."""
    return _create(18, "kw1x", pretrained, **kwargs)


@register_model
def resnet50_kw1x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, KernelWarehouse 1x (+2.49M)."""
    return _create(50, "kw1x", pretrained, **kwargs)


@register_model
def resnet18_kw4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-18, KernelWarehouse 4x (+34.2M)."""
    return _create(18, "kw4x", pretrained, **kwargs)


@register_model
def resnet50_kw4x(pretrained: bool = False, **kwargs: Any) -> ResNetDyn:
    """ResNet-50, KernelWarehouse 4x (+76.5M)."""
    return _create(50, "kw4x", pretrained, **kwargs)
