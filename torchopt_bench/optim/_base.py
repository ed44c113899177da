r"""Shared machinery of the optimizers: capabilities, validation, the step skeleton.

Every optimizer of the package subclasses :class:`BenchOptimizer`, which is a plain
``torch.optim.Optimizer``. A subclass supplies the update of one parameter group in
two forms that must agree:

* ``_single_tensor(group, params, grads, states)``: a loop over tensors, written to be
  read beside the paper. It is the ground truth of the package.
* ``_foreach(group, params, grads, states)``: the same update with ``torch._foreach_*``
  multi-tensor kernels. It is optional; without it ``foreach=True`` falls back to the loop.

``foreach=None`` takes the multi-tensor path where torch.optim does (every tensor on an
accelerator with foreach kernels) and, on a CPU, for the tensors of at most
:data:`FOREACH_MAX_NUMEL` entries, the larger ones taking the loop (:meth:`_update`).

``fused=True`` (where :attr:`Capabilities.fused`) runs one pass over memory per step,
in one of two ways, named by :attr:`BenchOptimizer.fused_path`:

* torch's own fused kernel (``torch._fused_adam_`` and the like), for the methods that
  torch has one for; the class overrides ``_fused``;
* an update compiled by inductor (:mod:`torchopt_bench.optim._fused`): the
  class writes the update of one tensor as ``_fused_update(flags, param, grad, *state,
  s)``, with the step's scalars ``s`` computed on the host by ``_fused_scalars``, the
  state tensors named by ``_fused_state_keys`` and the structural switches by
  ``_fused_flags``.

``states`` holds one dict per parameter, created by ``_init_state`` on the parameter's
first step. Hyperparameters are read from the param group on every step so that
learning-rate schedulers and per-group settings behave as in torch.optim.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import (
    _foreach_supported_types,
    _global_optimizer_post_hooks,
    _global_optimizer_pre_hooks,
)
from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

from ._fused import layout_check, run_fused, scalar_tensor

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

__all__ = ["BenchOptimizer", "Capabilities", "ParamsT", "OPTIMIZERS", "register"]


@dataclass(frozen=True)
class Capabilities:
    """What an optimizer needs from the trainer and what it supports.

    The trainer and the tests read these fields; nothing in the package branches on an
    optimizer's name.
    """

    #: ``step`` must be given a closure that re-evaluates the loss (L-BFGS, Newton).
    needs_closure: bool = False
    #: The closure must call ``backward(create_graph=True)`` (Hessian-vector products).
    needs_create_graph: bool = False
    #: The optimizer has ``train()`` / ``eval()`` modes that must bracket evaluation.
    has_train_eval: bool = False
    #: The update of an entry depends only on that entry's own history, so rows of a
    #: batched tensor are independent problems. False for norms over a tensor, L-BFGS, ...
    elementwise: bool = True
    #: Only matrices get the method's update; other tensors take a documented fallback.
    matrix_only: bool = False
    complex: bool = False
    sparse: bool = False
    maximize: bool = True
    foreach: bool = False
    fused: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


#: Registry of optimizer classes by class name, filled by :func:`register`.
OPTIMIZERS: dict[str, type[BenchOptimizer]] = {}


def register(cls: type[BenchOptimizer]) -> type[BenchOptimizer]:
    """Class decorator adding an optimizer class to :data:`OPTIMIZERS`."""
    OPTIMIZERS[cls.__name__] = cls
    return cls


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim uses for its ``step`` counters."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def check_lr(lr: float | Tensor) -> None:
    """Raise ``ValueError`` in torch.optim's wording (``Invalid learning rate: -1``) for a
    learning rate that is negative, NaN or not a number at all (``"abc"``, a bool).

    The error carries the constructor argument it concerns (``setting``) and what that
    argument takes (``expected``), so the command line can name its config key.
    """
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    number = isinstance(lr, Tensor) or (isinstance(lr, Real) and not isinstance(lr, bool))
    if not number or not lr >= 0.0:
        err = ValueError(f"Invalid learning rate: {lr}")
        err.setting, err.expected = "lr", "a non-negative number"  # type: ignore[attr-defined]
        raise err


def check_nonnegative(name: str, value: float) -> None:
    """Raise ``ValueError`` in torch.optim's wording, e.g. ``Invalid epsilon value: -1``,
    for a value that is negative, NaN or not a number (``"abc"``, a bool). ``name`` is the
    word torch uses, the argument's name except ``epsilon`` for ``eps``; the error carries
    the argument (``setting``) and what it takes (``expected``), as :func:`check_lr`'s does.
    """
    if isinstance(value, bool) or not isinstance(value, Real | Tensor) or not value >= 0.0:
        err = ValueError(f"Invalid {name} value: {value}")
        err.setting = "eps" if name == "epsilon" else name  # type: ignore[attr-defined]
        err.expected = "a non-negative number"  # type: ignore[attr-defined]
        raise err


def check_beta(index: int, value: float) -> None:
    """Raise ``ValueError`` in torch.optim's wording (``Invalid beta parameter at index 1:
    1.0``) unless ``betas[index]`` is a number in [0, 1); the error carries ``setting``
    (``betas``) and ``expected``, as :func:`check_lr`'s does."""
    number = isinstance(value, Real | Tensor) and not isinstance(value, bool)
    if not number or not 0.0 <= value < 1.0:
        err = ValueError(f"Invalid beta parameter at index {index}: {value}")
        err.setting = "betas"  # type: ignore[attr-defined]
        err.expected = "numbers in [0, 1)"  # type: ignore[attr-defined]
        raise err


