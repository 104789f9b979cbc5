"""What the three FDConv model families share: FD options, model surgery, cfgs and the checkpoint filter.

Every ``*_fdconv`` model is timm's own class with eligible layers swapped in place for
FDConv2d/FDLinear right after the base ``__init__`` (so ``feature_info`` module paths and
timm's forward/intermediates code stay valid). Pretrained cfgs come in two kinds:

* converted tags ``<arch>_fdconv.<tag>``: timm's own ``timm/<arch>.<tag>`` checkpoint, read from
  the Hub and converted on load (``weight`` -> FDW spectrum, neutral KSM/FBM): the FDConv model
  reproduces the vanilla logits, it is not FDConv-trained;
* trained tags from ``hub/catalogue.json`` (:func:`fdconv_zoo.models._published.trained_cfgs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from timm.models import build_model_with_cfg, get_pretrained_cfg
from torch import Tensor, nn

from ..errors import HubUnavailableError, hub_network_errors
from ..layers.conversion import (
    ConversionReport,
    convert_to_fdconv,
    fd_layers,
    fd_skip_reason,
    matches_any,
    vanilla_to_fdconv,
)
from ..layers.fdlinear import FDLinear
from ..layers.ksm import ksm_hidden_channels
from ._published import find_entry, trained_cfgs

__all__ = [
    "FD_PAPER",
    "FDOptions",
    "apply_fdconv",
    "base_cfg",
    "converted_cfgs",
    "fd_checkpoint_filter",
    "fd_default_cfgs",
    "pop_fd_options",
    "FDModelMixin",
    "RuntimeOptions",
]

#: Paper/licence fields every ``*_fdconv`` cfg carries (timm shows them in model cards).
FD_PAPER: dict[str, Any] = dict(
    paper_name="Frequency Dynamic Convolution for Dense Image Prediction",
    paper_ids="arXiv:2503.18783",
    origin_url="https://github.com/Linwei-Chen/FDConv",
)
_USAGE_NOTE = "Needs `import fdconv_zoo` before timm.create_model (timm has no plugin auto-import)."

# Source-specific fields of timm's cfg that must not leak into ours (where the weights are is hf_hub_id).
_DROP_FROM_SOURCE = ("url", "file", "state_dict", "source", "architecture", "tag", "paper_name", "paper_ids",
                     "origin_url", "notes", "description")


@dataclass
class FDOptions:
    """FDConv hyperparameters of a model, all JSON-serialisable (they travel in timm's ``config.json``).

    ``include``/``exclude`` are glob patterns on module names (the placement); ``ksm_width``
    sizes the KSM global branch from the layer's input width (``'in'``, the spec's rule) or
    from its narrower side (``'min'``), which keeps an MLP's wide ``fc2`` from paying 4x.
    """

    kernel_num: int = 64
    min_channels: int = 16
    use_fbm: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ksm_reduction: float = 0.0625
    ksm_width: str = "in"

    def __post_init__(self) -> None:
        if isinstance(self.include, str) or isinstance(self.exclude, str):
            raise ValueError("fd_include/fd_exclude must be lists of glob patterns, not a single string")
        self.include = [str(p) for p in self.include]
        self.exclude = [str(p) for p in self.exclude]
        if self.ksm_width not in ("in", "min"):
            raise ValueError(f"fd_ksm_width must be 'in' or 'min', got {self.ksm_width!r}")
        if not isinstance(self.kernel_num, int) or self.kernel_num < 1:
            raise ValueError(f"fd_kernel_num must be a positive int, got {self.kernel_num!r}")

    def model_args(self) -> dict[str, Any]:
        """The options as ``create_model`` kwargs (``fd_`` prefix)."""
        return {f"fd_{k}": v for k, v in asdict(self).items()}


def _widths(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def apply_fdconv(model: nn.Module, options: FDOptions) -> ConversionReport:
    """Swap ``model``'s eligible layers for FD layers in place (function preserving) and record the options.

    Each layer goes through :func:`convert_to_fdconv` with its own KSM width (``ksm_width``).
    The options are added to the model's timm ``_model_args`` so ``save_for_hf`` /
    ``push_to_hf_hub`` write them into ``config.json`` and ``hf-hub:`` loading rebuilds the same model.
    """
    include, exclude = options.include or None, options.exclude

    def placed(name: str) -> bool:
        return (include is None or matches_any(name, include)) and not matches_any(name, exclude)

    report = ConversionReport()
    for name, m in list(model.named_modules()):
        if not name or type(m) not in (nn.Conv2d, nn.Linear):
            continue
        reason = fd_skip_reason(m, min_channels=options.min_channels) if placed(name) else (
            "outside the placement (fd_include/fd_exclude)")
        if reason is not None:
            report.skipped[name] = reason
            continue
        cin, cout = _widths(m)
        hidden = ksm_hidden_channels(cin if options.ksm_width == "in" else min(cin, cout), options.ksm_reduction)
        # KSM width is max(int(I * reduction), 16): a reduction of (hidden + 0.5) / I gives exactly `hidden`.
        part = convert_to_fdconv(model, min_channels=options.min_channels, include=[name],
                                 kernel_num=options.kernel_num, use_fbm=options.use_fbm,
                                 ksm_reduction=(hidden + 0.5) / cin)
        report.converted += part.converted
    model._model_args = dict(getattr(model, "_model_args", {}), **options.model_args())
    return report


@dataclass(frozen=True)
class RuntimeOptions:
    """Memory/time trade-offs chosen per run, not saved with the model (``fd_grad_checkpointing``:
    timm's ``set_grad_checkpointing``, each block recomputed in backward; ``fd_recompute_kernel``:
    each FD layer rebuilds its per-sample kernels in backward instead of keeping them; ``fd_reference``:
    every FD layer runs the plain reference formulation, ``layers/fd_reference.py``, instead of the fast
    path; None follows the global switch ``set_fd_reference``).
    """

    grad_checkpointing: bool = False
    recompute_kernel: bool = False
    reference: bool | None = None

    @classmethod
    def pop(cls, kwargs: dict[str, Any]) -> RuntimeOptions:
        reference = kwargs.pop("fd_reference", None)
        return cls(bool(kwargs.pop("fd_grad_checkpointing", False)), bool(kwargs.pop("fd_recompute_kernel", False)),
                   None if reference is None else bool(reference))

    def apply(self, model: nn.Module) -> None:
        model.set_grad_checkpointing(self.grad_checkpointing)
        for layer in fd_layers(model).values():
            layer.recompute_kernel = self.recompute_kernel
            layer.reference = self.reference


def build_fd_model(model_cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's ``build_model_with_cfg``, with the package's own message when pretrained weights cannot be fetched.

    huggingface_hub's bare "not in the local cache" error becomes :class:`HubUnavailableError`: the Hub repo
    that was tried and what to do (a cache filled elsewhere with ``HF_HUB_OFFLINE=1``, or ``fdconv-zoo convert``).
    """
    try:
        return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except hub_network_errors() as err:
        raise HubUnavailableError(_hub_repo(variant, kwargs.get("pretrained_cfg")), None, err) from err


