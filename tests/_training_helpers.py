"""Helpers for the training-script tests: real 2-process launches, in-process script calls, shared data."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
CPU_2PROC = SCRIPTS / "configs" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp / "hf_datasets"),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TQDM_MININTERVAL="5")
    return env


def launch(script: str, args: list[str], tmp: Path, *, timeout: int = 300) -> subprocess.CompletedProcess:
    """``accelerate launch`` with two real CPU processes (gloo) via ``scripts/configs/cpu_2proc.yaml``.

    ``accelerate launch --cpu --num_processes 2`` starts a single process in accelerate 1.x
    (its multi-CPU launcher needs mpirun); the config uses the torchrun launcher and
    ``ACCELERATE_USE_CPU=1`` makes each process a CPU rank of a 2-process gloo group.
    """
    env = offline_env(tmp)
    env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
           "--num_processes", "2", "--main_process_port", str(free_port()), str(SCRIPTS / script), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module (its ``main(argv)`` runs in this process)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_accelerate() -> None:
    """Forget accelerate's process-wide singletons between in-process runs."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def state_dict_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
