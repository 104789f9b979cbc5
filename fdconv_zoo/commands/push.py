"""``fdconv-zoo push``: stage a checkpoint for the Hub, verify it reloads exactly, upload it, catalogue it."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..errors import HubError
from ..hub.catalogue import HUB_ORG


def _metric(text: str) -> tuple[str, str, float]:
    """``imagenet-1k:top1=80.12`` -> (dataset, metric, value)."""
    try:
        dataset, rest = text.split(":", 1)
        name, value = rest.split("=", 1)
        return dataset.strip(), name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"metric {text!r} must look like DATASET:METRIC=VALUE, "
                                         "e.g. imagenet-1k:top1=80.12") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``fdconv-zoo push`` and ``scripts/push_to_hub.py``."""
    p.add_argument("--model", required=True, help="architecture, e.g. resnet50_fdconv")
    p.add_argument("--tag", required=True, help="timm tag of the checkpoint, <recipe>_<dataset> (e.g. fft_a1_in1k)")
    p.add_argument("--checkpoint", default=None,
                   help="weights to publish (local file or Hub id; FDConv, vanilla timm or official layout). "
                        "Default: the --converted-from checkpoint, converted on the fly")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--converted-from", default=None,
                     help="provenance: the vanilla timm checkpoint it was converted from (e.g. timm/resnet50.a1_in1k)")
    src.add_argument("--trained-with", default=None, metavar="'SCRIPT ARGS...'",
                     help="provenance: the training command line, e.g. 'scripts/train.py --epochs 100 --lr 0.1'")
    p.add_argument("--metric", type=_metric, action="append", default=[], metavar="DATASET:METRIC=VALUE",
                   help="an evaluation result for the card and catalogue (repeatable), e.g. imagenet-1k:top1=80.12")
    p.add_argument("--dataset", action="append", default=None, help="dataset id for the card (repeatable)")
    p.add_argument("--org", default=HUB_ORG, help=f"Hub organisation (default: {HUB_ORG})")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--model-args", type=json.loads, default=None, metavar="JSON",
                   help="extra create_model kwargs as JSON (they are stored in config.json)")
    p.add_argument("--staging-dir", default=None, help="folder to stage the files in (default: a temp folder)")
    p.add_argument("--dry-run", action="store_true", help="stop after staging and verification: no network")
    p.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN / the saved login)")
    p.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    p.add_argument("--allow-update", action="store_true",
                   help="allow replacing a published checkpoint whose catalogued sha256 differs")
    p.add_argument("--catalogue", default=None, help="catalogue to update (default: hub/catalogue.json)")
    p.add_argument("--gmacs", type=float, default=None, help="skip measuring GMACs and use this value")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache to read Hub checkpoints from")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="stage, verify and upload a checkpoint to the Hugging Face Hub",
                       description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import push_to_hub
    from .convert import convert_source

    trained_with = None
    if args.trained_with:
        script, *script_args = shlex.split(args.trained_with)
        trained_with = {"script": script, "args": script_args}
    metrics: dict[str, dict[str, float]] = {}
    for dataset, name, value in args.metric:
        metrics.setdefault(dataset, {})[name] = value
    source = args.checkpoint or args.converted_from
    if source is None:
        print("error: --trained-with needs --checkpoint (the trained weights)", file=sys.stderr)
        return 2
    try:
        converted = convert_source(source, args.model, num_classes=args.num_classes, model_args=args.model_args,
                                   cache_dir=args.cache_dir)
        if converted.layout != "fdconv":
            print(converted.report())
        result = push_to_hub(converted.model, tag=args.tag, converted_from=args.converted_from,
                             trained_with=trained_with, metrics=metrics, org=args.org, staging_dir=args.staging_dir,
                             dry_run=args.dry_run, token=args.token, private=args.private, revision=args.revision,
                             catalogue_path=args.catalogue, allow_update=args.allow_update, gmacs=args.gmacs,
                             datasets=args.dataset)
    except (HubError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"staged {result.repo_id} in {result.folder} ({', '.join(result.files)}); sha256 {result.sha256}; "
          "reload reproduces the model exactly")
    if result.dry_run:
        print("dry run: nothing uploaded, catalogue unchanged; entry that a push would record:")
        print(json.dumps(result.entry, indent=2))
    else:
        print(f"pushed {result.commit_url or result.repo_id}; recorded in {result.catalogue}")
    return 0
