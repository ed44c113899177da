"""Schedule-Free AdamW: averaging and interpolation in place of a learning-rate schedule."""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)


@register
class ScheduleFreeAdamW(BenchOptimizer):
    r"""Schedule-Free AdamW (Defazio et al., 2024, arXiv:2405.15682).

    Three sequences replace the learning-rate schedule: :math:`z` takes AdamW-normalised
    gradient steps, :math:`x` is a weighted running average of :math:`z` (the point to
    evaluate), and the gradient is taken at their interpolation :math:`y`:

    .. math::
        y_t &= (1 - \beta_1) z_t + \beta_1 x_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad g_t = \nabla f(y_t) \\
        \gamma_t &= \gamma \min(1, t / T_{\text{warmup}}) \\
        z_{t+1} &= z_t - \gamma_t \Big(\frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
            + \lambda y_t\Big) \\
        c_{t+1} &= \frac{w_t}{\sum_{i \le t} w_i}, \quad
            w_t = t^r \big(\max_{i \le t} \gamma_i\big)^{p} \\
        x_{t+1} &= (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

    with :math:`z_1 = x_1 = y_1 = \theta_0` and :math:`p` = ``weight_lr_power``.

    Train and eval modes: while training, the parameters hold :math:`y`; the state holds
    :math:`z`, and :math:`x` is not stored but recovered from
    :math:`x = (y - (1 - \beta_1) z) / \beta_1`. Call :meth:`eval` before evaluating the
    model or saving a checkpoint (the parameters become :math:`x`) and :meth:`train`
    before the next step (they become :math:`y` again). ``step`` in eval mode raises
    ``RuntimeError``. The optimizer starts in train mode. Because :math:`x` is recovered by
    dividing by :math:`\beta_1`, ``betas[0]`` must be positive.

    Convention: the authors' ``schedulefree.AdamWScheduleFree`` (its default, not its
    ``Paper`` variant): :math:`\epsilon` is added to the root of the bias-corrected second
    moment and :math:`\gamma_t` carries no :math:`\sqrt{1 - \beta_2^t}` factor; the weight
    decay is taken at :math:`y` and the averaging weights use the largest learning rate so
    far, :math:`\max_i \gamma_i`, rather than the paper's :math:`\gamma_t`. Departures from
    that package: the mode starts as train instead of requiring a first ``train()`` call,
    ``step`` and the averaging weights are kept per parameter (``step``, ``weight_sum``,
    ``lr_max``) rather than per group, and ``maximize`` is supported. Complex entries are
    updated as independent real and imaginary parts. State keys ``step`` (a 0-d tensor),
    ``z``, ``exp_avg_sq``, ``weight_sum`` and ``lr_max`` (floats). Reference:
    ``schedulefree.AdamWScheduleFree``, matched to float64 precision in both modes.

    Paper: A. Defazio, X. Yang, H. Mehta, K. Mishchenko, A. Khaled and A. Cutkosky, "The
    Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 0.0025).
        betas: :math:`(\beta_1, \beta_2)`, the interpolation between :math:`x` and
            :math:`z` and the decay of the second moment (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: :math:`\lambda`, decoupled, taken at :math:`y` (default 0).
        warmup_steps: length of the linear warm-up of :math:`\gamma_t` (default 0).
        r: power of :math:`t` in the averaging weights (default 0).
        weight_lr_power: power :math:`p` of the learning rate in the averaging weights
            (default 2).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        differentiable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(has_train_eval=True, complex=True, foreach=True, fused=True)
    reference = "schedulefree.AdamWScheduleFree"
    fused_path = "inductor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_nonnegative("epsilon", eps)
        check_betas(betas)
        if betas[0] == 0:
            raise ValueError(
                f"Invalid beta parameter at index 0: {betas[0]} (x is recovered from y and "
                "z by dividing by beta1, which must be positive)"
            )
        check_nonnegative("weight_decay", weight_decay)
        check_nonnegative("warmup_steps", warmup_steps)
        check_nonnegative("r", r)
        check_nonnegative("weight_lr_power", weight_lr_power)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
            train_mode=True,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    # -- modes -----------------------------------------------------------------------------

    @torch.no_grad()
    def eval(self) -> None:
        """Set the parameters to the average :math:`x`, the point to evaluate or save."""
        self._switch(train_mode=False)

    @torch.no_grad()
    def train(self) -> None:
        """Set the parameters to the gradient point :math:`y`, ready for ``step``."""
        self._switch(train_mode=True)

    def _switch(self, train_mode: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train_mode:
                continue
            beta1 = group["betas"][0]
            # y = x + (1 - beta1)(z - x), and x = y + (1 - 1/beta1)(z - y).
            weight = 1 - beta1 if train_mode else 1 - 1 / beta1
            for p in group["params"]:
                state = self.state[p]
                if "z" in state:
                    param, z = view_as_real([p, state["z"]])
                    param.lerp_(z.to(param.device), weight)
            group["train_mode"] = train_mode
        logger.debug(
            "%s switched to %s mode", type(self).__name__, "train" if train_mode else "eval"
        )

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        """Perform one step (in train mode only); see :class:`BenchOptimizer`."""
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__}.step() was called in eval mode; call "
                "optimizer.train() after evaluating and before the next step"
            )
        return super().step(closure)

    # -- the update ------------------------------------------------------------------------

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "z": torch.clone(p, memory_format=torch.preserve_format).detach(),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            "weight_sum": 0.0,
            "lr_max": -1.0,
        }

    @staticmethod
    def _schedule(group: dict[str, Any], state: dict[str, Any]) -> tuple[float, float, float]:
        """Advance the step counter and averaging weights of one parameter.

        Returns the warmed-up learning rate, the averaging coefficient :math:`c_{t+1}` and
        the bias correction :math:`1 - \\beta_2^t`.
        """
        state["step"] += 1
        return ScheduleFreeAdamW._schedule_at(group, state, state["step"].item())

    @staticmethod
    def _schedule_at(
        group: dict[str, Any], state: dict[str, Any], step: float
    ) -> tuple[float, float, float]:
        """:meth:`_schedule` once ``step`` has been advanced (to the value ``step``)."""
        warmup_steps = group["warmup_steps"]
        lr = group["lr"] * (step / warmup_steps if step <= warmup_steps else 1.0)

        state["lr_max"] = lr_max = max(lr, state["lr_max"])
        weight = step ** group["r"] * lr_max ** group["weight_lr_power"]
        state["weight_sum"] += weight
        average_coefficient = weight / state["weight_sum"] if state["weight_sum"] else 0.0
        return lr, average_coefficient, 1 - group["betas"][1] ** step

    def _single_tensor(self, group, params, grads, states) -> None:
        (beta1, beta2), eps, weight_decay = group["betas"], group["eps"], group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            lr, average_coefficient, bias_correction2 = self._schedule(group, state)

            y, grad = view_as_real([param, grad])
            z, exp_avg_sq = view_as_real([state["z"], state["exp_avg_sq"]])

            # The AdamW-normalised gradient at y, with the decay also taken at y.
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq / bias_correction2).sqrt_().add_(eps)
            normed_grad = grad / denom
            if weight_decay != 0:
                normed_grad.add_(y, alpha=weight_decay)

            # y moves to its next value without forming x: y' = beta1 x' + (1 - beta1) z'.
            y.lerp_(z, average_coefficient)
            y.add_(normed_grad, alpha=lr * (beta1 * (1 - average_coefficient) - 1))

            z.sub_(normed_grad, alpha=lr)

    def _foreach(self, group, params, grads, states) -> None:
        (beta1, beta2), eps, weight_decay = group["betas"], group["eps"], group["weight_decay"]

        schedules = [self._schedule(group, state) for state in states]
        lrs = [lr for lr, _, _ in schedules]
        average_coefficients = [c for _, c, _ in schedules]

        ys, grads = view_as_real(params), view_as_real(grads)
        zs = view_as_real([state["z"] for state in states])
        exp_avg_sqs = view_as_real([state["exp_avg_sq"] for state in states])

        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denoms = torch._foreach_div(exp_avg_sqs, [bc2 for _, _, bc2 in schedules])
        torch._foreach_sqrt_(denoms)
        torch._foreach_add_(denoms, eps)
        normed_grads = torch._foreach_div(grads, denoms)
        if weight_decay != 0:
            torch._foreach_add_(normed_grads, ys, alpha=weight_decay)

        torch._foreach_lerp_(ys, zs, average_coefficients)
        y_steps = [lr * (beta1 * (1 - c) - 1) for lr, c in zip(lrs, average_coefficients)]
        torch._foreach_add_(ys, torch._foreach_mul(normed_grads, y_steps))

        torch._foreach_add_(zs, torch._foreach_mul(normed_grads, [-lr for lr in lrs]))

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("z", "exp_avg_sq")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        (beta1, beta2), eps, weight_decay = group["betas"], group["eps"], group["weight_decay"]
        rows = []
        for state, step in zip(states, steps):
            lr, average_coefficient, bias_correction2 = self._schedule_at(group, state, step)
            rows.append([
                beta2, 1 - beta2, bias_correction2, eps, weight_decay, average_coefficient,
                lr * (beta1 * (1 - average_coefficient) - 1), -lr,
            ])  # fmt: skip
        return rows

    @staticmethod
    def _fused_update(flags, y, grad, z, exp_avg_sq, *, s) -> None:
        beta2, one_minus_beta2, bias_correction2, eps, weight_decay = s[:5].unbind()
        average_coefficient, y_step, minus_lr = s[5:].unbind()

        exp_avg_sq.copy_(exp_avg_sq * beta2 + one_minus_beta2 * grad * grad)
        denom = (exp_avg_sq / bias_correction2).sqrt() + eps
        normed_grad = grad / denom + weight_decay * y

        y.copy_(torch.lerp(y, z, average_coefficient) + y_step * normed_grad)
        z.copy_(z + minus_lr * normed_grad)
