"""Publish checkpoints on the Hugging Face Hub through timm's own export (``save_for_hf``).

What this adds to timm: a model card, a check that the staged folder reproduces the model before anything
is uploaded (``HfApi.create_commit``), and the catalogue record.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import file_sha256, load_checkpoint_file
from ..checkpoints.atomic_io import staged_folder
from ..errors import (
    CatalogueError,
    HubError,
    ReproductionError,
    hub_network_errors,
)
from .catalogue import CATALOGUE_PATH, HUB_ORG, find_entry, load_catalogue, make_entry, record_checkpoint
from .download import CARD_NAME, CONFIG_NAME, HUB_FILES, WEIGHTS_NAME
from .stats import card_stats

__all__ = ["save_for_hub", "load_hub_folder", "verify_hub_folder", "PushResult", "push_to_hub",
           "register_catalogue_tags"]

_USAGE_NOTE = "Needs `import fdconv_zoo` before timm.create_model (timm has no plugin auto-import)."


def _model_args_of(model: nn.Module, model_args: Mapping[str, Any] | None) -> dict[str, Any]:
    from timm.models import get_model_args

    return get_model_args(model, dict(model_args or {}))


def save_for_hub(model: nn.Module, folder: str | os.PathLike, *, model_args: Mapping[str, Any] | None = None,
                 data_config: Mapping[str, Any] | None = None, label_names: Sequence[str] | None = None,
                 **card_fields: Any) -> Path:
    """Write ``model.safetensors``, timm's ``config.json`` and the ``README.md`` card into ``folder``.

    ``config.json`` comes from timm's ``save_for_hf`` (architecture, ``model_args`` recorded by
    ``create_model`` plus ``model_args`` given here, pretrained_cfg), so ``hf-hub:``/``local-dir:``
    rebuild the same network; ``label_names`` name the classifier's outputs there. ``card_fields`` go to
    :func:`fdconv_zoo.hub.cards.render_card`
    (``tag``, by default the model's own timm tag; ``converted_from`` or ``trained_with``, ``metrics``, ``stats``...).
    Written through :func:`fdconv_zoo.checkpoints.atomic_io.staged_folder`: a crash never leaves a
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
        model_config: dict[str, Any] = dict(pretrained_cfg=dict(notes=notes))
        if label_names:
            model_config["label_names"] = list(label_names)
        save_for_hf(model, staging, model_config=model_config,
                    model_args=_model_args_of(model, model_args), safe_serialization=True,
                    data_config=dict(data_config) if data_config else None)
        (staging / CARD_NAME).write_text(render_card(model, **card_fields), encoding="utf-8")
    return Path(folder)


def load_hub_folder(folder: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """Rebuild a model from a :func:`save_for_hub` folder the way the Hub would (``local-dir:``)."""
    import timm

    from .. import models  # noqa: F401

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
       whole commit when nothing changed), then :func:`fdconv_zoo.hub.catalogue.record_checkpoint`.

    Idempotent: pushing the same weights again changes nothing (the catalogue entry is
    rewritten identically). Weights that differ from the catalogued sha256 of the same repo are
    refused unless ``allow_update``, since they would silently replace a published checkpoint.
    """

    architecture = model.pretrained_cfg["architecture"]
    repo_id = f"{org}/{architecture}.{tag}"
    # validate the provenance and tag before any work; the sha256 is filled in after staging
    make_entry(architecture, tag, sha256="0" * 64, converted_from=converted_from, trained_with=trained_with,
               metrics=metrics, org=org)
    stats = card_stats(model, gmacs=gmacs)
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
