"""ImageNet-style classification training of any zoo (or timm) model on Accelerate.

``scripts/train_classification.py`` is argparse over :class:`ClassificationConfig` and a call
to :func:`train_classification`. Recipe defaults follow the ConvNeXt/DeiT AdamW recipe
(BASELINES.md recipe B): AdamW, cosine with warmup, RandAugment, mixup 0.8 / cutmix 1.0,
label smoothing 0.1, random erasing 0.25.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import (
    ClassificationData,
    KeyedDataset,
    ResumableSampler,
    StreamingDataset,
    load_hub_classification,
    load_image_folder,
)
from .errors import InputError
from .loop import LoopSettings, fit, make_loader, tracker_config
from .metrics import topk_correct
from .modeling import create_model, export_model
from .optim import build_optimizer, cosine_schedule
from .run_setup import RunConfig, check_common_flags, start_run
from .transforms import ClassificationSample, classification_transforms

__all__ = ["ClassificationConfig", "train_classification"]


@dataclass
class ClassificationConfig(RunConfig):
    """Every knob of a classification run (the script's flags, one to one)."""

    streaming: bool = False
    image_size: int | None = None
    batch_size: int = 64
    eval_batch_size: int | None = None
    epochs: int = 100
    max_steps: int | None = None
    min_lr_ratio: float = 0.01
    ema: bool = False
    ema_decay: float = 0.9998
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25
    drop_path: float | None = None
    output_dir: str = "outputs/train_classification"
    export_tag: str | None = None


def _check_config(cfg: ClassificationConfig) -> None:
    check_common_flags(cfg, positive=("batch_size", "grad_accum", "epochs", "max_steps"),
                       data_dir_kind="a local ImageFolder")
    if cfg.image_size is not None and cfg.image_size < 8:
        raise InputError(f"--image-size must be >= 8, got {cfg.image_size}")
    if (cfg.mixup > 0 or cfg.cutmix > 0) and not cfg.overfit_batch and cfg.batch_size % 2:
        raise InputError(f"mixup/cutmix pair samples within a batch: --batch-size must be even (got {cfg.batch_size}), "
                         "or pass --mixup 0 --cutmix 0")
    if cfg.streaming and not cfg.dataset:
        raise InputError("--streaming applies to --dataset (Hub datasets) only")


def _load_data(cfg: ClassificationConfig, accelerator: Any) -> ClassificationData:
    if cfg.data_dir:
        return load_image_folder(cfg.data_dir, train_split=cfg.train_split, val_split=cfg.val_split or "val",
                                 num_classes=cfg.num_classes)
    with accelerator.main_process_first():  # one process downloads/prepares the cache, the others reuse it
        return load_hub_classification(cfg.dataset, config=cfg.dataset_config, train_split=cfg.train_split,
                                       val_split=cfg.val_split or "validation", streaming=cfg.streaming,
                                       image_column=cfg.image_column, label_column=cfg.label_column,
                                       num_classes=cfg.num_classes)


def train_classification(cfg: ClassificationConfig) -> dict[str, Any]:
    """Validate inputs, train, evaluate top-1/top-5, export ``<output_dir>/model``; returns the run summary."""
    from timm.data import Mixup, resolve_model_data_config
    from timm.loss import SoftTargetCrossEntropy

    _check_config(cfg)
    run = start_run(cfg, cfg.model)
    accelerator, output_dir, resume, model_kwargs = run.accelerator, run.output_dir, run.resume, run.model_kwargs
    data = _load_data(cfg, accelerator)

    if cfg.drop_path is not None:
        model_kwargs.setdefault("drop_path_rate", cfg.drop_path)
    model = create_model(cfg.model, num_classes=data.num_classes, init_from=cfg.init_from, pretrained=cfg.pretrained,
                         **model_kwargs)
    data_config = resolve_model_data_config(
        model, args=dict(input_size=(3, cfg.image_size, cfg.image_size)) if cfg.image_size else None)
    augment = not cfg.overfit_batch
    train_tf, eval_tf = classification_transforms(data_config, auto_augment=cfg.auto_augment, re_prob=cfg.reprob,
                                                  augment=augment)
    nproc = accelerator.num_processes
    train_split = data.train
    if cfg.overfit_batch:
        if data.streaming:
            raise InputError("--overfit-batch needs a map-style dataset (not --streaming)")
        train_split = train_split.select(range(min(len(train_split), cfg.batch_size * nproc)))
    to_sample = ClassificationSample(train_tf, data.num_classes, data.image_column, data.label_column)
    if data.streaming:
        train_set = StreamingDataset(train_split, to_sample, seed=cfg.seed)
        train_loader = make_loader(train_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                   drop_last=True, seed=cfg.seed)
    else:
        train_set = KeyedDataset(train_split, to_sample, seed=cfg.seed)
        train_loader = make_loader(train_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
                                   sampler=ResumableSampler(len(train_set), cfg.seed), seed=cfg.seed)
    val_loader = None
    if data.val is not None:
        val = data.val
        if cfg.max_val_samples:
            val = val.take(cfg.max_val_samples) if data.streaming else val.select(range(min(len(val),
                                                                                           cfg.max_val_samples)))
        eval_sample = ClassificationSample(eval_tf, data.num_classes, data.image_column, data.label_column)
        val_set = StreamingDataset(val, eval_sample, seed=cfg.seed, shuffle=False) if data.streaming else \
            KeyedDataset(val, eval_sample, seed=cfg.seed)
        val_loader = make_loader(val_set, batch_size=cfg.eval_batch_size or cfg.batch_size,
                                 num_workers=cfg.num_workers, seed=cfg.seed)

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay, device=accelerator.device)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if val_loader is not None:
        val_loader = accelerator.prepare(val_loader)

    if data.streaming:
        if data.num_train:
            per_epoch = data.num_train // (cfg.batch_size * nproc * cfg.grad_accum)
        elif cfg.max_steps:
            per_epoch = cfg.max_steps
        else:
            raise InputError(f"dataset '{cfg.dataset}' streams without a known size: pass --max-steps")
    else:
        per_epoch = len(train_loader) // cfg.grad_accum
    total = cfg.max_steps or cfg.epochs * per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * total)
    scheduler = cosine_schedule(optimizer, total, warmup, cfg.min_lr_ratio)

    use_mixup = (cfg.mixup > 0 or cfg.cutmix > 0) and augment
    mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                  num_classes=data.num_classes) if use_mixup else None
    criterion: nn.Module = SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(
        label_smoothing=cfg.label_smoothing if augment else 0.0)

    def loss_fn(net: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = batch
        if mixup is not None:
            images, targets = mixup(images, targets)
        return criterion(net(images).float(), targets)

    def evaluate_one(net: nn.Module) -> dict[str, float]:
        from tqdm.auto import tqdm

        net.eval()
        hits = torch.zeros(2, dtype=torch.float64)
        loss_sum, count = 0.0, 0
        with torch.no_grad(), accelerator.autocast():
            for images, targets in tqdm(val_loader, desc="eval", leave=False,
                                        disable=not accelerator.is_local_main_process):
                logits = net(images).float()
                hits_k = topk_correct(logits, targets, (1, 5)).double()                # (B, 2)
                losses = nn.functional.cross_entropy(logits, targets, reduction="none").double()
                per_sample = torch.cat([hits_k, losses[:, None]], dim=1)              # (B, 3)
                per_sample = accelerator.gather_for_metrics(per_sample)
                hits += per_sample[:, :2].sum(0).cpu()
                loss_sum += float(per_sample[:, 2].sum())
                count += per_sample.shape[0]
        n = max(count, 1)
        return {"top1": 100.0 * float(hits[0]) / n, "top5": 100.0 * float(hits[1]) / n, "loss": loss_sum / n,
                "samples": count}

    def evaluate() -> dict[str, Any]:
        metrics = evaluate_one(accelerator.unwrap_model(model))
        if ema is not None:
            metrics["ema"] = evaluate_one(ema.module)
        accelerator.print(f"eval: top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}  loss {metrics['loss']:.4f}"
                          + (f"  | EMA top-1 {metrics['ema']['top1']:.2f}" if ema is not None else ""))
        return metrics

    eval_every = per_epoch if cfg.eval_every is None else cfg.eval_every
    settings = LoopSettings.for_run(cfg, output_dir, max_steps=total, steps_per_epoch=per_epoch,
                                    eval_every=eval_every, desc=f"train {cfg.model}")
    accelerator.init_trackers("train_classification", config=tracker_config(asdict(cfg)))
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    accelerator.print(
        f"{cfg.model}: {n_params / 1e6:.2f}M params | data {data.source}: {data.num_classes} classes, "
        f"{data.num_train if data.num_train is not None else '?'} train images | {nproc} process(es) x batch "
        f"{cfg.batch_size} x accum {cfg.grad_accum} | {total} steps ({per_epoch}/epoch), warmup {warmup} | "
        f"input {tuple(data_config['input_size'])}")
    result = fit(accelerator, model, optimizer, scheduler, train_loader, settings, loss_fn=loss_fn,
                 evaluate=evaluate if val_loader is not None else None, ema=ema, resume=resume,
                 checkpoint_state={"model": cfg.model, "task": "classification"})

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_model = ema.module if ema is not None else accelerator.unwrap_model(model)
        card = None
        if cfg.export_tag:
            dataset_name = cfg.dataset or Path(cfg.data_dir).name
            metrics = {k: round(float(v), 2) for k, v in (result["final"] or {}).items() if k in ("top1", "top5")}
            card = dict(tag=cfg.export_tag, datasets=[dataset_name], metrics={dataset_name: metrics},
                        trained_with={"script": "scripts/train_classification.py", "args": sys.argv[1:]})
        export_dir = export_model(final_model, output_dir / "model", model_args=model_kwargs,
                                  data_config={k: data_config[k] for k in ("input_size", "interpolation", "crop_pct",
                                                                           "mean", "std") if k in data_config},
                                  card=card, label_names=data.classes)
        summary = {k: v for k, v in result.items() if k != "history"}
        summary.update(model=cfg.model, classes=data.classes, export_dir=str(export_dir), processes=nproc)
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        accelerator.print(f"exported {export_dir} (model.safetensors + config.json); summary in "
                          f"{output_dir / 'metrics.json'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result