def check_betas(betas: Any, count: int = 2) -> None:
    """``betas`` must hold ``count`` numbers, each checked by :func:`check_beta`; a list of
    another length is a ``ValueError`` naming the setting, as its values' errors do."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != count:
        err = ValueError(f"Invalid betas: {count} values are needed, got {betas!r}")
        err.setting = "betas"  # type: ignore[attr-defined]
        err.expected = f"a list of {count} numbers in [0, 1)"  # type: ignore[attr-defined]
        raise err
    for index, value in enumerate(betas):
        check_beta(index, value)


def view_as_real(tensors: list[Tensor]) -> list[Tensor]:
    """Complex tensors as real views with a trailing dimension of two, as torch.optim
    treats them: the real and imaginary parts are updated as independent entries."""
    return [torch.view_as_real(t) if torch.is_complex(t) else t for t in tensors]


#: On a CPU, ``foreach=None`` takes the multi-tensor path for tensors of at most this many
#: entries and the per-tensor loop for larger ones, whichever is faster (torch's default
#: on a CPU is the loop throughout). It is torch's intra-op grain size: an operation on
#: fewer entries runs on one thread and costs mostly its dispatch, which the multi-tensor
#: path pays once per list instead of once per tensor; on larger tensors the loop is the
#: faster, since it runs all the operations of one tensor while its intermediate results
#: are still in cache, where the multi-tensor path runs one operation over every tensor
#: before the next (Adagrad on 10 tensors of 1M entries: 3.2x slower on this path).
FOREACH_MAX_NUMEL = 32768


def _small_on_cpu(params: list[Tensor], grads: list[Tensor]) -> list[int] | None:
    """The indices of the parameters of at most :data:`FOREACH_MAX_NUMEL` entries, where
    every parameter is a plain CPU tensor with a dense gradient; else None."""
    small = []
    for index, (p, grad) in enumerate(zip(params, grads)):
        if not p.is_cpu or grad.is_sparse or type(p) not in _foreach_supported_types:
            return None
        if p.numel() <= FOREACH_MAX_NUMEL:
            small.append(index)
    return small


def default_foreach(params: list[Tensor]) -> bool:
    """torch.optim's default (``_default_to_fused_or_foreach``): the multi-tensor path
    only when every tensor is of a type and on a device that torch has foreach kernels
    for (CUDA, XPU, MTIA and the private-use backend; not the CPU, not MPS)."""
    supported = _get_foreach_kernels_supported_devices()
    return not torch.jit.is_scripting() and all(
        type(p) in _foreach_supported_types and p.device.type in supported for p in params
    )


def step_tensor(p: Tensor, group: dict[str, Any]) -> Tensor:
    """A zero ``step`` counter as torch.optim creates it: a float32 tensor on the
    parameter's device for a fused group (torch's fused kernels read it there), else a
    CPU tensor of :func:`scalar_dtype`."""
    if group.get("fused"):
        return torch.zeros((), dtype=torch.float32, device=p.device)
    return torch.tensor(0.0, dtype=scalar_dtype())


def step_values(steps: list[Tensor]) -> list[float]:
    """The values of 0-d tensors (``step`` counters and the like) as floats, with a
    single device sync at most."""
    if all(step.is_cpu for step in steps):
        return [step.item() for step in steps]
    return torch.stack([step.to("cpu", torch.float64) for step in steps]).tolist()


def _dense(t: Tensor) -> bool:
    """Whether ``t``'s entries fill its memory exactly once, in some order of its
    dimensions (a permutation of a contiguous tensor)."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def flat_layout_grads(
    name: str,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    keys: Sequence[str],
) -> list[Tensor]:
    """The gradients as torch's fused kernels (``torch._fused_adam_`` and the like) need
    them, and a check of the rest.

    Those kernels read every tensor of a parameter as one flat array, so a parameter, its
    gradient and its state tensors ``keys`` must share one memory layout, dense and
    without overlap; given anything else torch's kernel pairs the wrong entries (a
    transposed gradient, say) without a word. A gradient of another layout (expanded, or
    transposed) is copied into its parameter's; a parameter that is not dense, or whose
    state has another layout than its own (after ``param.data = ...`` with new strides),
    is refused with an error that names the way out."""
    out = []
    for index, (p, grad, state) in enumerate(zip(params, grads, states)):
        held = [state[k] for k in keys if k in state]
        if p.is_contiguous() and grad.is_contiguous() and all(t.is_contiguous() for t in held):
            out.append(grad)
            continue
        stride = p.stride()
        if not _dense(p) or any(t.stride() != stride for t in held):
            raise RuntimeError(
                f"{name} with fused=True: parameter {index} (shape {tuple(p.shape)}, strides "
                f"{stride}) and its state {[tuple(t.stride()) for t in held]} do not share one "
                "dense memory layout, which torch's fused kernel requires; use fused=False, "
                "or give the parameter a contiguous layout before creating the optimizer"
            )
        out.append(grad if grad.stride() == stride else torch.empty_like(p).copy_(grad))
    return out


