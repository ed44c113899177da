"""Adamax: Adam with the infinity norm in place of the second moment."""

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
    check_betas,
    check_lr,
    check_nonnegative,
    register,
    scalar_dtype,
    view_as_real,
)


@register
class Adamax(BenchOptimizer):
    r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, arXiv:1412.6980,
    Algorithm 2).

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        u_t &= \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

    Convention: torch.optim.Adamax's. :math:`\epsilon` is added to :math:`|g_t|` inside
    the maximum (the paper has no :math:`\epsilon`; here it keeps :math:`u_t > 0` where
    the gradient is zero). Only the first moment is bias-corrected, as in the paper.
    State keys ``step`` (a 0-d tensor), ``exp_avg`` (:math:`m`) and ``exp_inf``
    (:math:`u`). Complex entries are pairs of real entries. Reference:
    ``torch.optim.Adamax``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 2e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to :math:`|g_t|` (default 1e-8).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        maximize: ascend the objective instead of descending (default False).
        differentiable: not supported (raises ValueError when True).
        capturable: not supported (raises ValueError when True).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.Adamax"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        capturable: bool = False,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            capturable=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("capturable", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_inf": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay = group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            grad = apply_l2(grad, param, weight_decay)

            param, grad = view_as_real([param, grad])
            exp_avg, exp_inf = view_as_real([state["exp_avg"], state["exp_inf"]])

            # First moment, and an exponentially weighted infinity norm of the gradients.
            exp_avg.lerp_(grad, 1 - beta1)
            torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)

            # Only the first moment needs bias correction: the maximum is not biased to 0.
            clr = lr / (1 - beta1**step)
            param.addcdiv_(exp_avg, exp_inf, value=-clr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay = group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_l2_foreach(grads, params, weight_decay)

        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_infs = view_as_real([state["exp_inf"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_infs, beta2)
        abs_grads = torch._foreach_abs(grads)
        torch._foreach_add_(abs_grads, eps)
        torch._foreach_maximum_(exp_infs, abs_grads)

        step_sizes = [-lr / (1 - beta1 ** step.item()) for step in steps]
        torch._foreach_addcdiv_(params, exp_avgs, exp_infs, step_sizes)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2) = float(group["lr"]), group["betas"]
        head = [group["weight_decay"], 1 - beta1, beta2, group["eps"]]
        return [[*head, -lr / (1 - beta1**step)] for step in steps]

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_inf, *, s) -> None:
        weight_decay, one_minus_beta1, beta2, eps, minus_clr = s.unbind()
        grad = grad + weight_decay * param

        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta1))
        exp_inf.copy_(torch.maximum(exp_inf * beta2, grad.abs() + eps))
        param.copy_(param + minus_clr * (exp_avg / exp_inf))
