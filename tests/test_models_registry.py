"""The *_fdconv timm registry: names, tags, cfg fields, trained-tag merging, model_args round trip."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.models import generate_default_cfgs, get_pretrained_cfg

import fdconv_zoo.baselines  # noqa: F401  (registers the *_fdconv and the baseline models)
from fdconv_zoo.models import _fd_builder
from fdconv_zoo.tools.testing import max_relative_error, randomize_norms_, save_timm_model_to_fake_hub

ARCHS = [
    "resnet18_fdconv", "resnet34_fdconv", "resnet50_fdconv", "resnet101_fdconv", "resnet152_fdconv",
    "convnext_tiny_fdconv", "convnext_small_fdconv", "convnext_base_fdconv",
    "swin_tiny_patch4_window7_224_fdconv", "swin_small_patch4_window7_224_fdconv",
    "swin_base_patch4_window7_224_fdconv",
]


def test_list_models_and_pretrained() -> None:
    assert set(timm.list_models("*fdconv*")) == set(ARCHS)
    pretrained = set(timm.list_pretrained("*fdconv*"))
    for arch in ARCHS:
        assert any(p.startswith(arch + ".") for p in pretrained), arch
    for name in ("resnet50_fdconv.a1_in1k", "convnext_tiny_fdconv.fb_in1k",
                 "swin_tiny_patch4_window7_224_fdconv.ms_in1k"):
        assert name in pretrained
    # our module names do not shadow timm's
    assert {"fd_resnet", "fd_convnext", "fd_swin"} <= set(timm.list_modules())
    assert "resnet50" in timm.list_models(module="resnet")
    assert "resnet50_fdconv" not in timm.list_models(module="resnet")


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_cfgs_copy_timm_fields(arch: str) -> None:
    base = arch.removesuffix("_fdconv")
    converted = [get_pretrained_cfg(name) for name in timm.list_pretrained(arch + ".*")]
    converted = [cfg for cfg in converted if cfg.hf_hub_id.startswith("timm/")]
    assert len(converted) >= 2
    for cfg in converted:
        src = get_pretrained_cfg(f"{base}.{cfg.tag}")
        assert cfg.hf_hub_id == f"timm/{base}.{cfg.tag}" == src.hf_hub_id
        assert cfg.url is None  # weights come from the Hub repo only
        for field in ("input_size", "crop_pct", "interpolation", "mean", "std", "license", "first_conv",
                      "classifier", "num_classes", "fixed_input_size", "test_input_size", "pool_size"):
            assert getattr(cfg, field) == getattr(src, field), field
        assert cfg.paper_ids == "arXiv:2503.18783" and cfg.paper_name and cfg.origin_url
        assert "NOT FDConv-trained" in cfg.notes and "import fdconv_zoo" in cfg.notes


@pytest.mark.parametrize("arch, tag", [("resnet50_fdconv", "a1_in1k"), ("resnet101_fdconv", "a1h_in1k"),
                                       ("convnext_tiny_fdconv", "fb_in1k"),
                                       ("swin_base_patch4_window7_224_fdconv", "ms_in1k")])
def test_default_tags(arch: str, tag: str) -> None:
    trained = [t for t, f in _fd_builder.trained_cfgs(arch).items() if _fd_builder._is_trained(f["hf_hub_id"])]
    assert get_pretrained_cfg(arch).tag == (trained[0] if trained else tag)


def test_swin_data_config() -> None:
    model_cfg = get_pretrained_cfg("swin_tiny_patch4_window7_224_fdconv.ms_in1k").to_dict()
    data = timm.data.resolve_data_config({}, pretrained_cfg=model_cfg)
    transform = timm.data.create_transform(**data)
    names = [type(t).__name__ for t in transform.transforms]
    assert names[:2] == ["Resize", "CenterCrop"]
    assert transform.transforms[0].size == 248 and data["input_size"] == (3, 224, 224)
    assert data["interpolation"] == "bicubic"


def test_catalogue_tags_merge_and_trained_ones_take_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    hosted = {
        "fft_a1_in1k": dict(hf_hub_id="fdconv-zoo/resnet50_fdconv.fft_a1_in1k"),
        "fd_in1k": dict(hf_hub_id="fdconv-zoo/resnet50_fdconv.fd_in1k", crop_pct=0.95),
    }
    sources = {"fdconv-zoo/resnet50_fdconv.fd_in1k": {"trained_with": {"script": "train.py", "args": []}},
               "fdconv-zoo/resnet50_fdconv.fft_a1_in1k": {"converted_from": "timm/resnet50.a1_in1k"}}
    monkeypatch.setattr(_fd_builder, "trained_cfgs", lambda arch: dict(hosted) if arch == "resnet50_fdconv" else {})
    monkeypatch.setattr(_fd_builder, "find_entry", lambda repo_id, path=None: dict(source=sources[repo_id]))
    base = _fd_builder.base_cfg(first_conv="conv1", classifier="fc")
    default = generate_default_cfgs(_fd_builder.fd_default_cfgs("resnet50", base, ("a1_in1k", "tv_in1k"),
                                                                "a1_in1k"))["resnet50_fdconv"]
    assert list(default.tags) == ["fd_in1k", "fft_a1_in1k", "a1_in1k", "tv_in1k"]  # trained tag is the default
    fd = default.cfgs["fd_in1k"]
    assert fd.hf_hub_id == "fdconv-zoo/resnet50_fdconv.fd_in1k" and fd.crop_pct == 0.95
    assert fd.first_conv == "conv1" and fd.license == "apache-2.0" and fd.paper_ids == "arXiv:2503.18783"
    assert "NOT FDConv-trained" not in fd.notes
    assert "NOT FDConv-trained" in default.cfgs["fft_a1_in1k"].notes

    # only hosted conversions: the converted-on-load default stays the default
    del hosted["fd_in1k"]
    default = generate_default_cfgs(_fd_builder.fd_default_cfgs("resnet50", base, ("a1_in1k", "tv_in1k"),
                                                                "a1_in1k"))["resnet50_fdconv"]
    assert default.tags[0] == "a1_in1k"


def test_unknown_fd_option_is_an_error() -> None:
    with pytest.raises(TypeError, match="fd_kernel_nm"):
        timm.create_model("resnet18_fdconv", fd_kernel_nm=8)


def test_fd_model_args_round_trip_through_config_json(fake_hub) -> None:
    """FD options given to create_model land in config.json and rebuild the same model via hf-hub:."""
    options = dict(fd_kernel_num=8, fd_min_channels=64, fd_use_fbm=False)
    model = randomize_norms_(timm.create_model("resnet18_fdconv", num_classes=5, **options)).eval()
    snapshot = save_timm_model_to_fake_hub(model, fake_hub, "fdconv-zoo/resnet18_fdconv.test")
    config = json.loads((snapshot / "config.json").read_text())
    args = config["model_args"]
    assert args["fd_kernel_num"] == 8 and args["fd_min_channels"] == 64 and args["fd_use_fbm"] is False
    assert args["fd_include"] == ["layer*"] and args["fd_exclude"] == ["*downsample*"]

    loaded = timm.create_model("hf-hub:fdconv-zoo/resnet18_fdconv.test", pretrained=True).eval()
    assert loaded.fd_options.kernel_num == 8 and loaded.num_classes == 5
    assert loaded.fd_report.converted == model.fd_report.converted  # min_channels=64 kept layer1 plain
    assert not any(name.startswith("layer1.") for name in loaded.fd_report.converted)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_relative_error(loaded(x), model(x)) <= 1e-6


@pytest.mark.parametrize("arch", ["resnet18_fdconv", "convnext_tiny_fdconv", "resnet18_odconv1x"])
@torch.no_grad()
def test_fx_feature_extraction_treats_dynamic_layers_as_leaves(arch: str) -> None:
    """timm's feature_cls='fx' traces the model: FD/dynamic layers must be registered leaves."""
    torch.manual_seed(0)
    hooks = timm.create_model(arch, features_only=True, out_indices=(1, 2)).eval()
    torch.manual_seed(0)  # same construction order, same weights (the wrappers' key names differ)
    fx = timm.create_model(arch, features_only=True, out_indices=(1, 2), feature_cls="fx").eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(hooks(x), fx(x), strict=True):
        assert a.shape == b.shape and max_relative_error(b, a) <= 1e-6


