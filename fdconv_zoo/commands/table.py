"""``fdconv-zoo table``: measure params / extra params / GMACs of the FDConv models into a markdown table."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from fdconv_zoo.tools.model_stats import FD_VARIANTS

    p = sub.add_parser("table", help="write the params / GMACs table of every *_fdconv model (no download)")
    p.add_argument("--out", type=Path, default=Path("MODEL_CARDS") / "params.md")
    p.add_argument("--models", nargs="*", default=list(FD_VARIANTS), help="subset of the *_fdconv models")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--no-compute", action="store_true", help="parameters only (fast)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdconv_zoo.tools.model_stats import write_params_table

    print(write_params_table(args.out, args.models, args.image_size, not args.no_compute, progress=True))
    return 0
