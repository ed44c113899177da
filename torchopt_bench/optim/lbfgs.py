"""L-BFGS: limited-memory quasi-Newton steps, with an optional strong-Wolfe line search."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor

from ._base import BenchOptimizer, Capabilities, ParamsT, check_lr, register

logger = logging.getLogger(__name__)

#: Line searches that ``line_search_fn`` may name.
LINE_SEARCHES = ("strong_wolfe",)

#: A function of the step length returning the loss and the flat gradient there.
Evaluate = Callable[[Any], tuple[float, Tensor]]


def _cubic_minimizer(
    x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None
) -> Any:
    """Minimiser of the cubic through ``(x1, f1)`` and ``(x2, f2)`` with slopes ``g1, g2``.

    The result is clamped to ``bounds`` (by default the interval between the two points);
    when the cubic has no real stationary point the middle of the bounds is returned.
    Scalars may be Python numbers or 0-d tensors (as the slopes are).
    """
    if bounds is None:
        bounds = (x1, x2) if x1 <= x2 else (x2, x1)
    low, high = bounds

    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square < 0:
        return (low + high) / 2.0
    d2 = d2_square**0.5
    # Written from the farther of the two points, which keeps the ratio well conditioned.
    if x1 <= x2:
        minimizer = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        minimizer = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(minimizer, low), high)


def _strong_wolfe(
    evaluate: Evaluate,
    t: Any,
    d: Tensor,
    loss: float,
    grad: Tensor,
    gtd: Tensor,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, Any, int]:
    """Line search along ``d`` for a step meeting the strong Wolfe conditions.

    ``evaluate(t)`` returns the loss and flat gradient at ``x + t d`` (and leaves the
    parameters at ``x``). With :math:`\\phi(t) = f(x + t d)`, the conditions are
    sufficient decrease :math:`\\phi(t) \\le \\phi(0) + c_1 t \\phi'(0)` and curvature
    :math:`|\\phi'(t)| \\le c_2 |\\phi'(0)|`. A bracketing phase grows ``t`` by cubic
    extrapolation until an interval holding such a point is found; a zoom phase shrinks it
    by safeguarded cubic interpolation (Nocedal & Wright, 2006, Algorithms 3.5 and 3.6, as
    in minFunc and torch.optim.LBFGS). At most ``max_ls`` evaluations follow the first.

    Returns the loss, flat gradient and step length of the best point found, and the
    number of evaluations made.
    """
    d_norm = d.abs().max()
    grad = grad.clone(memory_format=torch.contiguous_format)
    loss_new, grad_new = evaluate(t)
    evals = 1
    gtd_new = grad_new.dot(d)

    # Bracketing: extrapolate until the interval [t_prev, t] must hold an acceptable point.
    t_prev, loss_prev, grad_prev, gtd_prev = 0, loss, grad, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if loss_new > loss + c1 * t * gtd or (ls_iter > 1 and loss_new >= loss_prev):
            bracket, bracket_loss = [t_prev, t], [loss_prev, loss_new]
            bracket_grad = [grad_prev, grad_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_loss, bracket_grad = [t], [loss_new], [grad_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_loss = [t_prev, t], [loss_prev, loss_new]
            bracket_grad = [grad_prev, grad_new.clone(memory_format=torch.contiguous_format)]
            bracket_gtd = [gtd_prev, gtd_new]
            break

        # Still descending: extrapolate, at least 1% beyond t and at most ten times it.
        bounds = (t + 0.01 * (t - t_prev), t * 10)
        t_next = _cubic_minimizer(t_prev, loss_prev, gtd_prev, t, loss_new, gtd_new, bounds)
        t_prev, loss_prev, gtd_prev = t, loss_new, gtd_new
        grad_prev = grad_new.clone(memory_format=torch.contiguous_format)
        t = t_next
        loss_new, grad_new = evaluate(t)
        evals += 1
        gtd_new = grad_new.dot(d)
        ls_iter += 1

    if ls_iter == max_ls:
        # Out of evaluations while still descending: fall back to [0, t].
        bracket, bracket_loss, bracket_grad = [0, t], [loss, loss_new], [grad, grad_new]

    # Zoom: shrink the bracket around an acceptable point; `low` is its best end so far.
    insufficient_progress = False
    low, high = (0, 1) if bracket_loss[0] <= bracket_loss[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break

        t = _cubic_minimizer(
            bracket[0], bracket_loss[0], bracket_gtd[0],
            bracket[1], bracket_loss[1], bracket_gtd[1],
        )  # fmt: skip

        # Safeguard: a trial too close to an end, twice in a row or outside the bracket,
        # is moved to 10% of the bracket's width from the nearer end.
        left, right = min(bracket), max(bracket)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if insufficient_progress or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        loss_new, grad_new = evaluate(t)
        evals += 1
        gtd_new = grad_new.dot(d)
        ls_iter += 1

        if loss_new > loss + c1 * t * gtd or loss_new >= bracket_loss[low]:
            # No sufficient decrease, or no better than the best end: the trial replaces
            # the high end.
            bracket[high], bracket_loss[high] = t, loss_new
            bracket_grad[high] = grad_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[high] = gtd_new
            low, high = (0, 1) if bracket_loss[0] <= bracket_loss[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                # The slope points away from the high end: the old low end replaces it.
                bracket[high], bracket_loss[high] = bracket[low], bracket_loss[low]
                bracket_grad[high], bracket_gtd[high] = bracket_grad[low], bracket_gtd[low]
            bracket[low], bracket_loss[low] = t, loss_new
            bracket_grad[low] = grad_new.clone(memory_format=torch.contiguous_format)
            bracket_gtd[low] = gtd_new

    return bracket_loss[low], bracket_grad[low], bracket[low], evals


@register
class LBFGS(BenchOptimizer):
    r"""L-BFGS: limited-memory BFGS (Liu & Nocedal, 1989), driven by a closure.

    With the flat gradient :math:`g_k` and the last :math:`m` pairs :math:`s_i = \theta_{i+1}
    - \theta_i`, :math:`y_i = g_{i+1} - g_i` (kept only when :math:`y_i^\top s_i >
    10^{-10}`), the direction :math:`d_k = -H_k g_k` comes from the two-loop recursion with
    the initial inverse Hessian :math:`H_k^0 = \frac{s^\top y}{y^\top y} I` of the newest
    pair, and the parameters move by :math:`\theta_{k+1} = \theta_k + t_k d_k`:

    .. math::
        q &= -g_k, \quad a_i = \rho_i s_i^\top q, \quad q \leftarrow q - a_i y_i
            \quad (i = k-1, \dots, k-m), \quad \rho_i = 1 / y_i^\top s_i \\
        r &= H_k^0 q, \quad r \leftarrow r + (a_i - \rho_i y_i^\top r)\, s_i
            \quad (i = k-m, \dots, k-1), \quad d_k = r

    The first direction is :math:`-g_0` with step :math:`t_0 = \gamma \min(1,
    1/\lVert g_0 \rVert_1)`; later steps try :math:`t_k = \gamma`, kept as is without a
    line search, or refined by a strong-Wolfe line search (:math:`c_1 = 10^{-4}`,
    :math:`c_2 = 0.9`, cubic interpolation) with ``line_search_fn="strong_wolfe"``.

    One call of :meth:`step` runs up to ``max_iter`` such iterations and ``max_eval``
    closure evaluations, and stops early when the largest gradient entry is at most
    ``tolerance_grad``, or when the directional derivative, the step or the change in loss
    falls below ``tolerance_change``. The closure must zero the gradients, compute the
    loss, call ``backward()`` and return the loss.

    Convention: torch.optim.LBFGS's, whose algorithm follows minFunc (M. Schmidt). Every
    parameter is one flat vector, so there is a single param group and no per-group
    options (``ValueError`` otherwise); complex parameters count as pairs of real entries.
    The whole state lives on the first parameter, under torch's keys: ``func_evals`` and
    ``n_iter`` (totals over all calls), ``d`` and ``t`` (last direction and step),
    ``old_dirs`` (the :math:`y_i`), ``old_stps`` (the :math:`s_i`), ``ro`` (the
    :math:`\rho_i`), ``H_diag``, ``prev_flat_grad``, ``prev_loss`` and ``al`` (the
    :math:`a_i` of the last recursion). Without a line search the last iteration of a call
    does not re-evaluate the closure; the next call does. There is no ``maximize``: negate
    the loss in the closure. One departure: an unknown ``line_search_fn`` or a
    ``history_size`` below 1 raises ``ValueError`` in the constructor, where torch fails
    only in ``step``. Reference: ``torch.optim.LBFGS``, matched to float64 precision.

    Paper: D. C. Liu and J. Nocedal, "On the limited memory BFGS method for large scale
    optimization", Math. Programming 45, 1989, doi:10.1007/BF01589116; line search after
    J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., 2006, section 3.5.

    Args:
        params: parameters (a single group).
        lr: learning rate :math:`\gamma`, the initial trial step (default 1).
        max_iter: iterations per call of :meth:`step` (default 20).
        max_eval: closure evaluations per call (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when :math:`\lVert g \rVert_\infty` is at most this
            (default 1e-7).
        tolerance_change: stop when the directional derivative, the largest step entry or
            the change of loss is below this (default 1e-9).
        history_size: number :math:`m` of :math:`(s, y)` pairs kept (default 100).
        line_search_fn: ``"strong_wolfe"`` or None for a fixed step (default None).
        foreach: not supported (raises RuntimeError when True): the method works on
            one flat vector.
        fused: not supported (raises RuntimeError when True).
    """

    capabilities = Capabilities(
        needs_closure=True, elementwise=False, complex=True, maximize=False
    )
    reference = "torch.optim.LBFGS"

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if line_search_fn is not None and line_search_fn not in LINE_SEARCHES:
            raise ValueError(
                f"Invalid line_search_fn: {line_search_fn!r}; expected one of "
                f"{LINE_SEARCHES} or None"
            )
        if not history_size >= 1:
            raise ValueError(f"Invalid history_size value: {history_size}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = dict(
            lr=lr,
            max_iter=max_iter,
            max_eval=max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params: list[Tensor] = self.param_groups[0]["params"]
        self._numel_cache: int | None = None

    # -- the parameters as one flat vector ------------------------------------------------

    def _numel(self) -> int:
        if self._numel_cache is None:
            self._numel_cache = sum(
                2 * p.numel() if p.is_complex() else p.numel() for p in self._params
            )
        return self._numel_cache

    def _gather_flat_grad(self) -> Tensor:
        """All gradients as one new vector; a parameter without a gradient gives zeros."""
        views = []
        for p in self._params:
            if p.grad is None:
                view = p.new_zeros(p.numel())
            elif p.grad.is_sparse:
                view = p.grad.to_dense().view(-1)
            else:
                view = p.grad.view(-1)
            if view.is_complex():
                view = torch.view_as_real(view).view(-1)
            views.append(view)
        return torch.cat(views, 0)

    def _add_direction(self, t: Any, d: Tensor) -> None:
        """Move the parameters in place by ``t * d``."""
        offset = 0
        for p in self._params:
            if p.is_complex():
                p = torch.view_as_real(p)
            numel = p.numel()
            p.add_(d[offset : offset + numel].view_as(p), alpha=t)
            offset += numel
        if offset != self._numel():
            raise RuntimeError(f"Direction of {self._numel()} entries consumed {offset}")

    def _directional_evaluate(
        self, closure: Callable[[], Any], x: list[Tensor], t: Any, d: Tensor
    ) -> tuple[float, Tensor]:
        """Loss and flat gradient at ``x + t d``; the parameters are restored to ``x``."""
        self._add_direction(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        for p, saved in zip(self._params, x):
            p.copy_(saved)
        return loss, flat_grad

    # -- the step ------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss at the start.

        ``closure`` zeroes the gradients, computes the loss, calls ``backward()`` and
        returns the loss. It is called with gradients enabled.
        """
        if closure is None:
            raise RuntimeError(f"{type(self).__name__} requires a closure, e.g. step(closure)")
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        closure = torch.enable_grad()(closure)

        group = self.param_groups[0]
        lr = group["lr"].item() if isinstance(group["lr"], Tensor) else group["lr"]
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search_fn = group["history_size"], group["line_search_fn"]

        # The state is global; it is kept on the first parameter so that load_state_dict
        # moves it to that parameter's device and dtype.
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        if flat_grad.abs().max() <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag = state.get("H_diag")  # noqa: N806 - torch.optim's state key
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        opt_cond = False
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # Direction: steepest descent at first, then the two-loop recursion.
            if state["n_iter"] == 1:
                d = flat_grad.neg()
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1  # noqa: N806
            else:
                y = flat_grad.sub(prev_flat_grad)
                s = d.mul(t)
                ys = y.dot(s)
                # Keep the pair only if it has positive curvature, so H stays definite.
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / y.dot(y)  # noqa: N806
                if "al" not in state:
                    state["al"] = [None] * history_size
                d = self._two_loop(flat_grad, old_dirs, old_stps, ro, H_diag, state["al"])

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss

            # Step length: scaled down on the very first iteration, else the learning rate.
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break

            if line_search_fn is not None:
                x_init = [p.clone(memory_format=torch.contiguous_format) for p in self._params]
                evaluate = partial(self._directional_evaluate, closure, x_init, d=d)
                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    evaluate, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                self._add_direction(t, d)
                opt_cond = flat_grad.abs().max() <= tolerance_grad
            else:
                self._add_direction(t, d)
                ls_func_evals = 0
                # The last iteration leaves the evaluation at the new point to the next call.
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = flat_grad.abs().max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # Stopping: budget spent, gradient small, or no more progress.
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state["d"], state["t"] = d, t
        state["old_dirs"], state["old_stps"], state["ro"] = old_dirs, old_stps, ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"], state["prev_loss"] = prev_flat_grad, prev_loss
        logger.debug(
            "L-BFGS step: %d iterations, %d closure evaluations, loss %.6g",
            n_iter, current_evals, loss,
        )  # fmt: skip
        return orig_loss

    @staticmethod
    def _two_loop(
        flat_grad: Tensor,
        old_dirs: list[Tensor],
        old_stps: list[Tensor],
        ro: list[Any],
        H_diag: Any,  # noqa: N803 - torch.optim's state key
        al: list[Any],
    ) -> Tensor:
        """The L-BFGS direction :math:`-H g` by the two-loop recursion (one buffer).

        ``al`` receives the coefficients :math:`a_i` of the first loop, as torch keeps them.
        """
        q = flat_grad.neg()
        for i in range(len(old_dirs) - 1, -1, -1):
            al[i] = old_stps[i].dot(q) * ro[i]
            q.add_(old_dirs[i], alpha=-al[i])

        r = torch.mul(q, H_diag)
        for i in range(len(old_dirs)):
            be_i = old_dirs[i].dot(r) * ro[i]
            r.add_(old_stps[i], alpha=al[i] - be_i)
        return r
