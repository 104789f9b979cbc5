"""Constructor arguments every dynamic layer checks the same way: pairs of ints, attention widths."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pair", "hidden_channels"]


def pair(value: int | Sequence[int], name: str, owner: str) -> tuple[int, int]:
    """``value`` as ``(h, w)``; anything but a non-negative int or a pair of them is an error naming ``owner``."""
    result = (value, value) if isinstance(value, int) else tuple(value)
    if len(result) != 2 or not all(isinstance(v, int) and v >= 0 for v in result):
        raise ValueError(f"{owner}: {name} must be a non-negative int or a pair of them, got {value!r}")
    return result


def hidden_channels(in_channels: int, reduction: float, min_hidden: int) -> int:
    """Width of an attention bottleneck: ``max(int(in_channels * reduction), min_hidden)``."""
    return max(int(in_channels * reduction), min_hidden)
