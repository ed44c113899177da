"""Yogi: Adam with an additive, sign-controlled second moment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    apply_weight_decay,
    apply_weight_decay_foreach,
    check_betas,
    check_lr,
    check_nonnegative,
    register,
    scalar_dtype,
    view_as_real,
)


@register
class Yogi(BenchOptimizer):
    r"""Yogi: adaptive methods for nonconvex optimization (Zaheer et al., NeurIPS 2018).

    Adam's multiplicative update of the second moment, :math:`v_t - v_{t-1} = -(1 -
    \beta_2)(v_{t-1} - g_t^2)`, is replaced by one whose size depends only on
    :math:`g_t^2`, so that :math:`v_t` cannot fall quickly when gradients become small:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= v_{t-1} - (1 - \beta_2) \operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    with :math:`m_0 = 0` and :math:`v_0` = ``initial_accumulator``.

    Convention: the paper's Algorithm 2 prints the update without bias correction,
    :math:`\theta_t = \theta_{t-1} - \gamma m_t / (\sqrt{v_t} + \epsilon)`, which is
    ``bias_correction=False`` here. By default Adam's bias correction is applied, with
    :math:`\epsilon` added to the bias-corrected root as in torch.optim.Adam. The
    defaults ``lr=1e-2`` and ``eps=1e-3`` are the paper's recommendation; ``eps`` is much
    larger than Adam's and is part of the method. ``pytorch_optimizer.Yogi`` starts *both*
    moments at ``initial_accumulator``; here :math:`m_0 = 0`, so the two agree only with
    ``initial_accumulator=0``. Complex entries are updated as independent real and
    imaginary parts. State keys ``step`` (a 0-d tensor), ``exp_avg`` and ``exp_avg_sq``.
    Reference: ``pytorch_optimizer.Yogi`` with ``initial_accumulator=0``, matched to
    float64 precision.

    Paper: M. Zaheer, S. Reddi, D. Sachan, S. Kale and S. Kumar, "Adaptive Methods for
    Nonconvex Optimization", NeurIPS 2018.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-2).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-3).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        initial_accumulator: the starting value :math:`v_0` of the second moment
            (default 1e-6).
        bias_correction: divide the moments by :math:`1 - \beta^t` (default True).
        decoupled_weight_decay: shrink the parameters by :math:`1 - \gamma\lambda` instead
            of adding to the gradient (default False).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        differentiable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "pytorch_optimizer.Yogi (initial_accumulator=0)"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        initial_accumulator: float = 1e-6,
        *,
        bias_correction: bool = True,
        decoupled_weight_decay: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("initial_accumulator", initial_accumulator)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator=initial_accumulator,
            bias_correction=bias_correction,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        exp_avg_sq = torch.zeros_like(p, memory_format=torch.preserve_format)
        # Filled through the real view, so that imaginary parts start at v_0 too.
        view_as_real([exp_avg_sq])[0].fill_(group["initial_accumulator"])
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": exp_avg_sq,
        }

    @staticmethod
    def _step_size_and_root_correction(group: dict[str, Any], step: float) -> tuple[float, float]:
        """The factor of the step, and the divisor of the root of ``v``, at ``step``."""
        (beta1, beta2), lr = group["betas"], group["lr"]
        if not group["bias_correction"]:
            return -lr, 1.0
        return -lr / (1 - beta1**step), (1 - beta2**step) ** 0.5

    def _single_tensor(self, group, params, grads, states) -> None:
        (beta1, beta2), eps = group["betas"], group["eps"]
        lr, weight_decay = group["lr"], group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            param, grad = view_as_real([param, grad])
            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])

            # v moves toward g^2 by a step of (1 - beta2) g^2, whatever the distance.
            exp_avg.lerp_(grad, 1 - beta1)
            grad_sq = grad * grad
            direction = (exp_avg_sq - grad_sq).sign_()
            exp_avg_sq.addcmul_(direction, grad_sq, value=-(1 - beta2))

            step_size, root_correction = self._step_size_and_root_correction(group, step)
            denom = (exp_avg_sq.sqrt() / root_correction).add_(eps)
            param.addcdiv_(exp_avg, denom, value=step_size)

    def _foreach(self, group, params, grads, states) -> None:
        (beta1, beta2), eps = group["betas"], group["eps"]
        lr, weight_decay = group["lr"], group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

        grads = apply_weight_decay_foreach(
            grads, params, lr, weight_decay, group["decoupled_weight_decay"]
        )

        params, grads = view_as_real(params), view_as_real(grads)
        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        grad_sqs = torch._foreach_mul(grads, grads)
        directions = torch._foreach_sub(exp_avg_sqs, grad_sqs)
        torch._foreach_sign_(directions)
        torch._foreach_addcmul_(exp_avg_sqs, directions, grad_sqs, -(1 - beta2))

        corrections = [self._step_size_and_root_correction(group, step.item()) for step in steps]
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [root for _, root in corrections])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, [size for size, _ in corrections])

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        shrink = 1 - lr * weight_decay if decoupled else 1.0
        coupled = 0.0 if decoupled else weight_decay
        rows = []
        for step in steps:
            step_size, root_correction = self._step_size_and_root_correction(group, step)
            rows.append(
                [shrink, coupled, 1 - beta1, -(1 - beta2), root_correction, eps, step_size]
            )
        return rows

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_avg_sq, *, s) -> None:
        shrink, coupled, one_minus_beta1, minus_one_minus_beta2 = s[:4].unbind()
        root_correction, eps, step_size = s[4:].unbind()
        param_decayed = param * shrink
        grad = grad + coupled * param_decayed

        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta1))
        grad_sq = grad * grad
        direction = (exp_avg_sq - grad_sq).sign()
        exp_avg_sq.copy_(exp_avg_sq + minus_one_minus_beta2 * direction * grad_sq)

        denom = exp_avg_sq.sqrt() / root_correction + eps
        param.copy_(param_decayed + step_size * (exp_avg / denom))
