"""KernelWarehouse (Li & Yao, ICML 2024): kernels assembled from cells of a warehouse shared across layers.

Each layer's kernel ``(O, I, kh, kw)`` is split into ``m`` cells of shape ``(co, ci, kh, kw)``
(a ``O/co x I/ci`` grid). Same-stage layers share a warehouse ``E`` of ``n`` cells; every cell
of a layer is a per-sample mix ``w_j = sum_p alpha_jp e_p`` with the paper's contrast-driven
attention ``alpha_jp = tau * beta_jp + (1 - tau) * z_jp / sum_q |z_jq|``: ``z`` from
GAP -> FC -> BN -> ReLU -> FC (``m * n`` logits), ``beta`` a fixed one-hot assignment of each
layer cell to its own warehouse cell, ``tau`` annealed from 1 to 0 early in training
(:func:`set_kw_tau`). A warehouse of ``n = mult * sum(m)`` cells is "KW (mult x)". Our own
implementation from the paper's description.

Function preservation: ``from_conv`` / :func:`share_warehouse` copy each layer's kernel into
its ``beta`` cells, and ``tau`` starts at 1, so at init every layer computes its source conv
exactly (for ``mult >= 1``; below 1 layers share cells and cannot all be preserved).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .dynamic_base import DynamicConv2dBase, SqueezeMLP
from .layer_args import hidden_channels

__all__ = ["KWConv2d", "KernelWarehouse", "share_warehouse", "set_kw_tau", "kw_tau_schedule"]


class KernelWarehouse(nn.Module):
    """``cells``: ``(n, co, ci, kh, kw)``, the shared kernel cells of one warehouse."""

    def __init__(self, num_cells: int, cell_shape: Sequence[int]) -> None:
        super().__init__()
        if num_cells < 1:
            raise ValueError(f"KernelWarehouse: num_cells must be >= 1, got {num_cells}")
        self.cells = nn.Parameter(torch.empty(num_cells, *cell_shape))
        co, ci, kh, kw = cell_shape
        bound = 1.0 / math.sqrt(ci * kh * kw)
        nn.init.uniform_(self.cells, -bound, bound)

    @property
    def num_cells(self) -> int:
        return self.cells.shape[0]

    def extra_repr(self) -> str:
        return f"num_cells={self.num_cells}, cell_shape={tuple(self.cells.shape[1:])}"


def _cell_dims(in_channels: int, out_channels: int, cell_out: int | None, cell_in: int | None) -> tuple[int, int]:
    g = math.gcd(in_channels, out_channels)
    co, ci = cell_out or g, cell_in or g
    if out_channels % co or in_channels % ci:
        raise ValueError(f"KWConv2d({in_channels}, {out_channels}): cell ({co} out x {ci} in) must divide the kernel; "
                         "pick cell_out | out_channels and cell_in | in_channels")
    return co, ci


class KWConv2d(DynamicConv2dBase):
    """KernelWarehouse drop-in for ``nn.Conv2d`` (``groups=1``).

    On its own (``from_conv``) a layer owns a warehouse of ``ceil(mult * m)`` cells; model
    builders call :func:`share_warehouse` to give a group of layers one shared warehouse. The
    owning layer registers the warehouse (its parameters appear once in ``state_dict``); the
    others hold a plain reference.
    """

    method = "kw"
    attention_modules = ("squeeze", "attention_fc")
    supports_groups = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, cell_out: int | None = None,
                 cell_in: int | None = None, mult: float = 1.0, reduction: float = 0.0625, min_hidden: int = 16,
                 tau: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)
        if mult <= 0:
            raise ValueError(f"KWConv2d: mult (warehouse size relative to the layer) must be > 0, got {mult}")
        self.cell_out, self.cell_in = _cell_dims(in_channels, out_channels, cell_out, cell_in)
        self.grid = (out_channels // self.cell_out, in_channels // self.cell_in)
        self.num_layer_cells = self.grid[0] * self.grid[1]
        self.mult = float(mult)
        self.tau = float(tau)
        self.squeeze = SqueezeMLP(in_channels, hidden_channels(in_channels, reduction, min_hidden))
        self.offset = 0
        self._shared: list[KernelWarehouse] = []
        self.attach(KernelWarehouse(max(1, math.ceil(self.mult * self.num_layer_cells)), self.cell_shape), 0,
                    owner=True)

    @property
    def cell_shape(self) -> tuple[int, int, int, int]:
        return (self.cell_out, self.cell_in, *self.kernel_size)

    @property
    def warehouse(self) -> KernelWarehouse:
        """The (possibly shared) warehouse this layer mixes from."""
        return self._shared[0]

    def attach(self, warehouse: KernelWarehouse, offset: int, *, owner: bool) -> None:
        """Use ``warehouse``; this layer's ``beta`` cells start at ``offset``. Rebuilds the attention head."""
        if tuple(warehouse.cells.shape[1:]) != self.cell_shape:
            raise ValueError(f"KWConv2d: warehouse cells {tuple(warehouse.cells.shape[1:])} do not match this layer's "
                             f"cell shape {self.cell_shape}")
        self._shared = [warehouse]
        if owner:
            self.warehouse_owned = warehouse
        elif "warehouse_owned" in self._modules:
            del self._modules["warehouse_owned"]
        self.offset = int(offset)
        n = warehouse.num_cells
        ref = self.squeeze.fc.weight
        self.attention_fc = nn.Linear(self.squeeze.fc.out_features, self.num_layer_cells * n, device=ref.device,
                                      dtype=ref.dtype)

    def _beta_index(self) -> Tensor:
        """Warehouse index of each layer cell under ``beta`` (cyclic when the warehouse is smaller)."""
        return (self.offset + torch.arange(self.num_layer_cells)) % self.warehouse.num_cells

    def _assemble(self, cells: Tensor) -> Tensor:
        """``(B, m, co, ci, kh, kw)`` cells in grid order -> kernels ``(B, O, I, kh, kw)``."""
        (go, gi), (co, ci, kh, kw) = self.grid, self.cell_shape
        return cells.view(-1, go, gi, co, ci, kh, kw).permute(0, 1, 3, 2, 4, 5, 6).reshape(
            -1, self.out_channels, self.in_channels, kh, kw)

    @torch.no_grad()
    def load_static_weight(self, weight: Tensor) -> None:
        """Write ``weight``'s cells into this layer's ``beta`` cells: with ``tau = 1`` the output is ``conv(x, W)``."""
        self._check_weight(weight)
        (go, gi), (co, ci, kh, kw) = self.grid, self.cell_shape
        cells = weight.view(go, co, gi, ci, kh, kw).permute(0, 2, 1, 3, 4, 5).reshape(-1, co, ci, kh, kw)
        self.warehouse.cells[self._beta_index().to(weight.device)] = cells.to(self.warehouse.cells)

    def static_cells(self) -> Tensor:
        """This layer's ``beta`` cells ``(m, co, ci, kh, kw)``."""
        return self.warehouse.cells[self._beta_index().to(self.warehouse.cells.device)]

    def attention(self, pooled: Tensor) -> Tensor:
        """Contrast-driven mixing weights ``(B, m, n)``, without the ``tau * beta`` part."""
        z = self.attention_fc(self.squeeze(pooled.to(self.warehouse.cells.dtype)))
        z = z.view(-1, self.num_layer_cells, self.warehouse.num_cells)
        return z / (z.abs().sum(dim=-1, keepdim=True) + 1e-6)

    def dynamic_kernels(self, x: Tensor, pooled: Tensor) -> Tensor:
        static = self.static_cells()[None]
        if self.tau >= 1.0:
            return self._assemble(static)                            # beta only: batch-shared kernel
        mixed = torch.einsum("bmn,nf->bmf", self.attention(pooled), self.warehouse.cells.flatten(1))
        cells = (1.0 - self.tau) * mixed.view(mixed.shape[0], self.num_layer_cells, *self.cell_shape)
        if self.tau > 0:
            cells = cells + self.tau * static
        return self._assemble(cells)

    def candidate_kernels(self) -> Tensor:
        """The warehouse cells this layer can mix, ``(n, co, ci, kh, kw)`` (cells, not whole kernels)."""
        return self.warehouse.cells.detach()

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", cell={self.cell_shape}, cells={self.num_layer_cells}, "
                f"warehouse={self.warehouse.num_cells}, offset={self.offset}, tau={self.tau:g}")


