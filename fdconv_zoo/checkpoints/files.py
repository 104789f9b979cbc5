"""Checkpoint files: read them safely (any wrapper, pickle or safetensors), write them atomically, hash them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import ChecksumMismatchError, CorruptCheckpointError
from ..models._published import expected_sha256
from .atomic_io import atomic_path

__all__ = ["file_sha256", "verify_sha256", "load_checkpoint_file", "save_safetensors"]

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
_SAFETENSORS_SUFFIXES = (".safetensors",)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (checkpoints are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, repo_id: str, catalogue_path: str | os.PathLike | None = None) -> str | None:
    """Compare ``path`` with the sha256 recorded for ``repo_id`` in hub/catalogue.json.

    Returns the recorded hash (None when ``repo_id`` is not catalogued: nothing to check).
    """
    expected = expected_sha256(repo_id, catalogue_path)
    if expected is None:
        return None
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumMismatchError(str(path), repo_id.removeprefix("hf-hub:"), expected, actual)
    return expected


def _strip_wrappers(obj: Any, path: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(path, "expected a state dict (a mapping of names to tensors), "
                                           f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CorruptCheckpointError(path, f"{len(bad)} entries are not tensors, e.g. {bad[:3]}")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or torch (``.pth``/``.bin``/``.pt``) checkpoint into a CPU state dict.

    Torch files are read with ``weights_only=True`` and unwrapped like timm does
    (``state_dict``/``model``/EMA wrappers, ``module.`` and ``_orig_mod.`` prefixes). Any parse
    failure becomes a :class:`CorruptCheckpointError` that names the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # SafetensorError, or OSError/ValueError on a truncated header
            raise CorruptCheckpointError(str(path), f"{type(err).__name__}: {err}") from err
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (bad zip), EOFError...
        raise CorruptCheckpointError(str(path), f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    return _strip_wrappers(obj, str(path))


def _unshare(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous tensors, none sharing storage (safetensors refuses shared or strided ones)."""
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        if ptr is not None and ptr in seen:
            value = value.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = value
    return out


def save_safetensors(tensors: Mapping[str, Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as safetensors atomically (see :mod:`fdconv_zoo.checkpoints.atomic_io`)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(_unshare(tensors), tmp, metadata=dict(metadata) if metadata else None)
    return Path(path)
