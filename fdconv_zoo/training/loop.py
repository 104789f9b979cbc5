"""The training loop both scripts share: Accelerate setup, steps, logging, evaluation, checkpoints, resume.

Everything distributed is Accelerate's (``prepare``, ``accumulate``, ``backward``,
``save_state``/``load_state``, ``skip_first_batches``, ``gather_for_metrics``, trackers);
this module only orders the calls. A *step* is one optimizer step (``grad_accum``
micro-batches per process). Epoch ``e`` consumes exactly ``steps_per_epoch * grad_accum``
micro-batches in the order :class:`~fdconv_zoo.training.data.ResumableSampler` gives for
``e``, so a run resumed at step ``k`` sees the same batches, augmentations and random draws
as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers.dynamic_schedules import anneal_dynamic_layers, dynamic_layers
from .checkpoint import read_trainer_state, save_checkpoint
from .errors import InputError

__all__ = ["LoopSettings", "TrainState", "fit", "make_accelerator", "make_loader", "tracker_config"]


@dataclass
class LoopSettings:
    """What :func:`fit` needs besides the model: budget, cadence, output place."""

    output_dir: Path
    max_steps: int
    steps_per_epoch: int
    grad_accum: int = 1
    clip_grad: float = 0.0
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    eval_every: int = 0
    log_every: int = 10
    desc: str = "train"
    crash_at_step: int | None = None  # tests: os._exit right after this step (and its checkpoint)

    @classmethod
    def for_run(cls, cfg: Any, output_dir: Path, *, max_steps: int, steps_per_epoch: int, eval_every: int,
                desc: str) -> LoopSettings:
        """The settings a script's :class:`~fdconv_zoo.training.run_setup.RunConfig` flags give, plus its budget."""
        return cls(output_dir=output_dir, max_steps=max_steps, steps_per_epoch=steps_per_epoch,
                   grad_accum=cfg.grad_accum, clip_grad=cfg.clip_grad, checkpoint_every=cfg.checkpoint_every,
                   keep_checkpoints=cfg.keep_checkpoints, eval_every=eval_every, log_every=cfg.log_every, desc=desc,
                   crash_at_step=cfg.crash_at_step)


class TrainState:
    """The loop's own resumable state, saved with ``register_for_checkpointing``."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])


def make_accelerator(output_dir: str | Path, *, mixed_precision: str | None = None, grad_accum: int = 1,
                     report_to: str | None = "tensorboard"):
    """An ``Accelerator`` logging under ``<output_dir>/logs`` (TensorBoard by default; ``'none'`` for no tracker)."""
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    output_dir = Path(output_dir)
    log_with = None if report_to in (None, "", "none") else report_to.split(",")
    if log_with == ["tensorboard"]:
        from accelerate.utils import is_tensorboard_available

        if not is_tensorboard_available():  # the default tracker must not stop a run: log to files only
            warnings.warn("tensorboard is not installed (pip install tensorboard): no TensorBoard logs, "
                          "train_log.jsonl only", stacklevel=2)
            log_with = None
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"))
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=grad_accum, sync_with_dataloader=False),
        log_with=log_with,
        project_config=project,
    )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and accelerator.num_processes == 1:  # N ranks that do not know each other would race on files
        raise InputError(f"{world} ranks were launched but each runs alone (no GPU, CPU not requested): set "
                         "ACCELERATE_USE_CPU=1 for multi-process CPU training (see scripts/configs/cpu_2proc.yaml)")
    return accelerator


def tracker_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a run config to the scalar types TensorBoard's hparams accept."""
    out = {}
    for k, v in config.items():
        if isinstance(v, (bool, int, float, str)):
            out[k] = v
        else:
            out[k] = json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else str(v)
    return out


