"""Adafactor: Adam-like steps with a factored, sublinear-memory second moment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (
    BenchOptimizer,
    Capabilities,
    ParamsT,
    decoupled_shrink,
    decoupled_shrink_foreach,
    register,
    scalar_dtype,
)


def _rms(t: Tensor) -> float:
    """Root mean square of the entries of ``t``."""
    return t.norm(2).item() / t.numel() ** 0.5


@register
class Adafactor(BenchOptimizer):
    r"""Adafactor: adaptive steps with factored second moments (Shazeer & Stern, 2018).

    For a tensor with at least two dimensions and gradient :math:`G_t` (an :math:`n \times
    m` matrix, or a batch of them over the leading dimensions), the second moment is kept
    as a row factor :math:`R_t` (:math:`n \times 1`) and a column factor :math:`C_t`
    (:math:`1 \times m`) of mean squared gradients; vectors keep a full :math:`V_t`:

    .. math::
        \hat\beta_{2,t} &= 1 - t^{\tau}, \quad
            \rho_t = \min(\gamma, 1/\sqrt{t}), \quad
            \alpha_t = \max(\epsilon_2, \operatorname{RMS}(\theta_{t-1}))\, \rho_t \\
        \theta_{t-1} &\leftarrow (1 - \gamma \lambda)\, \theta_{t-1} \\
        R_t &= \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{\text{cols}}(G_t^2), \quad
        C_t = \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,
            \operatorname{mean}_{\text{rows}}(G_t^2) \\
        \hat V_t &= R_t C_t / \max(\operatorname{mean}(R_t), \epsilon_1)
            \quad (\text{vectors: } \hat V_t = \hat\beta_{2,t} \hat V_{t-1}
            + (1 - \hat\beta_{2,t}) G_t^2) \\
        U_t &= G_t / \max(\sqrt{\hat V_t}, \epsilon_1), \quad
            \hat U_t = U_t / \max(1, \operatorname{RMS}(U_t) / d) \\
        \theta_t &= \theta_{t-1} - \alpha_t \hat U_t

    There is no first moment (the paper's :math:`\beta_1 = 0`), and the step is relative to
    the scale of the parameter, :math:`\operatorname{RMS}(\theta_{t-1})`, measured before
    the weight decay.

    Convention: torch.optim.Adafactor's, which departs from the paper in three places.
    ``lr`` caps the relative step size, :math:`\rho_t = \min(\gamma, 1/\sqrt t)` (the paper
    fixes the cap at 0.01, the default here), and also scales the decoupled weight decay.
    :math:`\epsilon_1` is not added to the squared gradients: it bounds the mean of the row
    factor and the root of :math:`\hat V_t` from below instead. The factors hold means, not
    sums, of squared gradients. ``eps[0] = None`` means the machine epsilon of the
    parameter's dtype (taken per parameter, where torch takes it from the first parameter
    of the step; the two agree when all parameters share a dtype). Tensors of more than two
    dimensions are factored over their last two. Complex parameters are not supported
    (``RuntimeError``, as in torch). The multi-tensor path is used only with
    ``foreach=True``: Adafactor is chosen where memory is short, and torch likewise never
    picks the multi-tensor path by default. State keys ``step`` (a 0-d tensor) and either
    ``row_var`` and ``col_var`` (tensors of two or more dimensions) or ``variance``
    (vectors and scalars). Reference: ``torch.optim.Adafactor``, matched to float64
    precision.

    Paper: N. Shazeer and M. Stern, "Adafactor: adaptive learning rates with sublinear
    memory cost", ICML 2018, arXiv:1804.04235.

    Args:
        params: parameters or param groups.
        lr: cap :math:`\gamma` of the relative step size, and weight decay scale
            (default 1e-2).
        beta2_decay: exponent :math:`\tau \le 0` of :math:`1 - \hat\beta_{2,t} = t^{\tau}`
            (default -0.8).
        eps: :math:`(\epsilon_1, \epsilon_2)`: the floor of the root second moment (None:
            the dtype's machine epsilon) and the floor of the parameter scale
            (default (None, 1e-3)).
        d: clipping threshold :math:`d \ge 1` on the RMS of the update (default 1).
        weight_decay: decoupled weight decay :math:`\lambda`, applied as
            :math:`1 - \gamma\lambda` (default 0).
        foreach: use the multi-tensor path; only True selects it (default None).
        maximize: ascend the objective instead of descending (default False).
        fused: not supported (raises RuntimeError when True): the update is not elementwise.
    """

    capabilities = Capabilities(elementwise=False, foreach=True)
    # The multi-tensor path holds a copy of every gradient at once: only on request.
    foreach_by_default = False
    reference = "torch.optim.Adafactor"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not eps[1] >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not d >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=tuple(eps),
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if p.is_complex():
            raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
        state: dict[str, Any] = {"step": torch.tensor(0.0, dtype=scalar_dtype())}
        if p.dim() > 1:
            # Means of squared gradients over the last dimension (rows) and over the one
            # before it (columns), broadcastable against the gradient.
            state["row_var"] = p.new_zeros((*p.shape[:-1], 1))
            state["col_var"] = p.new_zeros((*p.shape[:-2], 1, p.shape[-1]))
        else:
            state["variance"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, beta2_decay, (eps1, eps2) = float(group["lr"]), group["beta2_decay"], group["eps"]
        d, weight_decay = group["d"], group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            step = state["step"].item()
            floor = torch.finfo(param.dtype).eps if eps1 is None else eps1

            # Relative step size, scaled by the parameter's RMS before the decay.
            one_minus_beta2 = step**beta2_decay
            alpha = max(eps2, _rms(param)) * min(lr, step**-0.5)

            decoupled_shrink(param, lr, weight_decay)

            # Second moment: factored into row and column means, or kept whole.
            squared = grad.square()
            if grad.dim() > 1:
                row_var, col_var = state["row_var"], state["col_var"]
                row_var.lerp_(squared.mean(dim=-1, keepdim=True), one_minus_beta2)
                col_var.lerp_(squared.mean(dim=-2, keepdim=True), one_minus_beta2)
                row_scale = row_var.mean(dim=-2, keepdim=True).clamp_(min=floor)
                var_estimate = (row_var @ col_var).div_(row_scale)
            else:
                state["variance"].lerp_(squared, one_minus_beta2)
                var_estimate = state["variance"].clone()

            # Normalised update, clipped so that its RMS is at most d.
            update = var_estimate.clamp_(min=floor**2).rsqrt_().mul_(grad)
            clip = max(1.0, _rms(update) / d)
            param.add_(update, alpha=-alpha / clip)

    def _foreach(self, group, params, grads, states) -> None:
        lr, beta2_decay, (eps1, eps2) = float(group["lr"]), group["beta2_decay"], group["eps"]
        d, weight_decay = group["d"], group["weight_decay"]

        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1)
        step_values = [step.item() for step in steps]
        floors = [torch.finfo(p.dtype).eps if eps1 is None else eps1 for p in params]
        alphas = [max(eps2, _rms(p)) * min(lr, step**-0.5) for p, step in zip(params, step_values)]

        decoupled_shrink_foreach(params, lr, weight_decay)

        # Second moments: factored for matrices, whole for vectors, each kind batched.
        squares = torch._foreach_mul(grads, grads)
        var_estimates: dict[int, Tensor] = {}
        matrices = [i for i, g in enumerate(grads) if g.dim() > 1]
        vectors = [i for i, g in enumerate(grads) if g.dim() <= 1]
        if matrices:
            weights = [step_values[i] ** beta2_decay for i in matrices]
            row_vars = [states[i]["row_var"] for i in matrices]
            col_vars = [states[i]["col_var"] for i in matrices]
            row_means = [squares[i].mean(dim=-1, keepdim=True) for i in matrices]
            col_means = [squares[i].mean(dim=-2, keepdim=True) for i in matrices]
            torch._foreach_lerp_(row_vars, row_means, weights)
            torch._foreach_lerp_(col_vars, col_means, weights)
            for i, row_var, col_var in zip(matrices, row_vars, col_vars):
                row_scale = row_var.mean(dim=-2, keepdim=True).clamp_(min=floors[i])
                var_estimates[i] = (row_var @ col_var).div_(row_scale)
        if vectors:
            weights = [step_values[i] ** beta2_decay for i in vectors]
            variances = [states[i]["variance"] for i in vectors]
            torch._foreach_lerp_(variances, [squares[i] for i in vectors], weights)
            var_estimates.update((i, v.clone()) for i, v in zip(vectors, variances))
        del squares

        # Normalised updates, each clipped to an RMS of at most d.
        updates = [var_estimates[i].clamp_(min=floors[i] ** 2) for i in range(len(params))]
        torch._foreach_rsqrt_(updates)
        torch._foreach_mul_(updates, grads)
        scales = [-a / max(1.0, _rms(u) / d) for a, u in zip(alphas, updates)]
        torch._foreach_mul_(updates, scales)
        torch._foreach_add_(params, updates)
