"""``fdconv-zoo convert``: a vanilla timm or official FDConv checkpoint -> an FDConv safetensors file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HubError

if TYPE_CHECKING:
    from ..checkpoints import ConvertResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``fdconv-zoo convert`` and ``scripts/convert_checkpoint.py``."""
    p.add_argument("--checkpoint", required=True,
                   help="source: a Hub id (timm/resnet50.a1_in1k, hf-hub: prefix and @revision allowed) or a local "
                        ".safetensors/.pth/.bin file (vanilla timm, official mmdet ResNet_FDConv, or fdconv_zoo)")
    p.add_argument("--model", required=True, help="target architecture, e.g. resnet50_fdconv")
    p.add_argument("--output", required=True, help="where to write the converted weights (.safetensors)")
    p.add_argument("--layout", choices=("auto", "vanilla", "official", "fdconv"), default="auto",
                   help="source key layout (default: detected; 'official' = authors' mmdet keys under backbone.)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size of the target (0: no classifier, e.g. for a detector backbone)")
    p.add_argument("--model-args", type=json.loads, default=None, metavar="JSON",
                   help="extra create_model kwargs as JSON, e.g. '{\"fd_kernel_num\": 32}'")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="write the output even if some source keys are unmapped or model keys missing (reported)")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache to read Hub checkpoints from")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a vanilla timm / official FDConv checkpoint to FDConv safetensors",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def convert_source(source: str, architecture: str, *, cache_dir: str | None = None, **kwargs: Any) -> ConvertResult:
    """A local checkpoint file, or else a Hub repo id, converted to ``architecture``."""
    from ..checkpoints import convert_checkpoint
    from ..hub import convert_from_hub

    if Path(source).is_file():
        return convert_checkpoint(source, architecture, **kwargs)
    return convert_from_hub(source, architecture, cache_dir=cache_dir, **kwargs)


def run(args: argparse.Namespace) -> int:
    try:
        result = convert_source(args.checkpoint, args.model, output=args.output, layout=args.layout,
                                    strict=args.strict, num_classes=args.num_classes, model_args=args.model_args,
                                    cache_dir=args.cache_dir)
    except (HubError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(result.report())
    return 0