def make_loader(dataset: Any, *, batch_size: int, sampler: Any = None, num_workers: int = 0, drop_last: bool = False,
                collate_fn: Callable | None = None, seed: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader with its own generator: creating an iterator never draws from the global torch RNG."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=drop_last,
        collate_fn=collate_fn, generator=torch.Generator().manual_seed(seed), persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def _scalar_logs(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Mapping):
            out.update(_scalar_logs(f"{prefix}{k}/", v))
        elif isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            out[f"{prefix}{k}"] = float(v)
    return out


def _append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def fit(accelerator: Any, model: nn.Module, optimizer: Any, scheduler: Any, train_loader: Any, settings: LoopSettings,
        *, loss_fn: Callable[[nn.Module, Any], torch.Tensor], evaluate: Callable[[], dict] | None = None,
        ema: nn.Module | None = None, resume: Path | None = None,
        checkpoint_state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` (already ``accelerator.prepare``-d with ``optimizer`` and ``train_loader``) to ``max_steps``.

    ``loss_fn(model, batch)`` returns the mean loss of a micro-batch. ``evaluate()`` runs every
    ``eval_every`` steps and at the end. Returns ``{'history', 'final', 'sec_per_step', ...}``;
    the main process also writes ``train_log.jsonl`` under ``output_dir``.
    """
    from tqdm.auto import tqdm

    s = settings
    if s.steps_per_epoch < 1:
        raise InputError(
            "the training set gives no full batch: fewer samples than --batch-size x processes x --grad-accum"
        )
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    if resume is not None:
        meta = read_trainer_state(resume)
        accelerator.load_state(str(resume))
        accelerator.print(f"resumed from {resume} at step {state.step} (saved step {meta.get('step')})")
    output_dir = Path(s.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "train_log.jsonl"
    step = state.step
    epoch, done_in_epoch = divmod(step, s.steps_per_epoch)
    micro_per_epoch = s.steps_per_epoch * s.grad_accum
    history: list[dict[str, Any]] = []
    step_times: list[float] = []
    last_eval: dict[str, Any] | None = None
    saved_at = -1
    bar = tqdm(total=s.max_steps, initial=step, desc=s.desc, dynamic_ncols=True,
               disable=not accelerator.is_local_main_process)
    model.train()
    net = accelerator.unwrap_model(model)
    anneal = bool(dynamic_layers(net))  # DY-Conv/ODConv/KW schedules; looked up once, not every step
    loss_sum = torch.zeros((), device=accelerator.device)
    loss_count = 0
    while step < s.max_steps:
        skip = done_in_epoch * s.grad_accum
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        train_loader.set_epoch(epoch)
        if loader is not train_loader and hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        micro = skip
        tick = time.perf_counter()
        for batch in loader:
            if anneal:
                anneal_dynamic_layers(net, step / s.steps_per_epoch)
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and s.clip_grad > 0:
                    accelerator.clip_grad_norm_(model.parameters(), s.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            loss_sum += loss.detach().float()
            loss_count += 1
            if not accelerator.sync_gradients:
                continue
            lr = optimizer.param_groups[0]["lr"]  # the LR this step used
            scheduler.step()
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=step)
            step += 1
            state.step = step
            step_times.append(time.perf_counter() - tick)
            bar.update(1)
            if step % s.log_every == 0 or step == s.max_steps or step == 1:
                mean_loss = accelerator.reduce(loss_sum / max(loss_count, 1), reduction="mean").item()
                record = {"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr, "sec_per_step": step_times[-1]}
                history.append(record)
                accelerator.log({"train/loss": mean_loss, "train/lr": lr, "train/sec_per_step": step_times[-1]},
                                step=step)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                if accelerator.is_main_process:
                    _append_jsonl(log_path, record)
                loss_sum.zero_()
                loss_count = 0
            if evaluate is not None and s.eval_every and step % s.eval_every == 0 and step < s.max_steps:
                last_eval = _run_eval(accelerator, evaluate, step, log_path)
                model.train()
            if s.checkpoint_every and step % s.checkpoint_every == 0:
                save_checkpoint(accelerator, output_dir, step, state=dict(checkpoint_state or {}, epoch=epoch),
                                keep=s.keep_checkpoints)
                saved_at = step
            if s.crash_at_step is not None and step == s.crash_at_step:
                accelerator.print(f"simulated crash after step {step}")
                bar.close()
                os._exit(3)
            if step >= s.max_steps or micro >= micro_per_epoch:
                break
            tick = time.perf_counter()  # after evaluation/checkpointing: they do not count as step time
        epoch += 1
        done_in_epoch = 0
    bar.close()
    final = _run_eval(accelerator, evaluate, step, log_path) if evaluate is not None else last_eval
    if s.checkpoint_every and saved_at != step:
        save_checkpoint(accelerator, output_dir, step, state=dict(checkpoint_state or {}, epoch=epoch),
                        keep=s.keep_checkpoints)
    timed = step_times[1:] if len(step_times) > 1 else step_times  # the first step pays one-off warm-up costs
    return {
        "history": history,
        "final": final,
        "steps": step,
        "sec_per_step": sum(timed) / len(timed) if timed else float("nan"),
        "sec_per_step_median": float(torch.tensor(timed).median()) if timed else float("nan"),
        "timed_steps": len(timed),
    }


def _run_eval(accelerator: Any, evaluate: Callable[[], dict], step: int, log_path: Path) -> dict:
    start = time.perf_counter()
    metrics = evaluate()
    metrics = dict(metrics, eval_seconds=time.perf_counter() - start)
    accelerator.log(_scalar_logs("val/", metrics), step=step)
    if accelerator.is_main_process:
        _append_jsonl(log_path, {"step": step, "eval": metrics})
    return metrics
