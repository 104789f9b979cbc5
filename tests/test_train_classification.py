"""scripts/train_classification.py: real 2-process runs, exact resume, Hub-style datasets, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _training_helpers import SHARED_DATA, describe, launch, load_script, read_log, reset_accelerate, state_dict_of

from fdconv_zoo.training.toydata import make_image_folder

TINY = ["--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=4", "--image-size", "32", "--batch-size", "2",
        "--num-workers", "0", "--log-every", "1", "--seed", "0"]
TINY_PLAIN = ["--model", "resnet18", *TINY[4:]]  # data-path tests: the FDConv layers are not what they check


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 18 train images: 4 steps per epoch at 2 processes x batch 2
    return make_image_folder(tmp_path_factory.mktemp("cls") / "data", num_classes=3, train_per_class=6,
                             val_per_class=2)


@pytest.mark.slow
def test_two_process_interrupted_run_resumes_to_identical_parameters(tiny_folder: Path, tmp_path: Path):
    """Uninterrupted 5 steps == crash after step 4 + resume from the step-3 checkpoint (mid-epoch, mixup on)."""
    common = [*TINY, "--data-dir", str(tiny_folder), "--max-steps", "5", "--checkpoint-every", "3"]
    full, broken = tmp_path / "full", tmp_path / "broken"

    a = launch("train_classification.py", [*common, "--output-dir", str(full)], tmp_path)
    assert a.returncode == 0, describe(a)
    out = a.stdout + a.stderr
    assert "2 process(es)" in out and "eval: top-1" in out
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step_000000003", "step_000000005"]
    assert list((full / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events written"
    config = json.loads((full / "model" / "config.json").read_text())
    assert config["architecture"] == "resnet18_fdconv" and config["num_classes"] == 3
    assert config["model_args"]["fd_kernel_num"] == 4
    metrics = json.loads((full / "metrics.json").read_text())
    assert {"top1", "top5"} <= set(metrics["final"]) and metrics["processes"] == 2

    b = launch("train_classification.py", [*common, "--output-dir", str(broken), "--crash-at-step", "4"], tmp_path)
    assert b.returncode != 0 and "simulated crash after step 4" in b.stdout + b.stderr, describe(b)
    assert not (broken / "model").exists()
    c = launch("train_classification.py", [*common, "--output-dir", str(broken), "--resume"], tmp_path)
    assert c.returncode == 0, describe(c)
    assert "resumed from" in c.stdout + c.stderr and "at step 3" in c.stdout + c.stderr

    ref, got = state_dict_of(full / "model"), state_dict_of(broken / "model")
    assert ref.keys() == got.keys()
    diff = {k: (ref[k].double() - got[k].double()).abs().max().item() for k in ref if not torch.equal(ref[k], got[k])}
    assert not diff, f"resumed run differs from the uninterrupted one: {sorted(diff.items(), key=lambda t: -t[1])[:5]}"
    losses_full = [r["loss"] for r in read_log(full) if "loss" in r]
    losses_resumed = [r["loss"] for r in read_log(broken) if "loss" in r and r["step"] >= 4]
    assert losses_full[3:] == losses_resumed[-2:]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "caltech101_10").is_dir(), reason=f"{SHARED_DATA}/caltech101_10 is absent")
def test_two_process_run_on_caltech101_10(tmp_path: Path):
    out = tmp_path / "out"
    proc = launch("train_classification.py", [
        "--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=8",
        "--data-dir", str(SHARED_DATA / "caltech101_10"),
        "--image-size", "64", "--batch-size", "4", "--max-steps", "3", "--checkpoint-every", "2", "--max-val-samples",
        "16", "--num-workers", "0", "--log-every", "1", "--output-dir", str(out)], tmp_path, timeout=600)
    assert proc.returncode == 0, describe(proc)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["samples"] == 16 and len(metrics["classes"]) == 10
    assert (out / "model" / "model.safetensors").is_file()


def _parquet_dataset(root: Path, labels: list[int], *, class_label: bool) -> Path:
    """A local dataset directory in the Hub layout (``data/<split>-*.parquet``), read by ``load_dataset``."""
    import datasets
    from PIL import Image

    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=["a", "b", "c"]) if class_label else datasets.Value("int64"),
    })
    colours = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (200, 200, 200)]
    (root / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        images = [Image.new("RGB", (40, 36), colours[y % 4]) for y in labels]
        ds = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.mark.parametrize("streaming", [False, True])
def test_hub_style_dataset_through_load_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = _parquet_dataset(tmp_path / "hubset", [0, 1, 2, 0, 1, 2, 0, 1], class_label=True)
    out = tmp_path / "out"
    reset_accelerate()
    rc = load_script("train_classification").main([
        *TINY_PLAIN, "--dataset", str(data), "--max-steps", "2", "--checkpoint-every", "0", "--report-to", "none",
        "--output-dir", str(out), *(["--streaming"] if streaming else [])])
    reset_accelerate()
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["a", "b", "c"] and metrics["final"]["samples"] == 8 and metrics["steps"] == 2


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    ok = make_image_folder(tmp_path / "ok", num_classes=2, train_per_class=2, val_per_class=1)
    no_val = make_image_folder(tmp_path / "no_val", num_classes=2, train_per_class=2, val_per_class=1)
    for f in (no_val / "val").rglob("*.png"):
        f.unlink()
    hub = _parquet_dataset(tmp_path / "hub_bad", [0, 1, 2, 3], class_label=False)
    return {
        "missing folder": (["--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        "malformed folder": (["--data-dir", str(no_val)], "class directories without images"),
        "label outside classes": (["--dataset", str(hub), "--num-classes", "3"],
                                  "label ids [3] are outside the 3 classes"),
        "unknown model": (["--data-dir", str(ok), "--model", "resnet18_fdcov"], "unknown model 'resnet18_fdcov'"),
        "no data": ([], "exactly one of --data-dir"),
    }


@pytest.mark.parametrize("case", ["missing folder", "malformed folder", "label outside classes", "unknown model",
                                  "no data"])
def test_bad_input_fails_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture, case: str):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    args, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    reset_accelerate()
    rc = load_script("train_classification").main(
        [*TINY, "--max-steps", "2", "--report-to", "none", "--output-dir", str(out), *args])
    reset_accelerate()
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err and message in err, err
    assert not (out / "train_log.jsonl").exists() and not (out / "checkpoints").exists()
