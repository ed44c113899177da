"""ADOPT: Adam that normalises the gradient by the second moment of the past only."""

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
class ADOPT(BenchOptimizer):
    r"""ADOPT: modified Adam that converges with any :math:`\beta_2` (Taniguchi et al.,
    2024, arXiv:2411.02853).

    Adam's update correlates :math:`g_t` with the :math:`v_t` it is divided by. ADOPT
    divides by the *previous* :math:`v_{t-1}`, normalises before the momentum rather than
    after it, and clips the normalised gradient:

    .. math::
        v_1 &= g_1^2 \quad (\text{first step: no parameter update}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)
            \operatorname{clip}\!\Big(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\ c_t\Big) \\
        \theta_t &= \theta_{t-1} - \gamma m_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

    for :math:`t \ge 2`, with :math:`m_1 = 0` and the clipping bound :math:`c_t =
    t^{p}`, :math:`p` = ``clip_exponent``. There is no bias correction.

    Convention: the authors' implementation (``iShohei220/adopt``). The step counter
    includes the first, initialising step, so the paper's :math:`c_t = t^{1/4}` (its
    :math:`t` counts updates after the initialisation with :math:`g_0`) is
    :math:`(t + 1)^{1/4}` in the paper's indexing. The authors' ``clip_lambda`` callable
    is ``clip_exponent`` here, so that a configuration file can set it; None disables the
    clipping. Weight decay acts on the first step too, as in
    the authors' code. Complex entries are updated as independent real and imaginary
    parts. State keys ``step`` (a 0-d tensor), ``exp_avg`` and ``exp_avg_sq``. Reference:
    ``pytorch_optimizer.ADOPT`` (which follows the authors' code), matched to float64
    precision.

    Paper: S. Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta_2 with
    the Optimal Rate", NeurIPS 2024, arXiv:2411.02853.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.9999)).
        eps: :math:`\epsilon`, the floor of :math:`\sqrt{v_{t-1}}` (default 1e-6).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        clip_exponent: :math:`p` in the clipping bound :math:`c_t = t^p`, or None for no
            clipping (default 0.25).
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
    reference = "pytorch_optimizer.ADOPT"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        clip_exponent: float | None = 0.25,
        *,
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
        if clip_exponent is not None:
            check_nonnegative("clip_exponent", clip_exponent)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            clip_exponent=clip_exponent,
            decoupled_weight_decay=decoupled_weight_decay,
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

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, clip_exponent = group["weight_decay"], group["clip_exponent"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            param, grad = view_as_real([param, grad])
            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])

            # The first gradient only initialises the second moment.
            if step == 1:
                exp_avg_sq.addcmul_(grad, grad)
                continue

            # Normalise by the second moment *before* this gradient enters it.
            normed_grad = grad / exp_avg_sq.sqrt().clamp_(min=eps)
            if clip_exponent is not None:
                clip = step**clip_exponent
                normed_grad.clamp_(-clip, clip)
            exp_avg.lerp_(normed_grad, 1 - beta1)

            param.add_(exp_avg, alpha=-lr)

            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, clip_exponent = group["weight_decay"], group["clip_exponent"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

        grads = apply_weight_decay_foreach(
            grads, params, lr, weight_decay, group["decoupled_weight_decay"]
        )

        params, grads = view_as_real(params), view_as_real(grads)
        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])
        step_values = [step.item() for step in steps]

        # Tensors on their first step only initialise their second moment.
        first = [i for i, step in enumerate(step_values) if step == 1]
        if first:
            first_sqs, first_grads = [exp_avg_sqs[i] for i in first], [grads[i] for i in first]
            torch._foreach_addcmul_(first_sqs, first_grads, first_grads)
        rest = [i for i, step in enumerate(step_values) if step != 1]
        if not rest:
            return
        params = [params[i] for i in rest]
        grads = [grads[i] for i in rest]
        exp_avgs = [exp_avgs[i] for i in rest]
        exp_avg_sqs = [exp_avg_sqs[i] for i in rest]

        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_clamp_min_(denoms, eps)
        normed_grads = torch._foreach_div(grads, denoms)
        if clip_exponent is not None:
            clips = [step_values[i] ** clip_exponent for i in rest]
            torch._foreach_maximum_(normed_grads, [-clip for clip in clips])
            torch._foreach_minimum_(normed_grads, clips)
        torch._foreach_lerp_(exp_avgs, normed_grads, 1 - beta1)

        torch._foreach_add_(params, exp_avgs, alpha=-lr)

        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_flags(self, group) -> tuple:
        return (group["clip_exponent"] is not None,)

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        clip_exponent = group["clip_exponent"]
        shrink = 1 - lr * weight_decay if decoupled else 1.0
        coupled = 0.0 if decoupled else weight_decay
        return [
            [shrink, coupled, float(step == 1), eps,
             step**clip_exponent if clip_exponent is not None else 0.0,
             1 - beta1, -lr, beta2, 1 - beta2]
            for step in steps
        ]  # fmt: skip

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_avg_sq, *, s) -> None:
        (clipped,) = flags
        shrink, coupled, first, eps, clip = s[:5].unbind()
        one_minus_beta1, minus_lr, beta2, one_minus_beta2 = s[5:].unbind()
        param_decayed = param * shrink
        grad = grad + coupled * param_decayed

        # Both the first step (only initialise v) and a later one are formed; the host's
        # step count picks one.
        normed_grad = grad / exp_avg_sq.sqrt().clamp(min=eps)
        if clipped:
            normed_grad = torch.minimum(torch.maximum(normed_grad, -clip), clip)
        new_exp_avg = torch.lerp(exp_avg, normed_grad, one_minus_beta1)
        is_first = first > 0

        param.copy_(torch.where(is_first, param_decayed, param_decayed + minus_lr * new_exp_avg))
        exp_avg.copy_(torch.where(is_first, exp_avg, new_exp_avg))
        exp_avg_sq.copy_(
            torch.where(
                is_first,
                exp_avg_sq + grad * grad,
                exp_avg_sq * beta2 + one_minus_beta2 * grad * grad,
            )
        )
