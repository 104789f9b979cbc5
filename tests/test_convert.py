"""convert_to_fdconv surgery, the vanilla -> FD state-dict mapping and official_to_zoo."""

import pytest
import timm
import torch

from fdconv_zoo import FDConv2d, FDLinear
from fdconv_zoo.layers.conversion import convert_to_fdconv, official_to_zoo, vanilla_to_fdconv
from fdconv_zoo.tools.testing import max_relative_error, randomize_norms_

RESNET = dict(include=["layer*"], exclude=["*downsample*"])


def test_resnet50_placement_and_parameter_count():
    model = timm.create_model("resnet50")
    report = convert_to_fdconv(model, **RESNET)
    assert len(report.converted) == 48
    assert report.skipped["conv1"] == "not matched by include"
    assert report.skipped["layer1.0.downsample.0"] == "matched by exclude"
    assert sum(p.numel() for p in model.parameters()) - 25_557_032 == 3_647_120
    assert "layer4.2.conv3" in str(report)


def test_skip_reasons():
    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, groups=4), torch.nn.Conv2d(64, 16, 1),
                                torch.nn.Conv2d(64, 64, 7), torch.nn.Linear(64, 64))
    report = convert_to_fdconv(model, kernel_num=4)
    assert report.skipped == {"0": "groups=4 (FDConv needs groups=1)",
                              "1": "min(in, out) = 16 <= min_channels=16",
                              "2": "kernel size 7 not in (1, 3)"}
    assert report.converted == ["3"] and isinstance(model[3], FDLinear)


def test_vanilla_checkpoint_loads_strictly_and_preserves_function():
    plain = randomize_norms_(timm.create_model("resnet18")).eval()
    fd = timm.create_model("resnet18").eval()
    convert_to_fdconv(fd, **RESNET)
    fd.load_state_dict(vanilla_to_fdconv(plain.state_dict(), fd), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert max_relative_error(fd(x), plain(x)) <= 1e-5
    already = fd.state_dict()
    assert vanilla_to_fdconv(already, fd).keys() == already.keys()   # FD checkpoints pass through


def test_vanilla_checkpoint_of_another_architecture_is_rejected():
    fd = timm.create_model("resnet18")
    convert_to_fdconv(fd, **RESNET)
    other = timm.create_model("resnet34").state_dict()
    other["layer1.0.conv1.weight"] = torch.randn(32, 64, 3, 3)
    with pytest.raises(ValueError, match=r"layer1.0.conv1.weight.*another architecture"):
        vanilla_to_fdconv(other, fd)


def test_official_to_zoo_strips_backbone_and_drops_detector_keys():
    layer = FDConv2d(64, 64, 3, kernel_num=4)
    official = {f"backbone.layer1.0.conv2.{k}": v for k, v in layer.state_dict().items()}
    official["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    official["backbone.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    mapped = official_to_zoo({"state_dict": official})
    assert "neck.lateral_convs.0.conv.weight" not in mapped and "conv1.weight" in mapped
    assert set(mapped) - {"conv1.weight"} == {f"layer1.0.conv2.{k}" for k in layer.state_dict()}
