"""The ``fdconv-zoo`` console entry point: a thin dispatcher over ``fdconv_zoo.commands``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# One module per subcommand, each exposing ``register(subparsers)`` that sets ``func``.
COMMANDS = ("demo", "bench", "push", "convert", "table", "analyze", "evaluate", "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fdconv-zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"fdconv_zoo.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
