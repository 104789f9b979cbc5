"""``fdconv-zoo bench``: plain timm vs ``*_fdconv`` networks, ResNet-50 layers, and where FDConv's time goes."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys

from ..tools.benchmark import AMP_DTYPES


def _count(text: str) -> int:
    """An argparse type: an int >= 1, so a bad count is a usage error, not a traceback mid-run."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time and peak memory: plain timm vs *_fdconv networks, layers, stage profile")
    p.add_argument("--models", nargs="*", default=None,
                   help="timm models (their *_fdconv twins are compared); default resnet50 convnext_tiny swin_tiny")
    p.add_argument("--batch-size", type=_count, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=_count, default=3, help="timed steps per measurement (median reported)")
    p.add_argument("--rounds", type=_count, default=1,
                   help="measure the network table this many times; ratios are medians of per-round ratios")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every worker (default: torch's)")
    p.add_argument("--skip-layers", action="store_true", help="leave out the per-layer table")
    p.add_argument("--skip-reference", action="store_true", help="leave out the slow reference formulation")
    p.add_argument("--tune-malloc", action="store_true",
                   help="raise glibc's mmap/trim thresholds for every measurement (fdconv_zoo.tools.cpu_tuning)")
    p.add_argument("--skip-profile", action="store_true", help="leave out the per-stage profile of resnet50_fdconv")
    p.add_argument("--device", default="cpu",
                   help="where the network table runs: cpu (default) or cuda[:N] (peak = CUDA allocator peak); "
                        "the profile, floor and layer tables are CPU measurements and are left out elsewhere")
    p.add_argument("--amp", choices=sorted(AMP_DTYPES), default=None,
                   help="run every forward of the network table under torch.autocast in this dtype")
    p.add_argument("--fd-recompute-kernel", action="store_true",
                   help="build the *_fdconv models with fd_recompute_kernel=True (kernels rebuilt in backward)")
    p.add_argument("--fd-reference", action="store_true",
                   help="build the *_fdconv models with fd_reference=True (the plain reference formulation)")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write everything printed to PATH as a Markdown page, headed by the command, the "
                        "versions, the machine and the method (e.g. docs/benchmarks.md)")
    p.set_defaults(func=run)


_METHOD = """Method: every cell is measured in a fresh subprocess (one model, one measurement), plain and FDConv
interleaved so that machine load affects both; a time is the median of the timed steps, peak memory is the
process's resident high-water mark above its level after building the model and input (on CUDA the
allocator's peak). With several rounds, each time ratio is the median of the per-round FD / plain ratios:
single cells drift by 10-50% on a shared machine, paired ratios much less."""


def _versions() -> str:
    import timm
    import torch

    return f"torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}"


def _markdown_page(lines: list[str]) -> str:
    command = "fdconv-zoo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "fdconv-zoo bench"
    head = ["# Benchmarks", "", f"Made by `{command}` ({_versions()}).", "", _METHOD, ""]
    tables = [line for line in lines if not line.startswith("  ")]     # not the per-cell progress lines
    return "\n".join(head + tables) + "\n"


def _machine() -> str:
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()
            if line.startswith("Model name")), platform.processor() or platform.machine())
    except OSError:
        cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, nproc {os.cpu_count()}, load average {load:.2f} at start"


def run(args: argparse.Namespace) -> int:
    import torch

    from fdconv_zoo.tools import benchmark

    printed: list[str] = []

    def log(line: str) -> None:
        printed.append(line)
        print(line, flush=True)

    try:
        benchmark.check_device(args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    threads = args.threads or torch.get_num_threads()
    log(f"torch {torch.__version__}, {threads} threads, {_machine()}")
    on_cpu = torch.device(args.device).type == "cpu"
    if not on_cpu:
        log(f"device {args.device}: {torch.cuda.get_device_name(torch.device(args.device))}; the per-stage profile, "
            "floor and layer tables are CPU measurements and are left out")
    if args.tune_malloc:
        from fdconv_zoo.tools.cpu_tuning import MALLOC_ENV, tune_malloc

        applied = tune_malloc()
        log(f"malloc tuning for plain and FD alike: {' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())}"
            + ("" if applied else " (not glibc: environment only)"))
    models = benchmark.DEFAULT_MODELS if args.models is None else args.models
    network_rows = []
    if models:
        rounds = f", {args.rounds} rounds" if args.rounds > 1 else ""
        setting = f", {args.device}" + (f", autocast {args.amp}" if args.amp else "")
        setting += ", FD models with fd_recompute_kernel=True" if args.fd_recompute_kernel else ""
        setting += ", FD models with fd_reference=True" if args.fd_reference else ""
        peak = "ru_maxrss" if on_cpu else "torch.cuda.max_memory_allocated"
        log(f"\n## Whole networks, {args.image_size}x{args.image_size}{setting}, median of {args.repeats}{rounds} "
            f"(fresh process per cell, peak = {peak} above post-build level)")
        fd_kwargs = {"fd_recompute_kernel": True} if args.fd_recompute_kernel else {}
        fd_kwargs |= {"fd_reference": True} if args.fd_reference else {}
        network_rows = benchmark.network_table(models, args.batch_size, args.image_size, args.repeats,
                                               args.threads, log, args.rounds, args.device, args.amp, fd_kwargs)
        log("\n" + benchmark.format_network_table(network_rows, args.batch_size))
    if not args.skip_profile and on_cpu:
        log(f"\n## resnet50_fdconv inference, batch {args.batch_size}: time per FDConv stage")
        log(benchmark.format_stage_profile(benchmark.stage_profile("resnet50_fdconv", args.batch_size,
                                                                   args.image_size, args.repeats)))
        log("\n## same, batch 1")
        log(benchmark.format_stage_profile(benchmark.stage_profile("resnet50_fdconv", 1, args.image_size,
                                                                   args.repeats)))
        log(f"\n## resnet50_fdconv training step, batch {args.batch_size}: time per FDConv stage (one profiled step)")
        log(benchmark.format_stage_profile(benchmark.train_stage_profile("resnet50_fdconv", args.batch_size,
                                                                         args.image_size), per="step"))
        log("\n## The floor: only the inverse FFTs of resnet50_fdconv's per-sample kernels, one sample")
        plain_b1 = next((r["plain"]["infer_b1"].ms for r in network_rows
                         if r["model"] == "resnet50" and args.amp is None), None)
        if plain_b1 is None:   # resnet50 not in the (float32) network table: measure it here
            plain_b1 = benchmark.measure_network("resnet50", "infer", 1, args.image_size, max(args.repeats, 5),
                                                 args.threads).ms
        log(benchmark.format_fft_floor(benchmark.fft_floor("resnet50_fdconv", max(args.repeats, 5)), plain_b1))
    if not args.skip_layers and on_cpu:
        log(f"\n## ResNet-50 layer shapes, batch {args.batch_size} (saved = what a forward allocates and leaves "
            "alive besides its output: what backward keeps beyond the input and weights)")
        rows = benchmark.layer_table(args.batch_size, not args.skip_reference, args.repeats)
        log(benchmark.format_layer_table(rows, args.batch_size))
    if args.markdown:
        from fdconv_zoo.checkpoints.atomic_io import atomic_write_text

        atomic_write_text(args.markdown, _markdown_page(printed))
        print(f"wrote {args.markdown}")
    return 0
