"""Let autograd keep a cheap activation as a recipe, and rebuild it in backward instead of storing it.

``torch.utils.checkpoint`` recomputes a whole region, including the expensive ops in it. Here only one
tensor is recomputed: every view of it that autograd saves inside the context is packed as its geometry.
Backward rebuilds the tensor once, on the first unpack. FDConv2d uses this for the FBM output that its
convolution keeps (an input-sized copy per 3x3 layer), rebuilt with FBM's small GEMMs, and for the
grouped convolution's copy of the per-sample kernels, rebuilt from the kernels autograd keeps anyway.
Contexts nest: torch applies only the innermost saved-tensor hooks, so an inner context adds its tensor
to the hooks of the outer one.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["saved_as_recomputed", "autocast_state", "autocast_as"]


def autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """The autocast state in effect now on ``device_type``, for :func:`autocast_as` to restore in a recomputation.

    Backward usually runs outside autocast. A recomputation that did not restore the forward's state would
    run the forward's low-precision ops in float32 and give another tensor (``torch.utils.checkpoint``
    restores it too).
    """
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def autocast_as(state: tuple[str, bool, torch.dtype]) -> torch.autocast:
    """Autocast as it was when :func:`autocast_state` captured ``state``."""
    device_type, enabled, dtype = state
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


class _Rebuilt:
    """The tensor, recomputed on first use in backward and shared by every saved view of it."""

    def __init__(self, tensor: Tensor, recompute: Callable[[], Tensor], guards: tuple[Tensor, ...],
                 describe: Callable[[], str]) -> None:
        self._recompute = recompute
        self._describe = describe
        self._geometry = (tensor.shape, tensor.stride(), tensor.dtype)
        self._autocast = autocast_state(tensor.device.type)
        self._guards = [(t, t._version) for t in guards]
        self._value: Tensor | None = None

    def value(self) -> Tensor:
        if self._value is None:
            if any(t._version != version for t, version in self._guards):
                raise RuntimeError(
                    f"{self._describe()} is rebuilt in backward from an input that was modified in place after the "
                    "forward pass; do not modify that input in place before backward"
                )
            with torch.no_grad(), autocast_as(self._autocast):
                value = self._recompute()
            if (value.shape, value.stride(), value.dtype) != self._geometry:
                raise RuntimeError(f"recomputed tensor {value.shape}/{value.stride()}/{value.dtype} does not match "
                                   f"the saved one {self._geometry}")
            self._value = value
        return self._value


class _SavedView(NamedTuple):
    source: _Rebuilt
    size: torch.Size
    stride: tuple[int, ...]
    offset: int


def _hooks_in_effect() -> tuple | None:
    """The ``(pack, unpack)`` saved-tensor hooks in effect (torch keeps only the innermost pair), or None.

    A private torch query; where it is missing, report unknown hooks: standing aside only costs the memory saving.
    """
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return (None, None) if top is None else top(False)


@functools.cache
def _release_failed_backward_at_exit() -> None:
    """Once per process: run one trivial backward at exit.

    torch keeps the pending nodes of a backward that raised (an in-place error here, an out-of-memory
    error anywhere) in a thread-local queue until the next backward on that thread. When their saved
    tensors carry Python hooks, as ours do, that queue is destroyed after the interpreter and the
    process segfaults at exit. A pure-torch branching graph with a raising unpack hook does the same.
    The next backward releases them.
    """
    atexit.register(_run_trivial_backward)


def _run_trivial_backward() -> None:
    try:
        with torch.enable_grad():
            torch.ones((), requires_grad=True).mul(1.0).backward()
    except Exception:  # noqa: BLE001 - at exit, nothing is left to report to
        pass


class _Recipes:
    """The saved-tensor hooks of the outermost open context, and the tensors they keep as recipes."""

    def __init__(self) -> None:
        # keyed by storage address: plain values only. Autograd keeps the hooks with every saved tensor, and
        # a reference to a tensor here would keep alive the very storage this is meant to free.
        self.sources: dict[int, tuple[_Rebuilt, int, torch.dtype]] = {}

        def pack(saved: Tensor):
            entry = self.sources.get(saved.untyped_storage().data_ptr())
            if entry is not None and saved.dtype == entry[2]:
                return _SavedView(entry[0], saved.size(), saved.stride(), saved.storage_offset() - entry[1])
            return saved

        self.pack = pack

    @staticmethod
    def unpack(packed):
        if isinstance(packed, _SavedView):
            return packed.source.value().as_strided(packed.size, packed.stride, packed.offset)
        return packed

    def on_top(self) -> bool:
        """Whether these hooks are the ones in effect (no other tool opened its own inside them)."""
        hooks = _hooks_in_effect()
        return hooks is not None and hooks[0] is self.pack

    @contextlib.contextmanager
    def holding(self, tensor: Tensor, source: _Rebuilt):
        # removed on exit: the storage may be freed afterwards and its address reused by another tensor
        key = tensor.untyped_storage().data_ptr()
        if key in self.sources:   # already a recipe: the outer context covers it
            yield
            return
        self.sources[key] = (source, tensor.storage_offset(), tensor.dtype)
        try:
            yield
        finally:
            del self.sources[key]


_OPEN_RECIPES: contextvars.ContextVar[_Recipes | None] = contextvars.ContextVar("fd_open_recipes", default=None)


@contextlib.contextmanager
def _opened(tensor: Tensor, source: _Rebuilt):
    """New hooks with ``tensor`` as their first recipe, open for the contexts nested inside to join."""
    recipes = _Recipes()
    token = _OPEN_RECIPES.set(recipes)
    try:
        with torch.autograd.graph.saved_tensors_hooks(recipes.pack, recipes.unpack), recipes.holding(tensor, source):
            yield
    finally:
        _OPEN_RECIPES.reset(token)


def saved_as_recomputed(tensor: Tensor, recompute: Callable[[], Tensor], guards: tuple[Tensor, ...] = (),
                        describe: Callable[[], str] = lambda: "a tensor saved for backward"
                        ) -> contextlib.AbstractContextManager:
    """Inside, saved views of ``tensor`` are kept as recipes; backward rebuilds ``tensor`` with ``recompute``.

    ``recompute`` must give the same values with the same strides (the same ops on the same inputs do; it runs
    in the autocast state of the forward);
    ``guards`` are its inputs, checked for in-place changes as autograd checks saved tensors, and ``describe``
    names the tensor in that error (called only then: no message is built on the hot path). A no-op under
    ``torch.compile`` (the compiler plans memory itself, and hooks would break the graph), when grad is off,
    and under another tool's saved-tensor hooks (a non-reentrant checkpoint such as timm's block
    checkpointing, ``save_on_cpu``). That tool then owns what is saved: hooks opened inside replace the
    outer ones, so ours would keep every other saved tensor that the checkpoint meant to drop. Inside
    another ``saved_as_recomputed`` (with no other tool's hooks in between), it joins that one's hooks.
    """
    if torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return contextlib.nullcontext()
    recipes = _OPEN_RECIPES.get()
    if recipes is not None and recipes.on_top():
        return recipes.holding(tensor, _Rebuilt(tensor, recompute, guards, describe))
    if _hooks_in_effect() is not None:   # another tool's hooks: it owns what is saved
        return contextlib.nullcontext()
    _release_failed_backward_at_exit()
    return _opened(tensor, _Rebuilt(tensor, recompute, guards, describe))
