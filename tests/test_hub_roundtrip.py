"""save_for_hub -> local Hugging Face cache -> timm (hf-hub: and registered tag), and the pull-side errors."""

from __future__ import annotations

import copy
import json
import shutil
from collections import deque
from pathlib import Path

import httpx2
import pytest
import timm
import torch

import fdconv_zoo
from fdconv_zoo.checkpoints import check_state_dict, file_sha256
from fdconv_zoo.errors import (
    ArchitectureMismatchError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    HubUnavailableError,
    KeyMismatchError,
    ReproductionError,
)
from fdconv_zoo.hub import (
    HUB_FILES,
    catalogue,
    create_model,
    download_weights,
    load_hub_folder,
    register_catalogue_tags,
    save_for_hub,
    verify_hub_folder,
)
from fdconv_zoo.tools.testing import make_fake_hf_repo, randomize_norms_

TAG = "fft_roundtrip_in1k"
REPO = f"fdconv-zoo/resnet18_fdconv.{TAG}"
SMALL = dict(num_classes=10, fd_include=["layer1.*"])  # cheap resnet18_fdconv for the error paths


def _perturb_fd_(model: torch.nn.Module) -> torch.nn.Module:
    """Non-neutral KSM/FBM parameters, so that a reload which lost them could not pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "KSM" in name or "FBM" in name:
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The registered architecture with its default args (the registered tag rebuilds exactly those)."""
    torch.manual_seed(0)
    return _perturb_fd_(randomize_norms_(timm.create_model("resnet18_fdconv"))).eval()


@pytest.fixture(scope="module")
def staged(model, tmp_path_factory) -> Path:
    stats = dict(params=sum(p.numel() for p in model.parameters()), extra_params=1, gmacs=1.0, input_size=[3, 224, 224])
    return save_for_hub(model, tmp_path_factory.mktemp("stage") / "repo", tag=TAG,
                        converted_from="timm/resnet18.a1_in1k", stats=stats)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return _perturb_fd_(randomize_norms_(timm.create_model("resnet18_fdconv", **SMALL))).eval()


@pytest.fixture(scope="module")
def small_staged(small_model, tmp_path_factory) -> Path:
    stats = dict(params=1, extra_params=1, gmacs=1.0, input_size=[3, 224, 224])
    return save_for_hub(small_model, tmp_path_factory.mktemp("small") / "repo", tag="fft_small_in1k",
                        converted_from="timm/resnet18.a1_in1k", stats=stats)


@pytest.fixture
def timm_registry():
    """Restore timm's registry tables after a test that registers catalogue tags."""
    from timm.models import _registry as r

    saved_pre = dict(r._model_pretrained_cfgs)
    saved_def = {k: (deque(v.tags), dict(v.cfgs), v.is_pretrained) for k, v in r._model_default_cfgs.items()}
    saved_tags = {k: list(v) for k, v in r._model_with_tags.items()}
    saved_has = set(r._model_has_pretrained)
    yield r
    r._model_pretrained_cfgs.clear()
    r._model_pretrained_cfgs.update(saved_pre)
    for k, (tags, cfgs, is_pre) in saved_def.items():
        d = r._model_default_cfgs[k]
        d.tags, d.cfgs, d.is_pretrained = tags, cfgs, is_pre
    for k, v in saved_tags.items():
        r._model_with_tags[k] = v
    r._model_has_pretrained.clear()
    r._model_has_pretrained.update(saved_has)


def _files(folder: Path, **replace: bytes) -> dict:
    files: dict = {f.name: f for f in folder.iterdir()}
    files.update(replace)
    return files


def _catalogue_for(tmp_path: Path, sha: str, tag: str = TAG, arch: str = "resnet18_fdconv") -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"org": "fdconv-zoo", "checkpoints": []}))
    catalogue.record_checkpoint(catalogue.make_entry(arch, tag, sha256=sha, converted_from="timm/resnet18.a1_in1k"),
                                path)
    return path


