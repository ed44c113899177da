"""LAMB: Adam's direction, rescaled per tensor by a trust ratio."""

from __future__ import annotations

import math
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
    register,
    scalar_dtype,
    view_as_real,
)


def _trust_ratio(weight_norm: Tensor, update_norm: Tensor, clamp_value: float) -> Tensor:
    """:math:`\\phi(\\|\\theta\\|) / \\|r\\|`, or 1 where either norm is zero."""
    weight_norm = weight_norm.clamp(max=clamp_value)
    usable = (weight_norm > 0) & (update_norm > 0)
    return torch.where(usable, weight_norm / update_norm, torch.ones_like(weight_norm))


@register
class Lamb(BenchOptimizer):
    r"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2019,
    arXiv:1904.00962).

    Each tensor takes Adam's direction :math:`r_t` plus the weight decay, rescaled so that
    its step is :math:`\gamma \phi(\|\theta\|)` long, whatever the size of the gradient:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            + \lambda \theta_{t-1} \\
        \theta_t &= \theta_{t-1} - \gamma \frac{\phi(\|\theta_{t-1}\|)}{\|r_t\|} r_t,
            \qquad \phi(z) = \min(z, \text{clamp\_value})

    Norms are Frobenius norms of whole tensors, so the update is not elementwise. The trust
    ratio :math:`\phi(\|\theta\|)/\|r\|` is 1 when either norm is 0 (a tensor at zero, such
    as a fresh bias, takes a plain Adam-direction step of length :math:`\gamma\|r\|`).

    Convention: the paper's Algorithm 2 (LAMB), with the bias correction it prints,
    :math:`\phi` the clamp to ``[0, clamp_value]`` (the paper allows any :math:`\phi(z) =
    \min(\max(z, \gamma_l), \gamma_u)`; 10 is the usual bound) and the weight decay
    inside the trust ratio, not decoupled. ``bias_correction=False`` drops the division
    by :math:`1 - \beta^t`, an option of several implementations (NVIDIA apex's
    ``FusedLAMB`` among them). ``pytorch_optimizer.Lamb`` departs from the paper by default
    (it decouples the decay, divides the step by :math:`1 - \beta_1^t` but leaves the
    second moment uncorrected, and adds :math:`\epsilon` to :math:`\|r\|`); it matches
    this class with its ``weight_decouple=False, adam_debias=True``, with ``eps=0`` on both
    sides and ``bias_correction=False`` here. Complex entries are updated as independent
    real and imaginary parts. State keys ``step`` (a 0-d tensor), ``exp_avg`` and
    ``exp_avg_sq``. Reference: ``pytorch_optimizer.Lamb`` in that setting, matched to
    float64 precision.

    Paper: Y. You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020, arXiv:1904.00962.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-6).
        weight_decay: :math:`\lambda` (default 0), added to the direction before the trust
            ratio.
        bias_correction: divide the moments by :math:`1 - \beta^t` (default True).
        clamp_value: upper bound of :math:`\phi(\|\theta\|)` (default 10); ``math.inf``
            for none.
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        differentiable: accepted for torch.optim's signature; only False is supported.
        fused: not supported (raises RuntimeError when True): the update is not elementwise.
    """

    capabilities = Capabilities(elementwise=False, complex=True, foreach=True)
    reference = (
        "pytorch_optimizer.Lamb (weight_decouple=False, adam_debias=True, eps=0; "
        "bias_correction=False here)"
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        clamp_value: float = 10.0,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        if not clamp_value > 0:
            raise ValueError(f"Invalid clamp_value value: {clamp_value}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            clamp_value=clamp_value,
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
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    @staticmethod
    def _corrections(group: dict[str, Any], step: float) -> tuple[float, float]:
        """The divisors of :math:`m_t` and of :math:`\\sqrt{v_t}` at ``step``."""
        beta1, beta2 = group["betas"]
        if not group["bias_correction"]:
            return 1.0, 1.0
        return 1 - beta1**step, math.sqrt(1 - beta2**step)

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, clamp_value = group["weight_decay"], group["clamp_value"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            correction1, correction2_sqrt = self._corrections(group, state["step"].item())

            param, grad = view_as_real([param, grad])
            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])

            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

            # Adam's direction, then the decay: the trust ratio scales both together.
            denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(eps)
            update = (exp_avg / correction1).div_(denom)
            if weight_decay != 0:
                update.add_(param, alpha=weight_decay)

            # One step length per tensor: lr * phi(||theta||).
            trust_ratio = _trust_ratio(
                torch.linalg.vector_norm(param), torch.linalg.vector_norm(update), clamp_value
            )
            param.addcmul_(update, trust_ratio, value=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, clamp_value = group["weight_decay"], group["clamp_value"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        corrections = [self._corrections(group, step.item()) for step in steps]

        params, grads = view_as_real(params), view_as_real(grads)
        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [root for _, root in corrections])
        torch._foreach_add_(denoms, eps)
        updates = torch._foreach_div(exp_avgs, [first for first, _ in corrections])
        torch._foreach_div_(updates, denoms)
        if weight_decay != 0:
            torch._foreach_add_(updates, params, alpha=weight_decay)

        weight_norms = torch.stack(torch._foreach_norm(params))
        update_norms = torch.stack(torch._foreach_norm(updates))
        trust_ratios = _trust_ratio(weight_norms, update_norms, clamp_value)
        torch._foreach_mul_(updates, trust_ratios.unbind())
        torch._foreach_add_(params, updates, alpha=-lr)
