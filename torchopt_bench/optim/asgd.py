"""ASGD: stochastic gradient descent with a decaying step and Polyak-Ruppert averaging."""

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


def _schedule(
    state: dict[str, Any], lr: float, lambd: float, alpha: float, t0: float, step: float
) -> None:
    """Set the step size ``eta`` and averaging weight ``mu`` for the step after ``step``.

    They are computed in double precision and rounded to the default dtype, as torch.optim
    does (via ``torch.as_tensor``), even where ``load_state_dict`` has cast the state
    tensors to a wider parameter dtype.
    """
    state["eta"].copy_(torch.as_tensor(lr / (1 + lambd * lr * step) ** alpha))
    state["mu"].copy_(torch.as_tensor(1 / max(1, step - t0)))


@register
class ASGD(BenchOptimizer):
    r"""ASGD: averaged stochastic gradient descent (Polyak & Juditsky, 1992).

    With learning rate :math:`\gamma`, decay term :math:`\lambda`, power :math:`\alpha`,
    averaging start :math:`t_0` and weight decay :math:`w`, the step size :math:`\eta_t`
    and averaging weight :math:`\mu_t` start at :math:`\eta_0 = \gamma`, :math:`\mu_0 = 1`:

    .. math::
        g_t &\leftarrow g_t + w \theta_{t-1} \\
        \theta_t &= (1 - \lambda \eta_{t-1}) \theta_{t-1} - \eta_{t-1} g_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu_{t-1} (\theta_t - \bar\theta_{t-1}) \\
        \eta_t &= \gamma / (1 + \lambda \gamma t)^{\alpha} \\
        \mu_t &= 1 / \max(1, t - t_0)

    The iterate :math:`\theta_t` is what the optimizer moves; the average
    :math:`\bar\theta_t` (state ``ax``) is kept beside it and is what the method returns as
    its estimate. It equals :math:`\theta_t` for the first :math:`t_0 + 2` steps, then
    becomes the running mean of the iterates from step :math:`t_0 + 2` on.

    Convention: torch.optim.ASGD's (after Bottou's ASGD, "Stochastic gradient descent
    tricks", 2012): the step uses the :math:`\eta` and :math:`\mu` computed at the end of
    the previous step, the decay :math:`\lambda` shrinks the parameter multiplicatively in
    addition to any weight decay, and the parameters are *not* replaced by their average;
    read ``state["ax"]`` for it. ``lr`` read from the group enters :math:`\eta_t` on every
    step (so a scheduler acts from the next step on), while :math:`\eta_0` is the ``lr``
    at the parameter's first step. Complex entries are updated as independent real and
    imaginary parts. State keys ``step``, ``eta``, ``mu`` (0-d tensors on the parameter's
    device, in float32 unless the default dtype is float64) and ``ax``. Both paths here
    compute :math:`\eta_t` in double precision and round it to the default dtype, as
    torch's per-tensor path does; torch's multi-tensor path computes it in the dtype of
    ``step`` instead, so with a float32 default dtype and :math:`\lambda\alpha \neq 0`
    the two torch paths differ by about 1e-8 relative, and ours follow the per-tensor one.
    Reference: ``torch.optim.ASGD``, matched to float64 precision.

    Paper: B. T. Polyak and A. B. Juditsky, "Acceleration of stochastic approximation by
    averaging", SIAM J. Control Optim. 30(4), 1992, doi:10.1137/0330046.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-2).
        lambd: decay term :math:`\lambda` (default 1e-4).
        alpha: power :math:`\alpha` of the step-size decay (default 0.75).
        t0: step :math:`t_0` after which averaging starts (default 1e6).
        weight_decay: L2 penalty :math:`w` added to the gradient (default 0).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        maximize: ascend the objective instead of descending (default False).
        differentiable: accepted for torch.optim's signature; only False is supported.
        capturable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.ASGD"
    fused_path = "inductor"
    fused_scalars_read_steps = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        capturable: bool = False,
    ) -> None:
        check_lr(lr)
        check_nonnegative("weight_decay", weight_decay)
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            lambd=lambd,
            alpha=alpha,
            t0=t0,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
            capturable=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("capturable", False)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        dtype = scalar_dtype()
        return {
            "step": torch.zeros((), dtype=dtype, device=p.device),
            "eta": torch.tensor(float(group["lr"]), dtype=dtype, device=p.device),
            "mu": torch.ones((), dtype=dtype, device=p.device),
            "ax": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, lambd, alpha, t0 = float(group["lr"]), group["lambd"], group["alpha"], group["t0"]
        weight_decay = group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step, eta, mu = state["step"].item(), state["eta"].item(), state["mu"].item()

            grad = apply_l2(grad, param, weight_decay)

            # Gradient step with the previous step size, after the multiplicative decay.
            param, grad, ax = view_as_real([param, grad, state["ax"]])
            param.mul_(1 - lambd * eta)
            param.add_(grad, alpha=-eta)

            # Running average of the iterates; while mu = 1 it simply tracks the iterate.
            if mu == 1:
                ax.copy_(param)
            else:
                ax.add_(param.sub(ax), alpha=mu)

            # Step size and averaging weight for the next step.
            _schedule(state, lr, lambd, alpha, t0, step)

    def _foreach(self, group, params, grads, states) -> None:
        lr, lambd, alpha, t0 = float(group["lr"]), group["lambd"], group["alpha"], group["t0"]
        weight_decay = group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        etas = [state["eta"].item() for state in states]
        mus = [state["mu"].item() for state in states]

        grads = apply_l2_foreach(grads, params, weight_decay)

        params, grads = view_as_real(params), view_as_real(grads)
        axs = view_as_real([state["ax"] for state in states])
        torch._foreach_mul_(params, [1 - lambd * eta for eta in etas])
        torch._foreach_add_(params, torch._foreach_mul(grads, [-eta for eta in etas]))

        # Averages still at mu = 1 track the iterate exactly; the others move towards it.
        tracking = [i for i, mu in enumerate(mus) if mu == 1]
        averaging = [i for i, mu in enumerate(mus) if mu != 1]
        if tracking:
            torch._foreach_copy_([axs[i] for i in tracking], [params[i] for i in tracking])
        if averaging:
            moving = [axs[i] for i in averaging]
            deltas = torch._foreach_sub([params[i] for i in averaging], moving)
            torch._foreach_add_(moving, torch._foreach_mul(deltas, [mus[i] for i in averaging]))

        for state, step in zip(states, [step.item() for step in steps]):
            _schedule(state, lr, lambd, alpha, t0, step)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_flags(self, group) -> tuple:
        # The dtype the schedule is rounded to, as torch.as_tensor rounds it in the loop.
        return (torch.get_default_dtype(),)

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        # With "step" among them, the update advances the counter itself.
        return ("ax", "eta", "mu", "step")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        lr, lambd, alpha, t0 = float(group["lr"]), group["lambd"], group["alpha"], group["t0"]
        return [[group["weight_decay"], lambd, lr, alpha, t0]] * len(states)

    @staticmethod
    def _fused_update(flags, param, grad, ax, eta, mu, step, *, s) -> None:
        (schedule_dtype,) = flags
        weight_decay, lambd, lr, alpha, t0 = s.unbind()
        eta_now, mu_now = eta.to(s.dtype), mu.to(s.dtype)

        # The step and the average with the previous step's eta and mu, as in the loop.
        grad = grad + weight_decay * param
        new_param = param * (1 - lambd * eta_now) - eta_now * grad
        param.copy_(new_param)
        ax.copy_(torch.where(mu_now == 1, new_param, ax + mu_now * (new_param - ax)))

        # Step size and averaging weight for the next step, computed on the device.
        step.add_(1)
        count = step.to(s.dtype)
        eta.copy_((lr / (1 + lambd * lr * count) ** alpha).to(schedule_dtype))
        mu.copy_((1 / torch.clamp(count - t0, min=1)).to(schedule_dtype))
