"""``fdconv-zoo demo``: convert a timm network to FDConv offline and show that it is function preserving."""

from __future__ import annotations

import argparse
import time

import torch

RESNET_PLACEMENT = dict(include=("layer*",), exclude=("*downsample*",))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="convert a randomly initialised timm model (no download) and check it")
    p.add_argument("--model", default="resnet18", help="timm ResNet architecture to convert (default: resnet18)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--kernel-num", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import timm

    from fdconv_zoo.analysis import basis_cosine_similarity
    from fdconv_zoo.convert import convert_to_fdconv
    from fdconv_zoo.testing import max_relative_error, randomize_norms_

    torch.manual_seed(args.seed)
    plain = randomize_norms_(timm.create_model(args.model, pretrained=False), args.seed).eval()
    fd = timm.create_model(args.model, pretrained=False).eval()
    fd.load_state_dict(plain.state_dict())
    report = convert_to_fdconv(fd, kernel_num=args.kernel_num, **RESNET_PLACEMENT)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)

    with torch.inference_mode():
        plain(x), fd(x)  # warm-up: caches, allocator
        start = time.perf_counter()
        ref = plain(x)
        t_plain = time.perf_counter() - start
        start = time.perf_counter()
        out = fd(x)
        t_fd = time.perf_counter() - start
    rel = max_relative_error(out, ref)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_fd = sum(p.numel() for p in fd.parameters())
    name = report.converted[len(report.converted) // 2]
    cos = basis_cosine_similarity(fd.get_submodule(name))
    off_diag = (cos - torch.diag(torch.diag(cos))).abs().max().item()

    print(f"{args.model}: {len(report.converted)} convs -> FDConv (kernel_num={args.kernel_num}), "
          f"{len(report.skipped)} kept plain")
    print(f"  params        {n_plain:,} -> {n_fd:,} (+{n_fd - n_plain:,})")
    print(f"  logits        max relative difference to the plain model: {rel:.2e} (function preserving at init)")
    print(f"  FDW diversity {name}: max |cos| between its {cos.shape[0]} basis kernels = {off_diag:.1e}")
    print(f"  forward       batch {args.batch_size} @ {args.image_size}px: plain {t_plain * 1e3:.0f} ms, "
          f"FDConv {t_fd * 1e3:.0f} ms")
    return 0 if rel <= 1e-4 else 1
