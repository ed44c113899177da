"""RMSprop: steps scaled by a moving root mean square of the gradients."""

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
    register,
    scalar_dtype,
    view_as_real,
)


@register
class RMSprop(BenchOptimizer):
    r"""RMSprop (Hinton, Neural Networks for Machine Learning, lecture 6e, 2012), with the
    centred variant and momentum of Graves (2013, arXiv:1308.0850).

    With smoothing constant :math:`\alpha` and momentum :math:`\mu`:

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        v_t &= \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
        \bar g_t &= \alpha \bar g_{t-1} + (1 - \alpha) g_t \ \text{(centred)} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \ \text{(centred)}
            \quad\text{or}\quad d_t = \sqrt{v_t} + \epsilon \\
        b_t &= \mu b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \gamma b_t
            \ \text{(}\mu > 0\text{)} \quad\text{or}\quad
            \theta_t = \theta_{t-1} - \gamma g_t / d_t

    Convention: torch.optim.RMSprop's. :math:`\epsilon` is added outside the square root;
    the averages start at zero without bias correction; the momentum buffer accumulates
    the already-scaled step :math:`g_t / d_t` (Graves' form), so the learning rate
    multiplies the buffer. State keys ``step`` (a 0-d tensor), ``square_avg``,
    ``momentum_buffer`` (only when ``momentum > 0``) and ``grad_avg`` (only when
    centred). Complex entries are pairs of real entries. Reference:
    ``torch.optim.RMSprop``, matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-2).
        alpha: smoothing constant :math:`\alpha` of the averages (default 0.99).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\lambda` (default 0), an L2 penalty added to the gradient.
        momentum: momentum factor :math:`\mu` (default 0).
        centered: divide by an estimate of the gradient's standard deviation instead of
            its root mean square (default False).
        capturable: not supported (raises ValueError when True).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        maximize: ascend the objective instead of descending (default False).
        differentiable: not supported (raises ValueError when True).
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.RMSprop"
    fused_path = "inductor"
    fused_scalars_read_steps = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_nonnegative("momentum", momentum)
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("alpha", alpha)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=False,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("capturable", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, alpha, eps = float(group["lr"]), group["alpha"], group["eps"]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        centered = group["centered"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1

            grad = apply_l2(grad, param, weight_decay)

            param, grad, square_avg = view_as_real([param, grad, state["square_avg"]])

            # Moving average of the squared gradient; centred, minus the squared mean.
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            if centered:
                (grad_avg,) = view_as_real([state["grad_avg"]])
                grad_avg.lerp_(grad, 1 - alpha)
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            else:
                avg = square_avg.sqrt()
            avg.add_(eps)

            # The momentum buffer accumulates scaled steps; lr multiplies the buffer.
            if momentum > 0:
                (buf,) = view_as_real([state["momentum_buffer"]])
                buf.mul_(momentum).addcdiv_(grad, avg)
                param.add_(buf, alpha=-lr)
            else:
                param.addcdiv_(grad, avg, value=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, alpha, eps = float(group["lr"]), group["alpha"], group["eps"]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        centered = group["centered"]

        torch._foreach_add_([state["step"] for state in states], 1)

        # As in torch's multi-tensor path, complex tensors are viewed as real before the
        # weight decay (a real multiply-add rounds differently from a complex one).
        params, grads = view_as_real(params), view_as_real(grads)
        grads = apply_l2_foreach(grads, params, weight_decay)

        square_avgs = view_as_real([state["square_avg"] for state in states])

        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if centered:
            grad_avgs = view_as_real([state["grad_avg"] for state in states])
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avgs = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avgs)
        else:
            avgs = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avgs, eps)

        if momentum > 0:
            bufs = view_as_real([state["momentum_buffer"] for state in states])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_addcdiv_(bufs, grads, avgs)
            torch._foreach_add_(params, bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, grads, avgs, value=-lr)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_flags(self, group) -> tuple:
        return (bool(group["centered"]), group["momentum"] > 0)

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        centered, momentum = self._fused_flags(group)
        return ("square_avg", *(["momentum_buffer"] if momentum else []),
                *(["grad_avg"] if centered else []))  # fmt: skip

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, alpha = float(group["lr"]), group["alpha"]
        row = [group["weight_decay"], alpha, 1 - alpha, group["eps"], group["momentum"], -lr]
        return [row] * len(states)

    @staticmethod
    def _fused_update(flags, param, grad, square_avg, *state, s) -> None:
        centered, momentum = flags
        weight_decay, alpha, one_minus_alpha, eps, momentum_factor, minus_lr = s.unbind()
        grad = grad + weight_decay * param

        square_avg.copy_(square_avg * alpha + one_minus_alpha * grad * grad)
        if centered:
            grad_avg = state[-1]
            grad_avg.copy_(torch.lerp(grad_avg, grad, one_minus_alpha))
            avg = (square_avg - grad_avg * grad_avg).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg + eps

        if momentum:
            buf = state[0]
            buf.copy_(buf * momentum_factor + grad / avg)
            param.copy_(param + minus_lr * buf)
        else:
            param.copy_(param + minus_lr * (grad / avg))
