"""Dynamic-convolution baselines: layers, function preservation, placements, parameter counts vs the papers."""

import pytest
import timm
import torch
from torch import nn

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.baselines import METHODS, convert_to_dynamic, dynamic_layers
from fdconv_zoo.hub.stats import count_params
from fdconv_zoo.layers.condconv import CondConv2d, CondLinear
from fdconv_zoo.layers.conversion import convert_to_fdconv
from fdconv_zoo.layers.dyconv import DyConv2d, annealed_temperature, set_temperature
from fdconv_zoo.layers.kernel_warehouse import KWConv2d, set_kw_tau, share_warehouse
from fdconv_zoo.layers.odconv import ODConv2d
from fdconv_zoo.tools.testing import max_relative_error

# Extra parameters over the plain timm ResNet (BASELINES.md section 2; CondConv/DY-Conv R-50: FDConv paper).
PAPER_EXTRA = {
    "resnet50_condconv8x": 90.0e6, "resnet50_dyconv4x": 75.3e6, "resnet50_odconv1x": 3.08e6,
    "resnet50_odconv4x": 65.11e6, "resnet50_kw1x": 2.49e6, "resnet50_kw4x": 76.46e6,
    "resnet18_condconv8x": 69.66e6, "resnet18_dyconv4x": 33.78e6, "resnet18_odconv1x": 0.25e6,
    "resnet18_odconv4x": 33.21e6, "resnet18_kw1x": 0.24e6, "resnet18_kw4x": 34.17e6,
}
SHAPES = [(16, 32, 3, 2, 1), (32, 16, 1, 1, 0), (24, 24, 3, 1, 2)]  # cin, cout, k, stride, padding


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("shape", SHAPES)
def test_from_conv_preserves_function(method, shape):
    torch.manual_seed(0)
    cin, cout, k, stride, padding = shape
    conv = nn.Conv2d(cin, cout, k, stride, padding, bias=True)
    layer = METHODS[method].from_conv(conv)
    x = torch.randn(3, cin, 9, 11)
    assert max_relative_error(layer(x), conv(x)) <= 1e-5


@pytest.mark.parametrize("method", sorted(METHODS))
def test_backward_and_batch_of_one(method):
    layer = METHODS[method].from_conv(nn.Conv2d(8, 16, 3, padding=1)).train()
    if method == "kw":
        set_kw_tau(layer, 0.5)  # at tau = 1 the attention is switched off (the paper's start)
    layer(torch.randn(1, 8, 6, 6)).square().mean().backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None]
    assert not missing


def test_late_layer_unfold_path_matches_grouped_conv():
    layer = ODConv2d(64, 128, 3, padding=1, num_kernels=2)
    x = torch.randn(2, 64, 3, 3)   # 128 outputs > 9 positions: unfold + bmm path
    ref = torch.stack([nn.functional.conv2d(x[b:b + 1], k, None, 1, 1)[0]
                       for b, k in enumerate(layer.dynamic_kernels(x, x.mean((2, 3))))])
    assert max_relative_error(layer(x), ref) <= 1e-5


def test_condconv_experts_differ_but_average_to_the_source():
    conv = nn.Conv2d(8, 8, 3)
    layer = CondConv2d.from_conv(conv, num_experts=4)
    assert not torch.allclose(layer.weight[0], layer.weight[1])
    assert torch.allclose(layer.weight.mean(0), conv.weight, atol=1e-6)
    lin = nn.Linear(16, 5)
    x = torch.randn(3, 16)
    assert max_relative_error(CondLinear.from_linear(lin)(x), lin(x)) <= 1e-5


def test_temperature_helpers():
    model = nn.Sequential(DyConv2d(4, 4, 1), ODConv2d(4, 4, 3, num_kernels=2))
    assert annealed_temperature(0) == 30 and annealed_temperature(5) == 15.5 and annealed_temperature(50) == 1
    assert set_temperature(model, 7.0) == 2 and model[1].temperature == 7.0
    with pytest.raises(ValueError, match="temperature"):
        set_temperature(model, 0)


def test_kernel_warehouse_sharing_keeps_kernels_and_owns_once():
    convs = [nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)]
    layers = [KWConv2d.from_conv(c, cell_out=16, cell_in=16, mult=2) for c in convs]
    wh = share_warehouse(layers)
    assert wh.num_cells == 2 * (2 + 4) and layers[1].offset == 2
    assert layers[0].warehouse is layers[1].warehouse
    model = nn.Sequential(*layers)
    assert sum(k.endswith("cells") for k in model.state_dict()) == 1
    x = torch.randn(2, 16, 5, 5)
    assert max_relative_error(model(x), convs[1](convs[0](x))) <= 1e-5


def test_bad_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match="groups=1 only"):
        ODConv2d(8, 8, 3, groups=2)
    with pytest.raises(ValueError, match="cell"):
        KWConv2d(16, 32, 3, cell_out=5)
    with pytest.raises(ValueError, match="unknown dynamic-conv method"):
        convert_to_dynamic(nn.Conv2d(3, 3, 1), "dynconv")
    with pytest.raises(ValueError, match="expected input"):
        CondConv2d(4, 4, 3)(torch.randn(1, 5, 8, 8))


