"""Damped Newton's method with the exact Hessian, for problems with few parameters."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    check_lr,
    check_nonnegative,
    register,
    scalar_dtype,
)

logger = logging.getLogger(__name__)

LINE_SEARCH_FNS = ("backtracking",)


@register
class Newton(BenchOptimizer):
    r"""Newton's method with Levenberg damping and an optional backtracking line search.

    All parameters are flattened into one vector :math:`\theta` of :math:`n` entries; the
    gradient :math:`g` and the dense :math:`n \times n` Hessian :math:`H` of the closure's
    loss are computed exactly by double backward, and

    .. math::
        d &= -(H + \mu I)^{-1} g \\
        \theta &\leftarrow \theta + t\, d

    with damping :math:`\mu` and :math:`t = \gamma`, or, with
    ``line_search_fn="backtracking"``, the first :math:`t = \gamma, \gamma/2, \gamma/4,
    \dots` that satisfies Armijo's condition :math:`f(\theta + t d) \le f(\theta) + c\,t\,
    g^\top d` (:math:`c = 10^{-4}`, at most 30 halvings; if none does, the parameters stay
    where they were). When :math:`d` is not a descent direction (:math:`g^\top d \ge 0`,
    an indefinite Hessian) the line search uses :math:`d = -g` instead.

    Undamped and with :math:`\gamma = 1` this is the pure Newton iteration: it reaches a
    convex quadratic's minimum in one step and converges quadratically near a
    nondegenerate minimum, but it is attracted by saddle points and maxima as well. Where
    :math:`H + \mu I` is singular the step takes the minimum-norm least-squares direction
    :math:`-(H + \mu I)^+ g` (pseudo-inverse) instead of failing. A positive
    ``damping`` interpolates toward gradient descent with step :math:`\gamma/\mu`.

    What the trainer must do: pass a closure that recomputes the loss and returns it::

        def closure():
            optimizer.zero_grad()
            loss = model_loss()
            loss.backward(create_graph=True)  # optional: Newton differentiates the loss
            return loss

        optimizer.step(closure)

    ``step`` evaluates the closure (the line search evaluates it again at trial points)
    and differentiates the returned loss twice itself, so the closure may call
    ``backward(create_graph=True)`` or not call ``backward`` at all; a plain
    ``backward()`` frees the graph, which raises ``RuntimeError``. ``step`` returns the
    loss at the starting point. The cost is :math:`n` backward passes and an
    :math:`O(n^3)` solve per step, hence ``max_params``: more entries in all raise
    ``ValueError`` at construction. A single param group only (as torch.optim.LBFGS).

    No reference implementation exists in torch.optim or pytorch_optimizer; the class is
    checked against a transcription of the iteration using
    ``torch.autograd.functional.hessian``, against the closed-form minimum of quadratics,
    and on Rosenbrock's function. State key ``step`` (a 0-d tensor), per parameter.

    Args:
        params: parameters (one group).
        lr: step size :math:`\gamma`, the first trial of the line search (default 1).
        damping: Levenberg damping :math:`\mu \ge 0` added to the Hessian's diagonal
            (default 0).
        line_search_fn: None for a fixed step, or ``"backtracking"`` (default None).
        max_params: the largest total number of entries accepted (default 1000).
        maximize: ascend the objective instead of descending (default False).
        foreach: not supported (raises RuntimeError when True): the method works on
            one flat vector.
        fused: not supported (raises RuntimeError when True).
    """

    capabilities = Capabilities(needs_closure=True, needs_create_graph=True, elementwise=False)
    reference = "transcription with torch.autograd.functional.hessian (no package has it)"

    #: Armijo's sufficient-decrease constant, the shrink factor and the number of trials.
    armijo_c: ClassVar[float] = 1e-4
    backtrack_factor: ClassVar[float] = 0.5
    max_backtracks: ClassVar[int] = 30

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        damping: float = 0.0,
        *,
        line_search_fn: str | None = None,
        max_params: int = 1000,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("damping", damping)
        if line_search_fn is not None and line_search_fn not in LINE_SEARCH_FNS:
            raise ValueError(
                f"Invalid line_search_fn value: {line_search_fn!r} "
                f"(choose None or one of {', '.join(map(repr, LINE_SEARCH_FNS))})"
            )
        if isinstance(max_params, bool) or not (isinstance(max_params, int) and max_params > 0):
            raise ValueError(f"Invalid max_params value: {max_params}")
        defaults = dict(
            lr=lr,
            damping=damping,
            line_search_fn=line_search_fn,
            max_params=max_params,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

        if len(self.param_groups) != 1:
            raise ValueError(
                f"{type(self).__name__} doesn't support per-parameter options (parameter groups)"
            )
        params = self.param_groups[0]["params"]
        if any(torch.is_complex(p) for p in params):
            raise ValueError(f"{type(self).__name__} does not support complex parameters")
        n = sum(p.numel() for p in params)
        if n > max_params:
            raise ValueError(
                f"{type(self).__name__} builds the dense {n} x {n} Hessian: the parameters "
                f"have {n} entries in all, more than max_params={max_params}"
            )

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"step": torch.tensor(0.0, dtype=scalar_dtype())}

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        """Take one (damped) Newton step; ``closure`` is required."""
        if closure is None:
            raise RuntimeError(f"{type(self).__name__} requires a closure, e.g. step(closure)")
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        sign = -1.0 if group["maximize"] else 1.0

        # The gradient and Hessian of the objective we descend (-loss when maximising).
        with torch.enable_grad():
            loss = closure()
            grad, hessian = self._derivatives(loss, params)
        grad, hessian = sign * grad, sign * hessian

        # Levenberg damping, then the Newton direction.
        eye = torch.eye(grad.numel(), dtype=hessian.dtype, device=hessian.device)
        damped = hessian + group["damping"] * eye
        direction, info = torch.linalg.solve_ex(damped, -grad)
        if info.item() != 0:
            # A singular (damped) Hessian: the minimum-norm least-squares direction.
            direction = torch.linalg.pinv(damped, hermitian=True) @ -grad

        if group["line_search_fn"] == "backtracking":
            self._backtrack(closure, params, sign * float(loss.detach()), grad, direction, group)
        else:
            self._add(params, direction, group["lr"])

        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state.update(self._init_state(p, group))
            state["step"] += 1
        return loss

    @staticmethod
    def _derivatives(loss: Tensor, params: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The flat gradient and the symmetrised Hessian of ``loss``, by double backward."""
        try:
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        except RuntimeError as err:
            raise RuntimeError(
                "Newton differentiates the closure's loss twice: the closure must return "
                "the loss with its graph, after loss.backward(create_graph=True) or "
                "without calling backward"
            ) from err
        flat_grad = _flatten(grads, params)

        # All Hessian rows in one batched backward pass; one pass per row where an
        # operation has no batching rule. A gradient without a graph is constant.
        n = flat_grad.numel()
        if not flat_grad.requires_grad:
            return flat_grad.detach(), flat_grad.new_zeros(n, n)
        eye = torch.eye(n, dtype=flat_grad.dtype, device=flat_grad.device)
        try:
            blocks = torch.autograd.grad(
                flat_grad,
                params,
                grad_outputs=eye,
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=True,
            )
            rows = [
                p.new_zeros(n, p.numel()) if b is None else b.reshape(n, -1)
                for p, b in zip(params, blocks)
            ]
            hessian = torch.cat(rows, dim=1).detach()
        except RuntimeError:
            logger.debug("Newton: batched Hessian failed; one backward pass per row")
            rows = [
                _flatten(
                    torch.autograd.grad(entry, params, retain_graph=True, allow_unused=True),
                    params,
                )
                for entry in flat_grad
            ]
            hessian = torch.stack(rows).detach()
        return flat_grad.detach(), (hessian + hessian.T) / 2

    def _backtrack(
        self,
        closure,  # noqa: ANN001 - a callable returning the loss
        params: list[Tensor],
        value: float,
        grad: Tensor,
        direction: Tensor,
        group: dict[str, Any],
    ) -> float:
        """Armijo backtracking from ``lr``: leave the parameters at the first trial point
        with sufficient decrease (or where they were) and return its step size (or 0)."""
        slope = float(grad @ direction)
        if slope >= 0:
            logger.debug("Newton direction is not a descent direction; using -grad")
            direction, slope = -grad, -float(grad @ grad)
        if slope == 0:
            return 0.0

        sign = -1.0 if group["maximize"] else 1.0
        start = [p.detach().clone() for p in params]
        step_size = group["lr"]
        for _ in range(self.max_backtracks):
            self._set(params, start, direction, step_size)
            with torch.enable_grad():
                trial = sign * float(closure().detach())
            if trial <= value + self.armijo_c * step_size * slope:
                return step_size
            step_size *= self.backtrack_factor
        self._set(params, start, direction, 0.0)
        logger.warning(
            "Newton backtracking found no sufficient decrease in %d halvings; not moving",
            self.max_backtracks,
        )
        return 0.0

    @staticmethod
    def _set(params: list[Tensor], start: list[Tensor], flat: Tensor, alpha: float) -> None:
        """``params = start + alpha * flat``, with ``flat`` split back into the parameters."""
        for p, p_start in zip(params, start):
            p.copy_(p_start)
        Newton._add(params, flat, alpha)

    @staticmethod
    def _add(params: list[Tensor], flat: Tensor, alpha: float) -> None:
        """``params += alpha * flat``, with ``flat`` split back into the parameters."""
        offset = 0
        for p in params:
            n = p.numel()
            p.add_(flat[offset : offset + n].view_as(p), alpha=alpha)
            offset += n


def _flatten(tensors: tuple[Tensor | None, ...], params: list[Tensor]) -> Tensor:
    """Concatenate flattened tensors, with zeros for the None of unused parameters."""
    return torch.cat(
        [
            torch.zeros_like(p).flatten() if t is None else t.flatten()
            for p, t in zip(params, tensors)
        ]
    )
