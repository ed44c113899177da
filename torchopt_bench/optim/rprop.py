"""Rprop: resilient backpropagation, sign-based steps with per-entry adaptive sizes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    check_lr,
    register,
    scalar_dtype,
    view_as_real,
)


@register
class Rprop(BenchOptimizer):
    r"""Rprop: resilient backpropagation (Riedmiller & Braun, 1993).

    Each entry :math:`i` keeps its own step size :math:`\eta^i`, grown by :math:`\eta_+`
    while its gradient keeps its sign and shrunk by :math:`\eta_-` when the sign flips; only
    the sign of the gradient moves the parameter:

    .. math::
        \eta^i_t &= \begin{cases}
            \min(\eta_+ \eta^i_{t-1}, \Gamma_{\max}) & g^i_{t-1} g^i_t > 0 \\
            \max(\eta_- \eta^i_{t-1}, \Gamma_{\min}) & g^i_{t-1} g^i_t < 0
                \quad (\text{then } g^i_t \leftarrow 0) \\
            \eta^i_{t-1} & \text{otherwise}
        \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta_t \odot \operatorname{sign}(g_t)

    with :math:`\eta^i_0 = \gamma` (the learning rate) and :math:`g_0 = 0`.

    Convention: torch.optim.Rprop's, the "Rprop without weight-backtracking" variant
    (Rprop-): after a sign change the entry does not move and its stored gradient is set to
    zero, so the next step neither grows nor shrinks its step size. The learning rate only
    seeds the step sizes when a parameter's state is created; later changes to ``lr`` (a
    scheduler) have no effect on existing state, as in torch. The step sizes are clamped to
    ``step_sizes`` after every update, including the first. Complex entries are updated as
    independent real and imaginary parts. State keys ``step`` (a 0-d tensor), ``prev`` (the
    previous gradient, zeroed where the sign flipped) and ``step_size``. Reference:
    ``torch.optim.Rprop``, matched to float64 precision.

    Paper: M. Riedmiller and H. Braun, "A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm", IEEE ICNN 1993, doi:10.1109/ICNN.1993.298623.

    Args:
        params: parameters or param groups.
        lr: initial step size :math:`\gamma` of every entry (default 1e-2).
        etas: :math:`(\eta_-, \eta_+)`, the shrink and growth factors, with
            :math:`0 < \eta_- < 1 < \eta_+` (default (0.5, 1.2)).
        step_sizes: :math:`(\Gamma_{\min}, \Gamma_{\max})`, the bounds of the step sizes
            (default (1e-6, 50)).
        capturable: accepted for torch.optim's signature; only False is supported.
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        fused: one compiled pass over memory per step (the update compiled by inductor,
            once per parameter layout; see :mod:`torchopt_bench.optim._fused`), on CPU
            and accelerators. Matches the per-tensor loop to rounding.
        maximize: ascend the objective instead of descending (default False).
        differentiable: accepted for torch.optim's signature; only False is supported.
    """

    capabilities = Capabilities(complex=True, foreach=True, fused=True)
    reference = "torch.optim.Rprop"
    fused_path = "inductor"
    fused_scalars_read_steps = False

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        if capturable:
            raise ValueError(
                f"{type(self).__name__} does not support capturable=True (CUDA graphs)"
            )
        defaults = dict(
            lr=lr,
            etas=tuple(etas),
            step_sizes=tuple(step_sizes),
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
        lr = float(group["lr"])
        # A complex entry is two real ones, so the imaginary part gets a step size too.
        initial_step_size = complex(lr, lr) if p.is_complex() else lr
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "prev": torch.zeros_like(p, memory_format=torch.preserve_format),
            "step_size": torch.full_like(p, initial_step_size),
        }

    def _single_tensor(self, group, params, grads, states) -> None:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            param, grad = view_as_real([param, grad])
            prev, step_size = view_as_real([state["prev"], state["step_size"]])

            # Per-entry factor: grow where the sign held, shrink where it flipped.
            agreement = grad.mul(prev).sign()
            factor = torch.ones_like(agreement)
            factor.masked_fill_(agreement > 0, etaplus).masked_fill_(agreement < 0, etaminus)
            step_size.mul_(factor).clamp_(step_size_min, step_size_max)

            # Rprop-: an entry whose sign flipped does not move and forgets its gradient.
            grad = grad.masked_fill(agreement < 0, 0)
            param.addcmul_(grad.sign(), step_size, value=-1)
            prev.copy_(grad)

    def _foreach(self, group, params, grads, states) -> None:
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]

        torch._foreach_add_([state["step"] for state in states], 1)
        params, grads = view_as_real(params), view_as_real(grads)
        prevs = view_as_real([state["prev"] for state in states])
        step_sizes = view_as_real([state["step_size"] for state in states])

        # The product's sign is the agreement's: compared directly, without sign().
        agreements = torch._foreach_mul(grads, prevs)
        factors, masked = [], []
        for grad, agreement in zip(grads, agreements):
            flipped = agreement < 0
            factor = torch.ones_like(agreement).masked_fill_(agreement > 0, etaplus)
            factors.append(factor.masked_fill_(flipped, etaminus))
            # The stored gradient becomes the new one, zeroed where the sign flipped.
            masked.append(grad.masked_fill(flipped, 0))
        torch._foreach_mul_(step_sizes, factors)
        torch._foreach_clamp_min_(step_sizes, step_size_min)
        torch._foreach_clamp_max_(step_sizes, step_size_max)

        torch._foreach_copy_(prevs, masked)
        torch._foreach_addcmul_(params, torch._foreach_sign(prevs), step_sizes, value=-1)

    # -- fused: one compiled pass (see _fused.py); the same operations in the same order --

    def _fused_state_keys(self, group) -> tuple[str, ...]:
        return ("prev", "step_size")

    def _fused_scalars(self, group, states, steps) -> list[list[float]]:
        return [[*group["etas"], *group["step_sizes"]]] * len(states)

    @staticmethod
    def _fused_update(flags, param, grad, prev, step_size, *, s) -> None:
        etaminus, etaplus, step_size_min, step_size_max = s.unbind()
        agreement = (grad * prev).sign()
        one = torch.ones_like(agreement)
        factor = torch.where(agreement > 0, etaplus, torch.where(agreement < 0, etaminus, one))
        new_step_size = torch.minimum(
            torch.maximum(step_size * factor, step_size_min), step_size_max
        )
        step_size.copy_(new_step_size)

        grad = torch.where(agreement < 0, torch.zeros_like(grad), grad)
        param.copy_(param - grad.sign() * new_step_size)
        prev.copy_(grad)
