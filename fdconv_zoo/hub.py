"""Publish, pull and check checkpoints on the Hugging Face Hub.

Built on timm's own export (``save_for_hf``: ``config.json`` + ``model.safetensors``, reloaded
through ``hf-hub:``/``local-dir:``) and huggingface_hub's real API (``HfApi.create_repo``,
``create_commit`` with ``CommitOperationAdd``). What this module adds: a model card, a check
that the staged folder reproduces the model before anything is uploaded, the catalogue record
(``hub/catalogue.json``), sha256 verification of downloads against it, and errors that say what
to do when the Hub is out of reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic_io import staged_folder
from .catalogue import HUB_ORG, find_entry, make_entry, record_checkpoint
from .checkpoints import file_sha256, load_checkpoint_file, verify_sha256
from .hub_errors import (
    CatalogueError,
    CorruptCheckpointError,
    HubError,
    HubUnavailableError,
    ReproductionError,
    hub_network_errors,
)

__all__ = [
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "CARD_NAME",
    "HUB_FILES",
    "hub_error_guidance",
    "download_weights",
    "create_model",
    "save_for_hub",
    "load_hub_folder",
    "verify_hub_folder",
    "PushResult",
    "push_to_hub",
    "register_catalogue_tags",
]

_USAGE_NOTE = "Needs `import fdconv_zoo` before timm.create_model (timm has no plugin auto-import)."
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
HUB_FILES = (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME)


def _split_revision(repo_id: str) -> tuple[str, str | None]:
    repo_id = repo_id.removeprefix("hf-hub:")
    repo, _, revision = repo_id.partition("@")
    return repo, revision or None


@contextlib.contextmanager
def hub_error_guidance(repo_id: str, filename: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> Iterator[None]:
    """Re-raise "Hub unreachable and not cached" failures as :class:`HubUnavailableError` (with the fix).

    huggingface_hub raises ``LocalEntryNotFoundError`` both in offline mode and after a failed
    connection; either way the file is not cached, which is what the user must act on.
    """
    from huggingface_hub import constants

    try:
        yield
    except hub_network_errors() as err:
        cache = str(cache_dir or constants.HF_HUB_CACHE)
        raise HubUnavailableError(_split_revision(repo_id)[0], filename, err, cache) from err


def download_weights(repo_id: str, *, filename: str | None = None, revision: str | None = None,
                     cache_dir: str | os.PathLike | None = None) -> Path:
    """Local path of a repo's weights (``model.safetensors``, else ``pytorch_model.bin``), via the HF cache.

    ``repo_id`` may carry ``hf-hub:`` and ``@revision``. Offline/unreachable and not cached:
    :class:`HubUnavailableError`.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, rev = _split_revision(repo_id)
    revision = revision or rev
    candidates = [filename] if filename else [WEIGHTS_NAME, "pytorch_model.bin"]
    errors: list[EntryNotFoundError] = []
    with hub_error_guidance(repo, candidates[0], cache_dir):
        for name in candidates:
            try:
                return Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache_dir))
            except EntryNotFoundError as err:  # not in the repo (404) or not cached: try the next name
                errors.append(err)
                if isinstance(err, LocalEntryNotFoundError) and not constants.is_offline_mode():
                    break  # online but unreachable: the next name would only wait out the same retries
        raise errors[0]


def _repo_for(model_name: str, pretrained: bool, overlay: Mapping[str, Any] | None = None) -> str | None:
    """The Hub repo a ``create_model`` call would read weights from, if any."""
    if model_name.startswith("hf-hub:"):
        return model_name.removeprefix("hf-hub:")
    if not pretrained or ":" in model_name:
        return None
    overlay = overlay or {}
    if any(overlay.get(k) is not None for k in ("file", "url", "state_dict")):
        return None  # weights from elsewhere than the Hub
    if overlay.get("hf_hub_id"):
        return overlay["hf_hub_id"]
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError:
        return None
    if cfg is None or not cfg.hf_hub_id or cfg.file or cfg.state_dict is not None:
        return None
    return cfg.hf_hub_id


