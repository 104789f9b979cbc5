"""Old import paths of modules that moved, kept for one release with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def alias_module(old: str, new: str) -> ModuleType:
    """Make ``import old`` give the module ``new`` (same objects), warning once per import."""
    warnings.warn(f"{old} moved to {new}; the old path is removed after fdconv_zoo 0.2", DeprecationWarning,
                  stacklevel=3)
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module
