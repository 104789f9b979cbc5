"""Checkpoints against a model: check every key and shape, map vanilla timm or official FDConv layouts to ours.

The checks exist because ``load_state_dict`` failures are hard to act on: every shape mismatch and every
missing or unexpected key is listed, with what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import ArchitectureMismatchError, KeyMismatchError
from ..layers.conversion import OFFICIAL_PREFIXES, fd_layers, official_to_zoo, vanilla_to_fdconv
from .files import load_checkpoint_file, save_safetensors

__all__ = ["check_state_dict", "detect_layout", "ConvertResult", "convert_state_dict", "convert_checkpoint"]


def _arch_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def check_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module, *, source: str = "checkpoint",
                     allow_missing: Iterable[str] = (), checkpoint_architecture: str | None = None) -> list[str]:
    """Raise unless ``state_dict`` loads strictly into ``model``; returns the allowed missing keys.

    Shape mismatches (and a config naming another architecture) raise
    :class:`ArchitectureMismatchError`; otherwise missing/unexpected keys raise
    :class:`KeyMismatchError`. Every offending key is listed. Keys in ``allow_missing`` may be
    absent (e.g. a detector backbone's classifier); the caller fills them from the model.
    """
    arch = _arch_name(model)
    own = model.state_dict()
    allow = set(allow_missing)
    missing = [k for k in own if k not in state_dict and k not in allow]
    unexpected = [k for k in state_dict if k not in own]
    mismatches = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)}
    if checkpoint_architecture is not None and checkpoint_architecture != arch:
        raise ArchitectureMismatchError(arch, mismatches, source, checkpoint_architecture=checkpoint_architecture,
                                        missing=missing, unexpected=unexpected)
    if mismatches:
        raise ArchitectureMismatchError(arch, mismatches, source, missing=missing, unexpected=unexpected)
    if missing or unexpected:
        raise KeyMismatchError(arch, missing, unexpected, source)
    return [k for k in own if k not in state_dict and k in allow]


def detect_layout(state_dict: Mapping[str, Tensor]) -> str:
    """``'official'`` (authors' mmdet keys, ``backbone.`` prefix), ``'fdconv'`` (ours) or ``'vanilla'``."""
    if any(k.startswith(OFFICIAL_PREFIXES) for k in state_dict):
        return "official"
    if any(k.endswith(".dft_weight") or k == "dft_weight" for k in state_dict):
        return "fdconv"
    return "vanilla"


@dataclass
class ConvertResult:
    """What a conversion produced and every key it did not carry over, for the report."""

    architecture: str
    layout: str
    state_dict: dict[str, Tensor]
    converted: list[str] = field(default_factory=list)       # FD layers whose spectrum came from a plain weight
    dropped: list[str] = field(default_factory=list)         # detector neck/head keys (not part of the backbone)
    unmapped: list[str] = field(default_factory=list)        # source keys with no place in the model
    filled: list[str] = field(default_factory=list)          # model keys absent from the source, kept at init
    reinitialised: list[str] = field(default_factory=list)   # classifier keys dropped for another num_classes
    output: Path | None = None
    model: nn.Module | None = field(default=None, repr=False)  # the model, loaded with ``state_dict``

    def report(self) -> str:
        """Human-readable summary: counts, then each list of keys."""
        from ..errors import format_key_list

        lines = [f"{self.layout} checkpoint -> {self.architecture}: {len(self.state_dict)} tensors, "
                 f"{len(self.converted)} FD layers converted from plain weights, "
                 f"{len(self.unmapped)} unmapped source keys"]
        for title, keys in (("unmapped source keys (not loaded!)", self.unmapped),
                            ("dropped non-backbone keys (detector neck/heads)", self.dropped),
                            ("missing from the source, kept at the model's init", self.filled),
                            ("classifier re-initialised (num_classes differs)", self.reinitialised)):
            if keys:
                lines.append(f"  {title} ({len(keys)}):\n{format_key_list(keys, 20)}")
        if self.output is not None:
            lines.append(f"  wrote {self.output}")
        return "\n".join(lines)


def _classifier_keys(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [k for k in model.state_dict() if any(k.startswith(n + ".") for n in names)]


def _vanilla_shape_check(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict:
    """Shape mismatches of a plain checkpoint for ``model``, whose FD layers expect a plain ``weight``."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, layer in fd_layers(model).items():
        k = layer.KSM_Local.kernel_size
        linear = hasattr(layer, "in_features")  # FDLinear: (O, I); FDConv2d: (O, I, k, k)
        expected[f"{name}.weight" if name else "weight"] = (layer.out_channels, layer.in_channels) + (
            () if linear else (k, k))
    return {key: (tuple(v.shape), expected[key]) for key, v in state_dict.items()
            if key in expected and tuple(v.shape) != expected[key]}


def convert_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module, *, layout: str = "auto",
                       strict: bool = True, source: str = "checkpoint") -> ConvertResult:
    """Map a vanilla timm, official FDConv or zoo state dict onto FD ``model``, checked, and load it.

    ``model`` is modified in place (its weights are the result's). Vanilla: ``weight`` ->
    ``dft_weight`` via :func:`fdconv_zoo.layers.conversion.vanilla_to_fdconv`. Official: through
    :func:`fdconv_zoo.layers.conversion.official_to_zoo` (``backbone.`` stripped, neck/heads dropped). The
    classifier may be absent (detector backbones) or of another size (``num_classes``): it keeps
    the model's init and is reported. With ``strict`` any other missing/unexpected key raises.
    """
    arch = _arch_name(model)
    state_dict = dict(state_dict)
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = dict(state_dict["state_dict"])
    layout = detect_layout(state_dict) if layout == "auto" else layout
    if layout not in ("official", "vanilla", "fdconv"):
        raise ValueError(f"layout must be 'auto', 'official', 'vanilla' or 'fdconv', got {layout!r}")
    result = ConvertResult(arch, layout, {}, model=model)
    own = model.state_dict()
    classifier = _classifier_keys(model)

    if layout == "official":
        mapped = official_to_zoo(state_dict)
        kept = {k for k in state_dict if k.startswith(OFFICIAL_PREFIXES)} or set(state_dict)
        result.dropped = sorted(k for k in state_dict if k not in kept)
    else:
        mapped = dict(state_dict)

    # A classifier of another size (num_classes) is re-initialised, as timm does for pretrained loads.
    for key in classifier:
        if key in mapped and tuple(mapped[key].shape) != tuple(own[key].shape):
            result.reinitialised.append(key)
            del mapped[key]
    if layout == "vanilla":
        mismatches = _vanilla_shape_check(mapped, model)
        if mismatches:
            raise ArchitectureMismatchError(arch, mismatches, source)
        result.converted = sorted(n for n in fd_layers(model) if (f"{n}.weight" if n else "weight") in mapped)
        mapped = vanilla_to_fdconv(mapped, model)

    result.unmapped = sorted(k for k in mapped if k not in own)
    mismatches = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in mapped.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)}
    if mismatches:
        raise ArchitectureMismatchError(arch, mismatches, source, missing=[k for k in own if k not in mapped],
                                        unexpected=result.unmapped)
    missing = [k for k in own if k not in mapped]
    result.filled = [k for k in missing if k in classifier or k in result.reinitialised]
    other_missing = [k for k in missing if k not in result.filled]
    if strict and (other_missing or result.unmapped):
        raise KeyMismatchError(arch, other_missing, result.unmapped, source)
    result.filled += other_missing
    loadable = {k: v for k, v in mapped.items() if k in own}
    model.load_state_dict({**{k: own[k] for k in result.filled}, **loadable}, strict=True)
    result.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return result


def _read_config(path: Path) -> dict:
    """timm's ``config.json`` beside a weights file (a Hub snapshot or a save_for_hub folder), or {}."""
    cfg = path.parent / "config.json"
    if not cfg.is_file():
        return {}
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def convert_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Tensor], architecture: str, *,
                       output: str | os.PathLike | None = None, layout: str = "auto", strict: bool = True,
                       num_classes: int | None = None, model_args: Mapping[str, Any] | None = None,
                       create_fn: Callable[..., nn.Module] | None = None) -> ConvertResult:
    """A vanilla timm / official FDConv checkpoint (local file or state dict) -> ``architecture``.

    The result is checked (see :func:`convert_state_dict`) and, with ``output``, written as safetensors
    atomically. For official detector backbones pass ``num_classes=0`` to build the model without classifier,
    or keep the default to get the classifier at its init (reported). Hub ids are
    :func:`fdconv_zoo.hub.convert_from_hub`'s (or ``fdconv-zoo convert``'s, which takes both).
    """
    import timm

    from .. import models  # noqa: F401  (registers the *_fdconv architectures with timm)

    source = str(checkpoint) if not isinstance(checkpoint, Mapping) else "state dict"
    config: dict = {}
    if isinstance(checkpoint, Mapping):
        state_dict = dict(checkpoint)
    elif Path(checkpoint).is_file():
        path = Path(checkpoint)
        state_dict = load_checkpoint_file(path)
        config = _read_config(path)
    else:
        raise FileNotFoundError(
            f"no checkpoint file '{checkpoint}'; for a Hub repo id use fdconv_zoo.hub.convert_from_hub("
            f"'{checkpoint}', '{architecture}') or `fdconv-zoo convert {checkpoint} {architecture}`"
        )
    ckpt_arch = config.get("architecture")
    # an FD checkpoint saved with non-default model_args (placement, kernel_num) carries them in config.json
    saved_args = config.get("model_args", {}) if ckpt_arch == architecture else {}
    kwargs = {**saved_args, **dict(model_args or {})}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = (create_fn or timm.create_model)(architecture, pretrained=False, **kwargs).eval()
    if ckpt_arch is not None and ckpt_arch.endswith("_fdconv") and ckpt_arch != architecture:
        check_state_dict(state_dict, model, source=source, checkpoint_architecture=ckpt_arch)
    result = convert_state_dict(state_dict, model, layout=layout, strict=strict, source=source)
    if output is not None:
        meta = {"format": "pt", "architecture": architecture, "source": source, "layout": result.layout}
        result.output = save_safetensors(result.state_dict, output, metadata=meta)
    return result
