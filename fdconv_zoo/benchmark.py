"""Time and peak memory of plain convs, FDConv and the reference formulation; whole-network ratios.

Peak memory is the process's resident-set high-water mark above its level before the run,
reset through ``/proc/self/clear_refs`` (Linux); it is None where that is unavailable.
"""

from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .convert import convert_to_fdconv
from .layers.fdconv import FDConv2d
from .reference import reference_forward

__all__ = ["Measurement", "measure", "RESNET50_LAYER_SHAPES", "layer_table", "network_table"]

# (name, in, out, k, stride, feature size) for ResNet-50's FDConv layers at 224x224.
RESNET50_LAYER_SHAPES = [
    ("layer1.1.conv2", 64, 64, 3, 1, 56),
    ("layer1.1.conv3", 64, 256, 1, 1, 56),
    ("layer2.1.conv2", 128, 128, 3, 1, 28),
    ("layer3.0.conv2", 256, 256, 3, 2, 28),
    ("layer3.1.conv1", 1024, 256, 1, 1, 14),
    ("layer4.1.conv2", 512, 512, 3, 1, 7),
    ("layer4.1.conv1", 2048, 512, 1, 1, 7),
    ("layer4.1.conv3", 512, 2048, 1, 1, 7),
]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Measurement:
    ms: float
    peak_mib: float | None


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Measurement:
    """Median wall time of ``fn`` and the peak resident memory it adds."""
    for _ in range(warmup):
        fn()
    gc.collect()
    base = _status_kib("VmRSS")
    ok = _reset_peak()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    peak = _status_kib("VmHWM") if ok else None
    times.sort()
    return Measurement(times[len(times) // 2], None if peak is None or base is None else max(peak - base, 0) / 1024)


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().square().mean().backward()
    return step


def _infer(model: Callable, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(x)
    return run


def layer_table(batch_size: int = 8, with_reference: bool = True, repeats: int = 3) -> list[dict]:
    """Per ResNet-50 layer shape: forward and forward+backward of Conv2d, FDConv2d, reference."""
    rows = []
    for name, cin, cout, k, stride, size in RESNET50_LAYER_SHAPES:
        conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        fd = FDConv2d.from_conv(conv)
        x = torch.randn(batch_size, cin, size, size)
        xg = x.clone().requires_grad_(True)
        row = {"layer": f"{name} {cin}->{cout} k{k} s{stride} @{size}"}
        for label, module in (("conv", conv), ("fdconv", fd)):
            row[f"{label}_fwd"] = measure(_infer(module, x), repeats)
            row[f"{label}_train"] = measure(lambda m=module, t=xg: m(t).square().mean().backward(), repeats)
        if with_reference:
            ref = copy.deepcopy(fd)
            row["reference_fwd"] = measure(_infer(lambda t, r=ref: reference_forward(r, t), x), 1)
            row["reference_train"] = measure(
                lambda r=ref, t=xg: reference_forward(r, t).square().mean().backward(), 1)
        rows.append(row)
    return rows


def network_table(models: list[str], batch_size: int = 8, image_size: int = 224, repeats: int = 3) -> list[dict]:
    """Whole timm networks vs their FDConv conversion: inference at batch 1 and N, training step, peak memory."""
    import timm

    placements = {"resnet": dict(include=["layer*"], exclude=["*downsample*"]),
                  "convnext": dict(include=["stages.*.mlp.fc1"]), "swin": dict(include=["layers.*.mlp.fc1"])}
    rows = []
    for name in models:
        family = next(f for f in placements if name.startswith(f))
        plain = timm.create_model(name)
        fd = copy.deepcopy(plain)
        convert_to_fdconv(fd, **placements[family])
        x = torch.randn(batch_size, 3, image_size, image_size)
        for label, model in (("plain", plain), ("fdconv", fd)):
            model.eval()
            row = {"model": name if label == "plain" else f"{name} + FDConv"}
            row["infer_b1"] = measure(_infer(model, x[:1]), repeats)
            row[f"infer_b{batch_size}"] = measure(_infer(model, x), repeats)
            model.train()
            row[f"train_b{batch_size}"] = measure(_train_step(model, x), repeats)
            rows.append(row)
    return rows


def format_layer_table(rows: list[dict]) -> str:
    cols = [c for c in ("conv", "fdconv", "reference") if f"{c}_fwd" in rows[0]]
    head = "| layer (batch 8) | " + " | ".join(f"{c} fwd ms | {c} fwd+bwd ms | {c} fwd+bwd peak MiB" for c in cols)
    lines = [head + " |", "|" + "---|" * (1 + 3 * len(cols))]
    for r in rows:
        cells = []
        for c in cols:
            f, t = r[f"{c}_fwd"], r[f"{c}_train"]
            cells += [f"{f.ms:.1f}", f"{t.ms:.1f}", "n/a" if t.peak_mib is None else f"{t.peak_mib:.0f}"]
        lines.append(f"| {r['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_network_table(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "model"]
    lines = ["| model | " + " | ".join(f"{k} ms" for k in keys) + f" | {keys[-1]} peak MiB |",
             "|" + "---|" * (len(keys) + 2)]
    for plain, fd in zip(rows[::2], rows[1::2], strict=True):
        for r in (plain, fd):
            peak = r[keys[-1]].peak_mib
            lines.append(f"| {r['model']} | " + " | ".join(f"{r[k].ms:.0f}" for k in keys)
                         + f" | {'n/a' if peak is None else f'{peak:.0f}'} |")
        ratio_peak = ("n/a" if not (fd[keys[-1]].peak_mib and plain[keys[-1]].peak_mib)
                      else f"{fd[keys[-1]].peak_mib / plain[keys[-1]].peak_mib:.2f}x")
        lines.append("| ratio | " + " | ".join(f"{fd[k].ms / plain[k].ms:.2f}x" for k in keys) + f" | {ratio_peak} |")
    return "\n".join(lines)
