"""What both training scripts do before building data and model: check flags, find the resume point, start Accelerate.

Every check here runs before any data is read or any weight is built, so bad input costs seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import read_trainer_state, resolve_resume
from .errors import InputError
from .loop import make_accelerator
from .modeling import check_model_name, parse_model_kwargs

__all__ = ["RunConfig", "RunStart", "check_common_flags", "start_run"]


@dataclass
class RunConfig:
    """The flags both scripts share (see :mod:`fdconv_zoo.training.cli_args`); each task config extends it."""

    model: str = "resnet50_fdconv"
    data_dir: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    val_split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    num_classes: int | None = None
    max_val_samples: int | None = None
    num_workers: int = 4
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    clip_grad: float = 1.0
    grad_accum: int = 1
    mixed_precision: str | None = None
    model_kwargs: list[str] = field(default_factory=list)
    init_from: str | None = None
    pretrained: bool = False
    overfit_batch: bool = False
    output_dir: str = "outputs/run"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    resume: str | None = None
    eval_every: int | None = None
    log_every: int = 50
    report_to: str = "tensorboard"
    seed: int = 42
    crash_at_step: int | None = None


def check_common_flags(cfg: RunConfig, *, positive: Iterable[str], data_dir_kind: str) -> None:
    """Flags both configs share: one data source, positive counts, a positive LR, a known precision."""
    if bool(cfg.data_dir) == bool(cfg.dataset):
        raise InputError(f"give exactly one of --data-dir ({data_dir_kind}) or --dataset (a Hub dataset id)")
    for name in positive:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if cfg.lr <= 0:
        raise InputError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.mixed_precision not in (None, "no", "fp16", "bf16"):
        raise InputError(f"--mixed-precision must be no, fp16 or bf16, got {cfg.mixed_precision!r}")


@dataclass
class RunStart:
    accelerator: Any
    output_dir: Path
    resume: Path | None
    model_kwargs: dict[str, Any]


def start_run(cfg: RunConfig, model_name: str) -> RunStart:
    """Check the model name, find the checkpoint to resume (same model only), seed and start Accelerate."""
    from accelerate.utils import set_seed

    check_model_name(model_name)
    model_kwargs = parse_model_kwargs(cfg.model_kwargs)
    output_dir = Path(cfg.output_dir)
    resume = resolve_resume(cfg.resume, output_dir)
    if resume is not None:
        saved_model = read_trainer_state(resume).get("model")
        if saved_model and saved_model != model_name:
            raise InputError(f"--resume {resume} was trained with model '{saved_model}', not '{model_name}'")
    accelerator = make_accelerator(output_dir, mixed_precision=cfg.mixed_precision, grad_accum=cfg.grad_accum,
                                   report_to=cfg.report_to)
    set_seed(cfg.seed)
    if cfg.resume == "latest" and resume is None:
        accelerator.print(f"--resume: no checkpoint in {output_dir} yet, starting from step 0")
    return RunStart(accelerator, output_dir, resume, model_kwargs)
