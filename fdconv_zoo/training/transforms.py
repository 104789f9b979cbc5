"""Sample transforms: timm's classification pipelines and joint image/label ops for segmentation.

All randomness comes from ``random``/``torch``'s global generators, which
:class:`~fdconv_zoo.training.data.KeyedDataset` seeds per sample: augmentation is a pure
function of ``(seed, epoch, index)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

__all__ = [
    "ClassificationSample",
    "SegEvalTransform",
    "SegTrainTransform",
    "classification_transforms",
    "pad_collate",
]


def classification_transforms(data_config: Mapping[str, Any], *, auto_augment: str | None = "rand-m9-mstd0.5-inc1",
                              re_prob: float = 0.0, scale: Sequence[float] = (0.08, 1.0), hflip: float = 0.5,
                              color_jitter: float = 0.4, augment: bool = True) -> tuple[Callable, Callable]:
    """timm's train (RandomResizedCrop, flip, RandAugment, RandomErasing) and eval (resize, centre crop) pipelines.

    ``data_config`` is the model's, from ``timm.data.resolve_model_data_config`` (input size,
    interpolation, mean/std, crop_pct). ``augment=False`` gives the eval pipeline for training too.
    """
    from timm.data import create_transform

    common = dict(input_size=data_config["input_size"], interpolation=data_config.get("interpolation", "bilinear"),
                  mean=data_config["mean"], std=data_config["std"])
    eval_tf = create_transform(**common, is_training=False, crop_pct=data_config.get("crop_pct"),
                               crop_mode=data_config.get("crop_mode"))
    if not augment:
        return eval_tf, eval_tf
    train_tf = create_transform(**common, is_training=True, auto_augment=auto_augment or None, re_prob=re_prob,
                                scale=tuple(scale), hflip=hflip, color_jitter=color_jitter)
    return train_tf, eval_tf


class ClassificationSample:
    """``{image, label}`` dict -> ``(tensor, label)``; a label outside the classes is an InputError."""

    def __init__(self, transform: Callable, num_classes: int, image_column: str = "image",
                 label_column: str = "label") -> None:
        self.transform = transform
        self.num_classes = num_classes
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, sample: Mapping[str, Any]) -> tuple[Tensor, int]:
        label = int(sample[self.label_column])
        if not 0 <= label < self.num_classes:
            raise InputError(f"label id {label} is outside the {self.num_classes} classes (0..{self.num_classes - 1})")
        image = sample[self.image_column]
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image), label


def _to_tensors(image: Any, label: Any, lut: np.ndarray | None) -> tuple[Tensor, Tensor]:
    if image.mode != "RGB":
        image = image.convert("RGB")
    img = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W) uint8
    lab = np.asarray(label)
    if lab.ndim == 3:  # a palette PNG decoded to RGB(A) by the loader is not an id map
        raise InputError(f"segmentation label has shape {lab.shape}; expected a single-channel map of class ids")
    lab = lab.astype(np.int64)
    if lut is not None:
        lab = lut[lab]
    if img.shape[1:] != lab.shape:
        raise InputError(f"image is {tuple(img.shape[1:])} but its label is {lab.shape} (H, W)")
    return img, torch.from_numpy(lab)


def normalize_image(img: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """A ``(3, H, W)`` uint8 image as float32, normalised with ``mean`` and ``std`` given for [0, 1] values."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
    return (img.float() - m) / s


class SegTrainTransform:
    """Random scale, pad, random crop and horizontal flip of an image and its label map.

    ``base_size`` (optional) first rescales the shorter side; the random scale factor is drawn
    from ``scale_range`` (mmseg's ``ratio_range``). Padding uses 0 for the (normalised) image
    and ``ignore_index`` for the label, so padded pixels never count in the loss.
    """

    def __init__(self, crop_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                 scale_range: Sequence[float] = (0.5, 2.0), hflip: float = 0.5, ignore_index: int = 255,
                 base_size: int | None = None, lut: np.ndarray | None = None, image_column: str = "image",
                 label_column: str = "label") -> None:
        self.crop = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.scale_range = tuple(scale_range)
        self.hflip = hflip
        self.ignore_index = ignore_index
        self.base_size = base_size
        self.lut = lut
        self.image_column, self.label_column = image_column, label_column

    def __call__(self, sample: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        img, lab = _to_tensors(sample[self.image_column], sample[self.label_column], self.lut)
        h, w = img.shape[1:]
        scale = random.uniform(*self.scale_range)
        if self.base_size:
            scale *= self.base_size / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = normalize_image(img, self.mean, self.std)[None]
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
        y = F.interpolate(lab[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        ch, cw = self.crop
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), value=0.0)
            y = F.pad(y, (0, pw, 0, ph), value=self.ignore_index)
        top = random.randint(0, x.shape[1] - ch)
        left = random.randint(0, x.shape[2] - cw)
        x = x[:, top:top + ch, left:left + cw]
        y = y[top:top + ch, left:left + cw]
        if random.random() < self.hflip:
            x, y = x.flip(-1), y.flip(-1)
        return x.contiguous(), y.contiguous()


class SegEvalTransform:
    """Normalise the image at its own size (optionally rescaled so the shorter side is ``base_size``)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, base_size: int | None = None,
                 lut: np.ndarray | None = None, image_column: str = "image", label_column: str = "label") -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.base_size = base_size
        self.lut = lut
        self.image_column, self.label_column = image_column, label_column

    def __call__(self, sample: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        img, lab = _to_tensors(sample[self.image_column], sample[self.label_column], self.lut)
        x = normalize_image(img, self.mean, self.std)
        if self.base_size and min(x.shape[1:]) != self.base_size:  # labels stay at full resolution
            s = self.base_size / min(x.shape[1:])
            size = (round(x.shape[1] * s), round(x.shape[2] * s))
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=s < 1)[0]
        return x, lab


def pad_collate(ignore_index: int) -> Callable[[list[tuple[Tensor, Tensor]]], tuple[Tensor, Tensor, Tensor]]:
    """Batch images of different sizes: pad to the largest (label padding = ignore) and keep the true sizes.

    Returns ``(images, labels, sizes)`` with ``sizes[i] = (image_h, image_w, label_h, label_w)``.
    """

    def collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        hmax = max(x.shape[1] for x, _ in batch)
        wmax = max(x.shape[2] for x, _ in batch)
        lh = max(y.shape[0] for _, y in batch)
        lw = max(y.shape[1] for _, y in batch)
        xs = torch.zeros(len(batch), 3, hmax, wmax)
        ys = torch.full((len(batch), lh, lw), ignore_index, dtype=torch.long)
        sizes = torch.zeros(len(batch), 4, dtype=torch.long)
        for i, (x, y) in enumerate(batch):
            xs[i, :, :x.shape[1], :x.shape[2]] = x
            ys[i, :y.shape[0], :y.shape[1]] = y
            sizes[i] = torch.tensor([x.shape[1], x.shape[2], y.shape[0], y.shape[1]])
        return xs, ys, sizes

    return collate