def test_convert_to_dynamic_report_and_fdconv_unchanged():
    model = nn.Sequential(nn.Conv2d(32, 32, 3, groups=4), nn.Conv2d(32, 32, 1), nn.Linear(32, 32))
    report = convert_to_dynamic(model, "odconv")
    assert report.converted == ["1"] and "groups=4" in report.skipped["0"]
    assert "Conv2d layers only" in report.skipped["2"]
    # convert_to_fdconv (now on the shared surgery loop) leaves foreign dynamic layers alone
    fd_report = convert_to_fdconv(model, kernel_num=4)
    assert fd_report.converted == ["2"] and "1" not in fd_report.skipped and isinstance(model[1], ODConv2d)


@pytest.mark.parametrize("arch", sorted(PAPER_EXTRA))
def test_parameter_counts_match_the_papers(arch):
    with torch.device("meta"):
        base = count_params(timm.create_model(arch.split("_")[0]))
        extra = count_params(timm.create_model(arch)) - base
    assert abs(extra / PAPER_EXTRA[arch] - 1) <= 0.03, f"{arch}: +{extra:,}"


PLACEMENT = {  # (layers made dynamic, one that must be, one that must not be)
    "resnet50_condconv8x": (9, "layer4.0.conv2", "layer4.0.downsample.0"),
    "resnet18_condconv8x": (7, "fc", "layer3.0.conv1"),
    "resnet50_dyconv4x": (52, "layer1.0.downsample.0", "conv1"),
    "resnet50_odconv4x": (48, "layer1.0.conv1", "layer2.0.downsample.0"),
    "resnet50_kw1x": (50, "layer2.0.downsample.0", "layer1.0.conv1"),
    "resnet18_kw4x": (18, "layer1.0.conv2", "layer1.0.conv1"),
}


@pytest.mark.parametrize("arch", sorted(PLACEMENT))
def test_placements(arch):
    n, yes, no = PLACEMENT[arch]
    with torch.device("meta"):
        model = timm.create_model(arch)
    assert len(model.dyn_report.converted) == n
    assert yes in model.dyn_report.converted and no not in model.dyn_report.converted


_SLOW = pytest.mark.slow  # the 4x/8x networks hold 34-70M random parameters: seconds to initialise each


@pytest.mark.parametrize("arch", ["resnet18_odconv1x", "resnet18_kw1x",
                                  *(pytest.param(a, marks=_SLOW) for a in ("resnet18_odconv4x", "resnet18_kw4x",
                                                                          "resnet18_dyconv4x", "resnet18_condconv8x"))])
def test_network_forward_backward_features_and_vanilla_weights(arch):
    torch.manual_seed(0)
    plain = timm.create_model("resnet18", num_classes=10).eval()
    model = timm.create_model(arch, num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(state_dict=plain.state_dict(), num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_relative_error(model(x), plain(x)) <= 1e-5
    model.train()
    model(x).logsumexp(1).mean().backward()
    features = timm.create_model(arch, features_only=True, out_indices=(1, 4))
    outs = features(x)
    assert [o.shape[1] for o in outs] == features.feature_info.channels() == [64, 512]
    assert len(dynamic_layers(model)) == len(model.dyn_report.converted)


@pytest.mark.parametrize("name, head", [("resnet18_odconv1x", "layer1.0.conv1.channel_fc.weight"),
                                        ("resnet18_kw1x", "layer1.0.conv2.attention_fc.weight"),
                                        ("resnet18_dyconv4x", "layer1.0.conv1.attention.0.weight")])
def test_attention_heads_get_no_weight_decay_and_kernels_do(name: str, head: str) -> None:
    from fdconv_zoo.training.optim import param_groups

    groups = param_groups(timm.create_model(name), 0.05)
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert decay[head] == 0.0
    kernels = [n for n in decay if n.endswith(("conv1.weight", "conv2.weight", "warehouse.cells"))]
    assert kernels and all(decay[n] == 0.05 for n in kernels if n.startswith("layer"))


def test_annealing_follows_the_papers_schedules_and_skips_other_models() -> None:
    from fdconv_zoo.baselines import anneal_dynamic_layers

    od, kw = timm.create_model("resnet18_odconv1x"), timm.create_model("resnet18_kw1x")
    assert anneal_dynamic_layers(od, 0.0) == {"temperature": 30.0}
    assert anneal_dynamic_layers(od, 5.0) == {"temperature": 15.5}
    assert anneal_dynamic_layers(od, 50.0) == {"temperature": 1.0}
    assert {m.temperature for m in od.modules() if getattr(m, "method", "") == "odconv"} == {1.0}
    assert anneal_dynamic_layers(kw, 10.0) == {"kw_tau": 0.5}
    assert anneal_dynamic_layers(timm.create_model("resnet18_fdconv"), 3.0) == {}
