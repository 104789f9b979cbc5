"""The command-line flags both training scripts share, declared once so they cannot drift apart."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_loader_args", "add_optimisation_args", "add_run_args", "add_weights_args"]


def add_weights_args(group: Any) -> None:
    """Where the starting weights come from, and extra ``create_model`` kwargs."""
    group.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                       help="extra create_model kwargs, e.g. fd_kernel_num=16 drop_rate=0.1 (JSON values)")
    group.add_argument("--init-from", default=None,
                       help="start from weights: a checkpoint file, an export folder (of train_classification.py), "
                            "a tag of this model (e.g. resnet50_fdconv.a1_in1k) or a timm/Hub tag of its vanilla twin "
                            "(function preserving)")
    group.add_argument("--pretrained", action="store_true", help="load the model's default pretrained weights (Hub)")


def add_loader_args(group: Any, defaults: Any) -> None:
    """How much of the validation split is read, and by how many loader workers."""
    group.add_argument("--max-val-samples", type=int, default=None, help="evaluate on the first N val images only")
    group.add_argument("--num-workers", type=int, default=defaults.num_workers, help="DataLoader workers per process")


def add_optimisation_args(group: Any, defaults: Any) -> None:
    """AdamW + cosine/warmup knobs, clipping, accumulation, precision."""
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process (default: %(default)s)")
    group.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak LR (default: %(default)s)")
    group.add_argument("--min-lr-ratio", type=float, default=defaults.min_lr_ratio,
                       help="cosine floor as a fraction of --lr")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                       help="decoupled; not applied to norms, biases and FDConv KSM/FBM heads")
    group.add_argument("--warmup-steps", type=int, default=None, help="linear warmup (default: 5%% of the steps)")
    group.add_argument("--clip-grad", type=float, default=defaults.clip_grad, help="max grad norm, 0 = off")
    group.add_argument("--grad-accum", type=int, default=defaults.grad_accum,
                       help="gradient accumulation micro-batches")
    group.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                       help="default: the accelerate config's")


def add_run_args(group: Any, defaults: Any, *, eval_every_help: str) -> None:
    """Output place, checkpoints and resume, logging cadence, seed."""
    group.add_argument("--output-dir", default=defaults.output_dir)
    group.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                       help="save a resumable checkpoint every N steps and at the end; 0 = none")
    group.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints)
    group.add_argument("--resume", nargs="?", const="latest", default=None,
                       help="continue from the newest checkpoint in --output-dir, or from the given one")
    group.add_argument("--eval-every", type=int, default=None, help=eval_every_help)
    group.add_argument("--log-every", type=int, default=defaults.log_every)
    group.add_argument("--report-to", default=defaults.report_to,
                       help="accelerate tracker(s), comma separated, or 'none'")
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--crash-at-step", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated crash
