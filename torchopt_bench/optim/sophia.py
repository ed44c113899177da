"""Sophia: clipped diagonal-Newton steps, with a Hutchinson estimate of the Hessian."""

from __future__ import annotations

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
    decoupled_shrink,
    decoupled_shrink_foreach,
    register,
    scalar_dtype,
)

HESSIAN_DISTRIBUTIONS = ("gaussian", "rademacher")


@register
class Sophia(BenchOptimizer):
    r"""Sophia: second-order clipped stochastic optimization (Liu et al., 2023,
    arXiv:2305.14342), with the Hutchinson estimator of the Hessian diagonal (Sophia-H).

    A momentum divided by a moving average of the Hessian diagonal, clipped entry by
    entry so that no step exceeds :math:`\gamma`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        \hat h_t &= u \odot (\nabla^2 L(\theta_{t-1})\, u), \quad u \sim \mathcal N(0, I)
            \quad \text{(every } k \text{ steps, from } t = 1) \\
        h_t &= \beta_2 h_{t-k} + (1 - \beta_2) \hat h_t \quad
            \text{(else } h_t = h_{t-1}) \\
        \theta_t &= (1 - \gamma\lambda)\,\theta_{t-1} - \gamma \operatorname{clip}\!\Big(
            \frac{m_t}{\max(\rho h_t, \epsilon)},\ 1\Big)

    where :math:`\operatorname{clip}(z, 1) = \max(\min(z, 1), -1)` and :math:`k` is
    ``update_period``. Where the curvature estimate is negative or tiny the denominator is
    :math:`\epsilon` and the step is :math:`\pm\gamma`, the sign of the momentum.

    What the trainer must do: build the gradient's graph and leave it on ``.grad``::

        optimizer.zero_grad(set_to_none=True)
        loss = model_loss()
        loss.backward(create_graph=True)  # p.grad now carries its own graph
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # drops the graph (p <-> p.grad cycle)

    Every ``update_period`` steps (on a parameter's steps 1, k + 1, 2k + 1, ...) ``step``
    draws :math:`u` (one tensor per parameter, in param-group order, from torch's global
    generator), computes the Hessian-vector products :math:`\nabla^2 L\, u` with one
    ``torch.autograd.grad(grads, params, grad_outputs=u)`` call through the gradients'
    graph, and folds :math:`u \odot \nabla^2 L u` into :math:`h`. On the other steps the
    graph is not used (the trainer may skip ``create_graph`` then, but need not). A step
    that must refresh the estimate raises ``RuntimeError`` if no gradient carries a graph;
    a gradient that is constant (no graph, e.g. of a parameter the loss is linear in) has
    a zero estimate. Gaussian :math:`u` is the paper's choice; Rademacher :math:`u` gives
    the exact diagonal when the Hessian is diagonal.

    Convention: the paper's Algorithm 3 with the update of its Sophia-H, weight decay
    decoupled and applied before the step. ``rho`` is the paper's :math:`\gamma` (the
    authors' SophiaG code writes it as ``rho * bs``, with a batch size ``bs`` that this
    class does not take); the Hessian EMA is named ``hessian`` as there. With ``maximize``
    the estimate is negated with the gradient. ``pytorch_optimizer.SophiaH`` parametrises
    the same update differently: its ``(lr, p, eps, weight_decay)`` are ``(lr / rho, rho,
    eps / rho, weight_decay * rho)`` here, and it draws the probe vectors in the same order.
    Complex parameters are not supported. State keys ``step`` (a 0-d tensor), ``exp_avg``
    (:math:`m`) and ``hessian`` (:math:`h`). Reference: ``pytorch_optimizer.SophiaH`` in
    that parametrisation, matched to float64 precision with the same random seed.

    Paper: H. Liu, Z. Li, D. Hall, P. Liang and T. Ma, "Sophia: A Scalable Stochastic
    Second-order Optimizer for Language Model Pre-training", ICLR 2024, arXiv:2305.14342.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\gamma`, the largest step of an entry (default 6e-4).
        betas: :math:`(\beta_1, \beta_2)`, the decays of the momentum and of the Hessian
            estimate (default (0.96, 0.99)).
        rho: :math:`\rho`, the scale of the Hessian in the denominator (default 0.01).
        eps: :math:`\epsilon`, the floor of the denominator (default 1e-12).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        update_period: :math:`k`, the steps between Hessian estimates (default 10).
        hessian_distribution: ``"gaussian"`` or ``"rademacher"`` probes (default gaussian).
        maximize: ascend the objective instead of descending (default False).
        foreach: use the multi-tensor path; None picks it on accelerators, as torch does,
            and on a CPU for the tensors of at most 32,768 entries (``FOREACH_MAX_NUMEL``).
        differentiable: accepted for torch.optim's signature; only False is supported.
        fused: not supported (raises RuntimeError when True): the update is not elementwise.
    """

    capabilities = Capabilities(needs_create_graph=True, elementwise=False, foreach=True)
    reference = "pytorch_optimizer.SophiaH (lr / rho, p=rho, eps / rho, weight_decay * rho)"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 6e-4,
        betas: tuple[float, float] = (0.96, 0.99),
        rho: float = 0.01,
        eps: float = 1e-12,
        weight_decay: float = 0.0,
        *,
        update_period: int = 10,
        hessian_distribution: str = "gaussian",
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        if not rho > 0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_nonnegative("epsilon", eps)
        check_nonnegative("weight_decay", weight_decay)
        if isinstance(update_period, bool) or not (
            isinstance(update_period, int) and update_period >= 1
        ):
            raise ValueError(f"Invalid update_period value: {update_period}")
        if hessian_distribution not in HESSIAN_DISTRIBUTIONS:
            raise ValueError(
                f"Invalid hessian_distribution value: {hessian_distribution!r} "
                f"(choose one of {', '.join(HESSIAN_DISTRIBUTIONS)})"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            update_period=update_period,
            hessian_distribution=hessian_distribution,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if torch.is_complex(p):
                    raise ValueError(f"{type(self).__name__} does not support complex parameters")

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": torch.tensor(0.0, dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "hessian": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        """Perform one step; refresh the Hessian estimate first where it is due (see the
        class docstring for what ``.grad`` must carry)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        gathered = [(group, *self._gather(group)) for group in self.param_groups]
        self._refresh_hessian(gathered)
        for group, params, grads, states in gathered:
            if not params:
                continue
            self._update(group, params, grads, states)
        return loss

    def _refresh_hessian(self, gathered: list) -> None:
        """Fold a Hutchinson estimate into ``hessian`` for the parameters that are due."""
        due = [
            (group, p, state)
            for group, params, _, states in gathered
            for p, state in zip(params, states)
            if state["step"].item() % group["update_period"] == 0
        ]
        if not due:
            return

        # One probe per parameter, drawn in param-group order.
        probes = []
        for group, p, _ in due:
            if group["hessian_distribution"] == "rademacher":
                probes.append(torch.randint_like(p, 0, 2).mul_(2).sub_(1))
            else:
                probes.append(torch.randn_like(p))

        # H u through the graph of the gradients; constant gradients contribute nothing.
        with_graph = [i for i, (_, p, _) in enumerate(due) if p.grad.requires_grad]
        if not with_graph:
            raise RuntimeError(
                f"{type(self).__name__} estimates the Hessian from the gradients' graph: "
                "call loss.backward(create_graph=True) before optimizer.step()"
            )
        hessian_vector_products = torch.autograd.grad(
            [due[i][1].grad for i in with_graph],
            [p for _, p, _ in due],
            grad_outputs=[probes[i] for i in with_graph],
            allow_unused=True,
        )

        for (group, _, state), probe, product in zip(due, probes, hessian_vector_products):
            estimate = torch.zeros_like(probe) if product is None else probe * product
            if group["maximize"]:
                estimate.neg_()
            state["hessian"].lerp_(estimate, 1 - group["betas"][1])

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, beta1, rho = group["lr"], group["betas"][0], group["rho"]
        eps, weight_decay = group["eps"], group["weight_decay"]

        for param, grad, state in zip(params, grads, states):
            state["step"] += 1

            decoupled_shrink(param, lr, weight_decay)

            exp_avg = state["exp_avg"]
            exp_avg.lerp_(grad.detach(), 1 - beta1)

            # A Newton step on the diagonal, clipped: no entry moves by more than lr.
            ratio = exp_avg / (state["hessian"] * rho).clamp_(min=eps)
            param.add_(ratio.clamp_(-1, 1), alpha=-lr)

    def _foreach(self, group, params, grads, states) -> None:
        lr, beta1, rho = group["lr"], group["betas"][0], group["rho"]
        eps, weight_decay = group["eps"], group["weight_decay"]

        torch._foreach_add_([state["step"] for state in states], 1)

        decoupled_shrink_foreach(params, lr, weight_decay)

        exp_avgs = [state["exp_avg"] for state in states]
        torch._foreach_lerp_(exp_avgs, [grad.detach() for grad in grads], 1 - beta1)

        denoms = torch._foreach_mul([state["hessian"] for state in states], rho)
        torch._foreach_clamp_min_(denoms, eps)
        ratios = torch._foreach_div(exp_avgs, denoms)
        torch._foreach_clamp_min_(ratios, -1.0)
        torch._foreach_clamp_max_(ratios, 1.0)
        torch._foreach_add_(params, ratios, alpha=-lr)
