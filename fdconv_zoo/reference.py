"""Deprecated: the reference formulation is ``fdconv_zoo.layers.fd_reference`` (removed after 0.2).

Run a layer or model through it with ``FDConv2d(..., reference=True)``, ``timm.create_model(...,
fd_reference=True)`` or ``fdconv_zoo.set_fd_reference(True)``.
"""

import warnings

from torch import Tensor, nn

__all__ = ["reference_forward"]

warnings.warn("fdconv_zoo.reference is deprecated: use FDConv2d(..., reference=True) or "
              "fdconv_zoo.set_fd_reference(True) (fdconv_zoo.layers.fd_reference)", DeprecationWarning, stacklevel=2)


def reference_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` through the reference formulation."""
    chosen = layer.reference
    layer.reference = True
    try:
        return layer(x)
    finally:
        layer.reference = chosen
