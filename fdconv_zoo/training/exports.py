"""The three kinds of export the training scripts write, read back: evaluate them on a split, predict on images.

The kind is read from the export's ``config.json``: the detection and segmentation scripts name their model
class in ``architecture``; anything else is a timm classifier (``local-dir:``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError

__all__ = ["Export", "load_export", "evaluate_export", "predict_images"]

_KINDS = {"fdconv_zoo.training.DetectionModel": "detection", "fdconv_zoo.training.SegmentationModel": "segmentation"}


@dataclass
class Export:
    kind: str                  # "classification", "segmentation" or "detection"
    model: nn.Module           # in eval mode
    config: dict[str, Any]
    classes: list[str]


def load_export(folder: str | Path) -> Export:
    """Rebuild the model of an export folder (``model.safetensors`` + ``config.json``) in eval mode."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file() or not (folder / "model.safetensors").is_file():
        raise InputError(f"--export {folder}: not an export folder (needs model.safetensors and config.json, as the "
                         "training scripts write under <output-dir>/model)")
    config = json.loads(config_path.read_text())
    kind = _KINDS.get(config.get("architecture", ""), "classification")
    if kind == "detection":
        from .detection import load_detection_export

        model = load_detection_export(folder)
    elif kind == "segmentation":
        from .segmentation import load_segmentation_export

        model = load_segmentation_export(folder)
    else:
        import timm

        import fdconv_zoo  # noqa: F401  (registers the *_fdconv architectures)

        model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    classes = config.get("classes") or config.get("label_names") or \
        [f"class_{i}" for i in range(config.get("num_classes", getattr(model, "num_classes", 0)))]
    return Export(kind, model, config, list(classes))


def _classification_metrics(export: Export, data_dir: str, split: str, batch_size: int,
                            max_samples: int | None) -> dict[str, Any]:
    from timm.data import create_transform, resolve_model_data_config
    from tqdm.auto import tqdm

    from .data import KeyedDataset, load_image_folder
    from .loop import make_loader
    from .transforms import ClassificationSample

    data = load_image_folder(data_dir, train_split=split, val_split=split)
    trained_on = export.config.get("label_names")
    if trained_on and list(trained_on) != data.classes:
        raise InputError(f"{data_dir}/{split} has classes {data.classes}, the export was trained on {trained_on}")
    split_data = data.val if max_samples is None else data.val.select(range(min(len(data.val), max_samples)))
    transform = create_transform(**resolve_model_data_config(export.model), is_training=False)
    loader = make_loader(KeyedDataset(split_data, ClassificationSample(transform, data.num_classes)),
                         batch_size=batch_size)
    k = data.num_classes
    correct1 = correct5 = total = 0
    per_class = torch.zeros(k, 2)
    with torch.no_grad():
        for images, labels in tqdm(loader, desc="evaluate", leave=False):
            top = export.model(images).topk(min(5, k), dim=1).indices
            hit1 = top[:, 0] == labels
            correct1 += int(hit1.sum())
            correct5 += int((top == labels[:, None]).any(1).sum())
            total += len(labels)
            per_class.index_add_(0, labels, torch.stack([hit1.float(), torch.ones_like(hit1, dtype=torch.float)], 1))
    rows = zip(data.classes, per_class.tolist(), strict=True)
    accuracy = {name: float(100 * c / n) if n else float("nan") for name, (c, n) in rows}
    return {"top1": 100 * correct1 / total, "top5": 100 * correct5 / total, "samples": total,
            "per_class_accuracy": accuracy}


def _segmentation_metrics(export: Export, data_dir: str, split: str, batch_size: int,
                          max_samples: int | None) -> dict[str, Any]:
    from .data import KeyedDataset, load_segmentation_folder
    from .loop import make_loader
    from .segmentation import evaluate_segmenter
    from .transforms import SegEvalTransform, pad_collate

    cfg = export.config
    data = load_segmentation_folder(data_dir, num_classes=cfg["num_classes"], ignore_index=cfg["ignore_index"],
                                    train_list=f"{split}.txt", val_list=f"{split}.txt")
    split_data = data.val if max_samples is None else data.val.select(range(min(len(data.val), max_samples)))
    transform = SegEvalTransform(cfg["mean"], cfg["std"], image_column=data.image_column,
                                 label_column=data.label_column)
    loader = make_loader(KeyedDataset(split_data, transform), batch_size=batch_size,
                         collate_fn=pad_collate(data.ignore_index))
    metrics = evaluate_segmenter(export.model, loader, data, cfg.get("eval_mode", "whole"), cfg.get("crop_size"),
                                 desc="evaluate")
    metrics["samples"] = len(split_data)
    return metrics


