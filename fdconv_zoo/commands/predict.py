"""``fdconv-zoo predict``: an exported model on images: top-5 labels, or the mask / boxes drawn as PNG files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict with an export: top-5 labels, colour masks or boxes drawn on images",
                       description=__doc__)
    p.add_argument("--export", required=True, help="the export folder (<output-dir>/model of a training script)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", type=Path, default=Path("predictions"),
                   help="folder for <image>.png drawings and predictions.json (default: %(default)s)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detection: boxes scoring at least this")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fdconv_zoo.training.errors import InputError
    from fdconv_zoo.training.exports import load_export, predict_images

    try:
        export = load_export(args.export)
        records = predict_images(export, args.images, args.out, score_threshold=args.score_threshold)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for record in records:
        if "top5" in record:
            labels = ", ".join(f"{p['label']} {p['probability']:.3f}" for p in record["top5"])
            print(f"{record['image']}: {labels}")
        elif "detections" in record:
            print(f"{record['image']}: {len(record['detections'])} boxes -> {record['drawn']}")
        else:
            print(f"{record['image']}: mask -> {record['drawn']}")
    print(f"predictions in {args.out / 'predictions.json'}")
    return 0
