#!/usr/bin/env python
"""Write MODEL_CARDS/params.md: params, extra params and GMACs at 224 of every FDConv variant.

Thin wrapper over :func:`fdconv_zoo.tools.model_stats.write_params_table` (also ``fdconv-zoo table``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fdconv_zoo.tools.model_stats import FD_VARIANTS, write_params_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "MODEL_CARDS" / "params.md")
    parser.add_argument("--models", nargs="*", default=list(FD_VARIANTS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--no-compute", action="store_true", help="parameters only (fast)")
    args = parser.parse_args()
    print(write_params_table(args.out, args.models, args.image_size, not args.no_compute, progress=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
