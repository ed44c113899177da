"""Adam, with the AMSGrad variant and optional decoupled weight decay."""

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
    device_lr,
    flat_layout_grads,
    group_by_device_and_dtype,
    register,
    step_tensor,
    view_as_real,
)


@register
class Adam(BenchOptimizer):
    r"""Adam: adaptive moment estimation (Kingma & Ba, 2015, arXiv:1412.6980).

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad
            (\text{or } \theta_{t-1} \leftarrow (1 - \gamma\lambda)\theta_{t-1}
            \text{ if decoupled}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)}, \text{ else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Convention: torch.optim.Adam's. :math:`\epsilon` is added to the bias-corrected
    :math:`\sqrt{\hat v_t}`, not inside the square root and not to the uncorrected one as
    in the paper's Algorithm 1 "efficient version". AMSGrad keeps the maximum of the
    *uncorrected* second moments (Reddi et al., 2018, as torch does). State keys ``step``
    (a 0-d tensor), ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq``. Reference:
    ``torch.optim.Adam``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        amsgrad: use the AMSGrad maximum of second moments (default False).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one pass over memory per step, through torch's own fused kernel
            (``torch._fused_adam_``, ``torch._fused_adamw_``), on CPU and accelerators;
            as in torch, ``step`` is then a float32 tensor on the parameter's device.
            Complex parameters are passed as real views (torch rejects them there).
        decoupled_weight_decay: shrink the parameters by :math:`1 - \gamma\lambda` instead
            of adding to the gradient, which makes this AdamW (default False).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.Adam"
    fused_path = "torch._fused_adam_"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        check_nonnegative("weight_decay", weight_decay)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs); "
                "use fused=True for a compiled update"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=False,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("decoupled_weight_decay", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": step_tensor(p, group),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            # Weight decay: an L2 term in the gradient, or a shrink of the parameter.
            grad = apply_weight_decay(
                grad, param, lr, weight_decay, group["decoupled_weight_decay"]
            )

            param, grad = view_as_real([param, grad])
            exp_avg, exp_avg_sq = view_as_real([state["exp_avg"], state["exp_avg_sq"]])

            # Exponential moving averages of the gradient and of its square.
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

            if amsgrad:
                (max_exp_avg_sq,) = view_as_real([state["max_exp_avg_sq"]])
                torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                exp_avg_sq = max_exp_avg_sq

            # Bias correction, with eps added after correcting the second moment.
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    def _foreach(self, group, params, grads, states) -> None:
        # A tensor lr would make the per-tensor step sizes tensors, which foreach rejects.
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

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
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        if amsgrad:
            max_exp_avg_sqs = view_as_real([state["max_exp_avg_sq"] for state in states])
            torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
            exp_avg_sqs = max_exp_avg_sqs

        step_values = [step.item() for step in steps]
        step_sizes = [-lr / (1 - beta1**step) for step in step_values]
        bias_correction2_sqrt = [(1 - beta2**step) ** 0.5 for step in step_values]
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, bias_correction2_sqrt)
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)

    def _fused(self, batches) -> None:
        for group, params, grads, states in batches:
            beta1, beta2 = group["betas"]
            amsgrad = group["amsgrad"]
            keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            grads = flat_layout_grads(type(self).__name__, params, grads, states, keys)
            kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
            for (device, _), indices in group_by_device_and_dtype(params).items():
                picked = [states[i] for i in indices]
                steps = [state["step"] for state in picked]
                torch._foreach_add_(steps, 1)
                kernel(
                    view_as_real([params[i] for i in indices]),
                    view_as_real([grads[i] for i in indices]),
                    view_as_real([state["exp_avg"] for state in picked]),
                    view_as_real([state["exp_avg_sq"] for state in picked]),
                    view_as_real([state["max_exp_avg_sq"] for state in picked] if amsgrad else []),
                    steps,
                    amsgrad=amsgrad,
                    lr=device_lr(group["lr"], device),
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=group["maximize"],
                    grad_scale=None,
                    found_inf=None,
                )
