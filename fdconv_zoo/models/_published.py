"""The published checkpoints, read from the catalogue (``fdconv_zoo/catalogue.json``): timm tags and checksums.

The hub layer writes the file (:mod:`fdconv_zoo.hub.catalogue`); the model registry only reads it.
"""

from __future__ import annotations

import copy
import json
import os
from functools import lru_cache
from pathlib import Path

from ..errors import CatalogueError

__all__ = ["forget_cached_catalogue", "CATALOGUE_PATH", "HUB_ORG", "load_catalogue", "trained_cfgs", "find_entry",
           "expected_sha256"]

#: ``fdconv_zoo/catalogue.json``: a link to the repository's ``hub/catalogue.json``, shipped with the package
CATALOGUE_PATH = Path(__file__).parents[1] / "catalogue.json"
HUB_ORG = "fdconv-zoo"


def _read(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), list):
        raise CatalogueError(f"{path}: expected {{'org': ..., 'checkpoints': [...]}}, see hub/README.md")
    return data


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int) -> dict:
    return _read(Path(path))


def forget_cached_catalogue() -> None:
    """Drop the parsed copies, for a writer that just replaced the file (its mtime may not have moved)."""
    _load_cached.cache_clear()


def load_catalogue(path: str | os.PathLike | None = None) -> dict:
    """The parsed catalogue: ``{"org": ..., "checkpoints": [entry, ...]}`` (a copy, safe to mutate).

    Cached per file modification time, so a catalogue rewritten by :func:`record_checkpoint`
    (in this process or another) is re-read.
    """
    real = Path(path or CATALOGUE_PATH).resolve()
    return copy.deepcopy(_load_cached(str(real), real.stat().st_mtime_ns))


def trained_cfgs(architecture: str, path: str | os.PathLike | None = None) -> dict[str, dict]:
    """``{tag: pretrained_cfg fields}`` for the published checkpoints of ``architecture``.

    Every entry gives its ``hf_hub_id`` (the full ``<org>/<arch>.<tag>`` id timm needs) plus the
    entry's optional ``cfg`` overrides; converted and trained checkpoints alike, each has its tag.
    """
    out: dict[str, dict] = {}
    for entry in load_catalogue(path)["checkpoints"]:
        if entry["architecture"] == architecture:
            out[entry["tag"]] = dict(hf_hub_id=entry["repo_id"], **entry.get("cfg", {}))
    return out


def find_entry(repo_id: str, path: str | os.PathLike | None = None) -> dict | None:
    """The entry published as ``repo_id`` (``org/arch.tag``; a ``hf-hub:`` prefix and ``@rev`` are ignored)."""
    repo_id = repo_id.removeprefix("hf-hub:").split("@", 1)[0]
    for entry in load_catalogue(path)["checkpoints"]:
        if entry["repo_id"] == repo_id:
            return entry
    return None


def expected_sha256(repo_id: str, path: str | os.PathLike | None = None) -> str | None:
    """sha256 of ``model.safetensors`` recorded for ``repo_id``, or None when it is not catalogued."""
    entry = find_entry(repo_id, path)
    return None if entry is None else entry["sha256"]
