"""The catalogue of published checkpoints (``hub/catalogue.json``) as read by the model registry.

``fdconv_zoo/catalogue.json`` is a link to ``hub/catalogue.json`` so installed wheels carry it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

__all__ = ["CATALOGUE_PATH", "HUB_ORG", "load_catalogue", "trained_cfgs"]

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")
HUB_ORG = "fdconv-zoo"


@lru_cache(maxsize=1)
def load_catalogue() -> dict:
    """The parsed catalogue: ``{"org": ..., "checkpoints": [entry, ...]}``."""
    with open(CATALOGUE_PATH, encoding="utf-8") as f:
        return json.load(f)


def trained_cfgs(architecture: str) -> dict[str, dict]:
    """``{tag: pretrained_cfg fields}`` for the FDConv-trained checkpoints of ``architecture``."""
    out: dict[str, dict] = {}
    for entry in load_catalogue()["checkpoints"]:
        if entry["architecture"] == architecture:
            out[entry["tag"]] = dict(hf_hub_id=entry["repo_id"], **entry.get("cfg", {}))
    return out