def group_by_device_and_dtype(params: list[Tensor]) -> dict[tuple, list[int]]:
    """Indices of ``params`` by (device, dtype): torch's fused kernels take one of each."""
    groups: dict[tuple, list[int]] = {}
    for index, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(index)
    return groups


def device_lr(lr: float | Tensor, device: torch.device) -> float | Tensor:
    """``lr`` as torch's fused kernels take it: a tensor only if it already lives on an
    accelerator (then on ``device``), else a float."""
    if isinstance(lr, Tensor) and lr.device.type != "cpu":
        return lr.to(device)
    return float(lr)


# -- weight decay ------------------------------------------------------------------------
# The two forms of weight decay the methods share, each a single operation so that a
# method calling them computes bit for bit what the inline code did. None of them does
# anything when ``weight_decay`` is 0.


def apply_l2(grad: Tensor, param: Tensor, weight_decay: float) -> Tensor:
    """L2 regularisation: ``grad + weight_decay * param``, a new tensor (``grad`` itself
    when ``weight_decay`` is 0), as ``grad.add(param, alpha=weight_decay)``."""
    return grad.add(param, alpha=weight_decay) if weight_decay != 0 else grad


def apply_l2_foreach(
    grads: list[Tensor], params: list[Tensor], weight_decay: float
) -> list[Tensor]:
    """:func:`apply_l2` over lists, as one ``torch._foreach_add``."""
    if weight_decay == 0:
        return grads
    return torch._foreach_add(grads, params, alpha=weight_decay)


