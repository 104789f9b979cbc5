"""Object detection fine-tuning: torchvision's Faster R-CNN / Mask R-CNN with an FPN over a zoo backbone.

``scripts/finetune_detection.py`` is argparse over :class:`DetectionConfig` and a call to
:func:`finetune_detection`. Same loop, checkpoints and resume as the other tasks; the metric is COCO
mAP from pycocotools' evaluator, with per-class AP at the end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .coco_data import DetectionData, DetEvalTransform, DetTrainTransform, detection_collate, load_coco_detection
from .data import KeyedDataset, ResumableSampler
from .det_model import create_detection_model
from .errors import InputError
from .loop import LoopSettings, fit, make_loader, tracker_config
from .modeling import export_weights_and_config, vanilla_twin
from .optim import build_optimizer, cosine_schedule
from .run_setup import RunConfig, check_common_flags, start_run

__all__ = ["DetectionConfig", "finetune_detection", "coco_metrics", "format_ap_table", "load_detection_export"]


@dataclass
class DetectionConfig(RunConfig):
    """Every knob of a detection run (the script's flags, one to one)."""

    vanilla_twin: bool = False
    masks: bool = False
    min_size: int = 800
    max_size: int = 1333
    fpn_channels: int = 256
    eval_batch_size: int = 2
    max_steps: int = 20000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    output_dir: str = "outputs/finetune_detection"


def _check_config(cfg: DetectionConfig) -> None:
    check_common_flags(cfg, positive=("batch_size", "eval_batch_size", "grad_accum", "max_steps", "fpn_channels"),
                       data_dir_kind="a COCO-format folder")
    if cfg.dataset:
        raise InputError("--dataset (Hub) is not supported for detection yet; give a COCO-format --data-dir")
    if not 32 <= cfg.min_size <= cfg.max_size:
        raise InputError(f"--min-size and --max-size need 32 <= min <= max, got {cfg.min_size}, {cfg.max_size}")
    try:
        import pycocotools  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as err:
        raise InputError(f"detection needs torchvision and pycocotools ({err.name} is missing): "
                         "pip install 'fdconv_zoo[detection]'") from None


def _coco_results(out: dict[str, torch.Tensor], image_id: int, category_ids: list[int],
                  masks: bool) -> list[dict[str, Any]]:
    """One image's torchvision output as COCO result records (``bbox`` as x, y, w, h; masks as RLE)."""
    from pycocotools import mask as mask_utils

    boxes = out["boxes"].float().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    records = []
    for i, (box, score, label) in enumerate(zip(xywh, out["scores"].tolist(), out["labels"].tolist(), strict=True)):
        record = {"image_id": image_id, "category_id": category_ids[label - 1], "bbox": box, "score": score}
        if masks:
            rle = mask_utils.encode((out["masks"][i, 0] > 0.5).cpu().numpy().astype("uint8").copy(order="F"))
            record["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        records.append(record)
    return records


def coco_metrics(annotation_file: str | Path, results: list[dict[str, Any]], classes: list[str],
                 iou_type: str = "bbox", image_ids: list[int] | None = None) -> dict[str, Any]:
    """COCO AP (pycocotools' ``COCOeval``) of ``results`` against ``annotation_file``, with per-class AP.

    ``image_ids``: the images that were evaluated (default: every image of the file). Values are
    percentages; a class without ground truth among those images has AP ``nan``.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools prints its own tables
        truth = COCO(str(annotation_file))
        names = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
        if not results:
            return {f"{iou_type}_{n}": 0.0 for n in names} | {f"{iou_type}_per_class_AP": dict.fromkeys(classes, 0.0)}
        evaluator = COCOeval(truth, truth.loadRes(results), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval reports -1 where a split has no object of an area range
    metrics: dict[str, Any] = {f"{iou_type}_{n}": float(v) * 100 if v >= 0 else float("nan")
                               for n, v in zip(names, evaluator.stats, strict=False)}
    precision = evaluator.eval["precision"]                # (iou, recall, class, area, max dets)
    per_class = {}
    for k, name in enumerate(classes):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(p.mean()) * 100 if p.size else float("nan")
    metrics[f"{iou_type}_per_class_AP"] = per_class
    return metrics


def format_ap_table(metrics: dict[str, Any], iou_type: str = "bbox") -> str:
    """Per-class AP as aligned text lines (the log's final table)."""
    rows = [f"  {name:<14s} {ap:6.2f}" if ap == ap else f"  {name:<14s}    n/a"
            for name, ap in metrics[f"{iou_type}_per_class_AP"].items()]
    tail = (f"  {'mAP':<14s} {metrics[f'{iou_type}_mAP']:6.2f}   (AP50 {metrics[f'{iou_type}_mAP_50']:.2f}, "
            f"AP75 {metrics[f'{iou_type}_mAP_75']:.2f})")
    return "\n".join([f"  {'class':<14s} {iou_type + ' AP':>6s}", *rows, tail])


def evaluate_detector(net: nn.Module, loader: Any, data: DetectionData, masks: bool, accelerator: Any = None,
                      desc: str = "eval") -> dict[str, Any]:
    """COCO metrics of ``net`` over ``loader`` (every process's predictions gathered, evaluated everywhere)."""
    from tqdm.auto import tqdm

    net.eval()
    per_image: list[tuple[int, list[dict[str, Any]]]] = []
    show = accelerator is None or accelerator.is_local_main_process
    with torch.no_grad():
        for images, targets in tqdm(loader, desc=desc, leave=False, disable=not show):
            outputs = net(images)
            for out, target in zip(outputs, targets, strict=True):
                image_id = int(target["image_id"])
                per_image.append((image_id, _coco_results(out, image_id, data.category_ids, masks)))
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        per_image = gather_object(per_image)
    by_image = dict(per_image)          # an image evaluated twice (padding of the last batch) counts once
    results = [r for records in by_image.values() for r in records]
    metrics = coco_metrics(data.val_annotations, results, data.classes, "bbox", list(by_image))
    if masks:
        metrics |= coco_metrics(data.val_annotations, results, data.classes, "segm", list(by_image))
    metrics["images"] = len(by_image)
    metrics["detections"] = len(results)
    return metrics


def finetune_detection(cfg: DetectionConfig) -> dict[str, Any]:
    """Validate inputs, train, evaluate COCO mAP, export ``<output_dir>/model``; returns the run summary."""
    _check_config(cfg)
    model_name = vanilla_twin(cfg.model) if cfg.vanilla_twin else cfg.model
    data = load_coco_detection(cfg.data_dir, train_split=cfg.train_split, val_split=cfg.val_split or "val")
    if cfg.masks and not data.has_masks:
        raise InputError(f"--masks: {cfg.data_dir} has annotations without 'segmentation'; train boxes only")
    run = start_run(cfg, model_name)
    accelerator, output_dir, resume, model_kwargs = run.accelerator, run.output_dir, run.resume, run.model_kwargs
    model = create_detection_model(model_name, data.num_classes, masks=cfg.masks, min_size=cfg.min_size,
                                   max_size=cfg.max_size, fpn_channels=cfg.fpn_channels, init_from=cfg.init_from,
                                   pretrained=cfg.pretrained, **model_kwargs)
    nproc = accelerator.num_processes
    train_split = data.train
    if cfg.overfit_batch:
        train_split = train_split.select(range(min(len(train_split), cfg.batch_size * nproc)))
    train_tf = DetTrainTransform(with_masks=cfg.masks, hflip=0.0 if cfg.overfit_batch else 0.5)
    train_set = KeyedDataset(train_split, train_tf, seed=cfg.seed, vary_by_epoch=not cfg.overfit_batch)
    train_loader = make_loader(train_set, batch_size=cfg.batch_size, num_workers=cfg.num_workers, drop_last=True,
                               sampler=ResumableSampler(len(train_set), cfg.seed), seed=cfg.seed,
                               collate_fn=detection_collate)
    val = data.val
    if cfg.max_val_samples:
        val = val.select(range(min(len(val), cfg.max_val_samples)))
    val_loader = make_loader(KeyedDataset(val, DetEvalTransform(), seed=cfg.seed), batch_size=cfg.eval_batch_size,
                             num_workers=cfg.num_workers, collate_fn=detection_collate, seed=cfg.seed)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    per_epoch = len(train_loader) // cfg.grad_accum
    total = cfg.max_steps
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(0.05 * total)
    scheduler = cosine_schedule(optimizer, total, warmup, cfg.min_lr_ratio)

    def loss_fn(net: nn.Module, batch: Any) -> torch.Tensor:
        images, targets = batch
        return sum(net(images, targets).values())

    def evaluate() -> dict[str, Any]:
        metrics = evaluate_detector(accelerator.unwrap_model(model), val_loader, data, cfg.masks, accelerator)
        line = f"eval: bbox mAP {metrics['bbox_mAP']:.2f}  AP50 {metrics['bbox_mAP_50']:.2f}"
        accelerator.print(line + (f"  segm mAP {metrics['segm_mAP']:.2f}" if cfg.masks else ""))
        return metrics

    settings = LoopSettings.for_run(cfg, output_dir, max_steps=total, steps_per_epoch=per_epoch,
                                    eval_every=cfg.eval_every or 0, desc=f"finetune {model_name}")
    accelerator.init_trackers("finetune_detection", config=tracker_config(dict(asdict(cfg), model=model_name)))
    kind = "Mask R-CNN" if cfg.masks else "Faster R-CNN"
    n_params = sum(p.numel() for p in accelerator.unwrap_model(model).parameters())
    accelerator.print(
        f"{kind} + FPN over {model_name}: {n_params / 1e6:.2f}M params | data {data.source}: {data.num_classes} "
        f"classes, {len(data.train)} train images with boxes ({data.skipped_without_boxes} without boxes left out) / "
        f"{len(val)} val | {nproc} process(es) x batch {cfg.batch_size} x accum {cfg.grad_accum}, images "
        f"{cfg.min_size}-{cfg.max_size} px | {total} steps ({per_epoch}/epoch), warmup {warmup}")
    result = fit(accelerator, model, optimizer, scheduler, train_loader, settings, loss_fn=loss_fn, evaluate=evaluate,
                 resume=resume, checkpoint_state={"model": model_name, "task": "detection"})

    final = result["final"]
    accelerator.print("per-class AP (val):\n" + format_ap_table(final))
    if cfg.masks:
        accelerator.print(format_ap_table(final, "segm"))
    accelerator.print(f"final bbox mAP {final['bbox_mAP']:.2f} | {result['sec_per_step']:.3f} s/step over "
                      f"{result['timed_steps']} timed steps")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        config = {
            "architecture": "fdconv_zoo.training.DetectionModel", "task": "detection", "backbone": model_name,
            "backbone_args": model_kwargs, "detector": kind, "masks": cfg.masks, "num_classes": data.num_classes,
            "classes": data.classes, "category_ids": data.category_ids, "min_size": cfg.min_size,
            "max_size": cfg.max_size, "fpn_channels": cfg.fpn_channels,
            "metrics": {k: v for k, v in final.items() if k.endswith(("mAP", "mAP_50", "mAP_75"))},
        }
        export_dir = export_weights_and_config(accelerator.unwrap_model(model), output_dir / "model", config,
                                              card=_card(config))
        summary = {k: v for k, v in result.items() if k != "history"}
        summary.update(model=model_name, export_dir=str(export_dir), processes=nproc, batch_size=cfg.batch_size)
        (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        accelerator.print(f"exported {export_dir}; summary in {output_dir / 'metrics.json'}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _card(config: dict[str, Any]) -> str:
    metrics = "\n".join(f"| {k} | {v:.2f} |" for k, v in config["metrics"].items())
    return (f"---\nlibrary_name: pytorch\ntags:\n- object-detection\n- fdconv\nlicense: apache-2.0\n---\n\n"
            f"# {config['detector']} + FPN over `{config['backbone']}`\n\n"
            f"Fine-tuned with `scripts/finetune_detection.py` for {config['num_classes']} classes: "
            f"{', '.join(config['classes'])}.\n\nReload with "
            "`fdconv_zoo.training.detection.load_detection_export(folder)`.\n\n"
            f"| metric (val) | value |\n|---|---:|\n{metrics}\n")


def load_detection_export(folder: str | Path) -> nn.Module:
    """Rebuild a detector written by :func:`finetune_detection`, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    model = create_detection_model(config["backbone"], config["num_classes"], masks=config["masks"],
                                   min_size=config["min_size"], max_size=config["max_size"],
                                   fpn_channels=config["fpn_channels"], **config.get("backbone_args", {}))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval()