def _detection_metrics(export: Export, data_dir: str, split: str, batch_size: int,
                       max_samples: int | None) -> dict[str, Any]:
    from .coco_data import DetEvalTransform, detection_collate, load_coco_detection
    from .data import KeyedDataset
    from .detection import evaluate_detector
    from .loop import make_loader

    data = load_coco_detection(data_dir, train_split=split, val_split=split)
    if data.category_ids != export.config["category_ids"]:
        raise InputError(f"{data_dir}: categories {data.category_ids}, the export was trained on "
                         f"{export.config['category_ids']}")
    split_data = data.val if max_samples is None else data.val.select(range(min(len(data.val), max_samples)))
    loader = make_loader(KeyedDataset(split_data, DetEvalTransform()), batch_size=batch_size,
                         collate_fn=detection_collate)
    return evaluate_detector(export.model, loader, data, export.config["masks"], desc="evaluate")


def evaluate_export(export: Export, data_dir: str, split: str, *, batch_size: int = 8,
                    max_samples: int | None = None) -> dict[str, Any]:
    """The export's metrics on ``split`` of ``data_dir`` (the folder layout its training script reads)."""
    evaluate = {"classification": _classification_metrics, "segmentation": _segmentation_metrics,
                "detection": _detection_metrics}[export.kind]
    return evaluate(export, data_dir, split, batch_size, max_samples)


# ----------------------------------------------------------------------------------------------------------------
# Predictions drawn on the images

_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def _colour(index: int) -> tuple[int, int, int]:
    return _COLOURS[index % len(_COLOURS)]


def _predict_classification(export: Export, image: Any) -> tuple[dict[str, Any], Any]:
    from timm.data import create_transform, resolve_model_data_config

    transform = create_transform(**resolve_model_data_config(export.model), is_training=False)
    with torch.no_grad():
        probs = export.model(transform(image)[None]).softmax(1)[0]
    values, indices = probs.topk(min(5, probs.numel()))
    top5 = [{"label": export.classes[int(i)], "probability": float(v)} for v, i in zip(values, indices, strict=True)]
    return {"top5": top5}, None


def _predict_segmentation(export: Export, image: Any) -> tuple[dict[str, Any], Any]:
    import numpy as np
    from PIL import Image

    from .seg_head import whole_image_logits
    from .transforms import normalize_image

    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = normalize_image(pixels, export.config["mean"], export.config["std"])[None]
    with torch.no_grad():
        pred = whole_image_logits(export.model, x, export.model.output_stride).argmax(1)[0].numpy()
    palette = np.array([_colour(i) for i in range(len(export.classes))], dtype=np.uint8)
    mask = Image.fromarray(palette[pred])
    counts = np.bincount(pred.ravel(), minlength=len(export.classes)) / pred.size
    shares = {name: round(float(c) * 100, 2) for name, c in zip(export.classes, counts, strict=True) if c > 0}
    return {"pixel_share_percent": shares}, Image.blend(image, mask, 0.5)


def _predict_detection(export: Export, image: Any, score_threshold: float) -> tuple[dict[str, Any], Any]:
    import numpy as np
    from PIL import Image, ImageDraw

    from .coco_data import image_tensor

    with torch.no_grad():
        (out,) = export.model([image_tensor(image)])
    keep = out["scores"] >= score_threshold
    drawn = image.copy()
    if "masks" in out and keep.any():
        canvas = np.asarray(drawn, dtype=np.float32)
        for mask, label in zip(out["masks"][keep][:, 0].numpy(), out["labels"][keep].tolist(), strict=True):
            inside = mask > 0.5
            canvas[inside] = 0.5 * canvas[inside] + 0.5 * np.array(_colour(label - 1), dtype=np.float32)
        drawn = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(drawn)
    boxes = []
    for box, label, score in zip(out["boxes"][keep].tolist(), out["labels"][keep].tolist(),
                                 out["scores"][keep].tolist(), strict=True):
        name = export.classes[label - 1]
        draw.rectangle(box, outline=_colour(label - 1), width=2)
        draw.text((box[0] + 2, box[1] + 1), f"{name} {score:.2f}", fill=_colour(label - 1))
        boxes.append({"label": name, "score": round(score, 4), "box_xyxy": [round(v, 1) for v in box]})
    return {"detections": boxes}, drawn


def predict_images(export: Export, images: list[str | Path], out_dir: str | Path, *,
                   score_threshold: float = 0.5) -> list[dict[str, Any]]:
    """Predict on each image; segmentation and detection also write ``<out_dir>/<stem>.png`` with the
    prediction drawn on the image. Returns one record per image (also written as ``predictions.json``)."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in images:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no image file {path}")
        with Image.open(path) as img:
            image = img.convert("RGB")
        if export.kind == "classification":
            record, drawn = _predict_classification(export, image)
        elif export.kind == "segmentation":
            record, drawn = _predict_segmentation(export, image)
        else:
            record, drawn = _predict_detection(export, image, score_threshold)
        record = {"image": str(path), **record}
        if drawn is not None:
            target = out / f"{path.stem}.png"
            drawn.save(target)
            record["drawn"] = str(target)
        records.append(record)
    (out / "predictions.json").write_text(json.dumps(records, indent=2))
    return records
