"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Test tensors are small: one thread per process is several times faster than two on the
# 2-core CI box, and the two-process accelerate tests would otherwise oversubscribe it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline Hugging Face cache; fill it with ``fdconv_zoo.tools.testing.make_fake_hf_repo``.

    huggingface_hub reads its constants at import, so they are patched here (env var too, for
    subprocesses); everything is restored after the test.
    """
    import huggingface_hub.constants as hfc

    cache = tmp_path / "hf_hub"
    cache.mkdir()
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
