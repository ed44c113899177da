"""The ``fused=True`` path of the elementwise optimizers: one compiled pass over memory.

An optimizer with a compiled fused path writes the update of *one* tensor as a pure
function of tensors, ``update(flags, param, grad, *state, s)``: ``s`` is a 1-D float64
tensor of that tensor's scalars for this step (learning rate, bias corrections, ...),
computed on the host by the same Python arithmetic as the per-tensor loop. This module
traces the whole step (every tensor of a bucket, and the ``step`` counters) into one aten
graph with ``make_fx`` on fake tensors and compiles it with inductor
(``torch._inductor.compile``), which emits one loop per tensor, horizontally fused across
tensors of one size, that reads and writes each entry once.

Why not ``torch.compile``: at the size of a small network (the Higgs MLP's 14,529
entries in 10 tensors) the step is all fixed cost, and dynamo's per-call work (its frame
hook, guards over some 40 input tensors, the runtime wrappers) took about 45 us of a
step whose kernel takes 5. Here the code inductor generates is called itself, without
the wrappers of a general compiled graph either (see :func:`_direct_call`). What dynamo's
guards checked is checked here, more cheaply: the optimizer keeps its own plans, keyed by
the identities of the tensors it holds and checked against the layout of its parameters,
gradients and state on every step (see :func:`compiled_update`), and a step that finds
everything as the last one left it repeats the last call
(``BenchOptimizer._fused_step_again``).

Why the scalars travel as a tensor: Python floats would be baked into the compiled code
as constants, and a learning-rate scheduler would then recompile every step. As tensor
*data* they change freely. What does require a new compilation is the *layout* (the
shapes, strides, dtypes and devices of the tensors) and the structural ``flags`` of the
update (AMSGrad on or off, ...). One compiled function is kept per (update, flags,
layout) in a process-wide cache, so optimizers over the same model share it. The
compilation is timed and logged.

The ``step`` counters are advanced inside the same call where they live on the
parameters' device (on a CPU, where eager additions to ten 0-d tensors would cost as much
as the update), else just before it. Small CPU layouts (every tensor under
:data:`SERIAL_NUMEL` entries) are compiled single-threaded.

Compiling needs what inductor needs: a C++ compiler on a CPU (``g++`` here), Triton on
CUDA. It is the only place of the package that compiles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch._inductor
from torch import Tensor
from torch.fx.experimental.proxy_tensor import make_fx

logger = logging.getLogger(__name__)

__all__ = [
    "FusedUpdate",
    "compiled_update",
    "run_fused",
    "scalar_tensor",
    "layout_check",
    "compile_seconds",
    "cache_info",
    "clear_cache",
]

#: ``update(flags, param, grad, *state, s)``: in-place update of one tensor and its state.
FusedUpdate = Callable[..., None]

_CACHE: dict[tuple, Callable[..., None]] = {}
#: Compilations done in this process, with their seconds (for logs and tests).
_COMPILES: list[tuple[str, int, float]] = []
#: Their seconds in all, read by the trainer to keep compilation out of step times.
_COMPILE_SECONDS = [0.0]
#: Below this many entries per tensor, a CPU layout is compiled single-threaded, as eager
#: torch does not parallelise an operation under its grain size of 32768 entries: waking
#: OpenMP threads for kernels this small costs more than they save, the more so on a busy
#: machine.
SERIAL_NUMEL = 32768


def _layout(tensors: Sequence[Tensor]) -> tuple:
    return tuple((t.dtype, t.device, tuple(t.shape), t.stride()) for t in tensors)


def _row_layout(rows: Sequence[Sequence[Tensor]]) -> list:
    """What may change under an optimizer's own tensors from one step to the next: the
    layout of each parameter (``param.data = ...``, which ``module.to(device)`` also
    does), of its gradient (a new tensor on most steps) and of its state tensors (whose
    ``.data`` may be replaced too)."""
    return [
        (p.dtype, p.device, p.shape, p.stride(), g.shape, g.stride(), _layout(state))
        for p, g, *state in rows
    ]


def layout_check(tensors: Sequence[Tensor]) -> Callable[..., bool]:
    """A test that the tensors it is given, in the order of ``tensors``, have their
    dtypes, devices, shapes and strides: dynamo's own tensor guard (one C++ call) where
    this torch has it, else the same comparison in Python."""
    try:
        from torch._C._dynamo.guards import TensorGuards

        return TensorGuards(
            *tensors,
            dynamic_dims_sizes=[list(t.shape) for t in tensors],
            dynamic_dims_strides=[list(t.stride()) for t in tensors],
        ).check
    except (ImportError, TypeError, RuntimeError):
        expected = _layout(tensors)

        def check(*given: Tensor) -> bool:
            try:
                return _layout(given) == expected
            except RuntimeError:  # a sparse tensor, which has no strides
                return False

        return check


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _make_runner(
    update: FusedUpdate, flags: tuple, maximize: bool, widths: tuple[int, ...], n_steps: int
) -> Callable[..., None]:
    """The whole step as one function of a flat argument list: ``n_steps`` step counters,
    then each row's ``width`` tensors ``(param, grad, *state)``, then the scalars."""

    def run_rows(*tensors: Tensor) -> None:
        for step in tensors[:n_steps]:
            step.add_(1)
        scalars = tensors[-1]
        offset = n_steps
        for index, width in enumerate(widths):
            param, grad, *state = tensors[offset : offset + width]
            offset += width
            if maximize:
                grad = torch.neg(grad)
            # Scalars in the dtype an eager op computes in for this tensor: its own, or
            # float32 for half and bfloat16 (eager rounds a 0.999 to 1 in bfloat16 only
            # when it is stored, never as an operand).
            s = scalars[index].to(_compute_dtype(param.dtype))
            update(flags, param, grad, *state, s=s)

    return run_rows


