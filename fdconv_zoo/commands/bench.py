"""``fdconv-zoo bench``: the speed and memory tables (layers of ResNet-50, whole networks)."""

from __future__ import annotations

import argparse
import platform


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time and peak memory: plain vs FDConv vs the reference formulation")
    p.add_argument("--models", nargs="*", default=["resnet50"], help="timm models for the whole-network table")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-layers", action="store_true", help="only the whole-network table")
    p.add_argument("--skip-reference", action="store_true", help="leave out the slow reference formulation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from fdconv_zoo import benchmark

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    if not args.skip_layers:
        rows = benchmark.layer_table(args.batch_size, not args.skip_reference, args.repeats)
        print(benchmark.format_layer_table(rows))
        print()
    if args.models:
        rows = benchmark.network_table(args.models, args.batch_size, args.image_size, args.repeats)
        print(benchmark.format_network_table(rows))
    return 0
