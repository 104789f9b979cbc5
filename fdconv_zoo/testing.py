"""Deprecated alias of :mod:`fdconv_zoo.tools.testing` (removed after 0.2)."""

from ._moved import alias_module

alias_module(__name__, "fdconv_zoo.tools.testing")
