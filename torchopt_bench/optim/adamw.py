"""AdamW: Adam with weight decay decoupled from the gradient."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ._base import ParamsT, register
from .adam import Adam


@register
class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019,
    arXiv:1711.05101).

    .. math::
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\, \theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
            \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Convention: torch.optim.AdamW's, which is :class:`~torchopt_bench.optim.Adam` with
    ``decoupled_weight_decay=True`` (see there for eps placement and AMSGrad). The decay
    is multiplied by the learning rate :math:`\gamma` (so a scheduler scales it too), not
    by a separate schedule multiplier :math:`\eta_t` alone as in the paper's Algorithm 2,
    and it is applied before the moments are updated. Reference: ``torch.optim.AdamW``,
    matched to float64 precision.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma` (default 1e-3).
        betas: :math:`(\beta_1, \beta_2)` (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: decoupled decay :math:`\lambda` (default 1e-2).
        amsgrad: use the AMSGrad maximum of second moments (default False).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        capturable: not supported (raises ValueError when True).
        differentiable: not supported (raises ValueError when True).
        fused: run the update as one compiled kernel per step.
    """

    reference = "torch.optim.AdamW"
    fused_path = "torch._fused_adamw_"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
