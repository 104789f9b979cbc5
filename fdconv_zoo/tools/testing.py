"""Helpers for checking converted networks (used by the tests and ``fdconv-zoo demo``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "FAKE_COMMIT", "randomize_norms_", "max_relative_error", "make_fake_hf_repo", "save_timm_model_to_fake_hub",
    "offline_hf_hub", "assert_feature_maps",
]

#: The commit every fake repo is filed under (``refs/main`` points to it).
FAKE_COMMIT = "a" * 40


@torch.no_grad()
def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm/LayerNorm non-trivial affine parameters and running statistics.

    timm zero-initialises the last norm of each residual branch, which would make a
    function-preservation check pass without the converted layers doing anything.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return (torch.rand(t.shape, generator=gen) * (high - low) + low).to(t)

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(rand(m.running_mean, -0.2, 0.2))
            m.running_var.copy_(rand(m.running_var, 0.5, 1.5))
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            m.weight.copy_(rand(m.weight, 0.5, 1.5))
            m.bias.copy_(rand(m.bias, -0.2, 0.2))
    return model


def max_relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |output - reference| / max |reference|``: the spec's function-preservation metric."""
    return ((output.double() - reference.double()).abs().max() / reference.double().abs().max().clamp_min(1e-30)).item()


def make_fake_hf_repo(cache_dir: str | os.PathLike, repo_id: str, files: Mapping[str, bytes | str | os.PathLike],
                      *, commit: str = FAKE_COMMIT, revision: str = "main", use_symlinks: bool = True) -> Path:
    """File ``files`` into a Hugging Face cache as if ``repo_id`` had been downloaded; returns the snapshot dir.

    Lets ``hf_hub_download`` (and so timm's ``pretrained=True``) resolve ``repo_id`` offline:
    ``<cache>/models--<org>--<name>/{blobs/<sha256>, snapshots/<commit>/<file>, refs/<revision>}``.
    ``files`` maps a repo-relative filename to its bytes, text, or a local file to copy. ``refs``
    holds the bare commit hash without a trailing newline (with one the lookup fails). Pair it with
    :func:`offline_hf_hub` (or the ``fake_hub`` pytest fixture) so the cache is the one read.
    """
    if len(commit) != 40 or any(c not in "0123456789abcdef" for c in commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    if "/" not in repo_id:
        raise ValueError(f"repo_id must be '<org>/<name>', got {repo_id!r}")
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    blobs = repo / "blobs"
    snapshot.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    for filename, content in files.items():
        if isinstance(content, str):
            data = content.encode("utf-8")
        elif isinstance(content, bytes):
            data = content
        else:
            data = Path(content).read_bytes()
        target = snapshot / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if use_symlinks:
            blob = blobs / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            depth = len(Path(filename).parts) + 1  # snapshots/<commit>/<file...> -> ../../(..)blobs
            target.symlink_to(Path(*([".."] * depth), "blobs", blob.name))
        else:
            target.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)  # no trailing newline
    return snapshot


def save_timm_model_to_fake_hub(model: nn.Module, cache_dir: str | os.PathLike, repo_id: str, *,
                                model_args: dict | None = None, use_symlinks: bool = True) -> Path:
    """Save a timm ``model`` as ``config.json`` + ``model.safetensors`` under ``repo_id`` in a fake cache.

    The files are what ``timm.models.push_to_hf_hub`` would upload (``save_for_hf``), so a
    tagged ``create_model('<arch>.<tag>', pretrained=True)`` or ``hf-hub:<repo_id>`` reads them back.
    """
    from timm.models import save_for_hf

    with tempfile.TemporaryDirectory() as staging:
        save_for_hf(model, staging, model_args=model_args, safe_serialization=True)
        files = {f.name: f.read_bytes() for f in sorted(Path(staging).iterdir()) if f.is_file()}
    return make_fake_hf_repo(cache_dir, repo_id, files, use_symlinks=use_symlinks)


@contextlib.contextmanager
def offline_hf_hub(cache_dir: str | os.PathLike) -> Iterator[Path]:
    """Point huggingface_hub at ``cache_dir`` in offline mode for the duration of the block.

    huggingface_hub reads ``HF_HUB_CACHE``/``HF_HUB_OFFLINE`` once at import, so the module
    constants are patched (and the env var set for subprocesses); both are restored on exit.
    Outside pytest this does what the ``fake_hub`` fixture does.
    """
    import huggingface_hub.constants as hfc

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    saved = (hfc.HF_HUB_CACHE, hfc.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    hfc.HF_HUB_CACHE, hfc.HF_HUB_OFFLINE = str(cache), True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield cache
    finally:
        hfc.HF_HUB_CACHE, hfc.HF_HUB_OFFLINE = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[2]


@torch.no_grad()
def assert_feature_maps(model: nn.Module, channels: list[int], reductions: list[int],
                        sizes: tuple[tuple[int, int], ...] = ((64, 64), (64, 96)), seed: int = 0
                        ) -> dict[tuple[int, int], tuple[torch.Tensor, list[torch.Tensor]]]:
    """Check a timm ``features_only`` model: ``feature_info`` and the real outputs at each input size.

    Channels are read along ``get_channel_dim(model.output_fmt)`` (Swin's wrappers give NHWC),
    spatial sizes must be ``input // reduction``. Non-square sizes catch swapped H/W. Returns
    ``{size: (input, features)}`` so callers can compare the same forward pass with a reference.
    """
    from timm.layers import get_channel_dim

    info = model.feature_info
    assert info.channels() == channels, (info.channels(), channels)
    assert info.reduction() == reductions, (info.reduction(), reductions)
    dim = get_channel_dim(getattr(model, "output_fmt", "NCHW"))
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for h, w in sizes:
        x = torch.randn(1, 3, h, w, generator=gen)
        feats = model(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        assert len(feats) == len(channels), (len(feats), len(channels))
        for f, c, r in zip(feats, channels, reductions, strict=True):
            spatial = [s for i, s in enumerate(f.shape[1:], 1) if i != dim]
            assert f.shape[dim] == c and spatial == [h // r, w // r], (tuple(f.shape), c, r, (h, w))
        out[(h, w)] = (x, list(feats))
    return out
