"""Prodigy: Adam whose step size is an estimate of the distance to the solution."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    check_beta,
    check_betas,
    check_lr,
    check_nonnegative,
    register,
    scalar_dtype,
    view_as_real,
)

logger = logging.getLogger(__name__)


@register
class Prodigy(BenchOptimizer):
    r"""Prodigy: an expeditiously adaptive parameter-free learner (Mishchenko & Defazio,
    2023, arXiv:2306.06101), in its Adam form.

    Adam run with the step size :math:`\gamma d_k`, where :math:`d_k` is a running
    estimate of the distance :math:`\|x_0 - x_*\|` that only grows:

    .. math::
        m_{k+1} &= \beta_1 m_k + (1 - \beta_1) d_k g_k \\
        v_{k+1} &= \beta_2 v_k + (1 - \beta_2) d_k^2 g_k^2 \\
        r_{k+1} &= \beta_3 r_k + \gamma d_k^2 \langle g_k, x_0 - x_k \rangle \\
        s_{k+1} &= \beta_3 s_k + \gamma d_k^2 g_k \\
        d_{k+1} &= \max\big(d_k,\ c\, r_{k+1} / \|s_{k+1}\|_1\big) \\
        x_{k+1} &= x_k - \gamma d_k \frac{m_{k+1}}{\sqrt{v_{k+1}} + d_{k+1}\epsilon}

    with :math:`\beta_3 = \sqrt{\beta_2}` unless given, :math:`c` = ``d_coef``, and the
    inner product and the norm taken over *all* parameters of all groups, so the update is
    not elementwise. With ``beta1=0`` the step is :math:`\gamma d_k d_{k+1} g_k /
    (\sqrt{v_{k+1}} + d_{k+1}\epsilon)`. ``growth_rate`` caps :math:`d_{k+1} / d_k`.

    Convention: the authors' ``prodigyopt.Prodigy``. Its :math:`r` and :math:`s` lack the
    paper's factor :math:`1 - \sqrt{\beta_2}` (which cancels in their ratio) and are
    divided by :math:`d_0` (to keep them away from underflow); :math:`\epsilon` is scaled
    by the *new* estimate :math:`d_{k+1}` where the paper's Adam version has :math:`d_k`.
    ``use_bias_correction`` multiplies :math:`\gamma` by :math:`\sqrt{1 - \beta_2^{k+1}} /
    (1 - \beta_1^{k+1})`; ``safeguard_warmup`` leaves :math:`\gamma` out of :math:`s`.
    Decoupled weight decay shrinks by :math:`1 - \gamma d_k \lambda`; coupled decay adds
    :math:`\lambda x` to the gradient. The estimate is shared by all groups; the settings
    that shape it (``betas``, ``beta3``, ``d_coef``, ``growth_rate``,
    ``use_bias_correction``) are read from the first group, and every group's ``lr`` must
    be the same or 0 (a group with ``lr`` 0 is frozen; in prodigyopt it still decays).
    While every gradient so far has been zero the step does nothing, as in prodigyopt. The
    package's ``slice_p`` and ``fsdp_in_use`` options are not implemented. The estimate is
    kept in every param group (``d``, ``d_max``, ``d_numerator``, ``d_hat``, ``d_denom``,
    ``k``) for logging; per parameter, state keys ``step`` (a 0-d tensor), ``s``, ``p0``,
    ``exp_avg`` (when ``beta1 > 0``) and ``exp_avg_sq``. Complex entries are treated as
    pairs of real entries. Reference: ``prodigyopt.Prodigy``, matched to float64
    precision.

    Paper: K. Mishchenko and A. Defazio, "Prodigy: An Expeditiously Adaptive
    Parameter-Free Learner", ICML 2024, arXiv:2306.06101.

    Args:
        params: parameters or param groups.
        lr: multiplier :math:`\gamma` of the estimated step size; leave at 1 unless the
            run is unstable (default 1).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        beta3: decay of :math:`r` and :math:`s`; None for :math:`\sqrt{\beta_2}`
            (default None).
        eps: :math:`\epsilon`, scaled by :math:`d` in the denominator (default 1e-8).
        weight_decay: :math:`\lambda` (default 0).
        decoupled_weight_decay: shrink the parameters (True, the default) instead of adding
            :math:`\lambda x` to the gradient.
        use_bias_correction: apply Adam's bias correction to the step (default False).
        safeguard_warmup: leave :math:`\gamma` out of :math:`s`, which helps with a warm-up
            schedule on ``lr`` (default False).
        d0: initial estimate :math:`d_0` (default 1e-6).
        d_coef: :math:`c`, the preferred knob for tuning (default 1).
        growth_rate: cap on the growth factor of :math:`d` per step (default inf).
        maximize: ascend the objective instead of descending (default False).
        differentiable: accepted for torch.optim's signature; only False is supported.
        foreach: not supported (raises RuntimeError when True); the update needs
            global sums over all tensors and is written as a per-tensor loop only.
        fused: not supported (raises RuntimeError when True).
    """

    capabilities = Capabilities(elementwise=False, complex=True)
    reference = "prodigyopt.Prodigy"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        decoupled_weight_decay: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        maximize: bool = False,
        differentiable: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        if beta3 is not None:
            check_beta(2, beta3)
        check_nonnegative("epsilon", eps)
        check_nonnegative("weight_decay", weight_decay)
        if not d0 > 0:
            raise ValueError(f"Invalid d0 value: {d0}")
        if not d_coef > 0:
            raise ValueError(f"Invalid d_coef value: {d_coef}")
        if not growth_rate >= 1:
            raise ValueError(f"Invalid growth_rate value: {growth_rate}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            beta3=beta3,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            use_bias_correction=use_bias_correction,
            safeguard_warmup=safeguard_warmup,
            d0=d0,
            d_coef=d_coef,
            growth_rate=growth_rate,
            # The shared estimate, kept in every group (the settings of the first count).
            d=d0,
            d_max=d0,
            d_numerator=0.0,
            d_hat=0.0,
            d_denom=0.0,
            k=0,
            maximize=maximize,
            differentiable=differentiable,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "s": torch.zeros_like(p, memory_format=torch.preserve_format),
            "p0": p.detach().clone(memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
        }
        if self.param_groups[0]["betas"][0] > 0:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        """Perform one step: update the moments and the estimate of ``d`` from every
        group, then move every group with the shared step size."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        d, d_max, k = first["d"], first["d_max"], first["k"]
        lr = max(group["lr"] for group in self.param_groups)
        bias_correction = 1.0
        if first["use_bias_correction"]:
            bias_correction = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1))
        d_lr = d * lr * bias_correction

        # Moments and the sums of the d estimate; one synchronisation per group.
        gathered = []
        delta_numerator, d_denom = 0.0, 0.0
        for group in self.param_groups:
            if group["lr"] not in (lr, 0.0):
                raise RuntimeError(
                    f"{type(self).__name__} shares one step size across param groups: every "
                    f"group's lr must be {lr} or 0, got {group['lr']}"
                )
            params, grads, states = self._gather(group)
            if group["weight_decay"] != 0 and not group["decoupled_weight_decay"]:
                grads = [g.add(p, alpha=group["weight_decay"]) for p, g in zip(params, grads)]
            if group["lr"] == 0 or not params:
                continue
            gathered.append((group, params, grads, states))
            numerator, denom = self._accumulate(
                group, params, grads, states, d=d, d_lr=d_lr, betas=(beta1, beta2, beta3)
            )
            delta_numerator += float(numerator)
            d_denom += float(denom)

        # Nothing moves until some gradient has been nonzero.
        if d_denom == 0:
            return loss
        d_numerator = first["d_numerator"] * beta3 + delta_numerator
        d_hat = first["d_coef"] * d_numerator / d_denom
        if d == first["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * first["growth_rate"])
        logger.debug("%s step %d: d_hat=%.4g, d=%.4g", type(self).__name__, k + 1, d_hat, d)

        for group in self.param_groups:
            group.update(d=d, d_max=d_max, d_numerator=d_numerator, d_hat=d_hat)
            group.update(d_denom=d_denom, k=k + 1)
        for group, params, grads, states in gathered:
            self._apply(group, params, grads, states, d, d_lr, beta1)
        return loss

    @staticmethod
    def _accumulate(
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        *,
        d: float,
        d_lr: float,
        betas: tuple[float, float, float],
    ) -> tuple[Tensor | float, Tensor | float]:
        """Update the moments and ``s``; return this group's terms of the numerator
        :math:`\\sum \\langle g, x_0 - x\\rangle` and of :math:`\\|s\\|_1`, as tensors."""
        (beta1, beta2, beta3), d0 = betas, group["d0"]
        s_scale = (d / d0) * (d if group["safeguard_warmup"] else d_lr)
        numerator, denom = 0.0, 0.0
        for param, grad, state in zip(params, grads, states):
            param, grad = view_as_real([param, grad])
            p0, s, exp_avg_sq = view_as_real([state["p0"], state["s"], state["exp_avg_sq"]])

            inner = torch.dot(grad.flatten(), (p0 - param).flatten())
            numerator = numerator + (d / d0) * d_lr * inner

            if beta1 > 0:
                (exp_avg,) = view_as_real([state["exp_avg"]])
                exp_avg.mul_(beta1).add_(grad, alpha=d * (1 - beta1))
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))

            s.mul_(beta3).add_(grad, alpha=s_scale)
            denom = denom + s.abs().sum()
        return numerator, denom

    @staticmethod
    def _apply(
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        d: float,
        d_lr: float,
        beta1: float,
    ) -> None:
        """Move the parameters: step :math:`\\gamma d_k`, :math:`\\epsilon` scaled by the
        new ``d``."""
        eps, weight_decay = group["eps"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            param, grad = view_as_real([param, grad])
            (exp_avg_sq,) = view_as_real([state["exp_avg_sq"]])

            denom = exp_avg_sq.sqrt().add_(d * eps)
            if weight_decay != 0 and group["decoupled_weight_decay"]:
                param.add_(param, alpha=-weight_decay * d_lr)

            if beta1 > 0:
                (exp_avg,) = view_as_real([state["exp_avg"]])
                param.addcdiv_(exp_avg, denom, value=-d_lr)
            else:
                param.addcdiv_(grad, denom, value=-d_lr * d)
