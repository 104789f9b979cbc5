"""``fdconv-zoo convert``: vanilla timm and official (authors' mmdet) checkpoints -> FDConv safetensors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import fdconv_zoo  # noqa: F401  (registers the models)
from fdconv_zoo.checkpoints import convert_checkpoint, convert_state_dict, save_safetensors
from fdconv_zoo.cli import main as cli_main
from fdconv_zoo.errors import (
    ArchitectureMismatchError,
    CorruptCheckpointError,
    HubUnavailableError,
    KeyMismatchError,
)
from fdconv_zoo.hub import convert_from_hub
from fdconv_zoo.hub.stats import count_extra_params
from fdconv_zoo.tools.testing import max_relative_error, randomize_norms_, save_timm_model_to_fake_hub

N_GROUPS = 64  # kernel_num of the official ResNet_FDConv
SMALL_ARGS = {"fd_include": ["layer1.*"]}


# ---------------------------------------------------------------------------------------------------------------
# An official checkpoint, synthesised from spec section 5 (shapes from the formulas, not from our model)


def _bn(prefix: str, c: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.bias": torch.randn(c, generator=gen),
            f"{prefix}.running_mean": torch.randn(c, generator=gen),
            f"{prefix}.running_var": torch.rand(c, generator=gen) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(1000)}


def _fdconv(prefix: str, cin: int, cout: int, k: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Spec section 5's table for one FDConv layer (groups=1, no bias: ResNet convs have none)."""
    hidden = max(int(cin * 0.0625), 16)                                  # A
    ks = round(math.log2(cin) / 2 + 0.5) // 2 * 2 + 1                    # local 1-D kernel (banker's round)

    def r(*shape: int) -> torch.Tensor:
        return 0.01 * torch.randn(*shape, generator=gen)

    g = f"{prefix}.KSM_Global"
    sd = {f"{prefix}.dft_weight": r(1, cout * k, cin * k // 2 + 1, 2),
          f"{g}.fc.weight": r(hidden, cin, 1, 1),
          **_bn(f"{g}.bn", hidden, gen),
          f"{g}.relu.scale": torch.ones(1), f"{g}.relu.bias": torch.zeros(1),
          f"{g}.channel_fc.weight": r(cin, hidden, 1, 1), f"{g}.channel_fc.bias": r(cin),
          f"{g}.filter_fc.weight": r(cout, hidden, 1, 1), f"{g}.filter_fc.bias": r(cout),
          f"{g}.kernel_fc.weight": r(N_GROUPS, hidden, 1, 1), f"{g}.kernel_fc.bias": r(N_GROUPS),
          f"{prefix}.KSM_Local.conv.weight": r(cout * k * k, 1, ks),
          f"{prefix}.KSM_Local.norm.weight": torch.ones(cin), f"{prefix}.KSM_Local.norm.bias": torch.zeros(cin)}
    if k == 3:
        sd[f"{prefix}.KSM_Global.spatial_fc.weight"] = r(k * k, hidden, 1, 1)
        sd[f"{prefix}.KSM_Global.spatial_fc.bias"] = r(k * k)
        for j in range(3):
            sd[f"{prefix}.FBM.freq_weight_conv_list.{j}.weight"] = r(1, cin, 3, 3)
            sd[f"{prefix}.FBM.freq_weight_conv_list.{j}.bias"] = r(1)
    return sd


def official_resnet(bottleneck: bool, layers: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    """mmdet ``ResNet_FDConv`` backbone keys (stem + layer1..4, FDConv in every block conv) plus neck/heads."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"conv1.weight": 0.1 * torch.randn(64, 3, 7, 7, generator=gen), **_bn("bn1", 64, gen)}
    cin = 64
    for stage, blocks in enumerate(layers):
        width = 64 * 2 ** stage
        cout = width * 4 if bottleneck else width
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}"
            convs = ([(cin, width, 1), (width, width, 3), (width, cout, 1)] if bottleneck
                     else [(cin, width, 3), (width, cout, 3)])
            for i, (ci, co, k) in enumerate(convs, start=1):
                sd.update(_fdconv(f"{p}.conv{i}", ci, co, k, gen))
                sd.update(_bn(f"{p}.bn{i}", co, gen))
            if b == 0 and (cin != cout or stage > 0):
                sd[f"{p}.downsample.0.weight"] = 0.1 * torch.randn(cout, cin, 1, 1, generator=gen)
                sd.update(_bn(f"{p}.downsample.1", cout, gen))
            cin = cout
    out = {f"backbone.{k}": v for k, v in sd.items()}
    out.update({"neck.lateral_convs.0.conv.weight": torch.zeros(256, cin // 8, 1, 1),
                "rpn_head.rpn_conv.weight": torch.zeros(256, 256, 3, 3),
                "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024)})
    return out


@pytest.fixture(scope="module")
def official_r50(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = official_resnet(bottleneck=True, layers=(3, 4, 6, 3))
    path = tmp_path_factory.mktemp("official") / "faster_rcnn_r50_fdconv.pth"
    torch.save({"meta": {"mmdet_version": "2.28.2", "epoch": 12}, "state_dict": sd}, path)
    return path, sd


def test_official_r50_maps_with_zero_unmapped_backbone_keys(official_r50, tmp_path: Path):
    path, sd = official_r50
    backbone = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    assert sum(k.endswith(".dft_weight") for k in backbone) == 48  # 16 bottlenecks x 3 FDConv layers
    result = convert_checkpoint(path, "resnet50_fdconv", output=tmp_path / "r50.safetensors")
    assert result.layout == "official"
    assert result.unmapped == [], "every backbone key of the official checkpoint must land in resnet50_fdconv"
    assert result.filled == ["fc.weight", "fc.bias"]  # a detector backbone has no classifier: kept at init, reported
    assert result.dropped == ["neck.lateral_convs.0.conv.weight", "roi_head.bbox_head.fc_cls.weight",
                              "rpn_head.rpn_conv.weight"]
    written = load_file(str(tmp_path / "r50.safetensors"))
    assert set(written) == set(backbone) | {"fc.weight", "fc.bias"} == set(result.model.state_dict())
    for key, value in backbone.items():
        assert torch.equal(written[key], value), key
    assert count_extra_params(result.model) == 3_647_120  # spec section 4: ResNet-50 +3,647,120 with n = 64
    report = result.report()
    assert "0 unmapped source keys" in report
    assert "missing from the source, kept at the model's init (2):\n    fc.weight\n    fc.bias" in report


def test_official_r18_backbone_without_classifier_cli(tmp_path: Path, capsys):
    sd = official_resnet(bottleneck=False, layers=(2, 2, 2, 2))  # ResNet-18 layout: BasicBlocks, k=3 everywhere
    path = tmp_path / "r18_fdconv_official.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": sd}, path)
    out = tmp_path / "r18.safetensors"
    assert cli_main(["convert", "--checkpoint", str(path), "--model", "resnet18_fdconv", "--num-classes", "0",
                     "--output", str(out)]) == 0
    report = capsys.readouterr().out
    assert "official checkpoint -> resnet18_fdconv" in report and "0 unmapped source keys" in report
    assert "kept at the model's init" not in report
    assert set(load_file(str(out))) == {k.removeprefix("backbone.") for k in sd if k.startswith("backbone.")}


def test_official_checkpoint_with_unknown_keys_is_refused():
    sd = official_resnet(bottleneck=False, layers=(2, 2, 2, 2))
    sd["backbone.layer2.1.conv2.KSM_Global.temperature"] = torch.ones(1)
    del sd["backbone.layer4.0.conv1.KSM_Local.conv.weight"]
    model = timm.create_model("resnet18_fdconv", num_classes=0)  # one build for both calls (it is slow)
    with pytest.raises(KeyMismatchError) as info:
        convert_state_dict(sd, model)
    assert info.value.unexpected == ["layer2.1.conv2.KSM_Global.temperature"]
    assert info.value.missing == ["layer4.0.conv1.KSM_Local.conv.weight"]
    result = convert_state_dict(sd, model, strict=False)
    assert result.layout == "official" and result.unmapped == ["layer2.1.conv2.KSM_Global.temperature"]
    assert "unmapped source keys (not loaded!) (1):\n    layer2.1.conv2.KSM_Global.temperature" in result.report()


# ---------------------------------------------------------------------------------------------------------------
# Vanilla timm checkpoints


@pytest.fixture(scope="module")
def plain() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_norms_(timm.create_model("resnet18", num_classes=10)).eval()


def test_vanilla_file_to_fdconv_is_function_preserving(plain, tmp_path: Path, capsys):
    src = save_safetensors(plain.state_dict(), tmp_path / "resnet18.safetensors")
    out = tmp_path / "resnet18_fdconv.safetensors"
    args = ["convert", "--checkpoint", str(src), "--model", "resnet18_fdconv", "--output", str(out),
            "--num-classes", "10", "--model-args", '{"fd_include": ["layer1.*"]}']
    assert cli_main(args) == 0
    assert "4 FD layers converted from plain weights" in capsys.readouterr().out
    fd = timm.create_model("resnet18_fdconv", num_classes=10, pretrained=True,
                           pretrained_cfg_overlay=dict(file=str(out), num_classes=10), **SMALL_ARGS).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_relative_error(fd(x), plain(x)) <= 1e-5


def test_vanilla_hub_id_from_cache_and_offline_guidance(plain, fake_hub: Path, capsys, tmp_path: Path):
    save_timm_model_to_fake_hub(plain, fake_hub, "timm/resnet18.a1_in1k")
    result = convert_from_hub("timm/resnet18.a1_in1k", "resnet18_fdconv", num_classes=10, model_args=SMALL_ARGS)
    assert result.layout == "vanilla" and result.converted == ["layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1",
                                                               "layer1.1.conv2"]
    with pytest.raises(HubUnavailableError, match="fdconv-zoo convert --checkpoint local.safetensors"):
        convert_from_hub("timm/resnet50.a1_in1k", "resnet50_fdconv")
    with pytest.raises(FileNotFoundError, match="convert_from_hub"):
        convert_checkpoint("timm/resnet50.a1_in1k", "resnet50_fdconv")
    code = cli_main(["convert", "--checkpoint", "hf-hub:timm/resnet50.a1_in1k", "--model", "resnet50_fdconv",
                     "--output", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "HF_HUB_OFFLINE=1" in err and "not in the local cache" in err


def test_another_architecture_lists_shapes(tmp_path: Path):
    other = timm.create_model("resnet26", num_classes=10)  # bottleneck blocks: 1x1 conv1 where resnet18 has 3x3
    with pytest.raises(ArchitectureMismatchError) as info:
        convert_checkpoint(other.state_dict(), "resnet18_fdconv", num_classes=10, model_args=SMALL_ARGS)
    assert info.value.mismatches["layer1.0.conv1.weight"] == ((64, 64, 1, 1), (64, 64, 3, 3))
    assert "layer1.0.conv1.weight: checkpoint (64, 64, 1, 1) vs model (64, 64, 3, 3)" in str(info.value)


def test_corrupt_files(tmp_path: Path, capsys):
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\xff" * 64)
    with pytest.raises(CorruptCheckpointError, match="bad.safetensors"):
        convert_checkpoint(bad_st, "resnet18_fdconv")
    bad_pth = tmp_path / "bad.pth"
    bad_pth.write_bytes(b"PK\x03\x04 not a zip")
    assert cli_main(["convert", "--checkpoint", str(bad_pth), "--model", "resnet18_fdconv",
                     "--output", str(tmp_path / "o.safetensors")]) == 1
    assert "corrupt" in capsys.readouterr().err and not (tmp_path / "o.safetensors").exists()


def test_scripts_are_the_cli(tmp_path: Path, capsys):
    """scripts/convert_checkpoint.py and scripts/push_to_hub.py parse and run like ``fdconv-zoo convert/push``."""
    import runpy

    scripts = Path(__file__).parents[1] / "scripts"
    convert_main = runpy.run_path(str(scripts / "convert_checkpoint.py"))["main"]
    push_main = runpy.run_path(str(scripts / "push_to_hub.py"))["main"]
    missing = str(tmp_path / "nope.safetensors")
    assert convert_main(["--checkpoint", missing, "--model", "resnet18_fdconv", "--output", missing]) == 1
    assert "error:" in capsys.readouterr().err
    assert push_main(["--model", "resnet18_fdconv", "--tag", "fd_x_in1k", "--trained-with", "train.py"]) == 2
    assert "--trained-with needs --checkpoint" in capsys.readouterr().err


def test_vanilla_missing_and_unexpected_keys(plain, tmp_path: Path):
    sd = dict(plain.state_dict())
    del sd["layer2.0.bn1.running_var"]
    sd["layer3.0.se.fc.weight"] = torch.zeros(4, 4)
    with pytest.raises(KeyMismatchError) as info:
        convert_checkpoint(sd, "resnet18_fdconv", num_classes=10, model_args=SMALL_ARGS)
    assert info.value.missing == ["layer2.0.bn1.running_var"] and info.value.unexpected == ["layer3.0.se.fc.weight"]
    msg = str(info.value)
    assert "missing from the checkpoint (1):\n    layer2.0.bn1.running_var" in msg
    assert "unexpected, not in the model (1):\n    layer3.0.se.fc.weight" in msg
