"""COCO-format detection data: ``<data-dir>/annotations/instances_<split>.json`` and the images it names.

Everything is checked while reading, before any model is built: a missing or malformed annotation file,
boxes outside their image or without area, category ids the file does not declare and missing image
files stop the run with one message naming the file and the fix. Images without boxes are kept for
evaluation and left out of training, with a count (what torchvision's references do).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import InputError

__all__ = ["DetectionRecords", "DetectionData", "load_coco_detection", "DetTrainTransform", "DetEvalTransform",
           "detection_collate", "image_tensor"]

#: a box edge may overshoot its image by this many pixels (rounding in the tools that write COCO files)
_EDGE_TOLERANCE = 1.0


class DetectionRecords:
    """A list of per-image records with ``len``, indexing and ``select`` (what the training data helpers use)."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def select(self, indices: Sequence[int]) -> DetectionRecords:
        return DetectionRecords([self.records[i] for i in indices])


@dataclass
class DetectionData:
    """A COCO detection set: training images with boxes, every val image, and the category mapping.

    Labels are contiguous (``1..K``, 0 is torchvision's background); ``category_ids[label - 1]`` is the COCO id.
    """

    train: DetectionRecords
    val: DetectionRecords
    classes: list[str]
    category_ids: list[int]
    val_annotations: Path
    has_masks: bool
    skipped_without_boxes: int = 0
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _read_annotations(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"no annotation file {path}: a COCO-format folder has annotations/instances_<split>.json "
                         "beside the image folders (see ../shared/data/README.md for camvid_det)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not readable JSON ({err}); re-export the annotations") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise InputError(f"{path}: a COCO annotation file needs lists 'images', 'annotations' and 'categories'; "
                         f"missing or not a list: {', '.join(missing)}")
    return data


def _split_records(root: Path, path: Path, data: Mapping[str, Any], category_ids: Sequence[int]) -> list[dict]:
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    images: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        try:
            record = {"image_id": int(image["id"]), "file": root / image["file_name"], "width": int(image["width"]),
                      "height": int(image["height"]), "boxes": [], "labels": [], "masks": []}
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: image entry {image!r} needs 'id', 'file_name', 'width' and 'height'") from None
        images[record["image_id"]] = record
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue   # crowd regions are ignored in training and handled by COCOeval itself
        image = images.get(ann.get("image_id"))
        if image is None:
            raise InputError(f"{path}: annotation {ann.get('id')} refers to image id {ann.get('image_id')}, "
                             "which the file does not list")
        if ann.get("category_id") not in label_of:
            raise InputError(f"{path}: annotation {ann.get('id')} has category id {ann.get('category_id')}, not one "
                             f"of the declared categories {list(category_ids)}; fix the file or declare it")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            raise InputError(f"{path}: annotation {ann.get('id')} has an empty box {ann['bbox']} (width and "
                             "height must be > 0); drop it from the file")
        if x < -_EDGE_TOLERANCE or y < -_EDGE_TOLERANCE or x + w > image["width"] + _EDGE_TOLERANCE \
                or y + h > image["height"] + _EDGE_TOLERANCE:
            raise InputError(f"{path}: annotation {ann.get('id')} box {ann['bbox']} (x, y, w, h) lies outside its "
                             f"{image['width']}x{image['height']} image {image['file']}; fix the box or the image size")
        image["boxes"].append([max(x, 0.0), max(y, 0.0), min(x + w, image["width"]), min(y + h, image["height"])])
        image["labels"].append(label_of[ann["category_id"]])
        image["masks"].append(ann.get("segmentation"))
    records = sorted(images.values(), key=lambda r: r["image_id"])
    absent = [str(r["file"]) for r in records if not r["file"].is_file()]
    if absent:
        raise InputError(f"{path}: {len(absent)} image file(s) missing, e.g. {absent[0]}; 'file_name' is relative "
                         f"to {root}")
    return records


def load_coco_detection(data_dir: str | Path, *, train_split: str = "train", val_split: str = "val") -> DetectionData:
    """Read and check both splits (categories from the training file; val must declare the same)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data-dir {root} is not a folder")
    train_path = root / "annotations" / f"instances_{train_split}.json"
    val_path = root / "annotations" / f"instances_{val_split}.json"
    train_json, val_json = _read_annotations(train_path), _read_annotations(val_path)
    categories = sorted(train_json["categories"], key=lambda c: c["id"])
    category_ids = [int(c["id"]) for c in categories]
    if not category_ids:
        raise InputError(f"{train_path}: no categories declared")
    if sorted(int(c["id"]) for c in val_json["categories"]) != category_ids:
        raise InputError(f"{val_path} declares other categories than {train_path}; both splits need the same ids")
    train = _split_records(root, train_path, train_json, category_ids)
    val = _split_records(root, val_path, val_json, category_ids)
    with_boxes = [r for r in train if r["boxes"]]
    if not with_boxes:
        raise InputError(f"{train_path}: no image has a box; nothing to train on")
    has_masks = all(m is not None for r in with_boxes for m in r["masks"])
    return DetectionData(DetectionRecords(with_boxes), DetectionRecords(val), [str(c["name"]) for c in categories],
                         category_ids, val_path, has_masks, len(train) - len(with_boxes), source=str(root))


def _decode_masks(masks: Sequence[Any], height: int, width: int) -> Tensor:
    from pycocotools import mask as mask_utils

    out = np.zeros((len(masks), height, width), dtype=np.uint8)
    for i, seg in enumerate(masks):
        if isinstance(seg, list):                              # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):              # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        out[i] = mask_utils.decode(rle)
    return torch.from_numpy(out)


def _target(record: Mapping[str, Any], with_masks: bool) -> dict[str, Tensor]:
    target = {"boxes": torch.tensor(record["boxes"], dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(record["labels"], dtype=torch.int64),
              "image_id": torch.tensor(record["image_id"])}
    if with_masks:
        target["masks"] = _decode_masks(record["masks"], record["height"], record["width"])
    return target


def image_tensor(image: Any) -> Tensor:
    """A PIL image as the ``(3, H, W)`` float tensor in [0, 1] that torchvision's detectors take."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _image(record: Mapping[str, Any]) -> Tensor:
    from PIL import Image

    with Image.open(record["file"]) as img:
        return image_tensor(img)


class DetTrainTransform:
    """Image in [0, 1] and its target, flipped left-right with probability ``hflip`` (the detector resizes
    and normalises itself)."""

    def __init__(self, with_masks: bool = False, hflip: float = 0.5) -> None:
        self.with_masks = with_masks
        self.hflip = hflip

    def __call__(self, record: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = _image(record), _target(record, self.with_masks)
        if random.random() < self.hflip:
            width = image.shape[-1]
            image = image.flip(-1)
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
            if self.with_masks:
                target["masks"] = target["masks"].flip(-1)
        return image, target


class DetEvalTransform:
    """Image in [0, 1] and the COCO image id its predictions are reported under."""

    def __call__(self, record: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        return _image(record), {"image_id": torch.tensor(record["image_id"])}


def detection_collate(batch: Sequence[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict]]:
    """Lists of images and targets, as torchvision's detectors take them (sizes may differ)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
