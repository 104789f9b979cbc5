"""Model surgery and checkpoint conversion: plain convs/linears -> FDConv, and official FDConv keys -> zoo."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from .fd_base import FDKernelBase
from .fdconv import FDConv2d
from .fdlinear import FDLinear
from .fdw import weight_to_dft

__all__ = [
    "ConversionReport",
    "convert_to_fdconv",
    "replace_layers",
    "fd_skip_reason",
    "vanilla_to_fdconv",
    "official_to_zoo",
    "OFFICIAL_PREFIXES",
]

OFFICIAL_PREFIXES = ("backbone.",)


@dataclass
class ConversionReport:
    """What :func:`convert_to_fdconv` did: converted layer names and skipped ones with the reason."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} layers, skipped {len(self.skipped)}"]
        lines += [f"  + {name}" for name in self.converted]
        lines += [f"  - {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def fd_skip_reason(module: nn.Module, *, min_channels: int = 16,
                   kernel_sizes: Iterable[int] = (1, 3)) -> str | None:
    """Why ``module`` must stay plain (spec section 4), or None when it becomes FDConv.

    The one placement predicate shared by model surgery and checkpoint conversion.
    """
    if isinstance(module, nn.Conv2d):
        cin, cout = module.in_channels, module.out_channels
        if module.groups != 1:
            return f"groups={module.groups} (FDConv needs groups=1)"
        if module.kernel_size[0] != module.kernel_size[1]:
            return f"non-square kernel {tuple(module.kernel_size)}"
        if module.kernel_size[0] not in tuple(kernel_sizes):
            return f"kernel size {module.kernel_size[0]} not in {tuple(kernel_sizes)}"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}"
    elif isinstance(module, nn.Linear):
        cin, cout = module.in_features, module.out_features
        if 1 not in tuple(kernel_sizes):
            return "linear layers are 1x1 and 1 is not in kernel_sizes"
    else:
        return f"{type(module).__name__} is not a Conv2d or Linear"
    if min(cin, cout) <= min_channels:
        return f"min(in, out) = {min(cin, cout)} <= min_channels={min_channels}"
    return None


def matches_any(name: str, patterns: Iterable[str] | None) -> bool:
    """Whether a module name matches one of the glob ``patterns`` (``include``/``exclude`` placement)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


def replace_layers(model: nn.Module, make: Callable[[str, nn.Module], nn.Module], *,
                   skip_reason: Callable[[nn.Module], str | None], include: Iterable[str] | None = None,
                   exclude: Iterable[str] | None = None,
                   types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)) -> ConversionReport:
    """The one model-surgery loop behind every converter (FDConv and the dynamic-conv baselines).

    Visits every module whose type is exactly one of ``types`` (subclasses such as already
    converted layers are left alone), applies the ``include``/``exclude`` globs on its
    qualified name, then ``skip_reason`` (None = convert), and swaps it in place for
    ``make(name, module)``. Returns what was converted and why the rest was skipped.
    """
    include = None if include is None else tuple(include)
    exclude = tuple(exclude or ())
    report = ConversionReport()
    for name, module in list(model.named_modules()):
        if type(module) not in types or not name:
            continue
        if include is not None and not matches_any(name, include):
            report.skipped[name] = "not matched by include"
            continue
        if matches_any(name, exclude):
            report.skipped[name] = "matched by exclude"
            continue
        reason = skip_reason(module)
        if reason is not None:
            report.skipped[name] = reason
            continue
        new = make(name, module)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        report.converted.append(name)
    return report


def convert_to_fdconv(model: nn.Module, *, min_channels: int = 16, kernel_sizes: Iterable[int] = (1, 3),
                      include: Iterable[str] | None = None, exclude: Iterable[str] | None = None,
                      **options) -> ConversionReport:
    """Replace eligible ``nn.Conv2d``/``nn.Linear`` layers of ``model`` in place, function preserving.

    ``include``/``exclude`` are glob patterns on qualified module names (``'layer*'``,
    ``'*downsample*'``); a layer must match ``include`` (when given) and not ``exclude``.
    ``options`` go to :class:`FDConv2d` (Linear layers get those FDLinear accepts).
    """
    kernel_sizes = tuple(kernel_sizes)
    linear_options = {k: v for k, v in options.items() if not k.startswith("fbm") and k != "use_fbm"}

    def make(name: str, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            new = FDConv2d.from_conv(module, **options)
        else:
            new = FDLinear.from_linear(module, **linear_options)
        new._fd_name = name
        return new

    return replace_layers(model, make, include=include, exclude=exclude,
                          skip_reason=lambda m: fd_skip_reason(m, min_channels=min_channels,
                                                               kernel_sizes=kernel_sizes))


def fd_layers(model: nn.Module) -> dict[str, FDKernelBase]:
    """Every FDConv2d/FDLinear of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, FDKernelBase)}


def vanilla_to_fdconv(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map a plain checkpoint onto an FD ``model``: ``<p>.weight`` -> ``<p>.dft_weight`` (spec 1.1-1.2).

    FD-only tensors (KSM, FBM) missing from ``state_dict`` are filled from ``model``'s neutral
    init, so the result loads strictly and reproduces the plain network. Keys that already are
    FD (``dft_weight`` present) pass through untouched: FD-trained checkpoints are a no-op.
    """
    out = dict(state_dict)
    own = model.state_dict()
    for name, layer in fd_layers(model).items():
        prefix = f"{name}." if name else ""
        weight_key = prefix + "weight"
        if prefix + "dft_weight" not in out and weight_key in out:
            weight = out.pop(weight_key)
            expected = (layer.out_channels, layer.in_channels)
            if tuple(weight.shape[:2]) != expected:
                raise ValueError(
                    f"checkpoint tensor '{weight_key}' has shape {tuple(weight.shape)}, but FD layer '{name}' is "
                    f"{layer.out_channels}x{layer.in_channels}: the checkpoint is for another architecture"
                )
            dft = weight_to_dft(weight)
            out[prefix + "dft_weight"] = dft.to(own[prefix + "dft_weight"].dtype)
        for key, value in own.items():
            if key.startswith(prefix) and key not in out:
                out[key] = value.detach().clone()
    return out


def official_to_zoo(state_dict: Mapping[str, Tensor], *, prefixes: Iterable[str] = OFFICIAL_PREFIXES,
                    keep: Callable[[str], bool] | None = None) -> dict[str, Tensor]:
    """Keys of the authors' mmdet ``ResNet_FDConv`` checkpoint -> ``resnet*_fdconv`` keys.

    The zoo keeps the official per-layer layout (spec section 5), so the mapping strips mmdet's
    ``backbone.`` prefix and drops detector keys (``neck.``, ``rpn_head.``, ...). Tensors are
    unchanged. Wrapped checkpoints (``{'state_dict': ...}``) are unwrapped.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    prefixes = tuple(prefixes)
    has_prefixed = any(k.startswith(prefixes) for k in state_dict)
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            if has_prefixed:
                continue  # a detector's neck/heads: not part of the backbone
        if key.startswith("module."):
            key = key[len("module."):]
        if keep is None or keep(key):
            out[key] = value
    return out
