"""A crash mid-write must leave the previous file (or folder contents) intact, and no temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdconv_zoo.checkpoints.atomic_io import atomic_path, atomic_write_text, staged_folder


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "catalogue.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["catalogue.json"]


def test_crash_inside_atomic_path_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_text("complete old weights")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "complete old weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_staged_folder_moves_files_only_on_success(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    with staged_folder(folder) as staging:
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_text("w1")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(RuntimeError), staged_folder(folder) as staging:
        (staging / "model.safetensors").write_text("w2-partial")
        raise RuntimeError("crash before config.json")
    assert (folder / "model.safetensors").read_text() == "w1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
