"""Model names, creation with ``--init-from``, and the final export, for the training scripts."""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .errors import InputError

__all__ = ["check_model_name", "create_model", "export_model", "export_weights_and_config", "parse_model_kwargs",
           "vanilla_twin"]

_PREFIXES = ("hf-hub:", "local-dir:", "hf_hub:")


def _arch(name: str) -> str:
    return name.split(".", 1)[0]


def check_model_name(name: str) -> str:
    """Fail early, with suggestions, on a name timm does not know (``import fdconv_zoo`` registers ours)."""
    import timm

    import fdconv_zoo.baselines  # noqa: F401  (registers the *_fdconv models and the baselines with timm)

    if not name:
        raise InputError("--model is empty")
    if name.startswith(_PREFIXES):
        return name
    arch = _arch(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise InputError(f"unknown model '{name}': timm has no architecture '{arch}'{hint}. FDConv models are the "
                         "'*_fdconv' names fdconv_zoo registers (timm.list_models('*fdconv*'))")
    return name


def vanilla_twin(name: str) -> str:
    """``resnet18_fdconv`` -> ``resnet18``: the plain timm network an FDConv model was built from."""
    arch = _arch(name)
    if "_fdconv" not in arch:
        return name
    twin = arch.replace("_fdconv", "")
    return check_model_name(twin)


def parse_model_kwargs(items: list[str] | None) -> dict[str, Any]:
    """``['fd_kernel_num=4', 'drop_rate=0.1']`` -> kwargs; values are parsed as JSON when they can be."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--model-kwargs expects key=value items, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _classifier_rows(path: Path, model_name: str) -> int | None:
    """Class count of a checkpoint file's classifier, so timm keeps a matching head instead of dropping it."""
    import timm
    import torch

    cfg = timm.models.get_pretrained_cfg(_arch(model_name))
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if not classifier or isinstance(classifier, (list, tuple)):
        return None
    key = f"{classifier}.weight"
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return f.get_slice(key).get_shape()[0] if key in f.keys() else None
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable: let timm's loader report it with its own message
        raise InputError(f"--init-from '{path}': cannot read the checkpoint ({type(err).__name__}: {err})") from err
    for wrapper in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    for prefix in ("", "module.", "_orig_mod."):
        if isinstance(state, dict) and prefix + key in state:
            return int(state[prefix + key].shape[0])
    return None


def _init_source(model_name: str, init_from: str) -> dict[str, Any]:
    """``--init-from`` -> create_model kwargs (timm loads before any ``features_only`` wrapping).

    * a weights file (``.safetensors``/``.pth``/``.bin``) or an export folder (``model.safetensors``
      + ``config.json``) -> ``pretrained_cfg_overlay=dict(file=...)``;
    * ``<this model>.<tag>`` (e.g. a converted tag ``resnet50_fdconv.a1_in1k``) -> that pretrained tag;
    * a Hub repo ``org/name`` or a timm tag of another architecture (``resnet50.a1_in1k``, the
      vanilla twin) -> ``hf_hub_id`` overlay (``timm/`` org assumed for bare tags).

    FDConv models convert vanilla weights on load (weight -> FDW spectrum, neutral KSM/FBM), so
    the started network computes exactly what the source network did.
    """
    path = Path(init_from).expanduser()
    if path.exists():
        overlay: dict[str, Any] = {}
        if path.is_dir():
            for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
                if (path / name).is_file():
                    overlay["file"] = str(path / name)
                    break
            else:
                raise InputError(f"--init-from '{path}': no model.safetensors or pytorch_model.bin in that folder")
            cfg_path = path / "config.json"
            if cfg_path.is_file():
                num = json.loads(cfg_path.read_text()).get("num_classes")
                if isinstance(num, int):
                    overlay["num_classes"] = num
        else:
            overlay["file"] = str(path)
            num = _classifier_rows(path, model_name)
            if num is not None:
                overlay["num_classes"] = num
        return dict(pretrained=True, pretrained_cfg_overlay=overlay)
    if init_from.startswith(("/", "./", "../", "~")) or init_from.endswith((".safetensors", ".pth", ".bin", ".pt")):
        raise InputError(f"--init-from '{init_from}': no such file or directory")
    if init_from.startswith(_PREFIXES):
        init_from = init_from.split(":", 1)[1]
    if _arch(init_from) == _arch(model_name) and "." in init_from:
        return dict(pretrained=True, model_name=init_from)
    repo = init_from if "/" in init_from else f"timm/{init_from}"
    return dict(pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id=repo))


