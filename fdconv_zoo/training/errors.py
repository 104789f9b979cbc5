"""The one exception type for bad user input in the training tools.

Scripts catch it and print a one-line ``error: ...`` before any training starts, instead of
a traceback from deep inside a data loader twenty minutes into a run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

__all__ = ["InputError", "run_cli"]


class InputError(ValueError):
    """A data folder, dataset, model name or flag that cannot work; the message says how to fix it."""


def run_cli(fn: Callable[[], object]) -> int:
    """Call ``fn``; an :class:`InputError` prints ``error: ...`` on stderr and returns 2 (no traceback)."""
    try:
        fn()
    except InputError as err:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        prefix = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
        print(f"{prefix}error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0