def test_save_for_hub_writes_the_three_files(staged: Path, model):
    assert sorted(p.name for p in staged.iterdir()) == sorted(HUB_FILES)
    assert not [p for p in staged.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    config = json.loads((staged / "config.json").read_text())
    assert config["architecture"] == "resnet18_fdconv" and config["num_classes"] == 1000
    assert config["model_args"]["fd_kernel_num"] == 64 and config["model_args"]["fd_include"] == ["layer*"]
    assert config["pretrained_cfg"]["first_conv"] == "conv1" and "hf_hub_id" not in config["pretrained_cfg"]
    assert "Converted on load" not in json.dumps(config), "the source cfg's provenance note must not leak"
    card = (staged / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and f"hf-hub:{REPO}" in card


def test_round_trip_hf_hub_and_registered_tag(model, staged: Path, fake_hub: Path, tmp_path: Path, timm_registry):
    make_fake_hf_repo(fake_hub, REPO, _files(staged))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        from_hub = timm.create_model(f"hf-hub:{REPO}", pretrained=True).eval()
        assert torch.equal(from_hub(x), ref)
        cat = _catalogue_for(tmp_path, file_sha256(staged / "model.safetensors"))
        assert register_catalogue_tags(cat) == [f"resnet18_fdconv.{TAG}"]
        assert register_catalogue_tags(cat) == [], "registering twice is a no-op"
        assert f"resnet18_fdconv.{TAG}" in timm.list_pretrained("resnet18_fdconv.*")
        by_tag = timm.create_model(f"resnet18_fdconv.{TAG}", pretrained=True).eval()
        assert by_tag.pretrained_cfg["hf_hub_id"] == REPO
        assert torch.equal(by_tag(x), ref)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, by_tag.state_dict()[name]), name


def test_verify_hub_folder_catches_a_changed_file(small_model, small_staged: Path, tmp_path: Path):
    verify_hub_folder(small_model, small_staged, input_size=(3, 32, 32))
    other = tmp_path / "tampered"
    shutil.copytree(small_staged, other)
    sd = load_hub_folder(other).state_dict()
    key = "layer1.0.conv2.KSM_Global.kernel_fc.bias"
    sd[key] = sd[key] + 1e-3
    from fdconv_zoo.checkpoints import save_safetensors

    save_safetensors(sd, other / "model.safetensors")
    with pytest.raises(ReproductionError, match=key.replace(".", r"\.")):
        verify_hub_folder(small_model, other, input_size=(3, 32, 32))


def test_offline_and_not_cached_says_what_to_do(fake_hub: Path):
    with pytest.raises(HubUnavailableError) as info:
        create_model(f"hf-hub:{REPO}", pretrained=True)
    msg = str(info.value)
    for needle in (REPO, "HF_HUB_OFFLINE=1", "HF_HUB_CACHE", str(fake_hub),
                   "fdconv-zoo convert --checkpoint local.safetensors"):
        assert needle in msg, needle
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE=1"):  # timm's own loader, without our pre-fetch
        create_model(f"hf-hub:{REPO}", pretrained=True, verify=False)
    with pytest.raises(HubUnavailableError, match="model.safetensors"):
        download_weights("timm/resnet18.a1_in1k")


def test_unreachable_hub_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Online mode, but every connection is refused (stubbed at the HTTP transport)."""
    import huggingface_hub.constants as hfc
    from huggingface_hub.utils import _http

    monkeypatch.setattr(hfc, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(_http.time, "sleep", lambda s: None)  # skip huggingface_hub's retry back-off waits

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(refuse)))
    try:
        with pytest.raises(HubUnavailableError, match=r"(?s)unreachable.*HF_HUB_OFFLINE=1.*fdconv-zoo convert"):
            create_model(f"hf-hub:{REPO}", pretrained=True)
    finally:
        _http.set_client_factory(_http.default_client_factory)


def test_sha256_mismatch_with_catalogue(small_staged: Path, fake_hub: Path, tmp_path: Path, timm_registry):
    repo = "fdconv-zoo/resnet18_fdconv.fft_small_in1k"
    make_fake_hf_repo(fake_hub, repo, _files(small_staged))
    wrong = "0" * 64
    cat = _catalogue_for(tmp_path, wrong, tag="fft_small_in1k")
    with pytest.raises(ChecksumMismatchError) as info:
        create_model(f"hf-hub:{repo}", pretrained=True, catalogue_path=cat)
    msg = str(info.value)
    assert wrong in msg and file_sha256(small_staged / "model.safetensors") in msg and "force_download" in msg
    register_catalogue_tags(cat)  # by tag too: the registered cfg's hf_hub_id is checked against the catalogue
    with pytest.raises(ChecksumMismatchError):
        create_model("resnet18_fdconv.fft_small_in1k", pretrained=True, catalogue_path=cat, **SMALL)
    good = _catalogue_for(tmp_path, file_sha256(small_staged / "model.safetensors"), tag="fft_small_in1k")
    loaded = create_model(f"hf-hub:{repo}", pretrained=True, catalogue_path=good)
    assert loaded.num_classes == 10


def test_corrupt_safetensors(small_staged: Path, fake_hub: Path, tmp_path: Path):
    truncated = (small_staged / "model.safetensors").read_bytes()[:4096]
    repo = "fdconv-zoo/resnet18_fdconv.fft_corrupt_in1k"  # not catalogued: no sha256 to compare, the parse fails
    make_fake_hf_repo(fake_hub, repo, _files(small_staged, **{"model.safetensors": truncated}))
    with pytest.raises(CorruptCheckpointError, match=r"(?s)model\.safetensors.*corrupt.*force_download=True"):
        create_model(f"hf-hub:{repo}", pretrained=True)
    local = tmp_path / "local"
    shutil.copytree(small_staged, local)
    (local / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CorruptCheckpointError, match="local/model.safetensors"):
        load_hub_folder(local)


def test_checkpoint_of_another_architecture(small_model, small_staged: Path):
    sd = small_model.state_dict()
    other = timm.create_model("resnet26", num_classes=10)  # bottleneck ResNet: same names, other shapes
    with pytest.raises(ArchitectureMismatchError) as info:
        check_state_dict(sd, other)
    msg = str(info.value)
    assert "layer1.0.conv1.weight" not in info.value.mismatches  # an FD key there: listed as unexpected instead
    assert "layer1.0.bn1.weight" not in info.value.mismatches
    assert "layer2.0.conv1.weight: checkpoint (128, 64, 3, 3) vs model (128, 256, 1, 1)" in msg
    assert "layer1.0.conv1.dft_weight" in msg  # unexpected keys are listed too
    with pytest.raises(ArchitectureMismatchError, match="saved from 'resnet18_fdconv', not 'resnet34'"):
        check_state_dict(sd, timm.create_model("resnet34", num_classes=10), checkpoint_architecture="resnet18_fdconv")


def test_missing_and_unexpected_keys_listed(small_model):
    sd = dict(small_model.state_dict())
    del sd["layer1.0.conv2.FBM.freq_weight_conv_list.1.bias"]
    sd["layer1.0.conv2.extra_gain"] = torch.zeros(1)
    with pytest.raises(KeyMismatchError) as info:
        check_state_dict(sd, small_model)
    msg = str(info.value)
    assert "missing from the checkpoint (1):\n    layer1.0.conv2.FBM.freq_weight_conv_list.1.bias" in msg
    assert "unexpected, not in the model (1):\n    layer1.0.conv2.extra_gain" in msg
    assert info.value.missing == ["layer1.0.conv2.FBM.freq_weight_conv_list.1.bias"]
    assert check_state_dict(small_model.state_dict(), small_model) == []
    assert fdconv_zoo.hub.HUB_FILES == ("README.md", "config.json", "model.safetensors")


def test_save_for_hub_takes_the_card_tag_from_the_model(small_model, tmp_path: Path):
    folder = save_for_hub(small_model, tmp_path / "repo")
    tag = small_model.pretrained_cfg["tag"]
    assert tag and f"`{tag}`" in (folder / "README.md").read_text()
    untagged = copy.deepcopy(small_model)
    untagged.pretrained_cfg = {}
    with pytest.raises(ValueError, match="no timm tag .*pass tag="):
        save_for_hub(untagged, tmp_path / "other")
