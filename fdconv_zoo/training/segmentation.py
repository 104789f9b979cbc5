"""Semantic segmentation fine-tuning of a ``features_only`` backbone with our small UPerNet/FPN head.

``scripts/finetune_segmentation.py`` is argparse over :class:`SegmentationConfig` and a call to
:func:`finetune_segmentation`. Same loop, checkpoints and resume as classification; the
metric is mIoU with per-class IoU over a confusion matrix gathered across processes.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import KeyedDataset, ResumableSampler, SegmentationData, load_hub_segmentation, load_segmentation_folder
from .errors import InputError
from .loop import LoopSettings, fit, make_loader, tracker_config
from .metrics import confusion_matrix, iou_from_confusion
from .modeling import export_weights_and_config, vanilla_twin
from .optim import build_optimizer, cosine_schedule
from .run_setup import RunConfig, check_common_flags, start_run
from .seg_head import SegmentationModel, create_segmentation_model, sliding_window_logits, whole_image_logits
from .transforms import SegEvalTransform, SegTrainTransform, pad_collate

__all__ = ["SegmentationConfig", "evaluate_segmenter", "finetune_segmentation", "format_iou_table",
           "load_segmentation_export"]


@dataclass
class SegmentationConfig(RunConfig):
    """Every knob of a segmentation run (the script's flags, one to one)."""

    vanilla_twin: bool = False
    ignore_index: int | None = None
    reduce_labels: bool | None = None
    crop_size: int = 512
    base_size: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    eval_batch_size: int = 1
    eval_mode: str = "whole"
    max_steps: int = 20000
    lr: float = 2e-4
    head_lr_mult: float | None = None
    weight_decay: float = 0.01
    head: str = "uper"
    head_channels: int = 128
    out_indices: tuple[int, ...] = (-4, -3, -2, -1)
    output_dir: str = "outputs/finetune_segmentation"


def _check_config(cfg: SegmentationConfig) -> None:
    check_common_flags(cfg, positive=("batch_size", "eval_batch_size", "grad_accum", "max_steps", "head_channels"),
                       data_dir_kind="a CamVid-layout folder")
    if cfg.crop_size < 32:
        raise InputError(f"--crop-size must be >= 32 (the backbones downsample 32x), got {cfg.crop_size}")
    lo, hi = cfg.scale_range
    if not 0 < lo <= hi:
        raise InputError(f"--scale-range needs 0 < min <= max, got {cfg.scale_range}")
    if cfg.eval_mode not in ("whole", "slide"):
        raise InputError(f"--eval-mode must be 'whole' or 'slide', got {cfg.eval_mode!r}")
    if cfg.head not in ("uper", "fpn"):
        raise InputError(f"--head must be 'uper' or 'fpn', got {cfg.head!r}")


def _load_data(cfg: SegmentationConfig, accelerator: Any) -> SegmentationData:
    if cfg.data_dir:
        if cfg.reduce_labels:
            raise InputError("--reduce-labels applies to --dataset only; relabel a local folder instead")
        return load_segmentation_folder(cfg.data_dir, num_classes=cfg.num_classes, ignore_index=cfg.ignore_index,
                                        train_list=f"{cfg.train_split}.txt", val_list=f"{cfg.val_split or 'val'}.txt")
    with accelerator.main_process_first():
        return load_hub_segmentation(cfg.dataset, config=cfg.dataset_config, train_split=cfg.train_split,
                                     val_split=cfg.val_split, image_column=cfg.image_column,
                                     label_column=cfg.label_column, num_classes=cfg.num_classes,
                                     ignore_index=cfg.ignore_index, reduce_labels=cfg.reduce_labels)


def format_iou_table(metrics: dict[str, Any]) -> str:
    """Per-class IoU as aligned text lines (the log's final table)."""
    rows = [f"  {name:<14s} {iou:6.2f}" if iou == iou else f"  {name:<14s}    n/a"
            for name, iou in metrics["per_class_iou"].items()]
    tail = f"  {'mIoU':<14s} {metrics['mIoU']:6.2f}   (aAcc {metrics['aAcc']:.2f}, mAcc {metrics['mAcc']:.2f})"
    return "\n".join([f"  {'class':<14s} {'IoU':>6s}", *rows, tail])


def evaluate_segmenter(net: nn.Module, loader: Any, data: SegmentationData, eval_mode: str = "whole",
                       crop_size: int | None = None, accelerator: Any = None, desc: str = "eval") -> dict[str, Any]:
    """mIoU, per-class IoU, aAcc and mAcc of ``net`` over ``loader`` (``pad_collate`` batches), at each
    label's own size; confusion matrices are summed over every process."""
    from tqdm.auto import tqdm

    net.eval()
    k, ignore = data.num_classes, data.ignore_index
    cm = torch.zeros(k, k, dtype=torch.float64)
    show = accelerator is None or accelerator.is_local_main_process
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for images, labels, sizes in tqdm(loader, desc=desc, leave=False, disable=not show):
            if eval_mode == "slide":
                logits = sliding_window_logits(net, images, k, crop_size)
            else:
                logits = whole_image_logits(net, images, net.output_stride)
            per_sample = []
            for i in range(images.shape[0]):
                ih, iw, lh, lw = (int(v) for v in sizes[i])
                li = logits[i:i + 1, :, :ih, :iw].float()
                if (ih, iw) != (lh, lw):
                    li = F.interpolate(li, size=(lh, lw), mode="bilinear", align_corners=False)
                pred = li.argmax(1)[0]
                per_sample.append(confusion_matrix(pred, labels[i, :lh, :lw], k, ignore).flatten())
            per_sample = torch.stack(per_sample).double()
            if accelerator is not None:
                per_sample = accelerator.gather_for_metrics(per_sample)
            cm += per_sample.sum(0).view(k, k).cpu()
    return iou_from_confusion(cm, data.classes)


def finetune_segmentation(cfg: SegmentationConfig) -> dict[str, Any]:
    """Validate inputs, train, evaluate mIoU, export ``<output_dir>/model``; returns the run summary."""
    from timm.data import resolve_model_data_config

    _check_config(cfg)
    model_name = vanilla_twin(cfg.model) if cfg.vanilla_twin else cfg.model
    run = start_run(cfg, model_name)
    accelerator, output_dir, resume, model_kwargs = run.accelerator, run.output_dir, run.resume, run.model_kwargs
    data = _load_data(cfg, accelerator)
    model = create_segmentation_model(model_name, data.num_classes, head=cfg.head, channels=cfg.head_channels,
                                      out_indices=cfg.out_indices, crop_size=cfg.crop_size, init_from=cfg.init_from,
                                      pretrained=cfg.pretrained, **model_kwargs)
    data_config = resolve_model_data_config(model.backbone)
    mean, std = data_config["mean"], data_config["std"]
    lut = data.label_lut() if data.reduce_labels else None
    cols = dict(image_column=data.image_column, label_column=data.label_column)
    eval_tf = SegEvalTransform(mean, std, base_size=cfg.base_size, lut=lut, **cols)
    if cfg.overfit_batch:  # a fixed crop of a fixed batch: loss must go down
        train_tf = SegTrainTransform(cfg.crop_size, mean, std, scale_range=(1.0, 1.0), hflip=0.0,
                                     ignore_index=data.ignore_index, base_size=cfg.base_size, lut=lut, **cols)
    else:
        train_tf = SegTrainTransform(cfg.crop_size, mean, std, scale_range=cfg.scale_range,
                                     ignore_index=data.ignore_index, base_size=cfg.base_size, lut=lut, **cols)
    nproc = accelerator.num_processes
    train_split = data.train
    if cfg.overfit_batch:
        train_split = train_split.select(range(min(len(train_split), cfg.batch_size * nproc)))
    train_set = KeyedDataset(train_split, train_tf, seed=cfg.seed, vary_by_epoch=not cfg.overfit_batch)
    train_loader = make_loader(train_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
                               sampler=ResumableSampler(len(train_set), cfg.seed), seed=cfg.seed)
    val = data.val
    if cfg.max_val_samples:
        val = val.select(range(min(len(val), cfg.max_val_samples)))
    val_loader = make_loader(KeyedDataset(val, eval_tf, seed=cfg.seed), batch_size=cfg.eval_batch_size,
                             num_workers=cfg.num_workers, collate_fn=pad_collate(data.ignore_index), seed=cfg.seed)

    head_mult = cfg.head_lr_mult if cfg.head_lr_mult is not None else (
        10.0 if (cfg.pretrained or cfg.init_from) else 1.0)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_mults=[("head.", head_mult)])
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    per_epoch = len(train_loader) // cfg.grad_accum
    total = cfg.max_steps
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * total)
    scheduler = cosine_schedule(optimizer, total, warmup, cfg.min_lr_ratio)
    ignore = data.ignore_index
    eval_mode = "slide" if getattr(accelerator.unwrap_model(model), "fixed_input_size", False) else cfg.eval_mode

    def loss_fn(net: nn.Module, batch: Any) -> torch.Tensor:
        images, labels = batch
        logits = net(images).float()
        # sum / valid pixels: a crop that is all void gives 0, not NaN
        loss = F.cross_entropy(logits, labels, ignore_index=ignore, reduction="sum")
        return loss / (labels != ignore).sum().clamp_min(1)

    def evaluate() -> dict[str, Any]:
        metrics = evaluate_segmenter(accelerator.unwrap_model(model), val_loader, data, eval_mode, cfg.crop_size,
                                     accelerator)
        metrics["samples"] = int(len(val))
        accelerator.print(f"eval: mIoU {metrics['mIoU']:.2f}  aAcc {metrics['aAcc']:.2f}  mAcc {metrics['mAcc']:.2f}")
        return metrics

    eval_every = cfg.eval_every if cfg.eval_every is not None else 0
    settings = LoopSettings.for_run(cfg, output_dir, max_steps=total, steps_per_epoch=per_epoch,
                                    eval_every=eval_every, desc=f"finetune {model_name}")
    accelerator.init_trackers("finetune_segmentation", config=tracker_config(dict(asdict(cfg), model=model_name)))
    net = accelerator.unwrap_model(model)
    n_backbone = sum(p.numel() for p in net.backbone.parameters())
    n_head = sum(p.numel() for p in net.head.parameters())
    accelerator.print(
        f"{model_name} + {cfg.head} head: backbone {n_backbone / 1e6:.2f}M + head {n_head / 1e6:.2f}M params | data "
        f"{data.source}: {data.num_classes} classes (ignore {ignore}), {len(data.train)} train / {len(val)} val | "
        f"{nproc} process(es) x batch {cfg.batch_size} x accum {cfg.grad_accum}, crop {cfg.crop_size} | {total} steps "
        f"({per_epoch}/epoch), warmup {warmup} | eval {eval_mode}")
    result = fit(accelerator, model, optimizer, scheduler, train_loader, settings, loss_fn=loss_fn, evaluate=evaluate,
                 resume=resume, checkpoint_state={"model": model_name, "task": "segmentation"})

    final = result["final"]
    accelerator.print("per-class IoU (val):\n" + format_iou_table(final))
    accelerator.print(f"final mIoU {final['mIoU']:.2f} | {result['sec_per_step']:.3f} s/step over "
                      f"{result['timed_steps']} timed steps")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        config = {
            "architecture": "fdconv_zoo.training.SegmentationModel", "backbone": model_name,
            "backbone_args": model_kwargs, "head": cfg.head, "head_channels": cfg.head_channels,
            "out_indices": list(cfg.out_indices), "num_classes": data.num_classes, "classes": data.classes,
            "ignore_index": ignore, "reduce_labels": data.reduce_labels, "mean": list(mean), "std": list(std),
            "crop_size": cfg.crop_size, "eval_mode": eval_mode, "metrics": {"mIoU": final["mIoU"]},
        }
        export_dir = export_weights_and_config(accelerator.unwrap_model(model), output_dir / "model", config)
        summary = {k: v for k, v in result.items() if k != "history"}
        summary.update(model=model_name, export_dir=str(export_dir), processes=nproc, batch_size=cfg.batch_size,
                       crop_size=cfg.crop_size)
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        accelerator.print(f"exported {export_dir}; summary in {output_dir / 'metrics.json'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def load_segmentation_export(folder: str | Path) -> SegmentationModel:
    """Rebuild a model written by :func:`finetune_segmentation` (``model.safetensors`` + ``config.json``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = create_segmentation_model(config["backbone"], config["num_classes"], head=config["head"],
                                      channels=config["head_channels"], out_indices=config["out_indices"],
                                      crop_size=config.get("crop_size"), **config.get("backbone_args", {}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()
