"""The README's main job (``fdconv-zoo demo``) runs offline and checks what it prints."""

from __future__ import annotations

import pytest

from fdconv_zoo.cli import COMMANDS, build_parser, main


def test_every_subcommand_is_registered() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_demo_converts_loads_a_tag_and_reloads_an_export(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--image-size", "64", "--batch-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "+569,200" in out                      # resnet18's FDConv parameter count (spec)
    assert "reload bit-exact" in out
    assert "(512, 2, 2)" in out                   # features_only: stride-32 map of a 64px input