def _compile(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    flat: list[Tensor],
    n_steps: int,
) -> Callable[..., None]:
    """Trace the step into an aten graph (on fake tensors: nothing is written) and compile
    it with inductor; time and log the compilation."""
    start = time.perf_counter()
    runner = _make_runner(update, flags, maximize, tuple(map(len, rows)), n_steps)
    with torch.no_grad():
        graph = make_fx(runner, tracing_mode="fake")(*flat)
    # The graph is specialised to these shapes and strides, which the caller checks.
    options: dict[str, Any] = {"size_asserts": False}
    device = flat[-1].device
    if device.type == "cpu" and max(row[0].numel() for row in rows) < SERIAL_NUMEL:
        options["cpp.threads"] = 1
    try:
        compiled = torch._inductor.compile(graph, flat, options=options)
    except Exception as err:
        needs = "a C++ compiler" if device.type == "cpu" else "Triton"
        raise RuntimeError(
            f"fused=True could not compile the {update.__qualname__.split('.')[0]} update "
            f"for {device.type} ({type(err).__name__}: {err}); inductor needs {needs} for "
            "it. Use the default path (fused=False) or install what inductor needs."
        ) from err
    compiled = _direct_call(compiled)
    seconds = time.perf_counter() - start

    name = update.__qualname__
    _COMPILES.append((name, len(rows), seconds))
    _COMPILE_SECONDS[0] += seconds
    kinds = ", ".join(sorted({f"{row[0].dtype}/{row[0].device}" for row in rows}))
    logger.info(
        "compiled the fused %s update for %d tensors (%d entries, %s, flags %s) in %.2f s",
        name.split(".")[0],
        len(rows),
        sum(row[0].numel() for row in rows),
        kinds,
        flags,
        seconds,
    )
    return compiled


def _compiled_graph(fn: Any) -> Any:
    """The ``CompiledFxGraph`` that ``torch._inductor.compile``'s callable wraps (found
    among the closures of its wrappers, at most eight deep), or None."""
    try:
        from torch._inductor.output_code import CompiledFxGraph
    except ImportError:
        return None
    pending, seen = [fn], set()
    for _ in range(8):
        found = []
        for item in pending:
            if isinstance(item, CompiledFxGraph):
                return item
            if id(item) in seen:
                continue
            seen.add(id(item))
            for cell in getattr(item, "__closure__", None) or ():
                try:
                    found.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    continue
        pending = found
        if not pending:
            break
    return None


def _direct_call(compiled: Callable[..., Any]) -> Callable[..., None]:
    """``compiled`` without the runtime wrappers of a general compiled graph.

    Between the call and the generated code, ``torch._inductor.compile``'s callable runs
    five layers of Python (output flattening, dynamo's frame switch, AOTAutograd's runtime
    wrappers) that an update of a few microseconds notices, the more so when the caches
    are cold, as they are after a forward and backward pass. What those layers do for
    this graph is done here: the generated code writes every mutated input in place
    (inductor lists them as ``mutated_input_idxs``) and returns nothing, so the only work
    left is to bump the version counters of the mutated tensors, as any in-place
    operation does, so that autograd still notices a saved tensor modified in place.
    Where the graph is not of that form, or this torch lays its wrappers out otherwise,
    ``compiled`` is returned unchanged."""
    graph = _compiled_graph(compiled)
    inner = getattr(graph, "current_callable", None)
    mutated = sorted(getattr(graph, "mutated_input_idxs", None) or ())
    strides = getattr(graph, "output_strides", None)
    if inner is None or not mutated or strides is None:
        return compiled
    if any(stride is not None for stride in strides):
        return compiled  # an output: a mutation left to the wrappers, or a result

    def call(*args: Tensor) -> None:
        inner(list(args))
        torch.autograd.graph.increment_version([args[i] for i in mutated])

    return call


