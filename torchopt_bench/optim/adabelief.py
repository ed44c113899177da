"""AdaBelief: Adam with the second moment of the gradient's surprise."""

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
class AdaBelief(BenchOptimizer):
    r"""AdaBelief: adapting step sizes by the belief in observed gradients (Zhuang et al.,
    2020, arXiv:2010.07468).

    Adam's second moment :math:`v_t` of :math:`g_t` is replaced by the moving variance
    :math:`s_t` of the gradient around its own moving average, so that steps are large
    where the gradient is predictable and small where it is not:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        s_t &= \beta_2 s_{t-1} + (1 - \beta_2) (g_t - m_t)^2 + \epsilon \\
        \hat s_t &= \max(\hat s_{t-1}, s_t) \ \text{(AMSGrad)}, \text{ else } s_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{\hat s_t / (1 - \beta_2^t)} + \epsilon}

    with :math:`\theta_{t-1} \leftarrow (1 - \gamma\lambda)\theta_{t-1}` first when the
    weight decay is decoupled, or :math:`g_t \leftarrow g_t + \lambda\theta_{t-1}` when not.

    Convention: the paper's Algorithm 2, with :math:`\epsilon` in both places: added to
    :math:`s_t` at every step (so it accumulates to about :math:`\epsilon / (1 - \beta_2)`)
    and again to the bias-corrected root. The residual uses the *updated* :math:`m_t`. The
    defaults follow the authors' package ``adabelief-pytorch`` 0.2: ``eps=1e-16`` and
    decoupled weight decay. Departure: that package's ``rectify`` option (a RAdam-style
    warm-up, on by default there) is not implemented. Complex entries are updated as
    independent real and imaginary parts. State keys ``step`` (a 0-d tensor), ``exp_avg``,
    ``exp_avg_var`` and ``max_exp_avg_var``. Reference: ``pytorch_optimizer.AdaBelief``
    (``ams_bound`` for ``amsgrad``), matched to float64 precision.

    Paper: J. Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", NeurIPS 2020, arXiv:2010.07468.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon`, added to :math:`s_t` and to the denominator (default 1e-16).
        weight_decay: :math:`\lambda` (default 0).
        amsgrad: keep the running maximum of :math:`s_t` (default False).
        decoupled_weight_decay: shrink the parameters by :math:`1 - \gamma\lambda` (True,
            the default) instead of adding :math:`\lambda\theta` to the gradient.
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        differentiable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "pytorch_optimizer.AdaBelief"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_var": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if group["amsgrad"]:
            state["max_exp_avg_var"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            param, grad = view_as_real([param, grad])
            exp_avg, exp_avg_var = view_as_real([state["exp_avg"], state["exp_avg_var"]])

            # The "belief": how far the gradient lands from its own prediction m_t.
            exp_avg.lerp_(grad, 1 - beta1)
            residual = grad - exp_avg
            exp_avg_var.mul_(beta2).addcmul_(residual, residual, value=1 - beta2).add_(eps)

            if amsgrad:
                (max_exp_avg_var,) = view_as_real([state["max_exp_avg_var"]])
                torch.maximum(max_exp_avg_var, exp_avg_var, out=max_exp_avg_var)
                exp_avg_var = max_exp_avg_var

            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_var.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    def _foreach(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

        grads = apply_weight_decay_foreach(
            grads, params, lr, weight_decay, group["decoupled_weight_decay"]
        )

        params, grads = view_as_real(params), view_as_real(grads)
        exp_avgs = view_as_real([state["exp_avg"] for state in states])
        exp_avg_vars = view_as_real([state["exp_avg_var"] for state in states])

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        residuals = torch._foreach_sub(grads, exp_avgs)
        torch._foreach_mul_(exp_avg_vars, beta2)
        torch._foreach_addcmul_(exp_avg_vars, residuals, residuals, 1 - beta2)
        torch._foreach_add_(exp_avg_vars, eps)

        if amsgrad:
            max_exp_avg_vars = view_as_real([state["max_exp_avg_var"] for state in states])
            torch._foreach_maximum_(max_exp_avg_vars, exp_avg_vars)
            exp_avg_vars = max_exp_avg_vars

        step_values = [step.item() for step in steps]
        step_sizes = [-lr / (1 - beta1**step) for step in step_values]
        bias_correction2_sqrt = [(1 - beta2**step) ** 0.5 for step in step_values]
        denoms = torch._foreach_sqrt(exp_avg_vars)
        torch._foreach_div_(denoms, bias_correction2_sqrt)
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_flags(self, group) -> tuple:
        return (bool(group["amsgrad"]),)

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_var", *(["max_exp_avg_var"] if group["amsgrad"] else []))

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        shrink = 1 - lr * weight_decay if decoupled else 1.0
        coupled = 0.0 if decoupled else weight_decay
        return [
            [shrink, coupled, 1 - beta1, beta2, 1 - beta2, eps,
             (1 - beta2**step) ** 0.5, -lr / (1 - beta1**step)]
            for step in steps
        ]  # fmt: skip

    @staticmethod
    def _fused_update(flags, param, grad, exp_avg, exp_avg_var, *state, s) -> None:
        (amsgrad,) = flags
        shrink, coupled, one_minus_beta1, beta2, one_minus_beta2, eps = s[:6].unbind()
        bias_correction2_sqrt, step_size = s[6:].unbind()
        param_decayed = param * shrink
        grad = grad + coupled * param_decayed

        exp_avg.copy_(torch.lerp(exp_avg, grad, one_minus_beta1))
        residual = grad - exp_avg
        exp_avg_var.copy_(exp_avg_var * beta2 + one_minus_beta2 * residual * residual + eps)
        var = exp_avg_var
        if amsgrad:
            max_exp_avg_var = state[0]
            max_exp_avg_var.copy_(torch.maximum(max_exp_avg_var, exp_avg_var))
            var = max_exp_avg_var

        denom = var.sqrt() / bias_correction2_sqrt + eps
        param.copy_(param_decayed + step_size * (exp_avg / denom))
