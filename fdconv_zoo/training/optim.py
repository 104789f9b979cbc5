"""Optimizer and schedule: AdamW with decay only on real weights, cosine with linear warmup.

AdamW is the default for FDConv networks: the FDW spectrum (``dft_weight``) is scaled by
``1/(min(C)//2)``, so a plain SGD step moves the spatial kernel by a layer-dependent fraction
of the intended LR (BASELINES.md, quirk 11); Adam's per-coordinate normalisation and the
decoupled weight decay (a linear map commutes with a uniform shrink) do not care.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["FD_ATTENTION_MODULES", "build_optimizer", "cosine_schedule", "is_no_decay", "param_groups"]

#: Sub-modules of an FDConv layer that compute attentions, not kernels: no weight decay.
FD_ATTENTION_MODULES = ("KSM_Global", "KSM_Local", "FBM")


def _model_no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                names |= {f"{prefix}.{n}" if prefix else n for n in fn()}
            except TypeError:
                continue
    return names


def is_no_decay(name: str, param: torch.Tensor, extra: Iterable[str] = ()) -> bool:
    """Norms, biases, scalars, FDConv attention heads (KSM/FBM) and a model's own no-decay names."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    parts = name.split(".")
    if any(p in FD_ATTENTION_MODULES for p in parts[:-1]):
        return True
    return any(name == n or name.endswith("." + n) or name.startswith(n + ".") for n in extra)


def param_groups(model: nn.Module, weight_decay: float, *, lr_mults: Sequence[tuple[str, float]] = ()) -> list[dict]:
    """Trainable parameters split by (decay, LR multiplier); ``lr_mults`` = ``[(name_prefix, mult), ...]``.

    Each group carries ``lr_mult``; :func:`cosine_schedule` keeps the ratio between groups.
    """
    extra = _model_no_decay_names(model)
    groups: dict[tuple[bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = is_no_decay(name, p, extra)
        mult = next((m for prefix, m in lr_mults if name.startswith(prefix)), 1.0)
        key = (no_decay, mult)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_mult": mult}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, *, lr: float, weight_decay: float = 0.05, betas: Sequence[float] = (0.9, 0.999),
                    eps: float = 1e-8, lr_mults: Sequence[tuple[str, float]] = ()) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's initial LR is ``lr * lr_mult``."""
    groups = param_groups(model, weight_decay, lr_mults=lr_mults)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
        g.pop("names")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                    min_lr_ratio: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from ~0 to the base LR over ``warmup_steps``, then cosine down to ``min_lr_ratio`` x base.

    A ``LambdaLR``: its state is the step count, so ``save_state``/``load_state`` restore it exactly.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
