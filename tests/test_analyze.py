"""``fdconv-zoo analyze`` and the analysis helpers it drives."""

import json

import pytest
import torch
from torch import nn

import fdconv_zoo.baselines  # noqa: F401  (registers the baseline models)
from fdconv_zoo.cli import main
from fdconv_zoo.layers.odconv import ODConv2d
from fdconv_zoo.tools.analysis import candidate_kernels, kernel_cosine_similarity, layer_rows, write_layer_table


def test_cosine_similarity_of_copies_and_orthogonal_kernels():
    w = torch.randn(3, 4, 4, 3, 3)
    assert torch.allclose(kernel_cosine_similarity(torch.stack([w[0], w[0], -w[0]])),
                          torch.tensor([[1.0, 1, -1], [1, 1, -1], [-1, -1, 1]]), atol=1e-6)
    layer = ODConv2d.from_conv(nn.Conv2d(4, 4, 3), num_kernels=4)
    assert kernel_cosine_similarity(candidate_kernels(layer)).min() > 0.99   # copies of one kernel at init


def test_layer_rows_and_table(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), ODConv2d(8, 16, 3, num_kernels=2))
    rows = layer_rows(model, (3, 16, 16))
    assert [r.name for r in rows] == ["1"] and rows[0].candidates == 2 and rows[0].gmacs > 0
    assert rows[0].extra_params == sum(p.numel() for p in model[1].parameters()) - (16 * 8 * 9 + 16)
    text = write_layer_table(rows, tmp_path / "t.md", title="toy")
    assert "| `1` | ODConv2d | 8->16 k3 |" in text and "total (1 layers)" in text


@pytest.mark.parametrize("arch,expect", [("resnet18_fdconv", "fbm_bands_"), ("resnet18_odconv4x", "diversity_")])
def test_analyze_command_writes_table_and_pngs(tmp_path, capsys, arch, expect):
    pytest.importorskip("matplotlib")
    pytest.importorskip("skimage")
    out = tmp_path / arch
    assert main(["analyze", arch, "--out", str(out), "--image-size", "64", "--max-plots", "1",
                 "--max-kernel-elements", "3000000"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "layers.md").read_text().startswith(f"# {arch}")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and any(p.startswith(expect) for p in pngs)
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert set(pngs) <= set(summary["files"]) and summary["layers"] == 16
    assert "wrote layers.md" in capsys.readouterr().out


def test_analyze_rejects_plain_and_unknown_models(tmp_path):
    with pytest.raises(ValueError, match="no dynamic-conv layers"):
        main(["analyze", "resnet18", "--out", str(tmp_path), "--no-plots", "--image-size", "32"])
    with pytest.raises(SystemExit, match="unknown model"):
        main(["analyze", "resnet18_fdconvv", "--out", str(tmp_path)])
