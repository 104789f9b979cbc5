"""hub/catalogue.json: schema validation, atomic idempotent writes, what the registry reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fdconv_zoo.errors import CatalogueError
from fdconv_zoo.hub import catalogue

SHA = "ab" * 32


def _entry(**kw) -> dict:
    base = dict(architecture="resnet18_fdconv", tag="fft_a1_in1k", sha256=SHA, converted_from="timm/resnet18.a1_in1k")
    base.update(kw)
    return catalogue.make_entry(**base)


@pytest.fixture
def cat_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"org": "fdconv-zoo", "checkpoints": []}))
    return path


def test_shipped_catalogue_is_valid_and_linked():
    assert catalogue.CATALOGUE_PATH.is_symlink(), "fdconv_zoo/catalogue.json must stay a link to hub/catalogue.json"
    assert catalogue.CATALOGUE_PATH.resolve() == (Path(__file__).parents[1] / "hub" / "catalogue.json").resolve()
    data = catalogue.load_catalogue()
    assert data["org"] == catalogue.HUB_ORG == "fdconv-zoo"
    for entry in data["checkpoints"]:
        catalogue.validate_entry(entry)


def test_make_entry_schema():
    e = _entry(metrics={"imagenet-1k": {"top1": 71.5}}, stats={"params": 1, "extra_params": 0, "gmacs": 1.0})
    assert e["repo_id"] == "fdconv-zoo/resnet18_fdconv.fft_a1_in1k"
    assert e["source"] == {"converted_from": "timm/resnet18.a1_in1k"}
    t = catalogue.make_entry("resnet50_fdconv", "fd_e100_in1k", sha256=SHA,
                             trained_with={"script": "scripts/train.py", "args": ["--epochs", "100"]})
    assert t["source"]["trained_with"]["args"] == ["--epochs", "100"] and t["metrics"] == {}


@pytest.mark.parametrize("bad, needle", [
    (dict(sha256="xyz"), "sha256"),
    (dict(tag="Bad-Tag"), "tag"),
    (dict(architecture="ResNet"), "architecture"),
    (dict(metrics={"imagenet-1k": {"top1": "high"}}), "metrics"),
])
def test_validation_names_the_problem(bad, needle):
    with pytest.raises(CatalogueError, match=needle):
        _entry(**bad)


def test_validation_lists_every_problem_and_provenance_is_exclusive():
    entry = dict(repo_id="other/x.y", architecture="resnet18_fdconv", tag="y", source={"converted_from": "a",
                 "trained_with": {}}, metrics={}, sha256="0", extra=1)
    with pytest.raises(CatalogueError) as info:
        catalogue.validate_entry(entry)
    msg = str(info.value)
    for needle in ("unknown fields ['extra']", "repo_id", "source must be exactly one", "sha256", "hub/README.md"):
        assert needle in msg
    with pytest.raises(CatalogueError, match="exactly one provenance"):
        catalogue.make_entry("resnet18_fdconv", "x_in1k", sha256=SHA)


def test_record_checkpoint_is_atomic_idempotent_and_replaces(cat_path: Path):
    catalogue.record_checkpoint(_entry(), cat_path)
    first = cat_path.read_bytes()
    catalogue.record_checkpoint(_entry(), cat_path)
    assert cat_path.read_bytes() == first, "recording the same entry twice must not change the file"
    catalogue.record_checkpoint(_entry(sha256="cd" * 32), cat_path)
    data = json.loads(cat_path.read_text())
    assert [e["sha256"] for e in data["checkpoints"]] == ["cd" * 32]
    catalogue.record_checkpoint(_entry(tag="fft_a2_in1k"), cat_path)
    assert catalogue.expected_sha256("hf-hub:fdconv-zoo/resnet18_fdconv.fft_a2_in1k", cat_path) == SHA
    assert catalogue.find_entry("fdconv-zoo/resnet18_fdconv.nope", cat_path) is None
    assert not [p for p in cat_path.parent.iterdir() if p.name.startswith(".catalogue.")], "temp file left behind"
    cfgs = catalogue.trained_cfgs("resnet18_fdconv", cat_path)
    assert cfgs == {"fft_a1_in1k": {"hf_hub_id": "fdconv-zoo/resnet18_fdconv.fft_a1_in1k"},
                    "fft_a2_in1k": {"hf_hub_id": "fdconv-zoo/resnet18_fdconv.fft_a2_in1k"}}


def test_write_through_link_keeps_the_link(tmp_path: Path):
    real = tmp_path / "hub" / "catalogue.json"
    real.parent.mkdir()
    real.write_text(json.dumps({"org": "fdconv-zoo", "checkpoints": []}))
    link = tmp_path / "pkg" / "catalogue.json"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(real, link.parent))
    catalogue.record_checkpoint(_entry(), link)
    assert link.is_symlink() and len(json.loads(real.read_text())["checkpoints"]) == 1


def test_failed_write_leaves_catalogue_untouched(cat_path: Path, monkeypatch: pytest.MonkeyPatch):
    catalogue.record_checkpoint(_entry(), cat_path)
    before = cat_path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        catalogue.record_checkpoint(_entry(tag="fft_a3_in1k"), cat_path)
    assert cat_path.read_bytes() == before
    assert not [p for p in cat_path.parent.iterdir() if p.name.startswith(".catalogue.")]


def test_duplicate_entries_rejected(cat_path: Path):
    with pytest.raises(CatalogueError, match="duplicate"):
        catalogue.write_catalogue({"org": "fdconv-zoo", "checkpoints": [_entry(), _entry()]}, cat_path)
