"""scripts/finetune_segmentation.py: real 2-process runs, exact resume, CamVid, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_helpers import SHARED_DATA, describe, launch, load_script, reset_accelerate, state_dict_of
from PIL import Image

from fdconv_zoo.training.toydata import make_segmentation_folder

TINY = ["--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=4", "--crop-size", "32", "--batch-size", "2",
        "--head-channels", "16", "--num-workers", "0", "--log-every", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 10 train images: 2 steps per epoch at 2 processes x batch 2; a void border (id 9) to ignore
    return make_segmentation_folder(tmp_path_factory.mktemp("seg") / "data", num_classes=3, train_images=10,
                                    val_images=3, void_id=9)


def _run_full(tiny_folder: Path, out: Path, tmp_path: Path, *extra: str):
    return launch("finetune_segmentation.py", [*TINY, "--data-dir", str(tiny_folder), "--max-steps", "4",
                                               "--checkpoint-every", "3", "--output-dir", str(out), *extra], tmp_path)


def test_two_process_run_on_generated_set(tiny_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = _run_full(tiny_folder, out, tmp_path)
    assert proc.returncode == 0, describe(proc)
    log = proc.stdout + proc.stderr
    assert "2 process(es)" in log and "eval: mIoU" in log and "final mIoU" in log and "class_2" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["final"]["per_class_iou"]) == {"class_0", "class_1", "class_2"}
    assert metrics["final"]["samples"] == 3 and metrics["processes"] == 2 and metrics["sec_per_step"] > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000003", "step_000000004"]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["backbone"] == "resnet18_fdconv" and config["ignore_index"] == 9 and config["num_classes"] == 3

    from fdconv_zoo.training.segmentation import load_segmentation_export

    model = load_segmentation_export(out / "model")
    assert model(torch.randn(1, 3, 48, 64)).shape == (1, 3, 48, 64)


@pytest.mark.slow
def test_two_process_interrupted_run_resumes_to_identical_parameters(tiny_folder: Path, tmp_path: Path):
    """Uninterrupted 4 steps == crash after step 4's compute + resume from the step-3 checkpoint (mid-epoch)."""
    full, broken = tmp_path / "full", tmp_path / "broken"
    a = _run_full(tiny_folder, full, tmp_path)
    assert a.returncode == 0, describe(a)
    b = _run_full(tiny_folder, broken, tmp_path, "--crash-at-step", "4")
    assert b.returncode != 0 and "simulated crash after step 4" in b.stdout + b.stderr, describe(b)
    c = _run_full(tiny_folder, broken, tmp_path, "--resume")
    assert c.returncode == 0 and "at step 3" in c.stdout + c.stderr, describe(c)
    ref, got = state_dict_of(full / "model"), state_dict_of(broken / "model")
    assert ref.keys() == got.keys()
    bad = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not bad, f"resumed run differs in {bad[:5]}"
    assert json.loads((full / "metrics.json").read_text())["final"]["mIoU"] == \
        json.loads((broken / "metrics.json").read_text())["final"]["mIoU"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "camvid_small").is_dir(), reason=f"{SHARED_DATA}/camvid_small is absent")
def test_two_process_run_on_camvid_small(tmp_path: Path):
    out = tmp_path / "out"
    proc = launch("finetune_segmentation.py", [
        "--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=8", "--data-dir",
        str(SHARED_DATA / "camvid_small"), "--crop-size", "64", "--batch-size", "2", "--head-channels", "32",
        "--max-steps", "2", "--checkpoint-every", "2", "--max-val-samples", "4", "--num-workers", "0",
        "--output-dir", str(out)], tmp_path, timeout=900)
    assert proc.returncode == 0, describe(proc)
    assert "final mIoU" in proc.stdout + proc.stderr and "Bicyclist" in proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["final"]["per_class_iou"]) == 11 and metrics["final"]["samples"] == 4


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    ok = make_segmentation_folder(tmp_path / "ok", num_classes=3, train_images=4, val_images=1)
    malformed = make_segmentation_folder(tmp_path / "malformed", num_classes=3, train_images=4, val_images=1)
    (malformed / "train.txt").write_text("train/0.png trainannot/0.png extra\n")
    out_of_range = make_segmentation_folder(tmp_path / "range", num_classes=3, train_images=4, val_images=1)
    label = np.array(Image.open(out_of_range / "trainannot" / "2.png"))
    label[0, 0] = 5
    Image.fromarray(label).save(out_of_range / "trainannot" / "2.png")
    return {
        "missing folder": (["--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        "malformed list": (["--data-dir", str(malformed)], "train.txt:1: expected 'image_path label_path'"),
        "label outside classes": (["--data-dir", str(out_of_range)], "label ids [5] are outside the 3 classes"),
        "unknown model": (["--data-dir", str(ok), "--model", "resnet18_fdconvv"], "unknown model 'resnet18_fdconvv'"),
    }


@pytest.mark.parametrize("case", ["missing folder", "malformed list", "label outside classes", "unknown model"])
def test_bad_input_fails_before_training(tmp_path: Path, capsys: pytest.CaptureFixture, case: str):
    args, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    reset_accelerate()
    rc = load_script("finetune_segmentation").main(
        [*TINY, "--max-steps", "2", "--report-to", "none", "--output-dir", str(out), *args])
    reset_accelerate()
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (out / "train_log.jsonl").exists() and not (out / "checkpoints").exists()


def _ade_style_dataset(root: Path, max_id: int) -> Path:
    """A local dataset directory in the Hub layout with ADE20K's columns (``image``, ``annotation``; 0 = other)."""
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    (root / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        labels = [rng.integers(0, max_id + 1, size=(40, 48)).astype(np.uint8) for _ in range(4)]
        images = [Image.fromarray((np.stack([lab] * 3, -1) * 60).astype(np.uint8)) for lab in labels]
        ds = datasets.Dataset.from_dict({"image": images, "annotation": [Image.fromarray(x) for x in labels]},
                                        features=features)
        ds.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.mark.parametrize("max_id,ok", [(3, True), (5, False)])
def test_hub_style_dataset_with_reduced_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture, max_id: int, ok: bool):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = _ade_style_dataset(tmp_path / "ade_like", max_id)
    out = tmp_path / "out"
    reset_accelerate()
    rc = load_script("finetune_segmentation").main([
        "--model", "resnet18", *TINY[4:], "--dataset", str(data), "--num-classes", "3", "--reduce-labels",
        "--max-steps", "2", "--checkpoint-every", "0", "--report-to", "none", "--output-dir", str(out)])
    reset_accelerate()
    if ok:   # ids 1..3 -> classes 0..2, id 0 -> ignored (255)
        assert rc == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert len(metrics["final"]["per_class_iou"]) == 3 and metrics["final"]["samples"] == 4
        assert json.loads((out / "model" / "config.json").read_text())["ignore_index"] == 255
    else:    # ids 4 and 5 -> 3 and 4: outside the 3 classes
        assert rc == 2 and "are outside the 3 classes" in capsys.readouterr().err
