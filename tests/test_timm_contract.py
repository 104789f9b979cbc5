"""timm's model contract (the checks of timm's own tests/test_models.py) for every registered *_fdconv model."""

import pytest
import timm
import torch
from timm.models._features_fx import get_graph_node_names, get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import create_feature_extractor

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo import FDConv2d, FDLinear

SMALL = {"resnet18_fdconv", "resnet50_fdconv", "convnext_tiny_fdconv", "swin_tiny_patch4_window7_224_fdconv"}
ARCHS = [pytest.param(a, marks=() if a in SMALL else pytest.mark.slow) for a in timm.list_models("*_fdconv")]
TAGGED = [pytest.param(n, marks=() if n.split(".")[0] in SMALL else pytest.mark.slow)
          for n in timm.list_pretrained("*_fdconv.*")]


def _input(arch: str, batch: int) -> torch.Tensor:
    size = 224 if arch.startswith("swin") else 64          # Swin's windows need its native grid
    return torch.randn(batch, 3, size, size)


def test_every_family_is_registered():
    names = timm.list_models("*_fdconv")
    assert {"resnet50_fdconv", "convnext_tiny_fdconv", "swin_tiny_patch4_window7_224_fdconv"} <= set(names)
    assert all(n.endswith("_fdconv") for n in names)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_and_default_cfg(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=7, drop_path_rate=0.0).train()
    assert any(isinstance(m, (FDConv2d, FDLinear)) for m in model.modules())
    cfg = model.pretrained_cfg
    for key in ("input_size", "interpolation", "mean", "std", "first_conv", "classifier", "pool_size"):
        assert key in cfg, key
    x = _input(arch, 2)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing

    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, model.head_hidden_size or model.num_features)
        assert torch.allclose(model.forward_head(features), model(x), rtol=1e-5, atol=1e-6)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_features_only_and_forward_intermediates(arch):
    torch.manual_seed(0)
    x = _input(arch, 1)
    backbone = timm.create_model(arch, features_only=True, feature_cls="getter").eval()
    model = timm.create_model(arch).eval()
    getattr(backbone, "model", backbone).load_state_dict(model.state_dict(), strict=False)   # head pruned
    with torch.no_grad():
        maps = backbone(x)
        final, intermediates = model.forward_intermediates(x)
    assert [m.shape[1] for m in maps] == backbone.feature_info.channels()
    assert [x.shape[-1] // m.shape[-1] for m in maps] == backbone.feature_info.reduction()
    assert len(intermediates) == len(maps)
    for ours, theirs in zip(maps, intermediates, strict=True):
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert final.shape[0] == 1


@pytest.mark.parametrize("name", TAGGED)
def test_every_registered_tag_builds_with_its_own_cfg(name):
    arch, tag = name.split(".")
    model = timm.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == arch and cfg["tag"] == tag
    assert model.num_classes == cfg["num_classes"]
    for key in ("input_size", "interpolation", "mean", "std", "crop_pct", "first_conv", "classifier", "hf_hub_id"):
        assert cfg.get(key) is not None, key
    with torch.no_grad():
        y = model(_input(arch, 1))
    assert y.shape == (1, cfg["num_classes"]) and torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_fx_traced_model_forward_and_backward(arch):
    """timm's FX check: the traced graph (FD layers are leaves) gives the model's output and every gradient."""
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=7, drop_path_rate=0.0).train()
    train_nodes, eval_nodes = get_graph_node_names(model)
    tracer_kwargs = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    traced = create_feature_extractor(model, train_return_nodes=[train_nodes[-1]],
                                      eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs).train()
    x = _input(arch, 2)
    y = model(x)
    (y_traced,) = traced(x).values()
    assert torch.allclose(y_traced, y, rtol=1e-4, atol=1e-5)
    y_traced.logsumexp(1).mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, missing
    traced.eval()
    with torch.no_grad():
        (y_eval,) = traced(x).values()
        assert torch.allclose(y_eval, model.eval()(x), rtol=1e-4, atol=1e-5)
