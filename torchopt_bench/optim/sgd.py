"""Stochastic gradient descent, with heavy-ball or Nesterov momentum."""

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
    view_as_real,
)


@register
class SGD(BenchOptimizer):
    r"""Gradient descent with optional heavy-ball or Nesterov momentum.

    With gradient :math:`g_t`, weight decay :math:`\lambda`, momentum :math:`\mu` and
    dampening :math:`\tau`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_t &= \mu b_{t-1} + (1 - \tau) g_t \quad (b_1 = g_1) \\
        d_t &= g_t + \mu b_t \ \text{(Nesterov)} \quad\text{or}\quad d_t = b_t \\
        \theta_t &= \theta_{t-1} - \gamma d_t

    With ``momentum=0`` this is plain gradient descent, :math:`\theta_t = \theta_{t-1} -
    \gamma g_t`.

    Convention: torch.optim.SGD's (Sutskever et al., 2013, rewritten so that the learning
    rate multiplies the buffer rather than entering it). The buffer starts as a copy of the
    first gradient, not as zero, and the state key is ``momentum_buffer``, present only when
    ``momentum != 0``. Reference: ``torch.optim.SGD``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        momentum: momentum factor :math:`\mu` (default 0).
        dampening: dampening :math:`\tau` for momentum (default 0).
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (default 0).
        nesterov: use Nesterov momentum (default False); needs momentum > 0, dampening 0.
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one pass over memory per step, through torch's own fused kernel
            (``torch._fused_sgd_``), on CPU and accelerators. Complex parameters are
            passed as real views (torch rejects them there).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.SGD"
    fused_path = "torch._fused_sgd_"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("momentum", momentum)
        check_nonnegative("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # The momentum buffer is created from the first gradient, in the update.
        return {}

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]

        for param, grad, state in zip(params, grads, states):
            grad = apply_l2(grad, param, weight_decay)

            if momentum != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = torch.clone(grad).detach()
                    state["momentum_buffer"] = buf
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                grad = grad.add(buf, alpha=momentum) if nesterov else buf

            param.add_(grad, alpha=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]

        grads = apply_l2_foreach(grads, params, weight_decay)

        if momentum != 0:
            # A buffer starts as a copy of its first gradient; only existing ones decay.
            old_bufs, old_grads = [], []
            for grad, state in zip(grads, states):
                buf = state.get("momentum_buffer")
                if buf is None:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    old_bufs.append(buf)
                    old_grads.append(grad)
            if old_bufs:
                torch._foreach_mul_(old_bufs, momentum)
                torch._foreach_add_(old_bufs, old_grads, alpha=1 - dampening)
            bufs = [state["momentum_buffer"] for state in states]
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs

        torch._foreach_add_(params, grads, alpha=-lr)

    def _fused(self, batches) -> None:
        for group, params, grads, states in batches:
            momentum = group["momentum"]
            keys = ("momentum_buffer",)
            grads = flat_layout_grads(type(self).__name__, params, grads, states, keys)
            for (device, _), indices in group_by_device_and_dtype(params).items():
                # A buffer starts as a copy of its first gradient: the kernel's first step
                # writes it, so parameters with and without a buffer are two calls.
                if momentum == 0:
                    calls = [(indices, False)]
                else:
                    fresh = [i for i in indices if "momentum_buffer" not in states[i]]
                    for i in fresh:
                        states[i]["momentum_buffer"] = torch.empty_like(params[i])
                    old = [i for i in indices if i not in set(fresh)]
                    calls = [(part, first) for part, first in ((fresh, True), (old, False))]
                for part, is_first_step in calls:
                    if not part:
                        continue
                    bufs = [states[i]["momentum_buffer"] for i in part] if momentum else []
                    torch._fused_sgd_(
                        view_as_real([params[i] for i in part]),
                        view_as_real([grads[i] for i in part]),
                        view_as_real(bufs),
                        weight_decay=group["weight_decay"],
                        momentum=momentum,
                        lr=device_lr(group["lr"], device),
                        dampening=group["dampening"],
                        nesterov=group["nesterov"],
                        maximize=group["maximize"],
                        is_first_step=is_first_step,
                        grad_scale=None,
                        found_inf=None,
                    )