@torch.no_grad()
def share_warehouse(layers: Sequence[KWConv2d], mult: float | None = None) -> KernelWarehouse:
    """Give ``layers`` one warehouse of ``ceil(mult * sum(m))`` cells; each keeps its current kernel.

    The first layer owns (registers) the warehouse. Cells beyond the layers' own (``mult > 1``)
    keep the warehouse's random init; they enter the kernels only as ``tau`` falls below 1.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("share_warehouse: no layers given")
    shapes = {layer.cell_shape for layer in layers}
    if len(shapes) != 1:
        raise ValueError(f"share_warehouse: layers have different cell shapes {sorted(shapes)}; build them with the "
                         "same cell_out/cell_in and kernel size")
    mult = layers[0].mult if mult is None else mult
    total = sum(layer.num_layer_cells for layer in layers)
    ref = layers[0].warehouse.cells
    warehouse = KernelWarehouse(max(1, math.ceil(mult * total)), layers[0].cell_shape).to(ref.device, ref.dtype)
    kernels = [layer._assemble(layer.static_cells()[None])[0].clone() for layer in layers]
    offset = 0
    for i, (layer, kernel) in enumerate(zip(layers, kernels, strict=True)):
        layer.mult = float(mult)
        layer.attach(warehouse, offset, owner=i == 0)
        layer.load_static_weight(kernel)
        offset += layer.num_layer_cells
    return warehouse


def kw_tau_schedule(epoch: float, *, epochs: float = 20.0) -> float:
    """``tau`` linearly from 1 to 0 over the first ``epochs`` epochs (KernelWarehouse's schedule), then 0."""
    if epochs <= 0:
        return 0.0
    return 1.0 - min(max(epoch / epochs, 0.0), 1.0)


def set_kw_tau(model: nn.Module, tau: float) -> int:
    """Set ``tau`` of every KWConv2d in ``model``; returns how many were set."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    count = 0
    for m in model.modules():
        if isinstance(m, KWConv2d):
            m.tau = float(tau)
            count += 1
    return count
