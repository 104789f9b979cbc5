"""Opt-in CPU allocator settings that make FDConv markedly cheaper on Linux/glibc.

FDConv builds kernel-sized temporaries every forward (tens of MiB per layer at batch 8). glibc
serves blocks above its mmap threshold (at most 32 MiB) with fresh mmap pages, so each forward
pays page faults and zeroing for them: measured here, that doubled the cost of the per-sample
inverse FFTs. Keeping freed blocks in the heap removes it. Process-wide, so it is the user's
choice (like jemalloc/tcmalloc in PyTorch's CPU tuning advice), never done on import.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MALLOC_ENV", "tune_malloc"]

_MMAP_THRESHOLD, _TRIM_THRESHOLD = 1 << 30, 2**31 - 1  # bytes: effectively "never mmap, never trim"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter ids

#: The same settings as environment variables, for ``MALLOC_...= python train.py`` or child processes.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD)}


def tune_malloc(children: bool = True) -> bool:
    """Raise glibc's mmap and trim thresholds in this process (and, via ``MALLOC_ENV``, its children).

    Returns False, changing nothing in-process, where the C library is not glibc. Memory freed by
    large tensors is then reused instead of returned to the OS, so RSS stays near its peak.
    """
    if children:
        os.environ.update(MALLOC_ENV)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
