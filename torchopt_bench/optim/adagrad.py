"""Adagrad: per-entry learning rates from the running sum of squared gradients."""

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
    device_lr,
    flat_layout_grads,
    group_by_device_and_dtype,
    register,
    step_tensor,
    view_as_real,
)


@register
class Adagrad(BenchOptimizer):
    r"""Adagrad: adaptive subgradient steps (Duchi, Hazan & Singer, 2011, JMLR 12:2121).

    With learning-rate decay :math:`\eta` and initial accumulator value :math:`\tau`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        \tilde\gamma_t &= \gamma / (1 + (t - 1)\eta) \\
        s_t &= s_{t-1} + g_t^2 \quad (s_0 = \tau) \\
        \theta_t &= \theta_{t-1} - \tilde\gamma_t \frac{g_t}{\sqrt{s_t} + \epsilon}

    Convention: torch.optim.Adagrad's, the diagonal form of the paper. :math:`\epsilon`
    is added to :math:`\sqrt{s_t}`, outside the root; weight decay is an L2 term in the
    gradient, so it also enters the accumulator. As in torch, the state of every parameter
    (``step``, a 0-d tensor, and ``sum``) is created in the constructor, so a parameter that
    never receives a gradient still has a zero ``step``. Departure: a param group's own
    ``initial_accumulator_value`` is honoured, where torch uses the constructor's value for
    every group. Complex entries are pairs of real entries. Reference:
    ``torch.optim.Adagrad``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-2).
        lr_decay: :math:`\eta`, the learning rate is divided by :math:`1 + (t-1)\eta`
            (default 0).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        initial_accumulator_value: :math:`\tau`, the starting value of the sum of squared
            gradients (default 0).
        eps: :math:`\epsilon` added to the denominator (default 1e-10).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        maximize: ascend the objective instead of descending (default False).
        differentiable: not supported (raises ValueError when True).
        fused: one pass over memory per step, through torch's own fused kernel
            (``torch._fused_adagrad_``); as in torch, ``step`` is then a float32 tensor
            on the parameter's device. Complex parameters are passed as real views.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.Adagrad"
    fused_path = "torch._fused_adagrad_"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("lr_decay", lr_decay)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("initial_accumulator_value", initial_accumulator_value)
        check_nonnegative("epsilon", eps)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

        # torch.optim.Adagrad creates the state eagerly; its state_dict then lists every
        # parameter, and a state_dict of either class loads into the other.
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p].update(self._init_state(p, group))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        init = group["initial_accumulator_value"]
        init_value = complex(init, init) if torch.is_complex(p) else init
        return {
            "step": step_tensor(p, group),
            "sum": torch.full_like(p, init_value, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, lr_decay, eps = float(group["lr"]), group["lr_decay"], group["eps"]
        weight_decay = group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()

            grad = apply_l2(grad, param, weight_decay)

            # The step size decays as 1 / (1 + (t - 1) lr_decay).
            clr = lr / (1 + (step - 1) * lr_decay)

            # Accumulate squared gradients; each entry's step is scaled by its own history.
            param, grad, state_sum = view_as_real([param, grad, state["sum"]])
            state_sum.addcmul_(grad, grad, value=1)
            std = state_sum.sqrt().add_(eps)
            param.addcdiv_(grad, std, value=-clr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, lr_decay, eps = float(group["lr"]), group["lr_decay"], group["eps"]
        weight_decay = group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_l2_foreach(grads, params, weight_decay)

        state_sums = view_as_real([state["sum"] for state in states])

        torch._foreach_addcmul_(state_sums, grads, grads, value=1)
        stds = torch._foreach_sqrt(state_sums)
        torch._foreach_add_(stds, eps)

        minus_clrs = [-lr / (1 + (step.item() - 1) * lr_decay) for step in steps]
        numerators = torch._foreach_mul(grads, minus_clrs)
        torch._foreach_addcdiv_(params, numerators, stds)

    def _fused(self, batches) -> None:
        for group, params, grads, states in batches:
            grads = flat_layout_grads(type(self).__name__, params, grads, states, ("sum",))
            for (device, _), indices in group_by_device_and_dtype(params).items():
                steps = [states[i]["step"] for i in indices]
                torch._foreach_add_(steps, 1)
                torch._fused_adagrad_(
                    view_as_real([params[i] for i in indices]),
                    view_as_real([grads[i] for i in indices]),
                    view_as_real([states[i]["sum"] for i in indices]),
                    steps,
                    lr=device_lr(group["lr"], device),
                    lr_decay=group["lr_decay"],
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=group["maximize"],
                    grad_scale=None,
                    found_inf=None,
                )
