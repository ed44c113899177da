"""Shared machinery of the optimizers: capabilities, validation, the step skeleton.

Every optimizer of the package subclasses :class:`BenchOptimizer`, which is a plain
``torch.optim.Optimizer``. A subclass supplies the update of one parameter group in
two forms that must agree:

* ``_single_tensor(group, params, grads, states)``: a loop over tensors, written to be
  read beside the paper. It is the ground truth of the package.
* ``_foreach(group, params, grads, states)``: the same update with ``torch._foreach_*``
  multi-tensor kernels. It is optional; without it ``foreach=True`` falls back to the loop.

``states`` holds one dict per parameter, created by ``_init_state`` on the parameter's
first step. Hyperparameters are read from the param group on every step so that
learning-rate schedulers and per-group settings behave as in torch.optim.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

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
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_nonnegative(name: str, value: float) -> None:
    """Raise ``ValueError`` in torch.optim's wording, e.g. ``Invalid epsilon value: -1``."""
    if not value >= 0.0:
        raise ValueError(f"Invalid {name} value: {value}")


def check_beta(index: int, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid beta parameter at index {index}: {value}")


def view_as_real(tensors: list[Tensor]) -> list[Tensor]:
    """Complex tensors as real views with a trailing dimension of two, as torch.optim
    treats them: the real and imaginary parts are updated as independent entries."""
    return [torch.view_as_real(t) if torch.is_complex(t) else t for t in tensors]


def default_foreach(params: list[Tensor]) -> bool:
    """torch.optim's default: the multi-tensor path only when every tensor is on an
    accelerator that has foreach kernels, and is a plain tensor."""
    supported = {"cuda", "xpu", "mps", "mtia"}
    return bool(params) and all(
        p.device.type in supported and type(p) in (Tensor, torch.nn.Parameter) for p in params
    )


class BenchOptimizer(Optimizer):
    """Base class: the step skeleton shared by every optimizer of the package.

    Subclasses declare :attr:`capabilities` and :attr:`reference` (the implementation or
    paper the class is checked against) and implement ``_init_state`` and
    ``_single_tensor`` (and usually ``_foreach``).
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    reference: ClassVar[str] = ""

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
        if defaults["fused"] and not self.capabilities.fused:
            raise RuntimeError(f"`fused=True` is not supported by {type(self).__name__}")
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
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

    def _fused(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> None:
        raise NotImplementedError

    # -- the step ------------------------------------------------------------------------

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[dict]]:
        """Parameters that have a gradient, their gradients and their (initialised) state.

        Parameters whose ``grad`` is None are skipped entirely: no state, no update.
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
            grads.append(-p.grad if group["maximize"] else p.grad)
            states.append(state)
        return params, grads, states

    def _use_foreach(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        foreach = group["foreach"]
        if foreach is None:
            foreach = default_foreach(params)
        return bool(foreach) and not any(p.grad.is_sparse for p in params)

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

        for group in self.param_groups:
            params, grads, states = self._gather(group)
            if not params:
                continue
            if group["fused"]:
                self._fused(group, params, grads, states)
            elif self._use_foreach(group, params):
                self._foreach(group, params, grads, states)
            else:
                self._single_tensor(group, params, grads, states)
        return loss
