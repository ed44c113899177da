"""The ``fused=True`` path of the elementwise optimizers: one compiled pass over memory.

An optimizer with a compiled fused path writes the update of *one* tensor as a pure
function of tensors, ``update(flags, param, grad, *state, s)``: ``s`` is a 1-D float64
tensor of that tensor's scalars for this step (learning rate, bias corrections, ...),
computed on the host by the same Python arithmetic as the per-tensor loop. This module
applies it to every tensor of a bucket inside one ``torch.compile`` region, so that
inductor emits one loop per tensor (horizontally fused across tensors of one size) that
reads and writes each entry once.

Why the scalars travel as a tensor: Python floats would be baked into the compiled code
as constants, and a learning-rate scheduler would then recompile every step. As tensor
*data* they change freely. What does require a new compilation is the *layout* (the
shapes, strides, dtypes and devices of the tensors) and the structural ``flags`` of the
update (AMSGrad on or off, ...). One compiled function is kept per (update, flags,
layout) in a process-wide cache, so optimizers over the same model share it; each gets a
code object of its own, so dynamo's per-function recompile limit never applies across
layouts. The first call, which compiles, is timed and logged.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["FusedUpdate", "compiled_update", "run_fused", "cache_info", "clear_cache"]

#: ``update(flags, param, grad, *state, s)``: in-place update of one tensor and its state.
FusedUpdate = Callable[..., None]

_CACHE: dict[tuple, Callable[[list[tuple[Tensor, ...]], Tensor], None]] = {}
#: Compilations done in this process, with their first-call seconds (for logs and tests).
_COMPILES: list[tuple[str, int, float]] = []


def _layout(rows: Sequence[Sequence[Tensor]]) -> tuple:
    return tuple(
        tuple((t.dtype, t.device, tuple(t.shape), t.stride()) for t in row) for row in rows
    )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _make_runner(update: FusedUpdate, flags: tuple, maximize: bool) -> Callable:
    def run_rows(rows: list[tuple[Tensor, ...]], scalars: Tensor) -> None:
        for index, (param, grad, *state) in enumerate(rows):
            if maximize:
                grad = torch.neg(grad)
            # Scalars in the dtype an eager op computes in for this tensor: its own, or
            # float32 for half and bfloat16 (eager rounds a 0.999 to 1 in bfloat16 only
            # when it is stored, never as an operand).
            s = scalars[index].to(_compute_dtype(param.dtype))
            update(flags, param, grad, *state, s=s)

    return run_rows


def compiled_update(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    scalars: Tensor,
) -> Callable[[list[tuple[Tensor, ...]], Tensor], None]:
    """The compiled function applying ``update`` to ``rows``, from the cache or new."""
    key = (update, flags, maximize, _layout(rows), scalars.shape, scalars.dtype, scalars.device)
    compiled = _CACHE.get(key)
    if compiled is None:
        runner = _make_runner(update, flags, maximize)
        # A fresh code object per layout: dynamo keeps its compiled variants on the code
        # object, and a shared one would hit the recompile limit after a few layouts.
        name = f"fused_{update.__qualname__.replace('.', '_')}_{len(_CACHE)}"
        code = runner.__code__.replace(co_name=name)
        unique = types.FunctionType(code, runner.__globals__, name, None, runner.__closure__)
        compiled = torch.compile(unique, fullgraph=True, dynamic=False)
        _CACHE[key] = _first_call_logged(compiled, update, len(rows), key)
        compiled = _CACHE[key]
    return compiled


def _first_call_logged(compiled: Callable, update: FusedUpdate, count: int, key: tuple):
    """Wrap ``compiled`` so that its first call (the compilation) is timed and logged; the
    cache entry is then replaced by ``compiled`` itself."""

    def first_call(rows: list[tuple[Tensor, ...]], scalars: Tensor) -> None:
        start = time.perf_counter()
        compiled(rows, scalars)
        seconds = time.perf_counter() - start
        _COMPILES.append((update.__qualname__, count, seconds))
        numel = sum(row[0].numel() for row in rows)
        logger.info(
            "compiled the fused %s update for %d tensors (%d entries, %s, flags %s) in %.2f s",
            update.__qualname__.split(".")[0],
            count,
            numel,
            ", ".join(sorted({f"{row[0].dtype}/{row[0].device}" for row in rows})),
            key[1],
            seconds,
        )
        _CACHE[key] = compiled

    return first_call


def run_fused(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    scalar_rows: Sequence[Sequence[float]],
) -> None:
    """Apply ``update`` to every row ``(param, grad, *state)``, with the host scalars of
    each row, in one compiled call per device."""
    by_device: dict[torch.device, list[int]] = {}
    for index, row in enumerate(rows):
        by_device.setdefault(row[0].device, []).append(index)
    for device, indices in by_device.items():
        # MPS has no float64; its scalars are float32, like its tensors.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        scalars = torch.tensor([scalar_rows[i] for i in indices], dtype=dtype, device=device)
        device_rows = [tuple(rows[i]) for i in indices]
        compiled_update(update, flags, maximize, device_rows, scalars)(device_rows, scalars)


def cache_info() -> dict[str, Any]:
    """Number of cached compiled updates and the compilations done so far."""
    return {"cached": len(_CACHE), "compiles": list(_COMPILES)}


def clear_cache() -> None:
    """Forget every compiled update (the next fused step compiles again)."""
    _CACHE.clear()
    _COMPILES.clear()
