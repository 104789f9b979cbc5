"""Time and memory of plain timm networks vs their ``*_fdconv`` twins, per ResNet-50 layer, and per FDConv stage.

Whole-network numbers come from one fresh subprocess per (model, measurement). Peak memory is
``getrusage(RUSAGE_SELF).ru_maxrss`` at the end minus its value after the model and input are
built: the kernel's exact resident high-water mark (no sampling, so short-lived peaks inside a
step count; it includes allocator caches and library workspaces, which is what a user pays). A
fresh process per measurement keeps one run's allocator state and high-water mark from leaking
into the next, which an in-process RSS reading after warm-up cannot do. Plain and FDConv runs
are interleaved so machine load affects both; every time is a median of ``repeats`` steps.

Layer-level memory is the bytes a forward allocates and leaves alive besides its output: what autograd
keeps for backward beyond the input and weights (:func:`live_bytes_after`, from the profiler's allocation
records; a plain convolution keeps nothing more). Exact and deterministic, unlike
process RSS for sub-100 MB tensors.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "RESNET50_LAYER_SHAPES", "DEFAULT_MODELS", "AMP_DTYPES", "Measurement", "check_device", "measure_network",
    "network_table", "layer_table", "live_bytes_after", "stage_profile", "train_stage_profile", "format_network_table",
    "format_layer_table", "format_stage_profile", "fft_floor", "format_fft_floor",
]

DEFAULT_MODELS = ["resnet50", "convnext_tiny", "swin_tiny_patch4_window7_224"]

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


@dataclass
class Measurement:
    ms: float
    peak_mib: float | None = None


def _times_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    return sorted(_times_ms(fn, repeats, warmup))[repeats // 2]


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


#: ``--amp`` names: the autocast dtype every measured forward runs under (training and inference alike).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _peak_reader(device: torch.device) -> Callable[[], float]:
    """MiB above the level at this call: ru_maxrss on CPU, the caching allocator's peak on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        return lambda: (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    base = _maxrss_mib()
    return lambda: _maxrss_mib() - base


def _train_step(model: torch.nn.Module, x: torch.Tensor, autocast: torch.autocast | None = None) -> None:
    """The step every training measurement times: forward (under ``autocast``), a scalar loss, backward."""
    model.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        out = model(x)
    out.float().square().mean().backward()


def _worker(spec: dict) -> dict:
    """One measurement in this (fresh) process: ``spec`` = model, mode ('train'|'infer'), batch, size, repeats,
    and optionally threads, device, amp and model kwargs."""
    import timm

    import fdconv_zoo  # noqa: F401  (registers *_fdconv)

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec.get("device") or "cpu")
    amp = spec.get("amp")
    torch.manual_seed(0)
    model = timm.create_model(spec["model"], **spec.get("kwargs", {})).to(device)
    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"]).to(device)
    autocast = torch.autocast(device.type, dtype=AMP_DTYPES.get(amp, torch.bfloat16), enabled=amp is not None)
    # GPU work is asynchronous: a step ends when the device is done
    finish = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if spec["mode"] == "train":
        model.train()

        def step() -> None:
            _train_step(model, x, autocast)
            finish()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                model(x)
            finish()
    peak = _peak_reader(device)
    ms = _median_ms(step, spec["repeats"])
    return {"ms": ms, "peak_mib": peak()}


def check_device(device: str) -> None:
    """A clear error before any worker starts when ``device`` cannot run here."""
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: this torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                         "run on a GPU machine or use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: the bench measures 'cpu' or 'cuda' only")


