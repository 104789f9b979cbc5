#!/usr/bin/env python
"""ImageNet-style pretraining of any fdconv_zoo (or timm) model, on Accelerate.

The same file runs on a laptop CPU, one GPU, several GPUs or several nodes:

    python scripts/train_classification.py --model resnet18_fdconv --data-dir ../shared/data/caltech101_10 \\
        --image-size 128 --batch-size 32 --epochs 30
    accelerate launch --config_file scripts/configs/gpu_1_bf16.yaml scripts/train_classification.py \\
        --model resnet50_fdconv --dataset imagenet-1k --batch-size 128 --epochs 300 --output-dir runs/r50fd

``--batch-size`` is per process; the global batch is batch x processes x --grad-accum.
``--resume`` (no value) continues from the newest complete checkpoint in --output-dir.
"""

from __future__ import annotations

import argparse
import sys

from fdconv_zoo.training.classification import ClassificationConfig, train_classification
from fdconv_zoo.training.cli_args import add_loader_args, add_optimisation_args, add_run_args, add_weights_args
from fdconv_zoo.training.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    d = ClassificationConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="timm/fdconv_zoo architecture (default: %(default)s)")
    add_weights_args(g)
    g.add_argument("--drop-path", type=float, default=d.drop_path, help="stochastic depth rate")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None, help="local ImageFolder with train/<class>/ and val/<class>/")
    g.add_argument("--dataset", default=None, help="Hub dataset id (e.g. imagenet-1k) or a local dataset directory")
    g.add_argument("--dataset-config", default=None, help="Hub dataset configuration name")
    g.add_argument("--train-split", default=d.train_split)
    g.add_argument("--val-split", default=None, help="default: 'val' (folder) / 'validation' (Hub)")
    g.add_argument("--streaming", action="store_true", help="stream the Hub dataset instead of downloading it")
    g.add_argument("--image-column", default=None)
    g.add_argument("--label-column", default=None)
    g.add_argument("--num-classes", type=int, default=None, help="checked against the data; needed if it has no names")
    g.add_argument("--image-size", type=int, default=None, help="train/eval resolution (default: the model's)")
    add_loader_args(g, d)
    g = p.add_argument_group("optimisation")
    add_optimisation_args(g, d)
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--max-steps", type=int, default=None, help="optimizer steps; overrides --epochs")
    g.add_argument("--ema", action="store_true", help="keep an EMA of the weights (evaluated and exported)")
    g.add_argument("--ema-decay", type=float, default=d.ema_decay)
    g = p.add_argument_group("augmentation")
    g.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha, 0 = off")
    g.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha, 0 = off")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--auto-augment", default=d.auto_augment, help="timm RandAugment spec; '' = off")
    g.add_argument("--reprob", type=float, default=d.reprob, help="random erasing probability")
    g.add_argument("--overfit-batch", action="store_true",
                   help="debug: train on one fixed batch without augmentation (the loss must fall)")
    g = p.add_argument_group("run")
    add_run_args(g, d, eval_every_help="steps (default: every epoch; 0 = at the end)")
    g.add_argument("--export-tag", default=None, help="timm tag for the model card of the export (fdconv_zoo.hub)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = ClassificationConfig(**vars(args))
    return run_cli(lambda: train_classification(cfg))


if __name__ == "__main__":
    sys.exit(main())