def _hub_repo(variant: str, cfg: Any) -> str:
    """The Hub repo a build tried: ``cfg`` as timm hands it over (a tag, a dict, a ``PretrainedCfg`` or None)."""
    if isinstance(cfg, str) or cfg is None:
        cfg = get_pretrained_cfg(f"{variant}.{cfg}" if cfg else variant)
    repo = cfg.get("hf_hub_id") if isinstance(cfg, dict) else getattr(cfg, "hf_hub_id", None)
    return repo or variant


class FDModelMixin:
    """Put before a timm network class: builds it, then swaps the layers ``fd_defaults`` places for FDConv.

    Accepts every kwarg of the network plus the ``fd_*`` options of :class:`FDOptions` (saved in
    ``config.json``) and the :class:`RuntimeOptions`; ``fd_report`` lists what was converted.
    """

    fd_defaults: FDOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        runtime = RuntimeOptions.pop(kwargs)
        options = pop_fd_options(kwargs, self.fd_defaults)
        super().__init__(*args, **kwargs)
        self.fd_options = options
        self.fd_report = apply_fdconv(self, options)
        runtime.apply(self)


def pop_fd_options(kwargs: dict[str, Any], defaults: FDOptions) -> FDOptions:
    """Take the ``fd_*`` kwargs out of ``kwargs`` (falling back to the family's defaults)."""
    values = asdict(defaults)
    for key in list(kwargs):
        if key.startswith("fd_"):
            name = key[3:]
            if name not in values:
                raise TypeError(f"unknown FDConv option {key!r}; known: {sorted('fd_' + k for k in values)}")
            value = kwargs.pop(key)
            values[name] = list(value) if isinstance(value, (tuple, list)) else value
    return FDOptions(**values)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint filter