def measure_network(model: str, mode: str, batch: int, size: int = 224, repeats: int = 3,
                    threads: int | None = None, *, device: str = "cpu", amp: str | None = None,
                    **kwargs) -> Measurement:
    """Run one whole-network measurement in a fresh Python process (see the module docstring).

    ``device`` 'cpu' or 'cuda[:N]' (peak: ru_maxrss on CPU, ``torch.cuda.max_memory_allocated`` on CUDA,
    both above the level after building); ``amp`` 'bf16'/'fp16' runs every forward under autocast;
    ``kwargs`` go to ``timm.create_model``.
    """
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
    check_device(device)
    spec = dict(model=model, mode=mode, batch=batch, size=size, repeats=repeats, threads=threads, kwargs=kwargs,
                device=device, amp=amp)
    out = subprocess.run([sys.executable, "-m", "fdconv_zoo.tools.benchmark", json.dumps(spec)], capture_output=True,
                         text=True, env=os.environ.copy(), check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {spec}:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement(result["ms"], result["peak_mib"])


def network_table(models: list[str], batch_size: int = 8, image_size: int = 224, repeats: int = 3,
                  threads: int | None = None, log: Callable[[str], None] | None = None,
                  rounds: int = 1, device: str = "cpu", amp: str | None = None,
                  fd_kwargs: dict | None = None) -> list[dict]:
    """Per model: ``{model, plain: {...}, fdconv: {...}, ratios: {...}}`` for train bN, infer b1 and infer bN.

    With ``rounds > 1`` the whole table is measured that many times, one full pass after another, and
    plain/FD go in alternating order (ABBA) within each cell. ``plain``/``fdconv`` hold the medians
    over rounds; ``ratios`` holds each round's FD / plain ratio, taken from measurements made back to
    back, so that a slow stretch of a shared machine lands in one round's numerator and denominator
    alike rather than in one of them. ``device`` and ``amp`` as in :func:`measure_network`; ``fd_kwargs``
    go to the ``*_fdconv`` models only (e.g. ``{"fd_recompute_kernel": True}``).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    modes = [("train", "train", batch_size), ("infer_b1", "infer", 1), (f"infer_b{batch_size}", "infer", batch_size)]
    runs: dict[tuple[str, str, str], list[Measurement]] = {}
    for round_index in range(rounds):
        if log and rounds > 1:
            log(f"  round {round_index + 1} of {rounds}")
        for name in models:
            for key, mode, batch in modes:
                pair = [("plain", name), ("fdconv", f"{name}_fdconv")]
                for label, arch in pair if round_index % 2 == 0 else pair[::-1]:
                    extra = (fd_kwargs or {}) if label == "fdconv" else {}
                    m = measure_network(arch, mode, batch, image_size, repeats, threads, device=device, amp=amp,
                                        **extra)
                    runs.setdefault((name, label, key), []).append(m)
                    if log:
                        log(f"  {arch} {key}: {m.ms:.0f} ms, peak +{m.peak_mib:.0f} MiB")
    rows = []
    for name in models:
        row: dict = {"model": name, "plain": {}, "fdconv": {}, "ratios": {}}
        for key, _, _ in modes:
            for label in ("plain", "fdconv"):
                found = runs[(name, label, key)]
                row[label][key] = Measurement(_median([m.ms for m in found]),
                                              _median([m.peak_mib for m in found if m.peak_mib is not None]))
            row["ratios"][key] = [f.ms / p.ms for p, f in zip(runs[(name, "plain", key)], runs[(name, "fdconv", key)],
                                                              strict=True)]
        rows.append(row)
    return rows


def _median(values: list[float]) -> float | None:
    """``statistics.median`` (the mean of the two middle values for an even count), None for no values."""
    return statistics.median(values) if values else None


def format_network_table(rows: list[dict], batch_size: int = 8) -> str:
    """Times, images/s and peaks (medians over rounds), one ratio row per model, and with several rounds
    each time ratio as the median of the per-round ratios, with every round's value listed below."""
    n = batch_size
    keys = ["train", "infer_b1", f"infer_b{n}"]
    head = (f"| model | train b{n} ms | train img/s | infer b1 ms | infer b{n} ms | infer b{n} img/s "
            f"| train b{n} peak MiB | infer b{n} peak MiB |")
    lines = [head, "|" + "---|" * 8]
    per_round = []
    for row in rows:
        cells = {}
        for label in ("plain", "fdconv"):
            r = row[label]
            cells[label] = [r["train"].ms, n * 1e3 / r["train"].ms, r["infer_b1"].ms, r[f"infer_b{n}"].ms,
                            n * 1e3 / r[f"infer_b{n}"].ms, r["train"].peak_mib, r[f"infer_b{n}"].peak_mib]
            name = row["model"] if label == "plain" else f"{row['model']}_fdconv"
            lines.append(f"| {name} | " + " | ".join(f"{v:.0f}" if i not in (1, 4) else f"{v:.1f}"
                                                      for i, v in enumerate(cells[label])) + " |")
        ratios = [f / p if p else float("nan") for f, p in zip(cells["fdconv"], cells["plain"], strict=True)]
        paired = row["ratios"]
        if len(paired["train"]) > 1:   # several rounds: time ratios paired within each round
            ratios[0], ratios[2], ratios[3] = (_median(paired[key]) for key in keys)
            ratios[1], ratios[4] = 1 / ratios[0], 1 / ratios[3]
            per_round.append(f"- {row['model']}: " + "; ".join(
                f"{key} " + " / ".join(f"{v:.2f}x" for v in paired[key]) for key in keys))
        lines.append("| **ratio FD / plain** | " + " | ".join(f"**{v:.2f}x**" for v in ratios) + " |")
    if per_round:
        lines += ["", "Time ratios above: median over rounds of each round's FD / plain. Every round:"] + per_round
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Layer table


def live_bytes_after(fn: Callable[[], object]) -> int:
    """CPU bytes allocated while ``fn`` runs and still alive when it returns: its result and what autograd keeps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out   # after the profiler stopped: its allocations stay counted as live
    return sum(e.self_cpu_memory_usage for e in prof.events())


def _kept_for_backward_mib(fn: Callable[[], torch.Tensor]) -> float:
    """:func:`live_bytes_after` minus the output's own bytes, in MiB."""
    sizes: list[int] = []

    def run() -> torch.Tensor:
        out = fn()
        sizes.append(out.untyped_storage().nbytes())
        return out

    return (live_bytes_after(run) - sizes[0]) / 2**20


def layer_table(batch_size: int = 8, with_reference: bool = True, repeats: int = 3) -> list[dict]:
    """Per ResNet-50 layer shape: forward, forward+backward, kept-for-backward MiB of Conv2d, FDConv2d, reference."""
    from ..layers.fdconv import FDConv2d

    rows = []
    for name, cin, cout, k, stride, size in RESNET50_LAYER_SHAPES:
        torch.manual_seed(0)
        conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        fd = FDConv2d.from_conv(conv).train()
        x = torch.randn(batch_size, cin, size, size)
        xg = x.clone().requires_grad_(True)
        row: dict = {"layer": f"{name} {cin}->{cout} k{k} s{stride} @{size}"}
        modules: list[tuple[str, Callable, int]] = [("conv", conv, repeats), ("fdconv", fd, repeats)]
        if with_reference:
            ref = copy.deepcopy(fd)
            ref.reference = True          # the plain formulation of the layer (layers/fd_reference.py)
            modules.append(("reference", ref, 1))
        for label, fn, reps in modules:
            def infer(f=fn, t=x) -> object:
                with torch.inference_mode():
                    return f(t)

            row[f"{label}_fwd"] = _median_ms(infer, reps)
            row[f"{label}_train"] = _median_ms(lambda f=fn, t=xg: f(t).square().mean().backward(), reps)
            row[f"{label}_saved"] = _kept_for_backward_mib(lambda f=fn, t=xg: f(t))
        rows.append(row)
    return rows


def format_layer_table(rows: list[dict], batch_size: int = 8) -> str:
    cols = [c for c in ("conv", "fdconv", "reference") if f"{c}_fwd" in rows[0]]
    head = f"| layer (batch {batch_size}) | " + " | ".join(
        f"{c} fwd ms | {c} fwd+bwd ms | {c} saved MiB" for c in cols)
    lines = [head + " |", "|" + "---|" * (1 + 3 * len(cols))]
    for r in rows:
        cells = []
        for c in cols:
            cells += [f"{r[f'{c}_fwd']:.1f}", f"{r[f'{c}_train']:.1f}", f"{r[f'{c}_saved']:.1f}"]
        lines.append(f"| {r['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Per-stage profile


def stage_profile(model_name: str = "resnet50_fdconv", batch_size: int = 8, image_size: int = 224,
                  repeats: int = 3) -> dict[str, float]:
    """Inference time of a whole ``*_fdconv`` network split into FDConv stages (ms per forward, median-free mean).

    Wraps the stage functions with timers (no profiler overhead on the rest): KSM (attention
    heads and local windows), FDW kernel build (gain map, inverse FFTs, local gate), FBM, the
    per-sample convolution, and everything else (the rest of the network, including plain layers).
    """
    import timm

    import fdconv_zoo  # noqa: F401

    from ..layers import fd_base, fdconv
    from ..layers.fbm import FrequencyBandModulation

    spent = {"KSM": 0.0, "FDW kernel build (irfft2 + local gate)": 0.0, "FBM": 0.0, "per-sample conv": 0.0}
    originals = []

    def timed(owner, attr: str, key: str) -> None:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            spent[key] += (time.perf_counter() - start) * 1e3
            return out

        setattr(owner, attr, wrapper)

    model = timm.create_model(model_name).eval()
    x = torch.randn(batch_size, 3, image_size, image_size)
    timed(fd_base, "modulated_kernels", "FDW kernel build (irfft2 + local gate)")
    timed(fd_base.FDKernelBase, "kernel_factors", "KSM")
    timed(FrequencyBandModulation, "forward", "FBM")
    timed(fdconv.FDConv2d, "_convolve", "per-sample conv")
    try:
        with torch.inference_mode():
            model(x)
            for key in spent:
                spent[key] = 0.0
            start = time.perf_counter()
            for _ in range(repeats):
                model(x)
            total = (time.perf_counter() - start) * 1e3
    finally:
        for owner, attr, original in reversed(originals):
            setattr(owner, attr, original)
    out = {key: value / repeats for key, value in spent.items()}
    out["rest of the network"] = total / repeats - sum(out.values())
    out["total"] = total / repeats
    return out


#: Training-step stages: the profiler events of FDConv's custom autograd Functions, forward and backward.
_TRAIN_STAGES = {
    "FDW kernel build, forward": ("_ModulatedKernels",),
    "FDW kernel build, backward": ("autograd::engine::evaluate_function: _ModulatedKernelsBackward",),
    "per-sample GEMMs, forward": ("_UnfoldedConv", "_ScaledKernelGemm"),
    "per-sample GEMMs, backward": ("autograd::engine::evaluate_function: _UnfoldedConvBackward",
                                   "autograd::engine::evaluate_function: _ScaledKernelGemmBackward"),
    "FBM, forward": ("_BandModulation",),
    "FBM, backward": ("autograd::engine::evaluate_function: _BandModulationBackward",),
}


def train_stage_profile(model_name: str = "resnet50_fdconv", batch_size: int = 8,
                        image_size: int = 224) -> dict[str, float]:
    """One training step (forward + backward) of a ``*_fdconv`` network split into FDConv stages, in ms.

    Backward runs inside autograd's engine, where timers around Python functions see nothing, so this
    reads one profiled step (``torch.profiler``) after two warm-up steps: the kernel builder's and the
    per-sample GEMMs' and FBM's custom Functions, forward and backward, counted where they are outermost.
    The rest is the plain layers, KSM, the early layers' grouped convolutions and autograd itself.
    """
    import timm
    from torch.profiler import profile

    import fdconv_zoo  # noqa: F401

    model = timm.create_model(model_name).train()
    x = torch.randn(batch_size, 3, image_size, image_size)
    _train_step(model, x)
    _train_step(model, x)
    with profile() as prof:
        _train_step(model, x)
    names = {name: key for key, group in _TRAIN_STAGES.items() for name in group}
    out = {key: 0.0 for key in _TRAIN_STAGES}
    total = 0.0
    for event in prof.events():
        parent, nested = event.cpu_parent, False
        while parent is not None and not nested:
            nested, parent = parent.name in names, parent.cpu_parent
        if event.cpu_parent is None:
            total += event.cpu_time_total / 1e3
        if event.name in names and not nested:
            out[names[event.name]] += event.cpu_time_total / 1e3
    out["rest (plain layers, KSM, grouped convolutions, autograd)"] = (
        total - sum(out.values()))
    out["total"] = total
    return out


def format_stage_profile(profile: dict[str, float], per: str = "forward") -> str:
    total = profile["total"]
    lines = [f"| stage | ms per {per} | share |", "|---|---|---|"]
    for key, value in profile.items():
        lines.append(f"| {key} | {value:.0f} | {100 * value / total:.0f}% |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The FFT floor


def fft_floor(model_name: str = "resnet50_fdconv", repeats: int = 5) -> list[dict]:
    """Per sample, the time of nothing but the two 1-D inverse FFTs of every FD layer's kernel.

    One inverse FFT of kernel size per sample and layer is what FDW cannot avoid (the attention
    scales frequency groups before the transform), so the sum
    is a lower bound on what a ``*_fdconv`` forward adds per sample, however the rest is fused. Each
    shape is timed with the layers' own transform (``kernel_builder.kernel_from_spectrum``); minimum of ``repeats``.
    Returns one row per distinct ``(rows, cols)`` with its layer count.
    """
    import timm

    import fdconv_zoo  # noqa: F401

    from ..layers._ops.kernel_builder import kernel_from_spectrum
    from ..layers.fd_base import FDKernelBase

    model = timm.create_model(model_name)
    shapes: dict[tuple[int, int], int] = {}
    for m in model.modules():
        if isinstance(m, FDKernelBase):
            key = (m.dft_weight.shape[1], m.in_channels * m._k)
            shapes[key] = shapes.get(key, 0) + 1
    rows_out = []
    with torch.inference_mode():
        for (rows, cols), count in sorted(shapes.items(), key=lambda kv: -kv[0][0] * kv[0][1]):
            spectrum = torch.randn(1, rows, cols // 2 + 1, dtype=torch.complex64)

            def inverse(s=spectrum, n=cols) -> object:
                return kernel_from_spectrum(s, n)

            best = min(_times_ms(inverse, repeats))
            rows_out.append({"rows": rows, "cols": cols, "layers": count, "ms": best, "total_ms": best * count})
    return rows_out


def format_fft_floor(rows: list[dict], plain_ms: float | None = None) -> str:
    lines = ["| kernel (O*k x I*k) | layers | inverse FFTs, ms per sample | x layers |", "|---|---|---|---|"]
    lines += [f"| {r['rows']} x {r['cols']} | {r['layers']} | {r['ms']:.2f} | {r['total_ms']:.1f} |" for r in rows]
    total = sum(r["total_ms"] for r in rows)
    lines.append(f"| **all FD layers** | {sum(r['layers'] for r in rows)} | | **{total:.1f}** |")
    if plain_ms:
        lines.append(f"\nPlain network at batch 1: {plain_ms:.0f} ms, so FFTs alone put FD inference at >= "
                     f"{(plain_ms + total) / plain_ms:.2f}x plain at any batch size.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