def test_baselines_are_registered_only_on_request() -> None:
    """``import fdconv_zoo`` registers the *_fdconv models only; ``import fdconv_zoo.baselines`` adds the baselines."""
    import subprocess
    import sys

    script = ("import timm, fdconv_zoo; print(len(timm.list_models('*_fdconv')), len(timm.list_models('*odconv*')));"
              "import fdconv_zoo.baselines; print(len(timm.list_models('*odconv*')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    fd, before, after = map(int, done.stdout.split())
    assert fd == 11 and before == 0 and after == 4


@pytest.mark.parametrize("module", ["fdconv_zoo.models.fd_dynconv_baselines", "fdconv_zoo.reference"])
def test_moved_modules_still_import_with_a_deprecation_warning(module: str) -> None:
    import subprocess
    import sys

    script = (f"import warnings, fdconv_zoo\nwith warnings.catch_warnings(record=True) as caught:\n"
              f"    warnings.simplefilter('always')\n    import {module}\n"
              "print(any(issubclass(w.category, DeprecationWarning) and 'fdconv_zoo' in str(w.message)"
              " for w in caught))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "True", done.stderr[-2000:]


@pytest.mark.parametrize("name, repo", [("resnet18_fdconv.a1_in1k", "timm/resnet18.a1_in1k"),
                                        ("convnext_tiny_fdconv.in12k_ft_in1k", "timm/convnext_tiny.in12k_ft_in1k")])
def test_pretrained_without_hub_or_cache_names_the_repo_and_the_fix(fake_hub, name, repo) -> None:
    """The front door: ``timm.create_model(..., pretrained=True)`` offline with an empty cache."""
    from fdconv_zoo.errors import HubUnavailableError

    with pytest.raises(HubUnavailableError, match=rf"(?s)'{repo}'.*HF_HUB_OFFLINE=1.*fdconv-zoo convert"):
        timm.create_model(name, pretrained=True)