def decoupled_shrink(param: Tensor, lr: float | Tensor, weight_decay: float) -> None:
    """Decoupled weight decay (Loshchilov & Hutter, AdamW): ``param *= 1 - lr *
    weight_decay`` in place, before the method's own update."""
    if weight_decay != 0:
        param.mul_(1 - lr * weight_decay)


def decoupled_shrink_foreach(
    params: list[Tensor], lr: float | Tensor, weight_decay: float
) -> None:
    """:func:`decoupled_shrink` over a list, as one ``torch._foreach_mul_``."""
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)


def apply_weight_decay(
    grad: Tensor, param: Tensor, lr: float | Tensor, weight_decay: float, decoupled: bool
) -> Tensor:
    """The gradient after weight decay of either form: ``param`` shrunk in place and
    ``grad`` returned as it is (``decoupled``), or :func:`apply_l2`."""
    if decoupled:
        decoupled_shrink(param, lr, weight_decay)
        return grad
    return apply_l2(grad, param, weight_decay)


def apply_weight_decay_foreach(
    grads: list[Tensor],
    params: list[Tensor],
    lr: float | Tensor,
    weight_decay: float,
    decoupled: bool,
) -> list[Tensor]:
    """:func:`apply_weight_decay` over lists."""
    if decoupled:
        decoupled_shrink_foreach(params, lr, weight_decay)
        return grads
    return apply_l2_foreach(grads, params, weight_decay)


