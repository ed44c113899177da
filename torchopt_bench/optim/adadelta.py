"""Adadelta: steps whose units match the parameters', from two running averages."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    apply_l2,
    apply_l2_foreach,
    check_lr,
    check_nonnegative,
    register,
    scalar_dtype,
    view_as_real,
)


@register
class Adadelta(BenchOptimizer):
    r"""Adadelta: an adaptive learning-rate method (Zeiler, 2012, arXiv:1212.5701).

    With decay rate :math:`\rho`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \rho v_{t-1} + (1 - \rho) g_t^2 \\
        \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} \, g_t \\
        u_t &= \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma \Delta_t

    Convention: torch.optim.Adadelta's, which is the paper's Algorithm 1 with a learning
    rate :math:`\gamma` scaling the update (the paper has none, i.e. :math:`\gamma = 1`,
    the default). :math:`\epsilon` is inside both square roots, as in the paper. State
    keys ``step`` (a 0-d tensor), ``square_avg`` (:math:`v`) and ``acc_delta``
    (:math:`u`). Complex entries are pairs of real entries. Reference:
    ``torch.optim.Adadelta``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` scaling the step (default 1.0).
        rho: decay rate :math:`\rho` of both averages, in [0, 1] (default 0.9).
        eps: :math:`\epsilon` inside the square roots (default 1e-6).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        capturable: not supported (raises ValueError when True).
        maximize: ascend the objective instead of descending (default False).
        differentiable: not supported (raises ValueError when True).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.Adadelta"
    fused_path = "inductor"
    fused_scalars_read_steps = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_nonnegative("epsilon", eps)
        check_nonnegative("weight_decay", weight_decay)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=False,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("capturable", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "acc_delta": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, rho, eps = float(group["lr"]), group["rho"], group["eps"]
        weight_decay = group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1

            grad = apply_l2(grad, param, weight_decay)

            param, grad = view_as_real([param, grad])
            square_avg, acc_delta = view_as_real([state["square_avg"], state["acc_delta"]])

            # The step is the gradient rescaled by RMS[delta]_{t-1} / RMS[g]_t, so that it
            # carries the units of the parameter.
            square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
            std = square_avg.add(eps).sqrt_()
            delta = acc_delta.add(eps).sqrt_().div_(std).mul_(grad)

            # The average of squared steps is updated after the step is taken from it.
            acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
            param.add_(delta, alpha=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, rho, eps = float(group["lr"]), group["rho"], group["eps"]
        weight_decay = group["weight_decay"]

        torch._foreach_add_([state["step"] for state in states], 1)

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_l2_foreach(grads, params, weight_decay)

        square_avgs = view_as_real([state["square_avg"] for state in states])
        acc_deltas = view_as_real([state["acc_delta"] for state in states])

        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        stds = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(stds)

        deltas = torch._foreach_add(acc_deltas, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, stds)
        torch._foreach_mul_(deltas, grads)

        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        torch._foreach_add_(params, deltas, alpha=-lr)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        rho = group["rho"]
        row = [group["weight_decay"], rho, 1 - rho, group["eps"], -float(group["lr"])]
        return [row] * len(states)

    @staticmethod
    def _fused_update(flags, param, grad, square_avg, acc_delta, *, s) -> None:
        weight_decay, rho, one_minus_rho, eps, minus_lr = s.unbind()
        grad = grad + weight_decay * param

        square_avg.copy_(square_avg * rho + one_minus_rho * grad * grad)
        std = (square_avg + eps).sqrt()
        delta = (acc_delta + eps).sqrt() / std * grad

        acc_delta.copy_(acc_delta * rho + one_minus_rho * delta * delta)
        param.copy_(param + minus_lr * delta)
