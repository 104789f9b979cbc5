"""The catalogue of published checkpoints (``hub/catalogue.json``): validated entries, written atomically by push.

``fdconv_zoo/catalogue.json`` is a link to ``hub/catalogue.json`` so installed wheels carry it; the schema is in
``hub/README.md``. The model registry reads it through :mod:`fdconv_zoo.models._published`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoints.atomic_io import atomic_write_text
from ..errors import CatalogueError
from ..models._published import (
    CATALOGUE_PATH,
    HUB_ORG,
    expected_sha256,
    find_entry,
    forget_cached_catalogue,
    load_catalogue,
    trained_cfgs,
)

__all__ = ["CATALOGUE_PATH", "HUB_ORG", "load_catalogue", "trained_cfgs", "find_entry", "expected_sha256",
           "validate_entry", "make_entry", "write_catalogue", "record_checkpoint"]

_TAG_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_ARCH_RE = re.compile(r"^[a-z0-9_]+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"repo_id", "architecture", "tag", "source", "metrics", "sha256", "model_args", "stats", "cfg"}
_REQUIRED = ("repo_id", "architecture", "tag", "source", "metrics", "sha256")
_STATS_KEYS = {"params", "extra_params", "gmacs", "input_size"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_entry(entry: Mapping[str, Any], org: str = HUB_ORG) -> dict:
    """Check ``entry`` against the schema of hub/README.md; returns it as a plain dict.

    Raises :class:`CatalogueError` listing every problem at once (not just the first), since
    entries are edited by hand as well as by ``fdconv-zoo push``.
    """
    problems: list[str] = []
    if not isinstance(entry, Mapping):
        raise CatalogueError(f"a catalogue entry must be an object, got {type(entry).__name__}")
    entry = dict(entry)
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        problems.append(f"missing fields {missing}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        problems.append(f"unknown fields {unknown} (allowed: {sorted(_ENTRY_KEYS)})")
    arch, tag, repo_id = entry.get("architecture"), entry.get("tag"), entry.get("repo_id")
    if arch is not None and not (isinstance(arch, str) and _ARCH_RE.match(arch)):
        problems.append(f"architecture {arch!r} must be a timm model name like 'resnet50_fdconv'")
    if tag is not None and not (isinstance(tag, str) and _TAG_RE.match(tag)):
        problems.append(f"tag {tag!r} must be lower-case words joined by '_' like 'fft_a1_in1k' (<recipe>_<dataset>)")
    if repo_id is not None and isinstance(arch, str) and isinstance(tag, str):
        expected = f"{org}/{arch}.{tag}"
        if repo_id != expected:
            problems.append(f"repo_id {repo_id!r} must be '<org>/<architecture>.<tag>' = {expected!r}")
    source = entry.get("source")
    if source is not None:
        if not isinstance(source, Mapping) or len(source) != 1 or next(iter(source)) not in (
                "converted_from", "trained_with"):
            problems.append("source must be exactly one of {'converted_from': '<timm checkpoint>'} or "
                            "{'trained_with': {'script': ..., 'args': [...]}}")
        elif "converted_from" in source:
            if not (isinstance(source["converted_from"], str) and source["converted_from"]):
                problems.append("source.converted_from must name the timm checkpoint (e.g. 'timm/resnet50.a1_in1k')")
        else:
            tw = source["trained_with"]
            if not (isinstance(tw, Mapping) and isinstance(tw.get("script"), str) and tw["script"]
                    and isinstance(tw.get("args"), list) and all(isinstance(a, str) for a in tw["args"])
                    and set(tw) <= {"script", "args", "commit"}):
                problems.append("source.trained_with must be {'script': str, 'args': [str, ...]} (optional 'commit')")
    metrics = entry.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, Mapping) or not all(
                isinstance(ds, str) and isinstance(m, Mapping) and all(isinstance(k, str) and _is_number(v)
                                                                       for k, v in m.items())
                for ds, m in metrics.items()):
            problems.append("metrics must be {dataset: {metric: number}}, e.g. {'imagenet-1k': {'top1': 80.1}} "
                            "(use {} when there is no evaluation)")
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256_RE.match(sha)):
        problems.append(f"sha256 {sha!r} must be 64 lower-case hex digits (sha256 of model.safetensors)")
    stats = entry.get("stats")
    if stats is not None and not (isinstance(stats, Mapping) and set(stats) <= _STATS_KEYS):
        problems.append(f"stats must be an object with keys among {sorted(_STATS_KEYS)}")
    for key in ("model_args", "cfg"):
        if entry.get(key) is not None and not isinstance(entry[key], Mapping):
            problems.append(f"{key} must be an object")
    if problems:
        name = repo_id if isinstance(repo_id, str) else "entry"
        raise CatalogueError(f"invalid catalogue entry {name}:\n" + "\n".join(f"  - {p}" for p in problems)
                             + "\nSee hub/README.md for the schema.")
    return json.loads(json.dumps(entry))  # plain JSON types (tuples -> lists), detached from the caller


def make_entry(architecture: str, tag: str, *, sha256: str, converted_from: str | None = None,
               trained_with: Mapping[str, Any] | None = None, metrics: Mapping[str, Mapping[str, float]] | None = None,
               model_args: Mapping[str, Any] | None = None, stats: Mapping[str, Any] | None = None,
               cfg: Mapping[str, Any] | None = None, org: str = HUB_ORG) -> dict:
    """Build and validate an entry; exactly one of ``converted_from`` / ``trained_with`` is the provenance."""
    if (converted_from is None) == (trained_with is None):
        raise CatalogueError("give exactly one provenance: converted_from='<timm checkpoint>' or "
                             "trained_with={'script': ..., 'args': [...]}")
    source = {"converted_from": converted_from} if converted_from is not None else {"trained_with": dict(trained_with)}
    entry: dict[str, Any] = dict(repo_id=f"{org}/{architecture}.{tag}", architecture=architecture, tag=tag,
                                 source=source, metrics=dict(metrics or {}), sha256=sha256)
    for key, value in (("model_args", model_args), ("stats", stats), ("cfg", cfg)):
        if value:
            entry[key] = dict(value)
    return validate_entry(entry, org=org)


def write_catalogue(data: Mapping[str, Any], path: str | os.PathLike | None = None) -> Path:
    """Validate and write the whole catalogue atomically.

    The link ``fdconv_zoo/catalogue.json`` is resolved first: replacing the link itself would
    turn it into a copy and silently fork the catalogue from ``hub/``.
    """
    org = data.get("org", HUB_ORG)
    entries = [validate_entry(e, org=org) for e in data["checkpoints"]]
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e["repo_id"] in seen:
            raise CatalogueError(f"duplicate catalogue entries for {e['repo_id']} "
                                 f"(positions {seen[e['repo_id']]}, {i})")
        seen[e["repo_id"]] = i
    entries.sort(key=lambda e: (e["architecture"], e["tag"]))
    real = Path(path or CATALOGUE_PATH).resolve()
    text = json.dumps({"org": org, "checkpoints": entries}, indent=2, sort_keys=False) + "\n"
    atomic_write_text(real, text)
    forget_cached_catalogue()
    return real


def record_checkpoint(entry: Mapping[str, Any], path: str | os.PathLike | None = None) -> dict:
    """Add ``entry`` to the catalogue, replacing the one with the same ``repo_id``; returns it validated.

    Idempotent: recording the same entry twice leaves the file byte-identical.
    """
    data = load_catalogue(path)
    entry = validate_entry(entry, org=data.get("org", HUB_ORG))
    data["checkpoints"] = [e for e in data["checkpoints"] if e["repo_id"] != entry["repo_id"]] + [entry]
    write_catalogue(data, path)
    return entry