def _hooked_step(step: Any) -> Any:
    """``step`` with torch.optim's step hooks and profiler label, as
    ``Optimizer.profile_hook_step`` wraps it, except that the label is recorded only
    while a profiler runs: its ``record_function`` costs some 5 us per step even with no
    profiler to see it, as much as a whole fused update of a small network.

    The pre-hooks (global, then the optimizer's), the step, ``_optimizer_step_code``
    (the profiler's entry point) and the post-hooks (the optimizer's, then global) run in
    torch's order; a pre-hook may return new ``(args, kwargs)``. Marked ``hooked`` so
    that torch.optim does not wrap it a second time."""

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # As in torch, the hooks see (and may replace) the arguments with the optimizer
        # first: ``args`` is ``(optimizer, *step_args)``.
        self = args[0]
        if torch.autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(
                f"Optimizer.step#{type(self).__name__}.step"
            ):
                return _with_hooks(step, self, args, kwargs)
        return _with_hooks(step, self, args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


def _with_hooks(step: Any, self: Optimizer, args: tuple, kwargs: dict) -> Any:
    for pre_hook in (
        *_global_optimizer_pre_hooks.values(),
        *self._optimizer_step_pre_hooks.values(),
    ):
        result = pre_hook(self, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(
                    f"{step} must return None or a tuple of (new_args, new_kwargs), but got "
                    f"{result}."
                )
            args, kwargs = result
    out = step(*args, **kwargs)
    self._optimizer_step_code()
    for post_hook in (
        *self._optimizer_step_post_hooks.values(),
        *_global_optimizer_post_hooks.values(),
    ):
        post_hook(self, args, kwargs)
    return out


class _PlannedGroup(NamedTuple):
    """One param group as the last fused step found it."""

    group: dict[str, Any]
    param_ids: tuple[int, ...]
    #: Its structural flags and ``maximize``.
    key: tuple
    states: list[dict[str, Any]]
    steps: list[Tensor]


@dataclass
class _FusedStep:
    """The compiled call of the last fused step and what it was made for (see
    :meth:`BenchOptimizer._fused_step_again`)."""

    groups: list[_PlannedGroup]
    params: list[Tensor]
    state_ids: list[int]
    keys: list[tuple[str, ...]]
    #: The state tensors the call was made with, in order (held, so no id is reused).
    held: list[Tensor]
    #: Whether parameters, gradients and held state, given in this order, have the planned
    #: layout.
    same_layout: Any
    compiled: Any
    #: The call's arguments, in which each step's gradients and scalars are replaced.
    flat: list[Tensor]
    grad_positions: list[int]


class BenchOptimizer(Optimizer):
    """Base class: the step skeleton shared by every optimizer of the package.

    Subclasses declare :attr:`capabilities` and :attr:`reference` (the implementation or
    paper the class is checked against) and implement ``_init_state`` and
    ``_single_tensor`` (and usually ``_foreach``).
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    reference: ClassVar[str] = ""
    #: How ``fused=True`` runs: the torch kernel it calls, or ``"inductor"``.
    fused_path: ClassVar[str] = ""
    #: Whether ``_fused_scalars`` reads the step counts (else they are not copied to the
    #: host, and it is passed ``None``).
    fused_scalars_read_steps: ClassVar[bool] = True
    #: Whether ``foreach=None`` may pick the multi-tensor path (see :meth:`_update`).
    foreach_by_default: ClassVar[bool] = True

    def _patch_step_function(self) -> None:
        # As torch.optim does on construction, with the lighter wrapper of _hooked_step.
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"
        if not getattr(type(self).step, "hooked", None):
            type(self).step = _hooked_step(type(self).step)

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        defaults.setdefault("maximize", False)
        defaults.setdefault("foreach", None)
        defaults.setdefault("fused", None)
        defaults.setdefault("differentiable", False)
        if defaults["differentiable"]:
            raise ValueError(
                f"{type(self).__name__} does not support differentiable=True; "
                "use the torch.optim class for differentiating through the update"
            )
        if defaults["fused"] and defaults["foreach"]:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if defaults["foreach"] and not self.capabilities.foreach:
            raise RuntimeError(
                f"`foreach=True` is not supported by {type(self).__name__} (it has no "
                "multi-tensor path); leave foreach None or False"
            )
        if defaults["fused"] and not self.capabilities.fused:
            raise RuntimeError(
                f"`fused=True` is not supported by {type(self).__name__} (its update is not "
                "elementwise); leave fused None or False"
            )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["fused"]:
                self._check_fused_params(group)

    def _check_fused_params(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if not (p.is_floating_point() or p.is_complex()):
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point (or complex) "
                    f"Tensors, but one is {p.dtype} on {p.device}"
                )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # load_state_dict comes through here with new state tensors: the fused path's
        # plans (keyed by the identities of the old ones) are dropped with them.
        self.__dict__.pop("_fused_plans", None)
        self.__dict__.pop("_fused_step", None)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("differentiable", False)

    # -- to be provided by subclasses ---------------------------------------------------

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _single_tensor(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        raise NotImplementedError

    def _foreach(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        self._single_tensor(group, params, grads, states)

    # -- the fused path: a compiled update (or an override calling a torch kernel) ---------

    def _fused_flags(self, group: dict[str, Any]) -> tuple:
        """Structural switches of the update (a new value compiles a new kernel)."""
        return ()

    def _fused_state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The state tensors passed to ``_fused_update``, in order. Where ``"step"`` is
        one of them, the update advances it; else it is advanced for the update."""
        raise NotImplementedError

    def _fused_scalars(
        self, group: dict[str, Any], states: list[dict[str, Any]], steps: list[float] | None
    ) -> list[list[float]]:
        """One row of host scalars per tensor for this step, whose ``step`` is ``steps``
        (already counted; the tensors themselves are advanced with the update; ``None``
        unless :attr:`fused_scalars_read_steps`). Any other host-side state advances here
        exactly as in the per-tensor loop."""
        raise NotImplementedError

    @staticmethod
    def _fused_update(flags: tuple, param: Tensor, grad: Tensor, *state: Tensor, s: Tensor):
        """The update of one (real) tensor, traced and compiled by inductor."""
        raise NotImplementedError

    def _fused(self, batches: list[tuple[dict, list[Tensor], list[Tensor], list[dict]]]) -> None:
        """Every fused group of the step, as ``(group, params, grads, states)`` with the
        gradients *not* negated for ``maximize``. Groups with the same flags share one
        compiled call: their hyperparameters are rows of the scalars, not constants."""
        buckets: dict[tuple, tuple[list, list, list]] = {}
        for group, params, grads, states in batches:
            if any(grad.is_sparse for grad in grads):
                raise RuntimeError(f"{type(self).__name__} with fused=True: sparse gradients")
            keys = self._fused_state_keys(group)
            rows, steps, scalars = buckets.setdefault(
                (self._fused_flags(group), bool(group["maximize"])), ([], [], [])
            )
            step_tensors = [state["step"] for state in states]
            values = None
            if self.fused_scalars_read_steps:
                values = [value + 1 for value in step_values(step_tensors)]
            scalars += self._fused_scalars(group, states, values)
            if "step" not in keys:
                steps += step_tensors
            for param, grad, state in zip(params, grads, states):
                row = [param, grad, *(state[k] for k in keys)]
                rows.append(view_as_real(row) if param.is_complex() else row)
        # The compiled calls this optimizer has made, by the tensors they were made for.
        plans = self.__dict__.setdefault("_fused_plans", {})
        self.__dict__.pop("_fused_step", None)
        for (flags, maximize), (rows, steps, scalars) in buckets.items():
            call = run_fused(
                type(self)._fused_update, flags, maximize, rows, steps, scalars, plans
            )
        if len(buckets) == 1 and call is not None:
            self._plan_fused_step(batches, rows, len(steps), *call)

    def _plan_fused_step(
        self, batches: list[tuple], rows: list[list[Tensor]], n_steps: int, compiled, flat
    ) -> None:
        """Keep the call just made for the next steps (see :meth:`_fused_step_again`),
        where it covered every parameter of every group with one compiled call."""
        if len(batches) != len(self.param_groups):
            return
        groups = []
        for (group, params, _, states), planned in zip(batches, self.param_groups):
            if group is not planned or len(params) != len(group["params"]):
                return  # a group that is not fused, or a parameter without a gradient
            if any(p.is_complex() for p in params):
                return  # rows of real views, made anew on every step
            key = (self._fused_flags(group), bool(group["maximize"]))
            steps = [state["step"] for state in states]
            groups.append(
                _PlannedGroup(group, tuple(map(id, group["params"])), key, states, steps)
            )
        params = [p for _, ps, _, _ in batches for p in ps]
        # The state tensors of each parameter the call holds, each once ("step" may be one
        # of the update's own): the layout guard refuses a tensor given twice.
        keys = [tuple(dict.fromkeys(("step", *self._fused_state_keys(g)))) for g, *_ in batches]
        held = [
            state[k]
            for (_, _, _, states), group_keys in zip(batches, keys)
            for state in states
            for k in group_keys
        ]
        positions, offset = [], n_steps
        for row in rows:
            positions.append(offset + 1)
            offset += len(row)
        flat = list(flat)
        for position in positions:
            flat[position] = None  # the plan must not keep this step's gradients alive
        self.__dict__["_fused_step"] = _FusedStep(
            groups=groups,
            params=params,
            state_ids=[id(self.state[p]) for p in params],
            keys=keys,
            held=held,
            same_layout=layout_check([*params, *(row[1] for row in rows), *held]),
            compiled=compiled,
            flat=flat,
            grad_positions=positions,
        )

    def _fused_step_again(self, plan: _FusedStep) -> bool:
        """Repeat the last fused step's compiled call, with this step's gradients and
        scalars, if nothing it was planned for has changed: the same groups with the same
        parameters, all with gradients, the same state tensors, the same structural flags,
        and parameters, gradients and state of the same layout. Else leave it (False) to the
        full path, which plans again. The arithmetic is the full path's."""
        groups = self.param_groups
        if len(groups) != len(plan.groups):
            return False
        for group, planned in zip(groups, plan.groups):
            if (
                group is not planned.group
                or not group["fused"]
                or tuple(map(id, group["params"])) != planned.param_ids
            ):
                return False
            if (self._fused_flags(group), bool(group["maximize"])) != planned.key:
                return False
        params = plan.params
        grads = [p.grad for p in params]
        if any(grad is None for grad in grads):
            return False
        state = self.state
        if [id(state.get(p)) for p in params] != plan.state_ids:
            return False
        held = [
            state[k]
            for planned, group_keys in zip(plan.groups, plan.keys)
            for state in planned.states
            for k in group_keys
        ]
        if len(held) != len(plan.held) or any(a is not b for a, b in zip(held, plan.held)):
            return False
        if not plan.same_layout(*params, *grads, *held):
            return False

        scalars = []
        for planned in plan.groups:
            values = None
            if self.fused_scalars_read_steps:
                values = [value + 1 for value in step_values(planned.steps)]
            scalars += self._fused_scalars(planned.group, planned.states, values)
        flat = plan.flat
        for position, grad in zip(plan.grad_positions, grads):
            flat[position] = grad
        flat[-1] = scalar_tensor(scalars, flat[-1].device, self.__dict__["_fused_plans"])
        plan.compiled(*flat)
        for position in plan.grad_positions:
            flat[position] = None  # the plan must not keep this step's gradients alive
        return True

    # -- the step ------------------------------------------------------------------------

    def _gather(
        self, group: dict[str, Any], negate: bool = True
    ) -> tuple[list[Tensor], list[Tensor], list[dict]]:
        """Parameters that have a gradient, their gradients and their (initialised) state.

        Parameters whose ``grad`` is None are skipped entirely: no state, no update. With
        ``maximize`` the gradients are negated unless ``negate`` is False (the fused path
        folds the sign into its single pass).
        """
        params, grads, states = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self.capabilities.sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                state.update(self._init_state(p, group))
            params.append(p)
            # maximize is handled once, here: the update then always descends. The
            # negated gradient is a new tensor, so no update may modify grads in place.
            grads.append(-p.grad if group["maximize"] and negate else p.grad)
            states.append(state)
        return params, grads, states

    def _use_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        """Whether the whole group takes the multi-tensor path: on request, or by default
        where torch's default does (see :func:`default_foreach`)."""
        foreach = group["foreach"]
        if foreach is None:
            foreach = self.foreach_by_default and default_foreach(params)
        return bool(foreach) and not any(p.grad.is_sparse for p in params)

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        """The group's update on the path its ``foreach`` setting selects.

        ``foreach=None`` on a CPU, for a method with a multi-tensor path: the tensors of
        at most :data:`FOREACH_MAX_NUMEL` entries take it, the larger ones the per-tensor
        loop. The two paths compute each tensor's update independently of the others,
        so the split changes nothing but the time.
        """
        if group["foreach"] is None and self.foreach_by_default and self.capabilities.foreach:
            small = _small_on_cpu(params, grads)
            if small is not None:
                if len(small) == len(params):
                    self._foreach(group, params, grads, states)
                elif not small:
                    self._single_tensor(group, params, grads, states)
                else:
                    picked = set(small)
                    large = [i for i in range(len(params)) if i not in picked]
                    for indices, update in ((small, self._foreach), (large, self._single_tensor)):
                        update(
                            group,
                            [params[i] for i in indices],
                            [grads[i] for i in indices],
                            [states[i] for i in indices],
                        )
                return
        if self._use_foreach(group, params):
            self._foreach(group, params, grads, states)
        else:
            self._single_tensor(group, params, grads, states)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        """Perform one optimisation step; ``closure`` re-evaluates the model and returns the
        loss (required only when :attr:`capabilities` says so)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        elif self.capabilities.needs_closure:
            raise RuntimeError(f"{type(self).__name__} requires a closure, e.g. step(closure)")

        plan = self.__dict__.get("_fused_step")
        if plan is not None and self._fused_step_again(plan):
            return loss

        fused_batches = []
        for group in self.param_groups:
            params, grads, states = self._gather(group, negate=not group["fused"])
            if not params:
                continue
            if group["fused"]:
                fused_batches.append((group, params, grads, states))
            else:
                self._update(group, params, grads, states)
        if fused_batches:
            self._fused(fused_batches)
        return loss
