#!/usr/bin/env python
"""Semantic segmentation fine-tuning: our UPerNet-style (or FPN) head on a features_only zoo backbone.

    accelerate launch --config_file scripts/configs/cpu_2proc.yaml scripts/finetune_segmentation.py \\
        --model resnet18_fdconv --data-dir ../shared/data/camvid_small --crop-size 160 --batch-size 4 --max-steps 200
    # the same recipe on the vanilla timm twin, for comparisons:
    ... scripts/finetune_segmentation.py --model resnet18_fdconv --vanilla-twin ...
    # ADE20K from the Hub (150 classes, id 0 ignored):
    ... scripts/finetune_segmentation.py --model resnet50_fdconv --dataset scene_parse_150 --crop-size 512 \\
        --init-from resnet50_fdconv.a1_in1k --eval-mode slide

``--batch-size`` is per process. The log prints mIoU at every evaluation and a per-class
IoU table at the end; ``<output-dir>/metrics.json`` holds the numbers and the time per step.
"""

from __future__ import annotations

import argparse
import sys

from fdconv_zoo.training.cli_args import add_loader_args, add_optimisation_args, add_run_args, add_weights_args
from fdconv_zoo.training.errors import run_cli
from fdconv_zoo.training.segmentation import SegmentationConfig, finetune_segmentation


def build_parser() -> argparse.ArgumentParser:
    d = SegmentationConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=d.model, help="backbone (timm/fdconv_zoo name, default: %(default)s)")
    g.add_argument("--vanilla-twin", action="store_true",
                   help="use the plain timm network the FDConv model was built from (resnet18_fdconv -> resnet18)")
    add_weights_args(g)
    g.add_argument("--head", choices=["uper", "fpn"], default=d.head, help="PPM+FPN (UPerNet-style) or plain FPN")
    g.add_argument("--head-channels", type=int, default=d.head_channels)
    g.add_argument("--out-indices", type=int, nargs="+", default=list(d.out_indices),
                   help="backbone feature taps (default: the last four)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="CamVid-layout folder: train.txt/val.txt of 'image label' pairs, 8-bit class-id PNG labels")
    g.add_argument("--dataset", default=None, help="Hub dataset id (e.g. scene_parse_150) or a local dataset dir")
    g.add_argument("--dataset-config", default=None)
    g.add_argument("--train-split", default=d.train_split)
    g.add_argument("--val-split", default=None, help="default: 'val' (folder) / 'validation' (Hub)")
    g.add_argument("--image-column", default=None)
    g.add_argument("--label-column", default=None)
    g.add_argument("--num-classes", type=int, default=None, help="default: from class_stats.json/classes.txt/preset")
    g.add_argument("--ignore-index", type=int, default=None, help="default: the folder's void id, else 255")
    g.add_argument("--reduce-labels", action=argparse.BooleanOptionalAction, default=None,
                   help="Hub sets: id 0 -> ignore, ids - 1 (ADE20K convention; preset for scene_parse_150)")
    g.add_argument("--crop-size", type=int, default=d.crop_size)
    g.add_argument("--base-size", type=int, default=None, help="rescale the shorter side to this before scaling")
    g.add_argument("--scale-range", type=float, nargs=2, default=list(d.scale_range), metavar=("MIN", "MAX"))
    g.add_argument("--eval-mode", choices=["whole", "slide"], default=d.eval_mode)
    add_loader_args(g, d)
    g = p.add_argument_group("optimisation")
    add_optimisation_args(g, d)
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps")
    g.add_argument("--head-lr-mult", type=float, default=None,
                   help="head LR multiplier (default: 10 with pretrained/--init-from weights, else 1)")
    g.add_argument("--overfit-batch", action="store_true",
                   help="debug: train on one fixed batch and crop (the loss must fall)")
    g = p.add_argument_group("run")
    add_run_args(g, d, eval_every_help="steps (default: 0 = at the end only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = SegmentationConfig(**dict(vars(args), scale_range=tuple(args.scale_range),
                                    out_indices=tuple(args.out_indices)))
    return run_cli(lambda: finetune_segmentation(cfg))


if __name__ == "__main__":
    sys.exit(main())
