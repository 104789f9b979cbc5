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


def test_bench_floor_reuses_the_network_tables_plain_b1(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The floor line compares against plain resnet50 at batch 1: taken from the network table when it ran,
    measured only when resnet50 is not in it."""
    from fdconv_zoo.tools import benchmark

    calls = []

    def fake_measure(arch, mode, batch, *args, **kwargs):
        calls.append((arch, mode, batch))
        return benchmark.Measurement(100.0 if arch == "resnet50" else 400.0, 1.0)

    monkeypatch.setattr(benchmark, "measure_network", fake_measure)
    monkeypatch.setattr(benchmark, "stage_profile", lambda *args: {"total": 1.0})
    monkeypatch.setattr(benchmark, "train_stage_profile", lambda *args: {"total": 1.0})
    monkeypatch.setattr(benchmark, "format_stage_profile", lambda profile, per="forward": "")
    monkeypatch.setattr(benchmark, "fft_floor", lambda *args: [
        {"rows": 8, "cols": 8, "layers": 2, "ms": 25.0, "total_ms": 50.0}])
    assert main(["bench", "--models", "resnet50", "--repeats", "1", "--skip-layers"]) == 0
    assert calls.count(("resnet50", "infer", 1)) == 1              # the table's cell, not a second run
    assert "Plain network at batch 1: 100 ms" in capsys.readouterr().out

    calls.clear()
    assert main(["bench", "--models", "--repeats", "1", "--skip-layers"]) == 0
    assert calls == [("resnet50", "infer", 1)]
    assert ">= 1.50x plain" in capsys.readouterr().out


def test_bench_rounds_pair_each_ratio_within_its_round(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With --rounds, each time ratio is the median of per-round FD / plain ratios, not a ratio of medians
    (which pairs a plain time from one round with an FD time from another), and plain/FD alternate order."""
    from fdconv_zoo.tools import benchmark

    times = {"resnet50": [100.0, 400.0, 200.0], "resnet50_fdconv": [300.0, 2000.0, 400.0]}  # ratios 3, 5, 2
    calls = []

    def fake_measure(arch, mode, batch, *args, **kwargs):
        round_index = calls.count((arch, mode, batch))
        calls.append((arch, mode, batch))
        return benchmark.Measurement(times[arch][round_index], 10.0 if arch == "resnet50" else 20.0)

    monkeypatch.setattr(benchmark, "measure_network", fake_measure)
    assert main(["bench", "--models", "resnet50", "--repeats", "1", "--rounds", "3", "--skip-layers",
                 "--skip-profile"]) == 0
    out = capsys.readouterr().out
    archs = [arch for arch, _, _ in calls]
    assert archs[:2] == ["resnet50", "resnet50_fdconv"] and archs[6:8] == ["resnet50_fdconv", "resnet50"]
    # medians 200 and 400 ms would give 2.00x; the paired rounds give 3, 5 and 2, median 3
    assert "| resnet50 | 200 | 40.0 | 200 | 200 | 40.0 | 10 | 10 |" in out
    assert "| **ratio FD / plain** | **3.00x** | **0.33x** | **3.00x** | **3.00x** | **0.33x** | **2.00x** |" in out
    assert "train 3.00x / 5.00x / 2.00x" in out


def test_bench_rejects_a_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--rounds", "0"])
    assert "--rounds: must be >= 1, got 0" in capsys.readouterr().err


def test_bench_passes_device_amp_and_fd_options_to_every_cell(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The GPU measurement is one command: ``--device cuda --amp bf16 --batch-size 32``."""
    from fdconv_zoo.tools import benchmark

    calls = []

    def fake_measure(arch, mode, batch, *args, **kwargs):
        calls.append((arch, kwargs))
        return benchmark.Measurement(100.0, 10.0)

    monkeypatch.setattr(benchmark, "measure_network", fake_measure)
    assert main(["bench", "--models", "resnet50", "--repeats", "1", "--skip-layers", "--skip-profile",
                 "--amp", "bf16", "--fd-recompute-kernel"]) == 0
    assert len(calls) == 6
    for arch, kwargs in calls:
        assert kwargs["device"] == "cpu" and kwargs["amp"] == "bf16"
        assert kwargs.get("fd_recompute_kernel", False) == arch.endswith("_fdconv")
    assert "cpu, autocast bf16, FD models with fd_recompute_kernel=True" in capsys.readouterr().out


def test_bench_on_a_missing_gpu_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda", "--skip-layers", "--skip-profile"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown device"):
        from fdconv_zoo.tools.benchmark import check_device

        check_device("gpu0")


def test_bench_worker_measures_an_autocast_training_step() -> None:
    """The worker itself (in this process): a bf16 autocast training step of a small FD network."""
    from fdconv_zoo.tools.benchmark import _worker

    result = _worker({"model": "resnet18_fdconv", "mode": "train", "batch": 2, "size": 32, "repeats": 1,
                      "amp": "bf16", "kwargs": {"num_classes": 4}})
    assert result["ms"] > 0 and result["peak_mib"] >= 0


def test_train_stage_profile_splits_a_real_step() -> None:
    """The training split reads the custom Functions' forward and backward events; each FD stage ran, and the
    stages with the rest add up to the profiled step."""
    from fdconv_zoo.tools.benchmark import train_stage_profile

    profile = train_stage_profile("resnet18_fdconv", batch_size=2, image_size=32)
    stages = [key for key in profile if key != "total" and not key.startswith("rest")]
    assert len(stages) == 6 and all(profile[key] > 0 for key in stages), profile
    assert abs(sum(v for k, v in profile.items() if k != "total") - profile["total"]) < 1e-6 * profile["total"] + 1e-6
    assert profile["total"] > sum(profile[key] for key in stages)
