"""Evaluation metrics: top-k accuracy and confusion-matrix IoU (mmseg conventions)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "iou_from_confusion", "topk_correct"]


@torch.no_grad()
def topk_correct(logits: Tensor, target: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Per-sample hit flags ``(B, len(ks))``: is the target among the top-k logits (k capped at the class count)?"""
    kmax = min(max(ks), logits.shape[-1])
    top = logits.topk(kmax, dim=-1).indices                        # (B, kmax)
    hits = top.eq(target[:, None])                                 # (B, kmax)
    return torch.stack([hits[:, :min(k, kmax)].any(dim=1) for k in ks], dim=1)


@torch.no_grad()
def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``(C, C)`` int64 counts, rows = ground truth, columns = prediction; ignored pixels are dropped.

    Batched inputs ``(B, ...)`` with ``per_sample``-style use: call on each sample, or flatten.
    """
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    idx = target[valid] * num_classes + pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(cm: Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Per-class IoU ``TP / (TP + FP + FN)``, mIoU, pixel and mean class accuracy.

    A class with neither ground truth nor predictions has IoU NaN and is left out of the mean
    (mmseg's ``nanmean``); a class predicted but absent from the ground truth scores 0.
    """
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(dim=1)
    predicted = cm.sum(dim=0)
    union = gt + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, float("nan")))
    names = list(class_names) if class_names is not None else [str(i) for i in range(cm.shape[0])]
    return {
        "mIoU": float(torch.nanmean(iou)) * 100.0,
        "aAcc": float(tp.sum() / cm.sum().clamp_min(1)) * 100.0,
        "mAcc": float(torch.nanmean(acc)) * 100.0,
        "per_class_iou": {n: float(v) * 100.0 for n, v in zip(names, iou.tolist(), strict=True)},
    }
