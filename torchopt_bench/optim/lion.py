"""Lion: the sign of an interpolated momentum, found by program search."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    check_betas,
    check_lr,
    check_nonnegative,
    decoupled_shrink,
    decoupled_shrink_foreach,
    register,
    scalar_dtype,
    view_as_real,
)


@register
class Lion(BenchOptimizer):
    r"""Lion: evolved sign momentum (Chen et al., 2023, arXiv:2302.06675).

    .. math::
        c_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        \theta_t &= (1 - \gamma\lambda)\,\theta_{t-1} - \gamma \operatorname{sign}(c_t) \\
        m_t &= \beta_2 m_{t-1} + (1 - \beta_2) g_t

    Every entry moves by exactly :math:`\gamma` per step (0 where :math:`c_t` is 0) on
    top of the weight decay, which is decoupled and acts outside the sign, as in the
    paper's Algorithm 2: it shrinks the parameter by :math:`1 - \gamma\lambda` and never
    enters the momentum. Note that the momentum :math:`m` is updated *after* the step,
    with a second rate :math:`\beta_2`, so the direction of the step interpolates the
    current gradient and the old momentum with :math:`\beta_1`.

    Convention: the paper's; the paper suggests a learning rate 3-10x smaller and a weight
    decay 3-10x larger than AdamW's. Complex entries are updated as independent real and
    imaginary parts. State keys ``step`` (a 0-d tensor) and ``exp_avg`` (:math:`m`).
    Reference: ``pytorch_optimizer.Lion`` (its default decoupled decay), matched to
    float64 precision.

    Paper: X. Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma`, the size of every entry's step (default 1e-4).
        betas: :math:`(\beta_1, \beta_2)`, the interpolation of the step direction and the
            decay of the momentum (default (0.9, 0.99)).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        differentiable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "pytorch_optimizer.Lion"
    fused_path = "inductor"
    fused_scalars_read_steps = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1

            # Decoupled decay, outside the sign: it does not count toward the step of lr.
            decoupled_shrink(param, lr, weight_decay)

            param, grad = view_as_real([param, grad])
            (exp_avg,) = view_as_real([state["exp_avg"]])

            # The direction interpolates with beta1; the momentum then decays with beta2.
            update = exp_avg.lerp(grad, 1 - beta1).sign_()
            exp_avg.lerp_(grad, 1 - beta2)

            param.add_(update, alpha=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]

        torch._foreach_add_([state["step"] for state in states], 1)

        decoupled_shrink_foreach(params, lr, weight_decay)

        params, grads = view_as_real(params), view_as_real(grads)
        exp_avgs = view_as_real([state["exp_avg"] for state in states])

        updates = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
        torch._foreach_sign_(updates)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)

        torch._foreach_add_(params, updates, alpha=-lr)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg",)

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2) = float(group["lr"]), group["betas"]
        return [[1 - lr * group["weight_decay"], 1 - beta1, 1 - beta2, -lr]] * len(states)

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, *, s) -> None:
        shrink, one_minus_beta1, one_minus_beta2, minus_lr = s.unbind()
        update = torch.lerp(exp_avg, grad, one_minus_beta1).sign()
        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta2))
        param.copy_(param * shrink + minus_lr * update)
