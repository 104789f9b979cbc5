"""``fdconv-zoo analyze MODEL``: per-layer cost and kernel-diversity table plus PNG plots of a dynamic-conv model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="per-layer params/GMACs/kernel diversity table and plots (FDW spectra, FBM "
                                       "bands, diversity heatmaps) of an *_fdconv or baseline model; offline")
    p.add_argument("model", help="timm name, e.g. resnet18_fdconv, resnet50_odconv4x, resnet18_kw1x")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: analysis/<model>)")
    p.add_argument("--pretrained", action="store_true", help="load the model's pretrained weights (default: random "
                                                             "init, no download)")
    p.add_argument("--image", default="astronaut", help="scikit-image sample name or an image file, for FBM bands")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-plots", type=int, default=4, help="heatmaps / spectra per kind")
    p.add_argument("--max-kernel-elements", type=int, default=40_000_000,
                   help="skip the diversity of layers whose candidate kernels hold more floats (FDConv basis memory)")
    p.add_argument("--no-plots", action="store_true", help="table and summary only (no matplotlib needed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import timm
    import torch

    import fdconv_zoo.baselines  # noqa: F401  (registers the *_fdconv models and the baselines)
    from fdconv_zoo.tools.analysis import analyze_model

    if not timm.is_model(args.model):
        raise SystemExit(f"fdconv-zoo analyze: unknown model {args.model!r}; try one of "
                         f"{', '.join(timm.list_models('*fdconv*')[:3])} or resnet18_odconv4x")
    if args.image_size < 32:
        raise SystemExit(f"fdconv-zoo analyze: --image-size must be >= 32, got {args.image_size}")
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=args.pretrained)
    out = args.out or Path("analysis") / args.model
    summary = analyze_model(model, out, title=args.model, image=args.image, image_size=args.image_size,
                            max_plots=args.max_plots, plots=not args.no_plots,
                            max_kernel_elements=args.max_kernel_elements)
    print(summary["table"])
    print(f"wrote {', '.join(summary['files'] + ['summary.json'])} to {out}")
    return 0