def compiled_update(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    steps: Sequence[Tensor],
    scalars: Tensor,
    plans: dict | None = None,
) -> Callable[..., None]:
    """The compiled step over ``steps``, ``rows`` and ``scalars`` (called with them as one
    flat argument list), from the caches or compiled now.

    ``plans`` is the calling optimizer's own cache, keyed by the identities of the
    tensors it holds (step counters, parameters, state) and checked against the layout of
    the parameters, their gradients and state (see :func:`_row_layout`); its state
    tensors are replaced, never reshaped, by ``load_state_dict``. Missing there, the process-wide
    cache is looked up by the full layout (shapes, strides, dtypes and devices of every
    tensor), so optimizers over tensors of one layout share one compilation.
    """
    identity = (
        update,
        flags,
        maximize,
        *map(id, steps),
        *(id(row[0]) for row in rows),
        *(id(t) for row in rows for t in row[2:]),
    )
    layout = (_layout(steps), _row_layout(rows))
    if plans is not None:
        plan = plans.get(identity)
        if plan is not None and plan[1] == layout:
            return plan[0]
    flat = [*steps, *(t for row in rows for t in row), scalars]
    key = (update, flags, maximize, tuple(map(len, rows)), len(steps), _layout(flat))
    compiled = _CACHE.get(key)
    if compiled is None:
        compiled = _CACHE[key] = _compile(update, flags, maximize, rows, flat, len(steps))
    if plans is not None:
        if len(plans) > 64:
            plans.clear()
        plans[identity] = (compiled, layout)
    return compiled


def run_fused(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    steps: Sequence[Tensor],
    scalar_rows: list[list[float]],
    plans: dict | None = None,
) -> tuple[Callable[..., None], list[Tensor]] | None:
    """Apply ``update`` to every row ``(param, grad, *state)`` with the host scalars of
    each row, one compiled call per device, and add one to every ``steps`` tensor: inside
    that call where it lives on the parameters' device, else before it. ``plans`` is the
    optimizer's cache of compiled calls (see :func:`compiled_update`).

    Returns the compiled function and its argument list where one call did everything
    (every tensor on one device), else None."""
    first = rows[0][0].device
    if first.type == "cpu":
        # The common case, checked without building a device object per tensor.
        same = all(row[0].is_cpu for row in rows) and all(step.is_cpu for step in steps)
    else:
        same = all(row[0].device == first for row in rows)
        same = same and all(step.device == first for step in steps)
    if same:
        return _run_on_device(update, flags, maximize, rows, steps, scalar_rows, first, plans)

    by_device: dict[torch.device, list[int]] = {}
    for index, row in enumerate(rows):
        by_device.setdefault(row[0].device, []).append(index)
    # Counters on a device with parameters advance in that device's call, the others here.
    steps_by_device: dict[torch.device, list[Tensor]] = {device: [] for device in by_device}
    eager = []
    for step in steps:
        steps_by_device.get(step.device, eager).append(step)
    if eager:
        torch._foreach_add_(eager, 1)
    for device, indices in by_device.items():
        device_rows = [rows[i] for i in indices]
        device_scalars = [scalar_rows[i] for i in indices]
        _run_on_device(
            update,
            flags,
            maximize,
            device_rows,
            steps_by_device[device],
            device_scalars,
            device,
            plans,
        )
    return None


def _run_on_device(
    update: FusedUpdate,
    flags: tuple,
    maximize: bool,
    rows: Sequence[Sequence[Tensor]],
    steps: Sequence[Tensor],
    scalar_rows: list[list[float]],
    device: torch.device,
    plans: dict | None,
) -> tuple[Callable[..., None], list[Tensor]]:
    scalars = scalar_tensor(scalar_rows, device, plans)
    compiled = compiled_update(update, flags, maximize, rows, steps, scalars, plans)
    flat = [*steps, *(t for row in rows for t in row), scalars]
    compiled(*flat)
    return compiled, flat


def scalar_tensor(scalar_rows: list[list[float]], device: torch.device, plans: dict | None):
    """The scalars as a tensor on ``device``; the previous step's tensor when they are the
    same numbers (the compiled call only reads it)."""
    # MPS has no float64; its scalars are float32, like its tensors.
    dtype = torch.float32 if device.type == "mps" else torch.float64
    if plans is not None:
        last = plans.get(("scalars", device))
        if last is not None and last[0] == scalar_rows:
            return last[1]
    scalars = torch.tensor(scalar_rows, dtype=dtype, device=device)
    if plans is not None:
        plans[("scalars", device)] = (scalar_rows, scalars)
    return scalars


def compile_seconds() -> float:
    """Seconds spent compiling fused updates in this process so far (a training loop
    subtracts what its steps added, so that step times leave compilation out)."""
    return _COMPILE_SECONDS[0]


def cache_info() -> dict[str, Any]:
    """Number of cached compiled updates and the compilations done so far."""
    return {"cached": len(_CACHE), "compiles": list(_COMPILES)}


def clear_cache() -> None:
    """Forget every compiled update (the next fused step compiles again)."""
    _CACHE.clear()
    _COMPILES.clear()