def create_model(name: str, *, num_classes: int | None = None, init_from: str | None = None,
                 pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with a checked name and ``--init-from``; loading failures become InputError."""
    import timm

    check_model_name(name)
    args: dict[str, Any] = dict(pretrained=pretrained, **kwargs)
    if num_classes is not None:
        args["num_classes"] = num_classes
    if init_from:
        source = _init_source(name, init_from)
        name = source.pop("model_name", name)
        args.update(source)
    try:
        return timm.create_model(name, **args)
    except TypeError as err:
        raise InputError(f"model '{name}' does not accept these arguments ({err}); check --model-kwargs") from err
    except (RuntimeError, FileNotFoundError, OSError, KeyError, ValueError) as err:
        if init_from:
            raise InputError(f"cannot initialise '{name}' from '{init_from}': {type(err).__name__}: {err}") from err
        raise


def export_model(model: nn.Module, folder: str | Path, *, model_args: Mapping[str, Any] | None = None,
                 data_config: Mapping[str, Any] | None = None, card: Mapping[str, Any] | None = None,
                 label_names: Sequence[str] | None = None) -> Path:
    """``model.safetensors`` + timm's ``config.json`` (+ card) in ``folder``, ready for ``push_to_hub``.

    With a ``card`` that has a ``tag``: :func:`fdconv_zoo.hub.save_for_hub` (weights, config and
    model card); else timm's ``save_for_hf``. Either way the files land atomically, and
    ``config.json`` records the ``create_model`` arguments (FDConv options included), so
    ``local-dir:``/``hf-hub:`` rebuild the network.
    """
    from timm.models import save_for_hf

    from fdconv_zoo.checkpoints.atomic_io import staged_folder
    from fdconv_zoo.hub import save_for_hub

    if card and card.get("tag"):
        try:
            return Path(save_for_hub(model, folder, model_args=model_args, data_config=data_config,
                                     label_names=label_names, **card))
        except Exception as err:  # the card is a nicety: never lose a finished run's weights over it
            warnings.warn(f"fdconv_zoo.hub.save_for_hub failed ({type(err).__name__}: {err}); exporting weights and "
                          "config.json without a model card", stacklevel=2)
    tag = (card or {}).get("tag") or "trained"  # not the source cfg's tag: these are new weights
    with staged_folder(folder) as staging:
        model_config: dict[str, Any] = dict(pretrained_cfg=dict(tag=tag))
        if label_names:
            model_config["label_names"] = list(label_names)
        save_for_hf(model, staging, model_config=model_config,
                    model_args=dict(model_args or {}), safe_serialization=True,
                    data_config=dict(data_config) if data_config else None)
    return Path(folder)


def export_weights_and_config(model: nn.Module, folder: str | Path, config: Mapping[str, Any], *,
                              card: str | None = None) -> Path:
    """``model.safetensors`` + ``config.json`` (+ ``README.md`` with ``card``) for the dense-prediction models,
    which are not timm models; moved into ``folder`` only once every file is complete."""
    import json

    from fdconv_zoo.checkpoints import save_safetensors
    from fdconv_zoo.checkpoints.atomic_io import staged_folder

    with staged_folder(folder) as staging:
        save_safetensors(model.state_dict(), staging / "model.safetensors", metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(dict(config), indent=2, default=float))
        if card is not None:
            (staging / "README.md").write_text(card)
    return Path(folder)
