"""Tiny generated datasets in the two on-disk layouts the scripts read (tests, examples, smoke runs).

Images are learnable at a glance -- each class has its own colour -- so a few steps of
training visibly lower the loss, and they take milliseconds to write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["make_image_folder", "make_segmentation_folder"]

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
