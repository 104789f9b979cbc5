"""`fdconv-zoo evaluate` and `fdconv-zoo predict` on the three kinds of export the training scripts write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _training_helpers import load_script, reset_accelerate
from PIL import Image

from fdconv_zoo.cli import main as cli_main
from fdconv_zoo.training.toydata import make_detection_folder, make_image_folder, make_segmentation_folder

COMMON = ["--model", "resnet18_fdconv", "--model-kwargs", "fd_kernel_num=4", "--batch-size", "2", "--num-workers",
          "0", "--seed", "0", "--max-steps", "2", "--checkpoint-every", "0", "--report-to", "none"]
KINDS = {
    "classification": ("train_classification", lambda root: make_image_folder(root, num_classes=3),
                       ["--image-size", "32"]),
    "segmentation": ("finetune_segmentation", lambda root: make_segmentation_folder(root, num_classes=3),
                     ["--crop-size", "32", "--head-channels", "16"]),
    "detection": ("finetune_detection", lambda root: make_detection_folder(root, train_images=4, val_images=2),
                  ["--min-size", "64", "--max-size", "80", "--fpn-channels", "32"]),
}


@pytest.fixture(scope="module", params=list(KINDS))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    if request.param == "detection":
        pytest.importorskip("pycocotools")
    script, make, extra = KINDS[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    data = make(tmp / "data")
    reset_accelerate()
    try:
        rc = load_script(script).main([*COMMON, *extra, "--data-dir", str(data), "--output-dir", str(tmp / "run")])
    finally:
        reset_accelerate()
    assert rc == 0
    return request.param, data, tmp / "run" / "model"


def _an_image(kind: str, data: Path) -> Path:
    pattern = {"classification": "val/*/*", "segmentation": "val/*", "detection": "val/*.jpg"}[kind]
    return sorted(p for p in data.glob(pattern) if p.suffix in (".png", ".jpg"))[0]


def test_evaluate_prints_the_metric_table_and_writes_json(trained, tmp_path: Path, capsys):
    kind, data, export = trained
    out = tmp_path / "metrics.json"
    assert cli_main(["evaluate", "--export", str(export), "--data-dir", str(data), "--split", "val",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert metrics["kind"] == kind
    if kind == "classification":
        assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and metrics["samples"] == 6
        assert set(metrics["per_class_accuracy"]) == {"class_0", "class_1", "class_2"} and "top-1" in printed
    elif kind == "segmentation":
        assert 0 <= metrics["mIoU"] <= 100 and len(metrics["per_class_iou"]) == 3 and "mIoU" in printed
    else:
        assert 0 <= metrics["bbox_mAP"] <= 100 and metrics["images"] == 2 and "bbox AP" in printed


def test_predict_writes_labels_or_drawings(trained, tmp_path: Path, capsys):
    kind, data, export = trained
    image = _an_image(kind, data)
    out = tmp_path / "pred"
    assert cli_main(["predict", "--export", str(export), str(image), "--out", str(out),
                     "--score-threshold", "0.0"]) == 0
    (record,) = json.loads((out / "predictions.json").read_text())
    if kind == "classification":
        assert json.loads((export / "config.json").read_text())["label_names"] == ["class_0", "class_1", "class_2"]
        assert len(record["top5"]) == 3 and record["top5"][0]["label"].startswith("class_")
        assert abs(sum(p["probability"] for p in record["top5"]) - 1) < 1e-4
    else:
        drawn = Image.open(record["drawn"])
        assert drawn.size == Image.open(image).size and drawn.mode == "RGB"
        assert ("detections" in record) == (kind == "detection")


def test_bad_export_folder_and_image_give_one_error_line(tmp_path: Path, capsys):
    assert cli_main(["evaluate", "--export", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "not an export folder" in capsys.readouterr().err


def test_evaluate_refuses_a_split_with_other_classes(trained, tmp_path: Path, capsys):
    kind, _, export = trained
    if kind == "segmentation":
        pytest.skip("segmentation splits are read with the export's own class count")
    other = (make_image_folder(tmp_path / "other", num_classes=4) if kind == "classification"
             else make_detection_folder(tmp_path / "other", num_classes=3, train_images=2, val_images=1))
    assert cli_main(["evaluate", "--export", str(export), "--data-dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert "the export was trained on" in err and err.startswith("error:")
