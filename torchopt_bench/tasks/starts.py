"""Many starts of a test function in one run: where they begin, and how they are optimised.

A test function run from N starts holds them as the rows of one ``(N, dim)`` parameter, so
that one optimizer step moves all of them with a few tensor operations. That is exactly N
separate runs when the optimizer is *elementwise* (``capabilities.elementwise``: an entry's
update depends on that entry's own gradient history only) and the loss is the sum of the
rows' values (its gradient in row i is then f's gradient at row i, nothing else). An
optimizer that couples entries (a norm over the tensor, a trust ratio, L-BFGS's history
over all parameters) gets one ``(1, dim)`` tensor and one optimizer per start instead,
stepped together by :class:`OptimizerSet`; so do the members of a comparison of several
optimizers in one run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

from ..functions import TestFunction
from ..optim import Capabilities

log = logging.getLogger(__name__)

__all__ = ["OptimizerSet", "START_MODES", "capabilities_of", "start_points"]

#: How the starts after the first are laid out.
START_MODES = ("uniform", "grid")
#: Where they are laid out.
START_REGIONS = ("domain", "window")


def capabilities_of(factory: Any) -> Capabilities:
    """The capabilities declared by the class behind ``factory`` (a class, a
    ``functools.partial`` of one, or an object with a ``capabilities`` attribute)."""
    target = factory
    while isinstance(target, partial):
        target = target.func
    return getattr(target, "capabilities", Capabilities())


def factory_name(factory: Any) -> str:
    """A readable name for an optimizer factory: its class name in lower case."""
    target = factory
    while isinstance(target, partial):
        target = target.func
    return getattr(target, "__name__", type(target).__name__).lower()


def start_bounds(function: TestFunction, region: str) -> np.ndarray:
    """``(dim, 2)`` low/high bounds of the region starts are drawn from: the function's
    search domain, or its plot window (for the first two coordinates; the domain for the
    others)."""
    if region not in START_REGIONS:
        raise ValueError(
            f"task.start_region={region!r} is not known; choose one of {', '.join(START_REGIONS)}"
        )
    bounds = np.array(function.domain, dtype=float)
    if region == "window":
        bounds[:2] = np.array(function.window, dtype=float)
    return bounds


def grid_side(n_starts: int, dim: int) -> int:
    """Points per axis of the grid that stands for ``n_starts - 1`` starts in ``dim``
    coordinates: the nearest integer to ``(n_starts - 1) ** (1 / dim)``, at least 2."""
    return max(2, round((n_starts - 1) ** (1.0 / dim)))


def start_points(
    function: TestFunction,
    first: Sequence[float],
    n_starts: int,
    mode: str = "uniform",
    region: str = "domain",
    seed: int = 0,
) -> np.ndarray:
    """The starting points of a run, shape ``(rows, dim)``, in float64.

    Row 0 is always ``first`` (the task's ``start``), so the default start's path is in
    every run. With ``n_starts == 1`` that is all. Otherwise:

    * ``uniform``: ``n_starts - 1`` more points drawn uniformly over the region with a
      generator seeded by ``seed`` (the same points on every device and dtype);
    * ``grid``: a regular grid with ``k`` points per axis, corners included, where
      ``k = round((n_starts - 1) ** (1 / dim))`` (at least 2), so ``1 + k ** dim`` rows;
      ``n_starts = k ** dim + 1`` gives exactly ``n_starts``.
    """
    if isinstance(n_starts, bool) or not isinstance(n_starts, int) or n_starts < 1:
        raise ValueError(f"task.n_starts must be a positive integer, got {n_starts!r}")
    if mode not in START_MODES:
        raise ValueError(
            f"task.starts={mode!r} is not known; choose one of {', '.join(START_MODES)}"
        )
    first_row = np.asarray(first, dtype=float)[None, :]
    if n_starts == 1:
        return first_row
    bounds = start_bounds(function, region)
    low, high = bounds[:, 0], bounds[:, 1]
    if mode == "uniform":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        unit = torch.rand(n_starts - 1, function.dim, generator=gen, dtype=torch.float64)
        drawn = low + (high - low) * unit.numpy()
    else:
        side = grid_side(n_starts, function.dim)
        axes = [np.linspace(lo, hi, side) for lo, hi in zip(low, high)]
        mesh = np.meshgrid(*axes, indexing="xy")
        drawn = np.stack([m.ravel() for m in mesh], axis=-1)
        if len(drawn) != n_starts - 1:
            log.info(
                "task.starts=grid: %d points per axis, %d grid starts plus the start "
                "(task.n_starts=%d; use %d for exactly this grid)",
                side,
                len(drawn),
                n_starts,
                len(drawn) + 1,
            )
        minimizers = np.asarray(function.minimizers, dtype=float).reshape(-1, function.dim)
        scale = np.maximum(high - low, 1e-300)
        on_minimum = [
            index + 1
            for index, point in enumerate(drawn)
            if np.any(np.all(np.abs(minimizers - point) <= 1e-12 * scale, axis=1))
        ]
        if on_minimum:
            log.warning(
                "task.starts=grid: start(s) %s lie on a global minimiser: they count as "
                "successes from step 0 for every optimizer (another number of points per "
                "axis avoids that)",
                ", ".join(map(str, on_minimum)),
            )
    return np.concatenate([first_row, drawn], axis=0)


class OptimizerSet(Optimizer):
    """Several optimizers stepped as one, each over its own parameters.

    The trainer sees one optimizer whose ``param_groups`` are the members' groups (the same
    dicts, so a change of ``lr`` reaches the member). ``step(closure)`` evaluates the shared
    closure once (it computes every member's gradients) and steps each member on them; a
    member that needs a closure of its own (L-BFGS, Newton) is given one that evaluates
    only its own parameters' loss, so its line search and convergence tests see exactly what
    they would in a run of their own.

    Args:
        members: ``(optimizer, own_closure)`` pairs; ``own_closure`` is None for a member
            that steps on the shared gradients.
    """

    def __init__(self, members: Sequence[tuple[Optimizer, Callable[[], Tensor] | None]]) -> None:
        if not members:
            raise ValueError("OptimizerSet needs at least one member optimizer")
        self.members = list(members)
        groups = [group for opt, _ in self.members for group in opt.param_groups]
        super().__init__(groups, {})

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """Step every member; return the shared closure's loss (or the sum of the members'
        own losses when every member has its own closure)."""
        shared = [opt for opt, own in self.members if own is None]
        loss = None
        if closure is not None and shared:
            with torch.enable_grad():
                loss = closure()
        own_losses = []
        for opt, own in self.members:
            if own is None:
                opt.step()
            else:
                value = opt.step(own)
                if value is not None:
                    own_losses.append(value.detach())
        if loss is None and own_losses:
            loss = torch.stack([v.reshape(()) for v in own_losses]).sum()
        return loss

    def train(self) -> None:
        """Training mode for the members that have one (schedule-free methods)."""
        for opt, _ in self.members:
            if hasattr(opt, "train"):
                opt.train()

    def eval(self) -> None:
        """Evaluation mode for the members that have one."""
        for opt, _ in self.members:
            if hasattr(opt, "eval"):
                opt.eval()

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"members": [opt.state_dict() for opt, _ in self.members]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        states = state_dict["members"]
        if len(states) != len(self.members):
            raise ValueError(
                f"the state holds {len(states)} member optimizers, this set has "
                f"{len(self.members)}"
            )
        for (opt, _), state in zip(self.members, states):
            opt.load_state_dict(state)


def sample_quantiles(values: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Quantiles that are values of the sample (inverted CDF, no interpolation), with
    ``inf`` standing for "never"; a quantile that falls on ``inf`` is None."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return [None for _ in qs]
    out = np.quantile(values, qs, method="inverted_cdf")
    return [None if not math.isfinite(v) else float(v) for v in out]
