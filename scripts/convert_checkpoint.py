#!/usr/bin/env python
"""Convert a vanilla timm or official FDConv checkpoint to an fdconv_zoo safetensors file.

Same as ``fdconv-zoo convert``; the logic is ``fdconv_zoo.checkpoints.convert_checkpoint``.
Example: ``python scripts/convert_checkpoint.py --checkpoint faster_rcnn_r50_fdconv.pth
--model resnet50_fdconv --num-classes 0 --output r50_fdconv_backbone.safetensors``.
"""

from __future__ import annotations

import argparse
import sys

from fdconv_zoo.commands import convert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_arguments(parser)
    return convert.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
