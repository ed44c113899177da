"""NAdam: Adam with Nesterov momentum and a momentum schedule."""

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


def _momentum_coefficient(beta1: float, momentum_decay: float, step: float) -> float:
    """Dozat's warming momentum schedule: mu_t = beta1 (1 - 0.5 * 0.96^(t psi))."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


@register
class NAdam(BenchOptimizer):
    r"""NAdam: Nesterov-accelerated Adam (Dozat, 2016, "Incorporating Nesterov Momentum
    into Adam", ICLR workshop).

    With momentum decay :math:`\psi` and :math:`\mu_t = \beta_1 (1 - \tfrac12
    0.96^{t\psi})`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad
            (\text{or } \theta_{t-1} \leftarrow (1 - \gamma\lambda)\theta_{t-1}
            \text{ if decoupled}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        d_t &= \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1}
            - \gamma \frac{1 - \mu_t}{1 - \prod_{i \le t} \mu_i} \frac{g_t}{d_t}
            - \gamma \frac{\mu_{t+1}}{1 - \prod_{i \le t+1} \mu_i} \frac{m_t}{d_t}

    Convention: torch.optim.NAdam's. The moment :math:`m_t` is an average with weight
    :math:`\beta_1` (the schedule :math:`\mu_t` enters only the step, through the running
    product kept in the state as ``mu_product``); :math:`\epsilon` is added to the
    bias-corrected :math:`\sqrt{\hat v_t}`. ``decoupled_weight_decay=True`` gives NAdamW
    (decay as in AdamW). State keys ``step`` and ``mu_product`` (0-d tensors),
    ``exp_avg`` and ``exp_avg_sq``. Complex entries are pairs of real entries.
    Reference: ``torch.optim.NAdam``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 2e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        momentum_decay: :math:`\psi` of the momentum schedule (default 4e-3).
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
    reference = "torch.optim.NAdam"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
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
        check_nonnegative("momentum_decay", momentum_decay)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
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
            "mu_product": torch.tensor(1.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, momentum_decay = group["weight_decay"], group["momentum_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            # Here torch views complex tensors as real before the weight decay, too.
            param, grad = view_as_real([param, grad])
            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            # The momentum schedule, and the running product of its coefficients that
            # plays the part of Adam's 1 - beta1^t.
            mu = _momentum_coefficient(beta1, momentum_decay, step)
            mu_next = _momentum_coefficient(beta1, momentum_decay, step + 1)
            state["mu_product"] *= mu
            mu_product = state["mu_product"].item()
            mu_product_next = mu_product * mu_next

            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.div(1 - beta2**step).sqrt_().add_(eps)

            # Nesterov: the current gradient with this step's weight, plus the moment
            # with the next step's weight (a look-ahead of the momentum).
            param.addcdiv_(grad, denom, value=-lr * (1 - mu) / (1 - mu_product))
            param.addcdiv_(exp_avg, denom, value=-lr * mu_next / (1 - mu_product_next))

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, momentum_decay = group["weight_decay"], group["momentum_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        step_values = [step.item() for step in steps]

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_weight_decay_foreach(
            grads, params, lr, weight_decay, group["decoupled_weight_decay"]
        )

        mus = [_momentum_coefficient(beta1, momentum_decay, step) for step in step_values]
        mu_nexts = [_momentum_coefficient(beta1, momentum_decay, step + 1) for step in step_values]
        mu_products = [state["mu_product"] for state in states]
        torch._foreach_mul_(mu_products, mus)
        mu_product_values = [mu_product.item() for mu_product in mu_products]

        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [(1 - beta2**step) ** 0.5 for step in step_values])
        torch._foreach_add_(denoms, eps)

        grad_step_sizes = [
            -lr * (1 - mu) / (1 - mu_product) for mu, mu_product in zip(mus, mu_product_values)
        ]
        exp_avg_step_sizes = [
            -lr * mu_next / (1 - mu_product * mu_next)
            for mu_next, mu_product in zip(mu_nexts, mu_product_values)
        ]
        torch._foreach_addcdiv_(params, grads, denoms, grad_step_sizes)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, exp_avg_step_sizes)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, momentum_decay = group["weight_decay"], group["momentum_decay"]
        decoupled = group["decoupled_weight_decay"]
        # Decay as a factor on the parameter or as a gradient term; the other is neutral.
        shrink = 1 - lr * weight_decay if decoupled else 1.0
        coupled = 0.0 if decoupled else weight_decay

        rows = []
        for step, state in zip(steps, states):
            mu = _momentum_coefficient(beta1, momentum_decay, step)
            mu_next = _momentum_coefficient(beta1, momentum_decay, step + 1)
            state["mu_product"] *= mu
            mu_product = state["mu_product"].item()
            mu_product_next = mu_product * mu_next
            rows.append([
                shrink, coupled, 1 - beta1, beta2, 1 - beta2, 1 - beta2**step, eps,
                -lr * (1 - mu) / (1 - mu_product), -lr * mu_next / (1 - mu_product_next),
            ])  # fmt: skip
        return rows

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_avg_sq, *, s) -> None:
        shrink, coupled, one_minus_beta1, beta2, one_minus_beta2, bias_correction2 = s[:6]
        eps, grad_coefficient, moment_coefficient = s[6:].unbind()
        param_decayed = param * shrink
        grad = grad + coupled * param_decayed

        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta1))
        exp_avg_sq.copy_(exp_avg_sq * beta2 + one_minus_beta2 * grad * grad)
        denom = (exp_avg_sq / bias_correction2).sqrt() + eps

        step = param_decayed + grad_coefficient * (grad / denom)
        param.copy_(step + moment_coefficient * (exp_avg / denom))