class _VanillaView:
    """``model`` as timm's own checkpoint filters expect it: FD layers report a plain ``weight`` key/shape.

    timm's filters read ``model.state_dict()[k].shape`` (ConvNeXt, for original FB checkpoints)
    and submodules (Swin's patch embed and bias tables); everything else is the real model.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def state_dict(self, *args, **kwargs) -> dict[str, Tensor]:
        sd = dict(self._model.state_dict(*args, **kwargs))
        for name, layer in fd_layers(self._model).items():
            prefix = f"{name}." if name else ""
            sd.pop(prefix + "dft_weight", None)
            k = layer.KSM_Local.kernel_size
            shape = ((layer.out_channels, layer.in_channels) if isinstance(layer, FDLinear)
                     else (layer.out_channels, layer.in_channels, k, k))
            sd[prefix + "weight"] = torch.empty(shape, device="meta")
        return sd


def fd_checkpoint_filter(base: Callable[[dict, nn.Module], dict] | None = None
                         ) -> Callable[[Mapping[str, Tensor], nn.Module], dict[str, Tensor]]:
    """A timm ``pretrained_filter_fn``: timm's own filter ``base`` first, then vanilla -> FD keys.

    ``base`` remaps original/foreign layouts to timm's (it sees the model as the vanilla one);
    :func:`fdconv_zoo.layers.conversion.vanilla_to_fdconv` then moves plain kernels into the FDW spectrum
    and fills KSM/FBM from the model's neutral init. FD checkpoints pass through unchanged.
    """

    def _filter(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
        if base is not None:
            state_dict = base(dict(state_dict), _VanillaView(model))
        return vanilla_to_fdconv(state_dict, model)

    return _filter


# ----------------------------------------------------------------------------------------------------------------
# Pretrained cfgs


def converted_cfgs(arch: str, tags: Sequence[str], **fields: Any) -> dict[str, dict[str, Any]]:
    """``{'<arch>_fdconv.<tag>': cfg}`` for timm's own ``<arch>.<tag>`` weights, converted on load.

    Preprocessing, ``hf_hub_id``, licence etc. are copied from timm's registered cfg (not
    retyped), the paper fields become FDConv's and the notes say the weights are converted.
    """
    from timm.models import get_pretrained_cfg

    out: dict[str, dict[str, Any]] = {}
    for tag in tags:
        src = get_pretrained_cfg(f"{arch}.{tag}")
        if src is None or not src.hf_hub_id:
            raise KeyError(f"timm has no Hub-hosted cfg for '{arch}.{tag}'")
        cfg = {k: v for k, v in src.to_dict(remove_source=False, remove_null=True).items()
               if k not in _DROP_FROM_SOURCE}
        cfg.update(FD_PAPER)
        cfg["notes"] = (
            f"Converted on load from timm's '{src.hf_hub_id}' (FFT of each kernel into FDConv's spectrum, "
            "neutral KSM/FBM): reproduces the vanilla model's outputs; NOT FDConv-trained. " + _USAGE_NOTE
        )
        cfg.update(fields)
        out[f"{arch}_fdconv.{tag}"] = cfg
    return out


def _is_trained(hf_hub_id: str) -> bool:
    """Whether the catalogue records ``hf_hub_id`` as FDConv-trained (not a hosted conversion)."""
    entry = find_entry(hf_hub_id)
    return bool(entry) and "trained_with" in entry.get("source", {})


def fd_default_cfgs(arch: str, base: Mapping[str, Any], converted_tags: Sequence[str],
                    default_tag: str) -> dict[str, dict[str, Any]]:
    """The cfg dict for ``generate_default_cfgs``: catalogue tags first, then timm's tags converted on load.

    The default tag (marked ``*``) is the first FDConv-trained catalogue tag when there is one,
    else ``default_tag`` (converted on load). ``base`` holds the family's preprocessing fields,
    used for the catalogue's checkpoints (their ``cfg`` overrides them) and mirrors timm's.
    """
    fd_arch = f"{arch}_fdconv"
    if default_tag not in converted_tags:
        raise ValueError(f"default tag {default_tag!r} is not among {list(converted_tags)}")
    hosted = trained_cfgs(fd_arch)
    trained = [tag for tag, fields in hosted.items() if _is_trained(fields.get("hf_hub_id", ""))]
    cfgs: dict[str, dict[str, Any]] = {}
    for tag, fields in sorted(hosted.items(), key=lambda item: item[0] not in trained):
        notes = _USAGE_NOTE if tag in trained else (
            "Hosted conversion of vanilla timm weights (neutral KSM/FBM); NOT FDConv-trained. " + _USAGE_NOTE)
        star = "*" if trained and tag == trained[0] else ""
        cfgs[f"{fd_arch}.{tag}{star}"] = {**base, **FD_PAPER, "notes": notes, **fields}
    for key, cfg in converted_cfgs(arch, converted_tags).items():
        if key.split(".", 1)[1] in hosted:
            continue  # the catalogue's checkpoint of that name wins
        star = "*" if not trained and key == f"{fd_arch}.{default_tag}" else ""
        cfgs[key + star] = cfg
    return cfgs


def base_cfg(**fields: Any) -> dict[str, Any]:
    """ImageNet defaults + FDConv paper fields; families override ``first_conv``/``classifier`` etc."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg: dict[str, Any] = dict(
        num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875, interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, license="apache-2.0", **FD_PAPER,
    )
    cfg.update(fields)
    return cfg
