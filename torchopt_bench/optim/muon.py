"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for weight matrices."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import BenchOptimizer, Capabilities, ParamsT, decoupled_shrink, register

__all__ = ["Muon", "split_params_for_muon"]

#: Quintic Newton-Schulz coefficients (a, b, c) of K. Jordan's reference implementation,
#: chosen for the steepest slope at zero rather than for convergence to exactly one.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
#: Floor of the Frobenius norm that the matrix is divided by before the iteration.
NS_EPS = 1e-7
ADJUST_LR_FNS = ("original", "match_rms_adamw")


def split_params_for_muon(params: Iterable[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Split parameters into those Muon updates (matrices) and the rest.

    Muon is defined for 2-D weights only. Biases, gains, embeddings treated as vectors,
    or the single 1-D point of a test function go to a separate element-wise optimizer
    (AdamW by convention). Order is preserved within each list.

    Args:
        params: tensors, e.g. ``model.parameters()``.

    Returns:
        ``(matrix_params, other_params)``: the 2-D tensors and all others.
    """
    matrix_params, other_params = [], []
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(f"split_params_for_muon expects tensors, got {type(p).__name__}")
        (matrix_params if p.ndim == 2 else other_params).append(p)
    return matrix_params, other_params


def _orthogonalize(
    matrix: Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> Tensor:
    r"""Approximate :math:`U V^\top` of :math:`M = U S V^\top` by a quintic Newton-Schulz
    iteration :math:`X \leftarrow a X + (b A + c A^2) X`, :math:`A = X X^\top`, in bfloat16.

    With the default coefficients and five steps the singular values are pushed towards
    one, not onto it: about 0.5 to 1.2 for Gaussian matrices, and much less for directions
    far weaker than the strongest one (those of a square matrix, say). That is the method
    as published.
    """
    a, b, c = coefficients
    x = matrix.bfloat16()
    # Iterate on the wide orientation, so that the Gram matrix is the smaller one.
    transposed = matrix.size(0) > matrix.size(1)
    if transposed:
        x = x.T
    # Frobenius norm >= spectral norm: every singular value now lies in [0, 1].
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, polynomial, x, beta=a)
    return x.T if transposed else x


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """The learning rate for an ``A x B`` matrix, so that updates have comparable RMS."""
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    return lr


@register
class Muon(BenchOptimizer):
    r"""Muon: MomentUm Orthogonalized by Newton-Schulz (K. Jordan et al., 2024).

    For a weight matrix with gradient :math:`G_t`, momentum :math:`\mu`, learning rate
    :math:`\gamma` and weight decay :math:`\lambda`:

    .. math::
        B_t &= \mu B_{t-1} + (1 - \mu) G_t \\
        \tilde B_t &= (1 - \mu) G_t + \mu B_t \ \text{(Nesterov)}
            \quad\text{or}\quad \tilde B_t = B_t \\
        O_t &= \mathrm{NS}^{(a,b,c)}_k\big(\tilde B_t / \max(\lVert \tilde B_t \rVert_F,
            \epsilon)\big) \approx U V^\top \text{ for } \tilde B_t = U S V^\top \\
        \theta_t &= (1 - \gamma\lambda)\, \theta_{t-1} - \gamma' O_t

    where :math:`\mathrm{NS}_k` is :math:`k` steps of the quintic Newton-Schulz iteration
    :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top`, and :math:`\gamma'` adjusts
    the learning rate to the matrix shape :math:`A \times B`: :math:`\gamma
    \sqrt{\max(1, A/B)}` (``adjust_lr_fn="original"`` or None, K. Jordan) or :math:`0.2
    \gamma \sqrt{\max(A, B)}` (``"match_rms_adamw"``, Moonshot AI, which lets Muon reuse
    AdamW's learning rate and weight decay).

    Convention: torch.optim.Muon's. The momentum buffer is an exponential moving average
    (:math:`1 - \mu` on the gradient), starting from zero; Nesterov interpolates between
    the gradient and the buffer. The Newton-Schulz iteration runs in bfloat16 whatever the
    parameter dtype, as in the reference implementation, so updates carry bfloat16
    rounding (relative 1e-2 to 1e-3) even for float64 parameters. Weight decay is
    decoupled and uses the unadjusted :math:`\gamma`. There is no ``maximize``, no
    multi-tensor path and no complex support (``RuntimeError``, as in torch). State key
    ``momentum_buffer``. Reference: ``torch.optim.Muon``, matched to float64 precision.

    Only 2-D parameters are accepted (``ValueError`` otherwise). The others (biases, norms,
    or the 1-D point of a test function) take a separate element-wise optimizer: split a
    model's parameters with :func:`split_params_for_muon` and give the second list to
    :class:`~torchopt_bench.optim.AdamW`, stepping both optimizers together::

        matrix_params, other_params = split_params_for_muon(model.parameters())
        muon = Muon(matrix_params, lr=0.02)
        adamw = AdamW(other_params, lr=3e-4, weight_decay=0.01)

    Papers: K. Jordan, "Muon: an optimizer for hidden layers in neural networks", 2024,
    https://kellerjordan.github.io/posts/muon/; J. Liu et al., "Muon is scalable for LLM
    training", 2025, arXiv:2502.16982.

    Args:
        params: 2-D parameters or param groups of them.
        lr: learning rate :math:`\gamma` (default 1e-3).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0.1).
        momentum: momentum :math:`\mu` (default 0.95).
        nesterov: use Nesterov momentum (default True).
        ns_coefficients: Newton-Schulz coefficients :math:`(a, b, c)`
            (default (3.4445, -4.7750, 2.0315)).
        eps: floor :math:`\epsilon` of the norm the update is divided by (default 1e-7).
        ns_steps: Newton-Schulz steps :math:`k`, below 100 (default 5).
        adjust_lr_fn: ``"original"``, ``"match_rms_adamw"`` or None for ``"original"``
            (default None).
        foreach: not supported (raises RuntimeError when True), as in torch: each
            Newton-Schulz iteration is a matrix product of its own tensor.
        fused: not supported (raises RuntimeError when True).
    """

    capabilities = Capabilities(matrix_only=True, elementwise=False, maximize=False)
    reference = "torch.optim.Muon"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = NS_EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ADJUST_LR_FNS:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        if len(ns_coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        if ns_steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter "
                        f"with size: {p.size()}"
                    )

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        if p.is_complex():
            raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
        return {"momentum_buffer": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def _single_tensor(self, group, params, grads, states) -> None:
        lr, weight_decay, momentum = float(group["lr"]), group["weight_decay"], group["momentum"]
        coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]

        for param, grad, state in zip(params, grads, states):
            # Momentum as a moving average; Nesterov looks one step ahead along it.
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - momentum)
            update = grad.lerp(buf, momentum) if group["nesterov"] else buf

            # Replace the update by (approximately) the nearest semi-orthogonal matrix.
            update = _orthogonalize(update, coefficients, steps, eps)

            decoupled_shrink(param, lr, weight_decay)
            param.add_(update, alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], param.shape))
