"""Which layers of a model are dynamic-conv baselines, and their papers' training schedules."""

from __future__ import annotations

from torch import nn

from .condconv import CondLinear
from .dyconv import annealed_temperature, set_temperature
from .dynamic_base import DynamicConv2dBase
from .kernel_warehouse import kw_tau_schedule, set_kw_tau

__all__ = ["anneal_dynamic_layers", "dynamic_layers"]


def dynamic_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every dynamic-conv baseline layer of ``model`` (CondConv/DY-Conv/ODConv/KW, CondLinear) by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (DynamicConv2dBase, CondLinear))}


def anneal_dynamic_layers(model: nn.Module, epoch: float) -> dict[str, float]:
    """Set the papers' schedules at (fractional) ``epoch``: DY-Conv/ODConv temperature 30 -> 1 over 10 epochs,
    KernelWarehouse tau 1 -> 0 over 20. Stateless, so a resumed run gets the same values; a model without
    such layers is left alone. Returns what was set (for logging).
    """
    out: dict[str, float] = {}
    temperature = annealed_temperature(epoch)
    if set_temperature(model, temperature):
        out["temperature"] = temperature
    tau = kw_tau_schedule(epoch)
    if set_kw_tau(model, tau):
        out["kw_tau"] = tau
    return out
