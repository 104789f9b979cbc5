"""Crash-safe ``accelerator.save_state`` checkpoints and resume from the newest complete one.

Layout: ``<output-dir>/checkpoints/step_000001234/`` (accelerate's files plus
``trainer_state.json``). A checkpoint is written into ``.tmp-step_.../`` and renamed into
place only after every process finished writing and ``trainer_state.json`` is on disk, so a
crash at any moment leaves either the previous checkpoints or the new complete one -- never
a half-written directory that ``--resume`` would pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["CHECKPOINT_DIR", "find_latest_checkpoint", "list_checkpoints", "read_trainer_state",
           "resolve_resume", "save_checkpoint"]

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` (a ``checkpoints/`` folder), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (an output dir or its ``checkpoints/``), or None."""
    root = Path(root)
    if (root / CHECKPOINT_DIR).is_dir():
        root = root / CHECKPOINT_DIR
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"checkpoint '{checkpoint}' is incomplete or corrupt ({err}); "
                         "resume from another one") from None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``--resume`` -> checkpoint dir. ``'latest'``: newest in ``output_dir`` or None; a path must exist."""
    if not resume:
        return None
    if resume == "latest":
        return find_latest_checkpoint(Path(output_dir))
    path = Path(resume)
    if (path / STATE_FILE).is_file():
        return path
    latest = find_latest_checkpoint(path) if path.is_dir() else None
    if latest is None:
        raise InputError(f"--resume '{resume}': no complete checkpoint there (expected a '{CHECKPOINT_DIR}/step_N' "
                         f"directory with {STATE_FILE}, or an output directory holding them)")
    return latest


def save_checkpoint(accelerator: Any, output_dir: str | Path, step: int, *, state: dict[str, Any] | None = None,
                    keep: int = 3) -> Path:
    """``accelerator.save_state`` into a temp dir, then an atomic rename; keeps the newest ``keep``.

    Every process must call it (``save_state`` writes per-process RNG files). Needs a file
    system shared by all processes, as accelerate's own checkpointing does.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp-step_{step:09d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step_*"):  # left by a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(dict(state or {}, step=step), indent=2, default=str))
        _fsync_dir(tmp)
        if final.exists():  # the same step saved twice (e.g. the last step is also a checkpoint step)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if keep > 0:
            for _, old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
