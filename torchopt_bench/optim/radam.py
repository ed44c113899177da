"""RAdam: Adam with the variance of the adaptive learning rate rectified."""

from __future__ import annotations

import math
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


def _rectification(beta2: float, step: float) -> float:
    """The variance rectification term r_t, or 0 while rho_t <= 5 (the adaptive learning
    rate's variance is not yet tractable, and the update is plain momentum)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2**step / (1 - beta2**step)
    if rho_t <= 5:
        return 0.0
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


@register
class RAdam(BenchOptimizer):
    r"""RAdam: rectified Adam (Liu et al., 2020, "On the Variance of the Adaptive Learning
    Rate and Beyond", arXiv:1908.03265).

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad
            (\text{or } \theta_{t-1} \leftarrow (1 - \gamma\lambda)\theta_{t-1}
            \text{ if decoupled}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
            {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}} \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} m_t \cdot
            \begin{cases}
                r_t \sqrt{1 - \beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
                1 & \text{otherwise}
            \end{cases}

    Convention: torch.optim.RAdam's. The threshold is :math:`\rho_t > 5` (the paper's
    Algorithm 2 states :math:`\rho_t > 4`); :math:`\epsilon` is added to the
    *uncorrected* :math:`\sqrt{v_t}`, and the correction :math:`\sqrt{1 - \beta_2^t}`
    multiplies the quotient; while not rectified the step is SGD with a bias-corrected
    moment. ``decoupled_weight_decay=True`` gives RAdamW (decay as in AdamW). State keys
    ``step`` (a 0-d tensor), ``exp_avg`` and ``exp_avg_sq``. Complex entries are pairs of
    real entries. Reference: ``torch.optim.RAdam``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        decoupled_weight_decay: shrink the parameters by :math:`1 - \gamma\lambda` instead
            of adding to the gradient (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        maximize: ascend the objective instead of descending (default False).
        capturable: not supported (raises ValueError when True).
        differentiable: not supported (raises ValueError when True).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.RAdam"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
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
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("capturable", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay = group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            # Here torch views complex tensors as real before the weight decay, too.
            param, grad = view_as_real([param, grad])
            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

            # Early on the adaptive learning rate has a diverging variance: step with the
            # bias-corrected momentum alone until the rectification term exists.
            bias_correction1 = 1 - beta1**step
            rect = _rectification(beta2, step)
            if rect > 0:
                adaptive_lr = (1 - beta2**step) ** 0.5 / exp_avg_sq.sqrt().add_(eps)
                param.addcmul_(exp_avg, adaptive_lr, value=-lr * rect / bias_correction1)
            else:
                param.add_(exp_avg, alpha=-lr / bias_correction1)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay = group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        step_values = [step.item() for step in steps]

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_weight_decay_foreach(
            grads, params, lr, weight_decay, group["decoupled_weight_decay"]
        )

        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        # Per tensor, the multiplier of m_t is rect_size / (sqrt(v_t) + eps) + plain_size,
        # with exactly one of the two sizes nonzero.
        rects = [_rectification(beta2, step) for step in step_values]
        bias_corrections1 = [1 - beta1**step for step in step_values]
        rect_sizes = [
            -lr * rect * (1 - beta2**step) ** 0.5 / bc1
            for rect, step, bc1 in zip(rects, step_values, bias_corrections1)
        ]
        plain_sizes = [
            0.0 if rect > 0 else -lr / bc1 for rect, bc1 in zip(rects, bias_corrections1)
        ]
        multipliers = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(multipliers, eps)
        torch._foreach_reciprocal_(multipliers)
        torch._foreach_mul_(multipliers, rect_sizes)
        torch._foreach_add_(multipliers, plain_sizes)
        torch._foreach_addcmul_(params, exp_avgs, multipliers)

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
            bias_correction1 = 1 - beta1**step
            rect = _rectification(beta2, step)
            rows.append([
                shrink, coupled, 1 - beta1, beta2, 1 - beta2, eps,
                1.0 if rect > 0 else 0.0, (1 - beta2**step) ** 0.5,
                -lr * rect / bias_correction1, -lr / bias_correction1,
            ])  # fmt: skip
        return rows

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_avg_sq, *, s) -> None:
        shrink, coupled, one_minus_beta1, beta2, one_minus_beta2, eps = s[:6].unbind()
        rectified, bias_correction2_sqrt, rectified_step, momentum_step = s[6:].unbind()
        param_decayed = param * shrink
        grad = grad + coupled * param_decayed

        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta1))
        exp_avg_sq.copy_(exp_avg_sq * beta2 + one_minus_beta2 * grad * grad)

        # Both branches are formed; the host's rectification test picks one per step.
        adaptive_lr = bias_correction2_sqrt / (exp_avg_sq.sqrt() + eps)
        with_rect = param_decayed + rectified_step * exp_avg * adaptive_lr
        without = param_decayed + momentum_step * exp_avg
        param.copy_(torch.where(rectified > 0, with_rect, without))
