#!/usr/bin/env python
"""Publish an FDConv checkpoint to the Hugging Face Hub (org ``fdconv-zoo``) and record it in hub/catalogue.json.

Same as ``fdconv-zoo push``; the logic is ``fdconv_zoo.hub.push_to_hub``: stage with
``save_for_hub``, reload the staged folder and require identical outputs, then ``create_repo`` +
one commit with huggingface_hub. Idempotent. ``--dry-run`` stops after staging and verification.
Example: ``python scripts/push_to_hub.py --model resnet50_fdconv --tag fft_a1_in1k
--converted-from timm/resnet50.a1_in1k --dry-run``.
"""

from __future__ import annotations

import argparse
import sys

from fdconv_zoo.commands import push


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_arguments(parser)
    return push.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