def _check_weights_file(path: Path, repo_id: str, catalogue_path: str | os.PathLike | None) -> None:
    """sha256 against the catalogue when catalogued, else at least a full parse (corruption)."""
    if verify_sha256(path, repo_id, catalogue_path) is None:
        load_checkpoint_file(path)


def create_model(model_name: str, pretrained: bool = False, *, verify: bool = True,
                 catalogue_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with our checks: sha256 against ``hub/catalogue.json`` and clear Hub errors.

    Works for ``hf-hub:<org>/<arch>.<tag>`` and registered tags (``resnet50_fdconv.<tag>``).
    With ``verify`` the weights file is fetched first (the HF cache makes it a no-op later)
    and checked: a catalogued repo must match its recorded sha256, an uncatalogued one must
    parse. Unreachable Hub and no cache: :class:`HubUnavailableError` with what to do.
    """
    import timm

    from . import models  # noqa: F401  (registers the *_fdconv architectures with timm)

    repo = _repo_for(model_name, pretrained, kwargs.get("pretrained_cfg_overlay"))
    if repo is None:
        return timm.create_model(model_name, pretrained=pretrained, cache_dir=cache_dir, **kwargs)
    if verify:
        _check_weights_file(download_weights(repo, cache_dir=cache_dir), repo, catalogue_path)
    with hub_error_guidance(repo, None, cache_dir):
        try:
            return timm.create_model(model_name, pretrained=pretrained, cache_dir=cache_dir, **kwargs)
        except Exception as err:
            if type(err).__name__ == "SafetensorError":
                raise CorruptCheckpointError(f"{repo}/{WEIGHTS_NAME}", str(err)) from err
            raise


def _model_args_of(model: nn.Module, model_args: Mapping[str, Any] | None) -> dict[str, Any]:
    from timm.models import get_model_args

    return get_model_args(model, dict(model_args or {}))


def save_for_hub(model: nn.Module, folder: str | os.PathLike, *, model_args: Mapping[str, Any] | None = None,
                 data_config: Mapping[str, Any] | None = None, **card_fields: Any) -> Path:
    """Write ``model.safetensors``, timm's ``config.json`` and the ``README.md`` card into ``folder``.

    ``config.json`` comes from timm's ``save_for_hf`` (architecture, ``model_args`` recorded by
    ``create_model`` plus ``model_args`` given here, pretrained_cfg), so ``hf-hub:``/``local-dir:``
    rebuild the same network. ``card_fields`` go to :func:`fdconv_zoo.cards.render_card`
    (``tag``, by default the model's own timm tag; ``converted_from`` or ``trained_with``, ``metrics``, ``stats``...).
    Written through :func:`fdconv_zoo.atomic_io.staged_folder`: a crash never leaves a
    half-written file under a final name.
    """
    from timm.models import save_for_hf

    from .cards import render_card

    if "tag" not in card_fields:
        tag = (getattr(model, "pretrained_cfg", None) or {}).get("tag")
        if not tag:
            raise ValueError("save_for_hub: the model has no timm tag in its pretrained_cfg to name the checkpoint; "
                             "pass tag='...' (e.g. tag='fd_in1k')")
        card_fields["tag"] = tag
    with staged_folder(folder) as staging:
        # the source model's cfg notes (e.g. "converted on load from timm/...") describe where *its*
        # weights came from, not this checkpoint's: the card and catalogue carry the provenance.
        notes = f"FDConv checkpoint published with fdconv_zoo. {_USAGE_NOTE}"
        save_for_hf(model, staging, model_config=dict(pretrained_cfg=dict(notes=notes)),
                    model_args=_model_args_of(model, model_args), safe_serialization=True,
                    data_config=dict(data_config) if data_config else None)
        (staging / CARD_NAME).write_text(render_card(model, **card_fields), encoding="utf-8")
    return Path(folder)


def load_hub_folder(folder: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """Rebuild a model from a :func:`save_for_hub` folder the way the Hub would (``local-dir:``)."""
    import timm

    from . import models  # noqa: F401

    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"'{folder}' has no {name}: not a save_for_hub folder")
    load_checkpoint_file(folder / WEIGHTS_NAME)  # corrupt file -> CorruptCheckpointError, before timm's raw error
    return timm.create_model(f"local-dir:{folder}", pretrained=True, **kwargs)


@torch.no_grad()
def verify_hub_folder(model: nn.Module, folder: str | os.PathLike, *, input_size: Sequence[int] | None = None,
                      batch_size: int = 2, seed: int = 0) -> nn.Module:
    """Reload ``folder`` and require bit-identical tensors and outputs to ``model``; returns the reload.

    Exact equality, not a tolerance: the same weights through the same code on the same
    machine must give the same bits, and anything else (a dropped ``model_args``, a filter
    that rewrote a tensor) is a bug to catch before upload. Batch 2: FDConv is per sample.
    """
    reloaded = load_hub_folder(folder).eval()
    own, new = model.state_dict(), reloaded.state_dict()
    if set(own) != set(new):
        raise ReproductionError(f"reloaded '{folder}' has other keys: missing {sorted(set(own) - set(new))[:10]}, "
                                f"extra {sorted(set(new) - set(own))[:10]}; check model_args in config.json")
    changed = [k for k in own if own[k].shape != new[k].shape or not torch.equal(own[k].cpu(), new[k].cpu())]
    if changed:
        raise ReproductionError(f"reloaded '{folder}' has {len(changed)} tensors that differ, e.g. {changed[:5]}")
    input_size = tuple(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    param = next(model.parameters())
    x = torch.randn(batch_size, *input_size, generator=torch.Generator().manual_seed(seed)).to(param)
    was_training = model.training
    model.eval()
    try:
        ref, out = model(x), reloaded.to(param.device)(x)
    finally:
        model.train(was_training)
    if ref.shape != out.shape or not torch.equal(ref, out):
        diff = (ref - out).abs().max().item() if ref.shape == out.shape else float("nan")
        raise ReproductionError(f"reloaded '{folder}' does not reproduce the model's outputs exactly "
                                f"(max abs difference {diff:.3g}); do not upload it")
    return reloaded


@dataclass
class PushResult:
    """Outcome of :func:`push_to_hub`: where it was staged, what was (or would be) recorded and sent."""

    repo_id: str
    folder: Path
    sha256: str
    entry: dict
    files: list[str] = field(default_factory=lambda: list(HUB_FILES))
    dry_run: bool = True
    commit_url: str | None = None
    catalogue: Path | None = None


def push_to_hub(model: nn.Module, *, tag: str, converted_from: str | None = None,
                trained_with: Mapping[str, Any] | None = None, metrics: Mapping[str, Mapping[str, float]] | None = None,
                org: str = HUB_ORG, staging_dir: str | os.PathLike | None = None, dry_run: bool = False,
                token: str | None = None, private: bool | None = None, revision: str | None = None,
                commit_message: str | None = None, catalogue_path: str | os.PathLike | None = None,
                allow_update: bool = False, model_args: Mapping[str, Any] | None = None,
                verify_input_size: Sequence[int] | None = None, gmacs: float | None = None,
                endpoint: str | None = None, **card_fields: Any) -> PushResult:
    """Stage, verify, upload and catalogue one checkpoint as ``<org>/<arch>.<tag>``.

    1. :func:`save_for_hub` into ``staging_dir`` (a temp folder by default);
    2. :func:`verify_hub_folder`: the staged files must reproduce ``model`` exactly;
    3. unless ``dry_run``: ``HfApi.create_repo(exist_ok=True)`` and one ``create_commit`` of
       the three files (huggingface_hub skips files whose content the Hub already has, and the
       whole commit when nothing changed), then :func:`fdconv_zoo.catalogue.record_checkpoint`.

    Idempotent: pushing the same weights again changes nothing (the catalogue entry is
    rewritten identically). Weights that differ from the catalogued sha256 of the same repo are
    refused unless ``allow_update``, since they would silently replace a published checkpoint.
    """
    from .cards import model_stats

    architecture = model.pretrained_cfg["architecture"]
    repo_id = f"{org}/{architecture}.{tag}"
    # validate the provenance and tag before any work; the sha256 is filled in after staging
    make_entry(architecture, tag, sha256="0" * 64, converted_from=converted_from, trained_with=trained_with,
               metrics=metrics, org=org)
    stats = model_stats(model, gmacs=gmacs)
    own_tmp = staging_dir is None
    folder = Path(tempfile.mkdtemp(prefix="fdconv_zoo_push_")) / repo_id.split("/", 1)[1] if own_tmp \
        else Path(staging_dir)
    save_for_hub(model, folder, model_args=model_args, tag=tag, architecture=architecture, repo_id=repo_id,
                 converted_from=converted_from, trained_with=trained_with, metrics=metrics, stats=stats, org=org,
                 **card_fields)
    sha = file_sha256(folder / WEIGHTS_NAME)
    entry = make_entry(architecture, tag, sha256=sha, converted_from=converted_from, trained_with=trained_with,
                       metrics=metrics, model_args=_model_args_of(model, model_args), stats=stats, org=org)
    previous = find_entry(repo_id, catalogue_path)
    if previous is not None and previous["sha256"] != sha and not allow_update:
        raise CatalogueError(
            f"{repo_id} is already published with sha256 {previous['sha256']}, these weights are {sha}: pushing "
            "would replace a published checkpoint. Use a new tag, or pass allow_update=True (--allow-update).")
    verify_hub_folder(model, folder, input_size=verify_input_size)
    result = PushResult(repo_id, folder, sha, entry, dry_run=dry_run)
    if dry_run:
        return result

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in HUB_FILES]
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        info = api.create_commit(repo_id, operations=operations, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"Upload {repo_id} ({sha[:12]})")
    except hub_network_errors() as err:
        raise HubError(f"cannot push {repo_id}: the Hub is unreachable or offline mode is on ({type(err).__name__}). "
                       "Pushing needs network access and a write token (HF_TOKEN or `hf auth login`); "
                       f"stage and verify offline with --dry-run (staged at {folder}).") from err
    result.commit_url = getattr(info, "commit_url", None)
    record_checkpoint(entry, catalogue_path)
    from .catalogue import CATALOGUE_PATH

    result.catalogue = Path(catalogue_path or CATALOGUE_PATH).resolve()
    if own_tmp:  # uploaded: the temporary staging copy has served its purpose
        shutil.rmtree(folder.parent, ignore_errors=True)
    return result


def register_catalogue_tags(catalogue_path: str | os.PathLike | None = None) -> list[str]:
    """Register the catalogue's ``<arch>.<tag>`` names with timm now; returns the names added or updated.

    The model modules read the catalogue once, at import; a checkpoint recorded later (by a push
    in this process, or a catalogue given explicitly) becomes loadable by tag after this call.
    The new tag's cfg is the architecture's default cfg with the entry's ``hf_hub_id`` and
    ``cfg`` fields. Uses timm's registry tables (timm has no public API to add a tag).
    """
    from dataclasses import replace

    from timm.models import _registry

    from .catalogue import load_catalogue

    added: list[str] = []
    for entry in load_catalogue(catalogue_path)["checkpoints"]:
        arch, tag = entry["architecture"], entry["tag"]
        default = _registry._model_default_cfgs.get(arch)
        if default is None:
            continue  # architecture not registered (its module is not imported): nothing to attach to
        name = f"{arch}.{tag}"
        current = _registry._model_pretrained_cfgs.get(name)
        base = current or default.cfgs[default.tags[0]]
        cfg = replace(base, **{"notes": f"Published by fdconv_zoo. {_USAGE_NOTE}", **entry.get("cfg", {}),
                              "hf_hub_id": entry["repo_id"], "architecture": arch, "tag": tag, "file": None,
                              "url": None, "state_dict": None, "hf_hub_filename": None})
        if current == cfg:
            continue
        _registry._model_pretrained_cfgs[name] = cfg
        default.cfgs[tag] = cfg
        if tag not in default.tags:
            default.tags.append(tag)
        default.is_pretrained = True
        if name not in _registry._model_with_tags[arch]:
            _registry._model_with_tags[arch].append(name)
        _registry._model_has_pretrained.add(name)
        added.append(name)
    return added
