"""The params / GMACs table (fdconv_zoo.tools.model_stats, `fdconv-zoo table`, scripts/model_table.py)."""

from __future__ import annotations

from pathlib import Path

from fdconv_zoo.cli import main


def test_table_command_writes_markdown(tmp_path: Path) -> None:
    out = tmp_path / "params.md"
    assert main(["table", "--models", "resnet18_fdconv", "--image-size", "64", "--out", str(out)]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `resnet18_fdconv`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "16"                                   # FD layers
    assert cells[3] == "12,258,712" and cells[4] == "11,689,512" and cells[5].startswith("+569,200")
    gmacs, base_gmacs, fft = (float(c) for c in cells[6:9])
    assert base_gmacs > 0 and gmacs > base_gmacs and fft > 0  # FD convs counted, FFTs reported apart
    assert "Not counted" in text
