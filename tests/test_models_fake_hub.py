"""The offline Hugging Face cache of fdconv_zoo.tools.testing (make_fake_hf_repo, offline_hf_hub), fake_hub fixture."""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub.constants as hfc
import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from fdconv_zoo.tools.testing import FAKE_COMMIT, make_fake_hf_repo, offline_hf_hub


@pytest.mark.parametrize("use_symlinks", [True, False])
def test_layout_and_offline_download(fake_hub: Path, tmp_path: Path, use_symlinks: bool) -> None:
    local = tmp_path / "weights.bin"
    local.write_bytes(b"\x00\x01")
    files = {"config.json": '{"a": 1}', "model.safetensors": b"bytes", "sub/dir/w.bin": local}
    snapshot = make_fake_hf_repo(fake_hub, "some-org/some-model.tag", files, use_symlinks=use_symlinks)

    repo = fake_hub / "models--some-org--some-model.tag"
    assert snapshot == repo / "snapshots" / FAKE_COMMIT
    assert (repo / "refs" / "main").read_bytes() == FAKE_COMMIT.encode()  # no trailing newline
    assert (snapshot / "model.safetensors").is_symlink() is use_symlinks
    assert len(list((repo / "blobs").iterdir())) == (3 if use_symlinks else 0)

    expected = {"config.json": b'{"a": 1}', "model.safetensors": b"bytes", "sub/dir/w.bin": b"\x00\x01"}
    for name, content in expected.items():
        assert Path(hf_hub_download("some-org/some-model.tag", name)).read_bytes() == content
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("some-org/some-model.tag", "missing.bin")
    assert hfc.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="org"):
        make_fake_hf_repo(tmp_path, "no-org", {})
    with pytest.raises(ValueError, match="40"):
        make_fake_hf_repo(tmp_path, "o/n", {}, commit="abc")


def test_offline_context_restores_constants(tmp_path: Path) -> None:
    before = (hfc.HF_HUB_CACHE, hfc.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    with offline_hf_hub(tmp_path / "cache") as cache:
        make_fake_hf_repo(cache, "o/n", {"f.txt": "x"})
        assert hfc.HF_HUB_CACHE == str(cache) and hfc.HF_HUB_OFFLINE is True
        assert Path(hf_hub_download("o/n", "f.txt")).read_text() == "x"
    assert (hfc.HF_HUB_CACHE, hfc.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")) == before
