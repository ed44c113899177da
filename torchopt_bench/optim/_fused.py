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

The ``step`` counters are advanced inside the same call where they live on the
parameters' device (on a CPU, where eager additions to ten 0-d tensors would cost as much
as the update), else just before it. Small CPU layouts (every tensor under
:data:`SERIAL_NUMEL` entries) are compiled single-threaded; ``size_asserts`` are off
because dynamo's guards check every input's size and stride already.

Compiling needs what inductor needs: a C++ compiler on a CPU (``g++`` here), Triton on
CUDA. It is the only place of the package that uses ``torch.compile``.
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

_CACHE: dict[tuple, Callable[..., None]] = {}
#: The same entries by the identities of the tensors, to skip building the layout key on
#: every step (dynamo's own guards still check the layout on every call).
_BY_IDENTITY: dict[tuple, Callable[..., None]] = {}
#: Compilations done in this process, with their first-call seconds (for logs and tests).
_COMPILES: list[tuple[str, int, float]] = []
#: Below this many entries per tensor, a CPU layout is compiled single-threaded, as eager
#: torch does not parallelise an operation under its grain size of 32768 entries: waking
#: OpenMP threads for kernels this small costs more than they save, the more so on a busy
#: machine.
SERIAL_NUMEL = 32768


def _layout(rows: Sequence[Sequence[Tensor]], steps: Sequence[Tensor]) -> tuple:
    return tuple(
        tuple((t.dtype, t.device, tuple(t.shape), t.stride()) for t in row)
        for row in [*rows, steps]
    )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _make_runner(update: FusedUpdate, flags: tuple, maximize: bool) -> Callable:
    def run_rows(rows: list[tuple[Tensor, ...]], steps: list[Tensor], scalars: Tensor) -> None:
        for step in steps:
            step.add_(1)
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
    steps: Sequence[Tensor],
    scalars: Tensor,
) -> Callable[..., None]:
    """The compiled function applying ``update`` to ``rows`` (and advancing ``steps``),
    from the cache or compiled now (on its first call)."""
    identity = (update, flags, maximize, *map(id, steps), *(id(t) for row in rows for t in row))
    compiled = _BY_IDENTITY.get(identity)
    if compiled is not None:
        return compiled
    key = (update, flags, maximize, _layout(rows, steps), scalars.shape, scalars.device)
    compiled = _CACHE.get(key)
    if compiled is None:
        runner = _make_runner(update, flags, maximize)
        # A fresh code object per layout: dynamo keeps its compiled variants on the code
        # object, and a shared one would hit the recompile limit after a few layouts.
        name = f"fused_{update.__qualname__.replace('.', '_')}_{len(_CACHE)}"
        code = runner.__code__.replace(co_name=name)
        unique = types.FunctionType(code, runner.__globals__, name, None, runner.__closure__)
        # Dynamo's guards already check every input's size and stride on each call.
        options: dict[str, Any] = {"size_asserts": False}
        if scalars.device.type == "cpu" and max(row[0].numel() for row in rows) < SERIAL_NUMEL:
            options["cpp.threads"] = 1
        compiled = torch.compile(unique, fullgraph=True, dynamic=False, options=options)
        compiled = _first_call_logged(compiled, update, rows, key, identity)
        _CACHE[key] = compiled
    if len(_BY_IDENTITY) > 4096:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[identity] = compiled
    return compiled


def _first_call_logged(
    compiled: Callable, update: FusedUpdate, rows: Sequence[Sequence[Tensor]], key, identity
) -> Callable:
    """Wrap ``compiled`` so that its first call (the compilation) is timed and logged; the
    cache entries are then replaced by ``compiled`` itself."""
    count = len(rows)
    numel = sum(row[0].numel() for row in rows)
    kinds = ", ".join(sorted({f"{row[0].dtype}/{row[0].device}" for row in rows}))

    def first_call(*args: Any) -> None:
        start = time.perf_counter()
        compiled(*args)
        seconds = time.perf_counter() - start
        _COMPILES.append((update.__qualname__, count, seconds))
        logger.info(
            "compiled the fused %s update for %d tensors (%d entries, %s, flags %s) in %.2f s",
            update.__qualname__.split(".")[0],
            count,
            numel,
            kinds,
            key[1],
            seconds,
        )
        _CACHE[key] = compiled
        for ident, value in list(_BY_IDENTITY.items()):
            if value is first_call:
                _BY_IDENTITY[ident] = compiled

    return first_call


def run_fused(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    steps: Sequence[Tensor],
    scalar_rows: Sequence[Sequence[float]],
) -> None:
    """Apply ``update`` to every row ``(param, grad, *state)`` with the host scalars of
    each row, one compiled call per device, and add one to every ``steps`` tensor: inside
    that call where it lives on the parameters' device, else before it."""
    by_device: dict[torch.device, list[int]] = {}
    for index, row in enumerate(rows):
        by_device.setdefault(row[0].device, []).append(index)
    for device, indices in by_device.items():
        # MPS has no float64; its scalars are float32, like its tensors.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        scalars = torch.tensor([scalar_rows[i] for i in indices], dtype=dtype, device=device)
        device_rows = [tuple(rows[i]) for i in indices]
        in_graph = [steps[i] for i in indices if steps[i].device == device]
        eager = [steps[i] for i in indices if steps[i].device != device]
        if eager:
            torch._foreach_add_(eager, 1)
        compiled = compiled_update(update, flags, maximize, device_rows, in_graph, scalars)
        compiled(device_rows, in_graph, scalars)


def cache_info() -> dict[str, Any]:
    """Number of cached compiled updates and the compilations done so far."""
    return {"cached": len(_CACHE), "compiles": list(_COMPILES)}


def clear_cache() -> None:
    """Forget every compiled update (the next fused step compiles again)."""
    _CACHE.clear()
    _BY_IDENTITY.clear()
    _COMPILES.clear()
