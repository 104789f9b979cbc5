"""``fdconv-zoo evaluate``: an exported model's metrics on a split it was not trained on."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics of a classification / segmentation / detection export on a split",
                       description=__doc__)
    p.add_argument("--export", required=True, help="the export folder (<output-dir>/model of a training script)")
    p.add_argument("--data-dir", required=True,
                   help="ImageFolder (classification), CamVid-layout (segmentation) or COCO-format (detection) folder")
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-samples", type=int, default=None, help="the first N images of the split only")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here (default: print only)")
    p.set_defaults(func=run)


def format_metrics(kind: str, metrics: dict) -> str:
    """The metric table of one evaluation, as printed."""
    from fdconv_zoo.training.detection import format_ap_table
    from fdconv_zoo.training.segmentation import format_iou_table

    if kind == "segmentation":
        return format_iou_table(metrics)
    if kind == "detection":
        tables = [format_ap_table(metrics)] + ([format_ap_table(metrics, "segm")] if "segm_mAP" in metrics else [])
        return "\n".join(tables)
    rows = [f"  {name:<20s} {acc:6.2f}" for name, acc in metrics["per_class_accuracy"].items()]
    return "\n".join([f"  {'class':<20s} {'acc':>6s}", *rows,
                      f"  {'top-1':<20s} {metrics['top1']:6.2f}   (top-5 {metrics['top5']:.2f})"])


def run(args: argparse.Namespace) -> int:
    from fdconv_zoo.training.errors import InputError
    from fdconv_zoo.training.exports import evaluate_export, load_export

    try:
        export = load_export(args.export)
        metrics = evaluate_export(export, args.data_dir, args.split, batch_size=args.batch_size,
                                  max_samples=args.max_samples)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{export.kind} export {args.export} on {args.data_dir} [{args.split}]:")
    print(format_metrics(export.kind, metrics))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kind": export.kind, "split": args.split, **metrics}, indent=2, default=float))
        print(f"metrics written to {args.json}")
    return 0
