"""Pull checkpoints from the Hugging Face Hub: downloads that say what to do offline, checked against the catalogue."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoints import ConvertResult, convert_checkpoint, load_checkpoint_file, verify_sha256
from ..errors import (
    CorruptCheckpointError,
    HubUnavailableError,
    hub_network_errors,
)

__all__ = ["WEIGHTS_NAME", "CONFIG_NAME", "CARD_NAME", "HUB_FILES", "hub_error_guidance", "download_weights",
           "create_model", "convert_from_hub"]

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

    from .. import models  # noqa: F401  (registers the *_fdconv architectures with timm)

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


def convert_from_hub(repo_id: str, architecture: str, *, cache_dir: str | os.PathLike | None = None,
                     **kwargs: Any) -> ConvertResult:
    """:func:`fdconv_zoo.checkpoints.convert_checkpoint` of a Hub checkpoint (``timm/resnet50.a1_in1k``,
    optionally ``hf-hub:``-prefixed): downloaded with the offline guidance, a catalogued fdconv-zoo repo
    checked against its recorded sha256 first."""
    path = download_weights(repo_id, cache_dir=cache_dir)
    verify_sha256(path, repo_id)
    return convert_checkpoint(path, architecture, **kwargs)
