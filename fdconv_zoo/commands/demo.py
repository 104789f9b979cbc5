"""``fdconv-zoo demo``: the zoo end to end, offline: convert, load a converted tag, publish and reload.

No download: a local Hugging Face cache (the layout huggingface_hub uses) stands in for the Hub,
holding the randomly initialised vanilla model under timm's real repo id.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

RESNET_PLACEMENT = dict(include=("layer*",), exclude=("*downsample*",))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="convert, load a converted tag, publish and reload: offline, random weights")
    p.add_argument("--model", default="resnet18", help="timm ResNet architecture to convert (default: resnet18)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--kernel-num", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import timm

    from fdconv_zoo.layers.conversion import convert_to_fdconv
    from fdconv_zoo.tools.analysis import basis_cosine_similarity
    from fdconv_zoo.tools.testing import max_relative_error, randomize_norms_

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
    similarity = basis_cosine_similarity(fd.get_submodule(name))

    print(f"{args.model}: {len(report.converted)} convs -> FDConv (kernel_num={args.kernel_num}), "
          f"{len(report.skipped)} kept plain")
    print(f"  params        {n_plain:,} -> {n_fd:,} (+{n_fd - n_plain:,})")
    print(f"  logits        max relative difference to the plain model: {rel:.2e} (function preserving at init)")
    print(f"  FDW diversity {name}, {similarity.matrix.shape[0]} basis kernels: {similarity}")
    print(f"  forward       batch {args.batch_size} @ {args.image_size}px: plain {t_plain * 1e3:.0f} ms, "
          f"FDConv {t_fd * 1e3:.0f} ms")
    zoo_rel, reload_exact = _zoo_and_hub(plain, x, args.model)
    return 0 if max(rel, zoo_rel) <= 1e-4 and reload_exact else 1


@torch.no_grad()
def _zoo_and_hub(plain: torch.nn.Module, x: torch.Tensor, arch: str) -> tuple[float, bool]:
    """The registered ``<arch>_fdconv`` tag converts timm's checkpoint on load; ``save_for_hub`` reloads bit-exact."""
    import timm

    from fdconv_zoo.hub import load_hub_folder, save_for_hub
    from fdconv_zoo.tools.testing import max_relative_error, offline_hf_hub, save_timm_model_to_fake_hub

    zoo_name = f"{arch}_fdconv"
    cfg = timm.models.get_pretrained_cfg(zoo_name)
    with tempfile.TemporaryDirectory() as tmp, offline_hf_hub(Path(tmp) / "hf_cache") as cache:
        save_timm_model_to_fake_hub(plain, cache, cfg.hf_hub_id)
        zoo = timm.create_model(f"{zoo_name}.{cfg.tag}", pretrained=True).eval()
        rel = max_relative_error(zoo(x), plain(x))
        folder = save_for_hub(zoo, Path(tmp) / "export", tag=cfg.tag, converted_from=cfg.hf_hub_id)
        exact = torch.equal(load_hub_folder(folder).eval()(x), zoo(x))
        files = sorted(p.name for p in folder.iterdir())
        features = timm.create_model(f"{zoo_name}.{cfg.tag}", pretrained=True, features_only=True).eval()(x)
    print(f"  zoo tag       timm.create_model('{zoo_name}.{cfg.tag}', pretrained=True) from a local HF cache "
          f"holding '{cfg.hf_hub_id}': max relative difference {rel:.2e}")
    print(f"  Hub export    save_for_hub -> {', '.join(files)}; "
          f"reload {'bit-exact' if exact else 'DIFFERS'}")
    print("  features_only " + ", ".join(f"{tuple(f.shape[1:])}" for f in features))
    return rel, exact
