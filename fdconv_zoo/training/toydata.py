"""Tiny generated datasets in the two on-disk layouts the scripts read (tests, examples, smoke runs).

Images are learnable at a glance -- each class has its own colour -- so a few steps of
training visibly lower the loss, and they take milliseconds to write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_detection_folder", "make_image_folder", "make_segmentation_folder"]

_PALETTE = np.array([[220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 210, 40], [200, 60, 210],
                     [40, 210, 210], [250, 140, 30], [120, 120, 120], [90, 40, 20], [250, 250, 250]], dtype=np.int64)


def _noisy(rng: np.random.Generator, rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    img = rgb[None, None, :] + rng.normal(0, 25, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_folder(root: str | Path, *, num_classes: int = 3, train_per_class: int = 6, val_per_class: int = 2,
                      size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """``root/{train,val}/class_<k>/<i>.png`` with one colour per class (ImageFolder layout)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k in range(num_classes):
            d = root / split / f"class_{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_noisy(rng, _PALETTE[k % len(_PALETTE)], *size)).save(d / f"{i}.png")
    return root


def make_segmentation_folder(root: str | Path, *, num_classes: int = 3, train_images: int = 8, val_images: int = 3,
                             size: tuple[int, int] = (48, 64), void_id: int | None = None, seed: int = 0) -> Path:
    """CamVid layout: ``{train,val}/<i>.png``, ``{train,val}annot/<i>.png`` (class ids) and list files.

    Each image is a few axis-aligned blocks, each block one class with that class's colour;
    ``void_id`` (if given) marks a border of void pixels and is written to ``class_stats.json``.
    """
    import json

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for split, n in (("train", train_images), ("val", val_images)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            label = np.zeros((h, w), dtype=np.uint8)
            for _ in range(4):
                y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
                y1, x1 = y0 + rng.integers(8, h // 2 + 8), x0 + rng.integers(8, w // 2 + 8)
                label[y0:y1, x0:x1] = rng.integers(0, num_classes)
            if void_id is not None:
                label[:2, :] = void_id
            img = _PALETTE[label % len(_PALETTE)] + rng.normal(0, 25, size=(h, w, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / f"{i}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i}.png")
            lines.append(f"{split}/{i}.png {split}annot/{i}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    stats = {"classes": [f"class_{k}" for k in range(num_classes)]}
    if void_id is not None:
        stats["void_id"] = void_id
    (root / "class_stats.json").write_text(json.dumps(stats))
    return root


def make_detection_folder(root: str | Path, *, num_classes: int = 2, train_images: int = 6, val_images: int = 2,
                          size: tuple[int, int] = (64, 80), boxes_per_image: int = 2, empty_images: int = 0,
                          seed: int = 0) -> Path:
    """A COCO-format folder: ``root/{train,val}/<i>.jpg`` and ``root/annotations/instances_{train,val}.json``.

    Each object is a rectangle in its class's colour on a grey background, with its box and its polygon
    outline; ``empty_images`` more training images have no object. Category ids are ``1..num_classes``.
    """
    import json

    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": f"class_{k}", "supercategory": "object"} for k in range(num_classes)]
    for split, count, empty in (("train", train_images, empty_images), ("val", val_images, 0)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count + empty):
            img = _noisy(rng, np.array([128, 128, 128]), h, w)
            for _ in range(boxes_per_image if i < count else 0):
                k = int(rng.integers(num_classes))
                bw, bh = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 5, h // 2))
                x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                img[y:y + bh, x:x + bw] = _noisy(rng, _PALETTE[k], bh, bw)
                polygon = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": k + 1,
                                    "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                                    "segmentation": [[float(v) for v in polygon]]})
            Image.fromarray(img).save(root / split / f"{i}.jpg", quality=95)
            images.append({"id": i + 1, "file_name": f"{split}/{i}.jpg", "width": w, "height": h})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root
