"""scripts/finetune_detection.py: COCO-format data checks, runs on generated data and camvid_det, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _training_helpers import SHARED_DATA, describe, launch, load_script, reset_accelerate, state_dict_of

from fdconv_zoo import FDLinear
from fdconv_zoo.training.toydata import make_detection_folder

pytest.importorskip("pycocotools")
pytest.importorskip("torchvision")

TINY = ["--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=4", "--min-size", "64", "--max-size", "80",
        "--batch-size", "2", "--fpn-channels", "32", "--num-workers", "0", "--log-every", "1", "--seed", "0",
        "--report-to", "none"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 8 train images with boxes (2 steps per epoch at 2 processes x batch 2) and 2 without
    return make_detection_folder(tmp_path_factory.mktemp("det") / "data", train_images=8, val_images=3,
                                 empty_images=2)


def _run(args: list[str]) -> int:
    reset_accelerate()
    try:
        return load_script("finetune_detection").main(args)
    finally:
        reset_accelerate()


@pytest.mark.parametrize("masks", [False, True], ids=["boxes", "masks"])
def test_few_steps_write_coco_map_and_an_export_that_reloads(tiny_folder: Path, tmp_path: Path, capsys, masks):
    out = tmp_path / "out"
    rc = _run([*TINY, "--data-dir", str(tiny_folder), "--max-steps", "2", "--checkpoint-every", "0",
               "--output-dir", str(out), *(["--masks"] if masks else [])])
    log = capsys.readouterr()
    assert rc == 0, log.err[-3000:]
    assert "8 train images with boxes (2 without boxes left out)" in log.out and "per-class AP" in log.out
    final = json.loads((out / "metrics.json").read_text())["final"]
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"):
        assert 0.0 <= final[key] <= 100.0
    assert set(final["bbox_per_class_AP"]) == {"class_0", "class_1"} and final["images"] == 3
    assert ("segm_mAP" in final) == masks
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["classes"] == ["class_0", "class_1"] and config["category_ids"] == [1, 2]
    assert (out / "model" / "README.md").read_text().startswith("---")

    from fdconv_zoo.training.detection import load_detection_export

    model = load_detection_export(out / "model")
    saved = state_dict_of(out / "model")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        (pred,) = model([torch.rand(3, 64, 80)])
    assert set(pred) >= {"boxes", "labels", "scores"} and ("masks" in pred) == masks


def _bad_folders(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    def copy(name: str) -> tuple[Path, dict]:
        folder = make_detection_folder(tmp_path / name, train_images=2, val_images=1)
        return folder, json.loads((folder / "annotations" / "instances_train.json").read_text())

    def write(folder: Path, data: dict) -> Path:
        (folder / "annotations" / "instances_train.json").write_text(json.dumps(data))
        return folder

    missing, _ = copy("missing")
    (missing / "annotations" / "instances_train.json").unlink()
    malformed, _ = copy("malformed")
    (malformed / "annotations" / "instances_train.json").write_text("{not json")
    outside, data = copy("outside")
    data["annotations"][0]["bbox"] = [70, 10, 30, 20]                       # x + w = 100 > width 80
    unknown, data2 = copy("unknown")
    data2["annotations"][0]["category_id"] = 7
    no_boxes, data3 = copy("no_boxes")
    data3["annotations"] = []
    return {
        "missing annotations": (missing, "no annotation file"),
        "malformed json": (malformed, "not readable JSON"),
        "box outside the image": (write(outside, data), "lies outside its 80x64 image"),
        "unknown category": (write(unknown, data2), "has category id 7, not one of the declared categories [1, 2]"),
        "no boxes at all": (write(no_boxes, data3), "no image has a box"),
    }


@pytest.mark.parametrize("case", ["missing annotations", "malformed json", "box outside the image",
                                  "unknown category", "no boxes at all"])
def test_bad_data_fails_with_one_error_line_before_training(tmp_path: Path, capsys, case: str):
    folder, message = _bad_folders(tmp_path)[case]
    out = tmp_path / "out"
    rc = _run([*TINY, "--data-dir", str(folder), "--max-steps", "2", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists()


def _run_two_processes(folder: Path, out: Path, tmp_path: Path, *extra: str):
    return launch("finetune_detection.py", [*TINY, "--data-dir", str(folder), "--max-steps", "4",
                                            "--checkpoint-every", "3", "--output-dir", str(out), *extra], tmp_path)


@pytest.mark.slow
def test_two_process_interrupted_run_resumes_to_identical_parameters(tiny_folder: Path, tmp_path: Path):
    """Uninterrupted 4 steps == crash after step 4 + resume from the step-3 checkpoint (mid-epoch)."""
    full, broken = tmp_path / "full", tmp_path / "broken"
    a = _run_two_processes(tiny_folder, full, tmp_path)
    assert a.returncode == 0, describe(a)
    assert "2 process(es)" in a.stdout + a.stderr
    b = _run_two_processes(tiny_folder, broken, tmp_path, "--crash-at-step", "4")
    assert b.returncode != 0 and "simulated crash after step 4" in b.stdout + b.stderr, describe(b)
    c = _run_two_processes(tiny_folder, broken, tmp_path, "--resume")
    assert c.returncode == 0 and "at step 3" in c.stdout + c.stderr, describe(c)
    ref, got = state_dict_of(full / "model"), state_dict_of(broken / "model")
    bad = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert ref.keys() == got.keys() and not bad, f"resumed run differs in {bad[:5]}"
    assert json.loads((full / "metrics.json").read_text())["final"]["bbox_mAP"] == \
        json.loads((broken / "metrics.json").read_text())["final"]["bbox_mAP"]


@pytest.mark.skipif(not (SHARED_DATA / "camvid_det").is_dir(), reason=f"{SHARED_DATA}/camvid_det is absent")
def test_few_steps_on_camvid_det(tmp_path: Path, capsys):
    out = tmp_path / "out"
    rc = _run([*TINY[:4], "--min-size", "180", "--max-size", "240", *TINY[8:], "--data-dir",
               str(SHARED_DATA / "camvid_det"), "--max-steps", "2", "--checkpoint-every", "0", "--max-val-samples",
               "4", "--output-dir", str(out)])
    log = capsys.readouterr()
    assert rc == 0, log.err[-3000:]
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert set(final["bbox_per_class_AP"]) == {"car", "pedestrian", "bicyclist", "sign"} and final["images"] == 4
    assert "bicyclist" in log.out


@pytest.mark.parametrize("backbone", ["convnext_tiny_fdconv", "swin_tiny_patch4_window7_224_fdconv"])
def test_the_detector_takes_every_family(backbone: str):
    """ConvNeXt and Swin (built with a dynamic input size) under Faster R-CNN: a training step and a prediction."""
    from fdconv_zoo.training.det_model import create_detection_model

    torch.manual_seed(0)
    model = create_detection_model(backbone, num_classes=2, min_size=96, max_size=128, fpn_channels=32,
                                   fd_kernel_num=4)
    images = [torch.rand(3, 96, 128), torch.rand(3, 100, 120)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    loss = sum(model.train()(images, targets).values())
    loss.backward()
    fd_layers = [m for m in model.backbone.body.modules() if isinstance(m, FDLinear)]
    assert torch.isfinite(loss) and fd_layers and all(m.dft_weight.grad is not None for m in fd_layers)
    with torch.no_grad():
        (pred,) = model.eval()(images[:1])
    assert pred["boxes"].shape[1] == 4
