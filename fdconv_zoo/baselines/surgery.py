"""Dynamic-convolution baselines as model surgery: CondConv, DY-Conv, ODConv and KernelWarehouse.

:func:`convert_to_dynamic` swaps a model's convs for one method's layer through the same
surgery loop as :func:`fdconv_zoo.convert_to_fdconv`
(:func:`~fdconv_zoo.layers.conversion.replace_layers`), function preserving where the method allows (see each
layer's docstring).
:func:`kw_share_warehouses` then groups KernelWarehouse layers into shared warehouses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from ..layers.condconv import CondConv2d, CondLinear
from ..layers.conversion import ConversionReport, matches_any, replace_layers
from ..layers.dyconv import DyConv2d
from ..layers.dynamic_base import DynamicConv2dBase
from ..layers.dynamic_schedules import anneal_dynamic_layers, dynamic_layers
from ..layers.kernel_warehouse import KWConv2d, share_warehouse
from ..layers.odconv import ODConv2d

__all__ = ["METHODS", "anneal_dynamic_layers", "convert_to_dynamic", "dynamic_layers", "dynamic_skip_reason",
           "kw_share_warehouses"]

#: method name -> its Conv2d drop-in.
METHODS: dict[str, type[DynamicConv2dBase]] = {
    "condconv": CondConv2d, "dyconv": DyConv2d, "odconv": ODConv2d, "kw": KWConv2d,
}


def dynamic_skip_reason(module: nn.Module, method: str, *, strided_only: Iterable[str] = (),
                        name: str = "") -> str | None:
    """Why ``module`` stays plain under ``method``, or None when it is converted."""
    layer_cls = METHODS[method]
    if isinstance(module, nn.Linear):
        return None if method == "condconv" else f"{method} converts Conv2d layers only"
    if not isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} is not a Conv2d"
    if module.groups != 1 and not layer_cls.supports_groups:
        return f"groups={module.groups} ({method} is implemented for groups=1)"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}"
    if isinstance(module.padding, str):
        return f"string padding {module.padding!r}"
    if matches_any(name, strided_only) and tuple(module.stride) == (1, 1):
        return "stride 1 (only strided layers of this kind are converted)"
    return None


def convert_to_dynamic(model: nn.Module, method: str, *, include: Iterable[str] | None = None,
                       exclude: Iterable[str] | None = None, strided_only: Iterable[str] = (),
                       layer_options: Callable[[str, nn.Module], Mapping[str, Any]] | None = None,
                       **options: Any) -> ConversionReport:
    """Swap ``model``'s convs (CondConv: also Linears) matched by ``include``/``exclude`` for ``method``'s layer.

    ``strided_only``: globs of layers converted only when strided (KernelWarehouse's
    downsample rule). ``layer_options(name, module)`` adds per-layer options (KW cell sizes).
    """
    if method not in METHODS:
        raise ValueError(f"unknown dynamic-conv method {method!r}; choose one of {sorted(METHODS)}")
    strided_only = tuple(strided_only)
    layer_cls = METHODS[method]

    def make(name: str, module: nn.Module) -> nn.Module:
        extra = dict(options, **(layer_options(name, module) if layer_options else {}))
        if isinstance(module, nn.Linear):
            return CondLinear.from_linear(module, **extra)
        return layer_cls.from_conv(module, **extra)

    names = {id(m): n for n, m in model.named_modules()}
    return replace_layers(model, make, include=include, exclude=exclude,
                          skip_reason=lambda m: dynamic_skip_reason(m, method, strided_only=strided_only,
                                                                    name=names.get(id(m), "")))


def kw_share_warehouses(model: nn.Module, group_of: Callable[[str, KWConv2d], str], mult: float) -> dict[str, int]:
    """Share one warehouse per group (``group_of(name, layer)``, e.g. stage and kernel size) of KW layers.

    Returns ``{group: number of warehouse cells}``. Every layer keeps its kernel (function preserving).
    """
    groups: dict[str, list[KWConv2d]] = {}
    for name, m in model.named_modules():
        if isinstance(m, KWConv2d):
            groups.setdefault(group_of(name, m), []).append(m)
    return {g: share_warehouse(layers, mult).num_cells for g, layers in groups.items()}


def kw_cell_sizes(convs: Mapping[str, nn.Conv2d], group_of: Callable[[str, nn.Conv2d], str],
                  divisors: Mapping[int, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Cell ``(co, ci)`` per layer: the gcd of all channel counts in the layer's group, divided by
    ``divisors[kernel_size] = (out_div, in_div)`` (default (1, 1)) so every layer of the group tiles exactly."""
    gcds: dict[str, int] = {}
    for name, conv in convs.items():
        g = group_of(name, conv)
        gcds[g] = math.gcd(gcds.get(g, 0), math.gcd(conv.in_channels, conv.out_channels))
    out = {}
    for name, conv in convs.items():
        g = gcds[group_of(name, conv)]
        do, di = divisors.get(conv.kernel_size[0], (1, 1))
        if g % do or g % di:
            raise ValueError(f"KW cell divisors {(do, di)} do not divide the group gcd {g} of layer '{name}'")
        out[name] = (g // do, g // di)
    return out
