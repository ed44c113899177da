"""Minimising a test function of :mod:`torchopt_bench.functions` with autograd, from one
start or from many at once, with one optimizer or several side by side.

The points of a run are the rows of the task's parameters: ``n_starts`` starting points
(:func:`~torchopt_bench.tasks.starts.start_points`), repeated for every learning rate of
``lrs`` (one param group per rate) and for every optimizer of ``optimizers``. For an
elementwise optimizer the N starts of one rate are one ``(N, dim)`` tensor, so a step costs
a few tensor operations whatever N is; the loss is the sum of the rows' values, so every
row's gradient is its own function's gradient and the batched run is the N separate runs.
An optimizer that is not elementwise is refused the batch (logged) and gets one ``(1, dim)``
tensor and one optimizer per start instead.

Per start the task keeps a few tensors (alive, first step under the target, step of
divergence) and updates them on the device every step; full paths are kept for the first
``n_paths`` starts of each (optimizer, rate) only, so memory stays bounded. A start whose
coordinates or value stop being finite, or whose value rises above the overflow ceiling
(:func:`overflow_ceiling`), is *diverged*: it is masked out of the loss (its gradient is 0
from then on) and the others go on. The run's status is ``diverged`` only when every start
has diverged; otherwise it is ``ok`` and the summary counts the diverged starts
(``diverged_fraction``). Every dtype torch computes in works, float16 and bfloat16
included: the steps run in the run's dtype, the bookkeeping (distances to the minimisers,
quantiles) in float64 on a float64 copy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.optim import Optimizer

from ..functions import TestFunction, get_function
from ..optim import Capabilities
from ..plots import (
    animate_paths,
    plot_basins,
    plot_gap_curves,
    plot_lr_sensitivity,
    plot_trajectories,
)
from ..tracking import RunRecorder, describe_file
from .base import Task
from .starts import (
    OptimizerSet,
    capabilities_of,
    factory_name,
    sample_quantiles,
    start_points,
)

log = logging.getLogger(__name__)

__all__ = ["FunctionTask"]

#: Why a start diverged, per start (0: it did not).
_NONFINITE_POINT, _NONFINITE_VALUE, _ABOVE_CEILING = 1, 2, 3
_REASONS = {
    _NONFINITE_POINT: "non-finite parameter",
    _NONFINITE_VALUE: "non-finite value",
    _ABOVE_CEILING: "value above the overflow ceiling",
}


def overflow_ceiling(dtype: torch.dtype, n_rows: int) -> float:
    """The largest ``|f|`` a start may have before it counts as diverged:
    ``finfo(dtype).max / (4 n_rows)``, so that the loss (the sum of ``n_rows`` values)
    stays at most a quarter of the dtype's range and cannot overflow. float64 with 10,000
    starts: 4.5e303; float32 with one start: 8.5e37; float16 with one start: 16,376;
    bfloat16 with one start: 8.5e37. The ceiling depends on how many rows are summed, so
    a batch of N starts stops a start whose ``|f|`` lies between ``max / (4 N)`` and
    ``max / 4`` that a lone run would let go on (in float64 that takes ``|f| > 4.5e303``
    with 10,000 starts)."""
    return float(torch.finfo(dtype).max) / (4.0 * max(int(n_rows), 1))


#: Outcome codes of a start in ``starts.csv`` and ``basins.png`` (>= 0: the index of the
#: global minimiser it reached).
NOT_REACHED, DIVERGED = -1, -2


@dataclass
class _Block:
    """The rows of one optimizer at one learning rate: ``n_starts`` consecutive rows."""

    optimizer: str
    lr: float | None
    factory: Any
    elementwise: bool
    offset: int
    tensors: list[Tensor] = field(default_factory=list)

    def label(self, with_lr: bool) -> str:
        return (
            f"{self.optimizer} lr={self.lr:g}"
            if with_lr and self.lr is not None
            else (self.optimizer)
        )


class _BoundFactory:
    """The optimizer factory the trainer receives from :meth:`FunctionTask.adapt_optimizer`:
    it builds the optimizer (or the :class:`OptimizerSet`) over the task's layout and lets
    the task see it, for the learning rates of its figures."""

    def __init__(self, task: FunctionTask, build: Callable[[list[Any]], Optimizer], caps):
        self.task = task
        self.build = build
        self.capabilities: Capabilities = caps

    def __call__(self, params: Any) -> Optimizer:
        optimizer = self.build(list(params))
        self.task._optimizer = optimizer
        return optimizer


class FunctionTask(Task):
    """Minimise ``f(x)`` from one start or from many at once.

    Each epoch is one optimizer step; the history has one row per step, row 0 being the
    start. With one start the row holds ``train/loss`` (f), ``train/gap`` (f - f*) and the
    coordinates ``x0, x1, ...``; with several starts it holds aggregates over the starts
    still alive: the median value and gap, the gap's quartiles, the fraction under the
    target now (``train/success``), the fraction that has been under it at some step
    (``train/reached``) and the fraction diverged.

    Args:
        name: the task name (``rosenbrock`` ...), also the function's name by default.
        function: the function's name in :data:`~torchopt_bench.functions.FUNCTIONS`,
            if it differs from ``name``.
        start: the first (or only) starting point; None for the function's default start.
        dim: coordinates, for n-dimensional functions; None for the function's default.
        target_gap: ``steps_to_target`` is the first step with ``f - f* < target_gap``;
            a start succeeds when its final gap is below it.
        n_starts: how many starts; the first is ``start``, the others are laid out by
            ``starts`` over ``start_region``.
        starts: ``uniform`` (seeded by the run's seed) or ``grid``
            (see :func:`~torchopt_bench.tasks.starts.start_points`).
        start_region: ``domain`` (the function's search domain) or ``window`` (its plot
            window).
        target_distance: a start also succeeds when its final point is this close to a
            global minimiser (None: the gap alone decides).
        lrs: learning rates run side by side, one param group each; None: the optimizer's
            own rate.
        optimizers: optimizers run side by side in the same run, name -> factory (what
            Hydra builds from ``_partial_: true`` configs); None: the run's ``optimizer``.
        n_paths: full paths are kept for the first ``n_paths`` starts of every optimizer
            and rate.
        animate: also write ``paths.gif``, an animation of the paths.
        figures: write the figures (off: tables and summary only, for large sweeps).
    """

    kind = "function"
    default_dtype = torch.float64

    def __init__(
        self,
        name: str,
        function: str | None = None,
        start: Sequence[float] | None = None,
        dim: int | None = None,
        target_gap: float = 1e-6,
        n_starts: int = 1,
        starts: str = "uniform",
        start_region: str = "domain",
        target_distance: float | None = None,
        lrs: Sequence[float] | None = None,
        optimizers: Mapping[str, Any] | None = None,
        n_paths: int = 8,
        animate: bool = False,
        figures: bool = True,
    ) -> None:
        self.name = name
        self.function: TestFunction = get_function(function or name, dim)
        self.start = tuple(float(v) for v in (start or self.function.start))
        if len(self.start) != self.function.dim:
            raise ValueError(
                f"task.start={list(self.start)} has {len(self.start)} coordinates but "
                f"{self.function.name} takes {self.function.dim}; give "
                f"{self.function.dim} values or set task.dim={len(self.start)}"
            )
        if not target_gap > 0:
            raise ValueError(f"task.target_gap must be positive, got {target_gap}")
        if target_distance is not None and not target_distance > 0:
            raise ValueError(
                f"task.target_distance must be positive or null, got {target_distance}"
            )
        if isinstance(n_paths, bool) or not isinstance(n_paths, int) or n_paths < 1:
            raise ValueError(f"task.n_paths must be a positive integer, got {n_paths!r}")
        if lrs is not None:
            lrs = [float(lr) for lr in lrs]
            if not lrs or not all(lr >= 0 and math.isfinite(lr) for lr in lrs):
                raise ValueError(
                    f"task.lrs must be a non-empty list of non-negative learning rates, got {lrs}"
                )
        if optimizers is not None:
            if not isinstance(optimizers, Mapping) or not optimizers:
                raise ValueError(
                    "task.optimizers must map names to optimizer configs "
                    f"(_target_ and _partial_: true), got {optimizers!r}"
                )
            bad = [k for k, v in optimizers.items() if not callable(v)]
            if bad:
                raise ValueError(
                    f"task.optimizers entries {bad} are not optimizer factories; give each a "
                    "_target_ (an optimizer class) and _partial_: true"
                )
        self.target_gap = float(target_gap)
        self.target_distance = None if target_distance is None else float(target_distance)
        self.n_starts_requested = n_starts
        self.starts_mode = starts
        self.start_region = start_region
        self.lrs = lrs
        self.optimizers = dict(optimizers) if optimizers is not None else None
        self.n_paths = n_paths
        self.animate = bool(animate)
        self.figures = bool(figures)
        # Validates n_starts, starts and start_region now, before any run starts.
        self.start_rows = start_points(self.function, self.start, n_starts, starts, start_region)
        self.blocks: list[_Block] = []
        self._optimizer: Optimizer | None = None

    # -- layout ------------------------------------------------------------------------------

    @property
    def n_starts(self) -> int:
        """Starts per optimizer and rate (``1 + k ** dim`` for a grid)."""
        return len(self.start_rows)

    @property
    def n_rows(self) -> int:
        return self.n_starts * len(self.blocks)

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        self.device, self.dtype = device, dtype
        if self.n_starts > 1 and self.starts_mode == "uniform":
            self.start_rows = start_points(
                self.function,
                self.start,
                self.n_starts_requested,
                self.starts_mode,
                self.start_region,
                seed,
            )
        if self.n_starts > 1:
            log.info(
                "%d starts on %s (%s over the %s, the first at %s)",
                self.n_starts,
                self.function.name,
                self.starts_mode,
                self.start_region,
                list(self.start),
            )
        # Without the trainer's adapt_optimizer call, the layout of an elementwise method.
        specs = self.optimizers or {"optimizer": None}
        self._build_layout({name: (f, True) for name, f in specs.items()})

    def _build_layout(self, specs: Mapping[str, tuple[Any, bool]]) -> None:
        """One block per (optimizer, rate): one ``(N, dim)`` tensor if the optimizer is
        elementwise, else N tensors of shape ``(1, dim)``."""
        starts = torch.as_tensor(self.start_rows, dtype=torch.float64).to(self.device, self.dtype)
        self.blocks = []
        offset = 0
        for name, (factory, elementwise) in specs.items():
            for lr in self.lrs or [None]:
                block = _Block(name, lr, factory, elementwise, offset)
                if elementwise or self.n_starts == 1:
                    block.tensors = [starts.clone().requires_grad_(True)]
                else:
                    block.tensors = [
                        starts[i : i + 1].clone().requires_grad_(True)
                        for i in range(self.n_starts)
                    ]
                self.blocks.append(block)
                offset += self.n_starts
        self.tensors = [t for b in self.blocks for t in b.tensors]
        self.x = self.tensors[0]
        self._reset_records()

    def adapt_optimizer(self, factory: Any) -> _BoundFactory:
        """The factory the trainer builds its optimizer with (called before it does).

        One elementwise optimizer: that optimizer over the task's tensors (one param group
        per rate of ``lrs``). An optimizer that is not elementwise, run from several starts
        or rates, is refused the batch: each start and rate gets a tensor and an optimizer
        of its own. Several ``optimizers``: one member each, stepped by an
        :class:`OptimizerSet`.
        """
        if self.optimizers is not None:
            log.info(
                "task.optimizers is set: %s side by side (the run's optimizer config is not used)",
                ", ".join(self.optimizers),
            )
        specs = self.optimizers or {factory_name(factory): factory}
        per_optimizer = self.n_starts * len(self.lrs or [None])
        layout: dict[str, tuple[Any, bool]] = {}
        for name, spec in specs.items():
            caps = capabilities_of(spec)
            if not caps.elementwise and per_optimizer > 1:
                log.warning(
                    "%s is not elementwise (its update couples the entries of a tensor), so "
                    "it cannot move %d starts as the rows of one tensor; running %d separate "
                    "optimizers instead, one per start and learning rate (slower)",
                    name,
                    per_optimizer,
                    per_optimizer,
                )
            layout[name] = (spec, caps.elementwise)
        self._build_layout(layout)

        members = self._members()
        if len(members) == 1 and self.optimizers is None:
            only = members[0][0]

            def build(params: list[Any]) -> Optimizer:
                return only.factory(params)

            return _BoundFactory(self, build, capabilities_of(factory))

        member_caps = [capabilities_of(block.factory) for block, _ in members]

        def build_set(params: list[Any]) -> Optimizer:
            # Each member gets the param groups of its own tensors.
            by_tensor = {id(group["params"][0]): group for group in params}
            built = []
            for (block, tensors), caps in zip(members, member_caps):
                own = [by_tensor[id(t)] for t in tensors]
                # A member that re-evaluates the loss, or differentiates through the
                # gradient's graph, needs a loss (and graph) of its own parameters only.
                needs_own = caps.needs_closure or caps.needs_create_graph
                closure = self._own_closure(tensors, caps) if needs_own else None
                built.append((block.factory(own), closure))
            return OptimizerSet(built)

        caps = Capabilities(
            needs_closure=any(c.needs_closure for c in member_caps),
            needs_create_graph=False,
            has_train_eval=any(c.has_train_eval for c in member_caps),
            elementwise=True,
        )
        return _BoundFactory(self, build_set, caps)

    def _members(self) -> list[tuple[_Block, list[Tensor]]]:
        """(block, tensors) per optimizer instance: every block of an elementwise optimizer
        together, one instance per tensor otherwise."""
        members: list[tuple[_Block, list[Tensor]]] = []
        by_name: dict[str, list[Tensor]] = {}
        for block in self.blocks:
            if block.elementwise:
                if block.optimizer not in by_name:
                    by_name[block.optimizer] = []
                    members.append((block, by_name[block.optimizer]))
                by_name[block.optimizer].extend(block.tensors)
            else:
                members.extend((block, [t]) for t in block.tensors)
        return members

    def parameters(self) -> list[dict[str, Any]]:
        """One param group per tensor, in layout order, with its block's rate if ``lrs``
        is set (fresh dicts on every call)."""
        groups = []
        for block in self.blocks:
            for t in block.tensors:
                group: dict[str, Any] = {"params": [t]}
                if block.lr is not None:
                    group["lr"] = block.lr
                groups.append(group)
        return groups

    def _own_closure(self, tensors: list[Tensor], caps: Capabilities) -> Callable[[], Tensor]:
        """The closure of a member that re-evaluates its own loss (L-BFGS, Newton)."""
        rows = [self._rows_of[id(t)] for t in tensors]

        def closure() -> Tensor:
            for t in tensors:
                t.grad = None
            loss = self._loss_of(tensors, rows)
            loss.backward(create_graph=caps.needs_create_graph)
            return loss

        return closure

    # -- the loss ----------------------------------------------------------------------------

    def plan(self, trainer_cfg: Mapping[str, Any]) -> int:
        return int(trainer_cfg["steps"])

    def batches(self, epoch: int) -> Iterator[None]:
        self._epoch = epoch
        yield None

    def loss(self, batch: None) -> Tensor:
        """The sum over every start of f: each row's gradient is f's gradient there."""
        if len(self.tensors) == 1 and not self._masked:
            return self.function(self.x).sum()
        return self._loss_of(self.tensors, None)

    def _loss_of(self, tensors: list[Tensor], rows: list[slice] | None) -> Tensor:
        points = tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        if not self._masked:
            return self.function(points).sum()
        # A diverged start is replaced by the origin in the forward pass and its value by
        # 0, so its gradient is exactly 0 (not 0 * nan) and the others are untouched.
        alive = self._alive if rows is None else torch.cat([self._alive[r] for r in rows])
        safe = torch.where(alive[:, None], points, torch.zeros_like(points))
        values = self.function(safe)
        return torch.where(alive, values, torch.zeros_like(values)).sum()

    # -- per-step records --------------------------------------------------------------------

    def _reset_records(self) -> None:
        n = self.n_rows
        dev = self.device
        self._rows_of = {}
        row = 0
        for t in self.tensors:
            self._rows_of[id(t)] = slice(row, row + len(t))
            row += len(t)
        self._alive = torch.ones(n, dtype=torch.bool, device=dev)
        self._first_hit = torch.full((n,), -1, dtype=torch.long, device=dev)
        self._diverged_at = torch.full((n,), -1, dtype=torch.long, device=dev)
        self._why = torch.zeros(n, dtype=torch.int8, device=dev)
        self._masked = False
        self._epoch = 0
        self._observed = -1
        self._stats: list[float] = []
        self._path_starts = self._choose_path_starts()
        index = [b.offset + i for b in self.blocks for i in self._path_starts]
        self._path_rows = torch.tensor(index, dtype=torch.long, device=dev)
        self._paths: list[Tensor] = []  # per step: (paths, dim)
        self._path_values: list[Tensor] = []  # per step: (paths,)
        self._quartiles: list[Tensor] = []  # per step: (blocks, 3), with several starts
        self._dead: list[Tensor] = []  # per step: (blocks,) fraction diverged so far
        # Distances and quantiles are computed in float64 (cdist and nanquantile do not
        # take float16 or bfloat16, and their rounding would blur the target test).
        self._minimizers = torch.tensor(self.function.minimizers, dtype=torch.float64, device=dev)
        self._ceiling = overflow_ceiling(self.dtype, n)

    def _choose_path_starts(self) -> list[int]:
        """The starts whose full paths are kept: the first (``start``), then the first
        starts inside the plot window (they show on the map), then any others."""
        count = min(self.n_paths, self.n_starts)
        (x0, x1), (y0, y1) = self.function.window
        xy = self.start_rows[:, :2]
        inside = (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
        order = [0] + [i for i in range(1, self.n_starts) if inside[i]]
        order += [i for i in range(1, self.n_starts) if not inside[i]]
        return order[:count]

    def _points(self) -> Tensor:
        with torch.no_grad():
            return (self.x if len(self.tensors) == 1 else torch.cat(self.tensors)).detach()

    def _success(self, points: Tensor, values: Tensor) -> Tensor:
        """Under the target, from float64 copies of ``points`` and ``values``."""
        under = values - self.function.minimum < self.target_gap
        if self.target_distance is not None:
            near = torch.cdist(points, self._minimizers).amin(-1) < self.target_distance
            under = under | near
        return under

    @torch.no_grad()
    def _observe(self, epoch: int) -> None:
        """Update the per-start records after step ``epoch`` (once per step), with one
        device-to-host copy of the aggregates."""
        if self._observed == epoch:
            return
        self._observed = epoch
        points = self._points()
        values = self.function(points).to(torch.float64)
        points = points.to(torch.float64)
        finite_point = torch.isfinite(points).all(-1)
        finite_value = torch.isfinite(values)
        below = values.abs() <= self._ceiling
        finite = finite_point & finite_value & below
        newly = self._alive & ~finite
        why = torch.where(
            ~finite_point,
            _NONFINITE_POINT,
            torch.where(~finite_value, _NONFINITE_VALUE, _ABOVE_CEILING),
        ).to(torch.int8)
        self._why = torch.where(newly, why, self._why)
        self._diverged_at = torch.where(newly, epoch, self._diverged_at)
        self._alive = self._alive & finite
        under = self._alive & self._success(points, values)
        self._first_hit = torch.where(under & (self._first_hit < 0), epoch, self._first_hit)

        self._paths.append(points[self._path_rows].clone())
        self._path_values.append(values[self._path_rows].clone())
        quartile_q = torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype, device=values.device)
        masked = torch.where(self._alive, values, torch.full_like(values, math.nan))
        quartiles = None
        if self.n_starts > 1:
            per_block = masked.view(len(self.blocks), self.n_starts)
            quartiles = torch.nanquantile(per_block, quartile_q, dim=1).T
            self._quartiles.append(quartiles)
            dead = (~self._alive).view(len(self.blocks), self.n_starts)
            self._dead.append(dead.to(torch.float64).mean(1))

        if self.n_rows == 1:
            stats = torch.cat([values, points[0], self._alive.to(values.dtype)])
        else:
            if quartiles is not None and len(self.blocks) == 1:
                overall = quartiles[0]
            else:
                overall = torch.nanquantile(masked, quartile_q)
            fractions = torch.stack(
                [
                    under.to(values.dtype).mean(),
                    (self._first_hit >= 0).to(values.dtype).mean(),
                    (~self._alive).to(values.dtype).mean(),
                    self._alive.to(values.dtype).sum(),
                ]
            )
            stats = torch.cat([overall, fractions])
        self._stats = stats.tolist()
        alive = self._stats[-1] if self.n_rows == 1 else self._stats[-1]
        self._masked = self._masked or alive < self.n_rows

    def _row(self, epoch: int) -> dict[str, float]:
        self._observe(epoch)
        fstar = self.function.minimum
        s = self._stats
        if self.n_rows == 1:
            row = {"train/loss": s[0], "train/gap": s[0] - fstar}
            row.update({f"x{i}": v for i, v in enumerate(s[1 : 1 + self.function.dim])})
            return row
        q25, median, q75, success, reached, diverged, _ = s
        return {
            "train/loss": median,
            "train/gap": median - fstar,
            "train/gap_q25": q25 - fstar,
            "train/gap_q75": q75 - fstar,
            "train/success": success,
            "train/reached": reached,
            "train/diverged": diverged,
        }

    def initial_row(self) -> dict[str, float]:
        return self._row(0)

    def evaluate(self, epoch: int) -> dict[str, float]:
        return self._row(epoch)

    def params_finite(self) -> bool:
        """False only when every start has diverged (one diverged start among many is
        masked, not the end of the run)."""
        self._observe(self._epoch)
        return self._stats[-1] > 0

    def divergence_reason(self) -> str:
        """What made the starts diverge, for the run's ``diverged_reason``: e.g. ``value
        above the overflow ceiling 1.6e+04 (1 start)`` or, with several kinds, each with
        its count."""
        self._observe(self._epoch)
        counts = torch.bincount(self._why.long(), minlength=len(_REASONS) + 1).tolist()
        parts = []
        for code, text in _REASONS.items():
            if counts[code]:
                if code == _ABOVE_CEILING:
                    text = f"{text} {self._ceiling:.3g}"
                plural = "s" if counts[code] > 1 else ""
                parts.append(f"{text} ({counts[code]:,} start{plural})")
        return "; ".join(parts) or "non-finite parameter"

    # -- results -----------------------------------------------------------------------------

    def trajectory(self, index: int = 0) -> np.ndarray:
        """The visited points of the ``index``-th kept path (the first start of the first
        optimizer and rate by default), shape ``(steps + 1, dim)``, the start first."""
        return torch.stack(self._paths)[:, index].cpu().numpy().astype(float)

    def per_start(self) -> pd.DataFrame:
        """One row per start, optimizer and rate: start and final point, final gap,
        ``steps_to_target`` (NaN: never), ``diverged_at_step`` (NaN: never) and the
        ``outcome`` (the index of the global minimiser reached, -1 not reached, -2
        diverged)."""
        points = self._points()
        with torch.no_grad():
            values = self.function(points).to(torch.float64)
            points = points.to(torch.float64)
            success = self._alive & self._success(points, values)
            nearest = torch.cdist(torch.nan_to_num(points), self._minimizers).argmin(-1)
        outcome = torch.where(success, nearest, NOT_REACHED)
        outcome = torch.where(self._alive, outcome, DIVERGED)
        final = points.cpu().numpy().astype(float)
        gap = values.cpu().numpy().astype(float) - self.function.minimum
        first_hit = self._first_hit.cpu().numpy()
        diverged_at = self._diverged_at.cpu().numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            distance = np.min(
                np.linalg.norm(final[:, None, :] - np.array(self.function.minimizers), axis=-1),
                axis=1,
            )
        dim = self.function.dim
        with_lr = self.lrs is not None
        frame = pd.DataFrame(
            {
                "optimizer": np.repeat([b.optimizer for b in self.blocks], self.n_starts),
                "lr": np.repeat([self._lr_of(b) for b in self.blocks], self.n_starts),
                "label": np.repeat([b.label(with_lr) for b in self.blocks], self.n_starts),
                "start_index": np.tile(np.arange(self.n_starts), len(self.blocks)),
                **{
                    f"start_x{i}": np.tile(self.start_rows[:, i], len(self.blocks))
                    for i in range(dim)
                },
                **{f"final_x{i}": final[:, i] for i in range(dim)},
                "final_gap": np.where(self._alive.cpu().numpy(), gap, np.nan),
                "distance_to_minimum": distance,
                "steps_to_target": np.where(first_hit >= 0, first_hit, np.nan),
                "diverged_at_step": np.where(diverged_at >= 0, diverged_at, np.nan),
                "diverged_reason": [_REASONS.get(c, "") for c in self._why.cpu().tolist()],
                "outcome": outcome.cpu().numpy(),
            }
        )
        return frame

    def _lr_of(self, block: _Block) -> float:
        if block.lr is not None:
            return block.lr
        if self._optimizer is not None:
            target = block.tensors[0]
            for group in self._optimizer.param_groups:
                if any(p is target for p in group["params"]):
                    return float(group.get("lr", math.nan))
        return math.nan

    def finish(
        self, run_dir: Path, recorder: RunRecorder, summary: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self.optimizers is None and self.blocks:
            for block in self.blocks:
                block.optimizer = str(summary.get("optimizer") or block.optimizer)
        starts = self.per_start()
        first = starts.iloc[0]
        final = [float(first[f"final_x{i}"]) for i in range(self.function.dim)]
        row0_gap = self._path_values[-1][0].item() - self.function.minimum
        fields: dict[str, Any] = {
            "function": self.function.name,
            "dim": self.function.dim,
            "start": list(self.start),
            "final_point": final,
            "final_gap": row0_gap,
            "distance_to_minimum": float(first["distance_to_minimum"]),
            "target_gap": self.target_gap,
            "steps_to_target": None
            if math.isnan(first["steps_to_target"])
            else int(first["steps_to_target"]),
            "minimum": self.function.minimum,
        }
        if self.n_rows > 1:
            fields.update(self._batch_fields(starts))
            self._write_tables(run_dir, starts)
        if self.figures:
            self._figures(run_dir, recorder, summary, starts)
        return fields

    def _batch_fields(self, starts: pd.DataFrame) -> dict[str, Any]:
        stats = block_statistics(starts)
        overall = statistics_of(starts)
        fields: dict[str, Any] = {
            "n_starts": self.n_starts,
            "starts": self.starts_mode if self.n_starts > 1 else "start",
            "start_region": self.start_region,
            "n_runs": self.n_rows,
            "target_distance": self.target_distance,
            **overall,
        }
        if len(self.blocks) > 1:
            fields["lrs"] = self.lrs
            fields["optimizers"] = list(dict.fromkeys(b.optimizer for b in self.blocks))
            best = best_rates(stats)
            fields["best_lr"] = {row.optimizer: row.lr for row in best.itertuples()}
        if self.optimizers is not None:
            fields["optimizer"] = ",".join(self.optimizers)
        return fields

    def _write_tables(self, run_dir: Path, starts: pd.DataFrame) -> None:
        """``starts.csv``, ``gap_curves.csv`` and, with several optimizers or rates,
        ``results.csv`` and ``lr_table.md``."""
        path = run_dir / "starts.csv"
        starts.to_csv(path, index=False)
        log.info("Wrote %s (%d starts)", describe_file(path), len(starts))
        if len(self.blocks) > 1:
            stats = block_statistics(starts)
            path = run_dir / "results.csv"
            stats.to_csv(path, index=False)
            log.info("Wrote %s", describe_file(path))
            table = run_dir / "lr_table.md"
            table.write_text(self._markdown_table(best_rates(stats), stats))
            log.info("Wrote %s", describe_file(table))
        steps = np.arange(len(self._path_values))
        curves: dict[str, Any] = {"step": steps}
        with_lr = self.lrs is not None
        if self.n_starts > 1:
            quartiles = torch.stack(self._quartiles).cpu().numpy() - self.function.minimum
            for b, block in enumerate(self.blocks):
                for j, q in enumerate(("q25", "median", "q75")):
                    curves[f"{block.label(with_lr)} {q}"] = quartiles[:, b, j]
        else:
            values = torch.stack(self._path_values).cpu().numpy() - self.function.minimum
            per_block = len(self._path_starts)
            for b, block in enumerate(self.blocks):
                curves[block.label(with_lr)] = values[:, b * per_block]
        path = run_dir / "gap_curves.csv"
        pd.DataFrame(curves).to_csv(path, index=False)
        log.info("Wrote %s", describe_file(path))

    def _markdown_table(self, best: pd.DataFrame, stats: pd.DataFrame | None = None) -> str:
        """Each optimizer at its best rate (:func:`best_rates`), as a Markdown table
        (``lr_table.md``), then, given ``stats``, every optimizer and rate tried."""
        steps = len(self._path_values) - 1
        many = self.n_starts > 1
        rates = ", ".join(f"{lr:g}" for lr in self.lrs) if self.lrs else "their own"
        lines = [
            f"{self.function.name} from {list(self.start)}"
            + (f" and {self.n_starts - 1} more starts" if many else "")
            + f", {steps:,} steps, target f - f* < {self.target_gap:g}; rates tried: {rates}",
            "",
        ]
        if many:
            lines += [
                "| optimizer | best lr | steps to target (median) "
                "| final f - f* (median, diverged = inf) | final f - f* (median of survivors) "
                "| success | diverged |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
        else:
            lines += [
                "| optimizer | best lr | steps to target | final f - f* |",
                "| --- | ---: | ---: | ---: |",
            ]
        for row in best.itertuples():
            median = row.steps_to_target_median
            reached = "not reached" if math.isnan(median) else f"{int(median):,}"
            gap = "diverged" if math.isnan(row.final_gap_median) else f"{row.final_gap_median:.2e}"
            if many:
                gap_all = row.final_gap_all_median
                gap_all = "inf (diverged)" if math.isnan(gap_all) else f"{gap_all:.2e}"
                lines.append(
                    f"| {row.optimizer} | {row.lr:g} | {reached} | {gap_all} | {gap} | "
                    f"{row.success_rate:.0%} | {row.diverged_fraction:.0%} |"
                )
            else:
                lines.append(f"| {row.optimizer} | {row.lr:g} | {reached} | {gap} |")
        if stats is not None and many:
            lines += [
                "",
                "Every rate tried (the ranking: success, then steps, then the median gap "
                "with diverged starts counted as infinite, then the diverged fraction):",
                "",
                "| optimizer | lr | success | steps to target (median) "
                "| final f - f* (median, diverged = inf) | final f - f* (median of survivors) "
                "| diverged |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for row in stats.itertuples():
                median = row.steps_to_target_median
                reached = "not reached" if math.isnan(median) else f"{int(median):,}"
                g = row.final_gap_median
                g_all = row.final_gap_all_median
                lines.append(
                    f"| {row.optimizer} | {row.lr:g} | {row.success_rate:.0%} | {reached} | "
                    + ("inf (diverged)" if math.isnan(g_all) else f"{g_all:.2e}")
                    + " | "
                    + ("-" if math.isnan(g) else f"{g:.2e}")
                    + f" | {row.diverged_fraction:.0%} |"
                )
        return "\n".join(lines) + "\n"

    # -- figures -----------------------------------------------------------------------------

    def _figures(
        self,
        run_dir: Path,
        recorder: RunRecorder,
        summary: Mapping[str, Any],
        starts: pd.DataFrame,
    ) -> None:
        """The figures of the run, as PNG files and TensorBoard images."""
        if self.function.dim < 2:
            return
        with_lr = self.lrs is not None
        per_block = len(self._path_starts)
        paths = torch.stack(self._paths).cpu().numpy().astype(float)  # (T+1, P, dim)
        values = torch.stack(self._path_values).cpu().numpy().astype(float)
        diverged_at = self._diverged_at[self._path_rows].cpu().numpy()
        status = summary.get("status")
        stats = block_statistics(starts)
        shown = self._shown_blocks(stats)

        def path_of(column: int) -> np.ndarray:
            path = paths[:, column]
            if diverged_at[column] >= 0:
                path = path[: diverged_at[column]]
            return path[np.isfinite(path).all(axis=1)]

        def lr_text(block: _Block) -> str:
            lr = self._lr_of(block)
            return "" if math.isnan(lr) else f" (lr {lr:.3g})"

        trajectories: dict[str, np.ndarray] = {}
        gap_curves: dict[str, dict[str, np.ndarray]] = {}
        if self.n_rows == 1:
            block = self.blocks[0]
            steps = len(values) - 1
            label = f"{block.optimizer}{lr_text(block)}, {steps:,} steps: " + _start_outcome(
                starts.iloc[0]
            )
            if status not in ("ok", None):
                label += f" (run {status})"
            trajectories[label] = path_of(0)
            gap_curves[f"{block.optimizer}{lr_text(block)}"] = {"median": values[:, 0]}
            title = f"{self.function.name} from {list(self.start)}"
            name = "trajectory"
        elif len(self.blocks) == 1:
            block = self.blocks[0]
            for column, i in enumerate(self._path_starts):
                start = ", ".join(f"{v:.3g}" for v in self.start_rows[i][:2])
                outcome = _start_outcome(starts.iloc[i])
                trajectories[f"start ({start}): {outcome}"] = path_of(column)
            title = (
                f"{self.function.name}: {block.optimizer}{lr_text(block)}, "
                f"{per_block} of {self.n_starts} starts"
            )
            name = "trajectories"
        else:
            for b in shown:
                block = self.blocks[b]
                outcome = _start_outcome(starts.iloc[b * self.n_starts])
                label = f"{block.optimizer}{lr_text(block)}: {outcome}"
                trajectories[label] = path_of(b * per_block)
            title = f"{self.function.name} from {list(self.start)}" + (
                ", each optimizer at its best learning rate" if with_lr else ""
            )
            name = "trajectories"
        if self.n_starts > 1:
            quartiles = torch.stack(self._quartiles).cpu().numpy() - self.function.minimum
            dead = torch.stack(self._dead).cpu().numpy()
            for b in shown if len(self.blocks) > 1 else [0]:
                block = self.blocks[b]
                gap_curves[f"{block.optimizer}{lr_text(block)}"] = {
                    "low": quartiles[:, b, 0],
                    "median": quartiles[:, b, 1],
                    "high": quartiles[:, b, 2],
                    "diverged": dead[:, b],
                }
        elif len(self.blocks) > 1:
            for b in shown:
                block = self.blocks[b]
                gap_curves[f"{block.optimizer}{lr_text(block)}"] = {
                    "median": values[:, b * per_block] - self.function.minimum
                }
        if self.n_rows == 1:
            gap_curves = {
                k: {"median": v["median"] - self.function.minimum} for k, v in gap_curves.items()
            }

        figures: list[tuple[str, Any]] = []
        trajectories = {k: v for k, v in trajectories.items() if len(v)}
        if trajectories:
            figures.append(
                (
                    name,
                    plot_trajectories(
                        self.function, trajectories, title=title + "\nstart (o), end (X)"
                    ),
                )
            )
        spread = " over the starts still alive" if self.n_starts > 1 else ""
        figures.append(
            (
                "loss_gap",
                plot_gap_curves(
                    gap_curves,
                    target=self.target_gap,
                    title=f"{self.function.name}: f - f* per step{spread}",
                ),
            )
        )
        if self.n_starts > 1:
            panels = {}
            for b in shown if len(self.blocks) > 1 else [0]:
                block = self.blocks[b]
                rows = starts.iloc[b * self.n_starts : (b + 1) * self.n_starts]
                panels[f"{block.optimizer}{lr_text(block)}"] = rows["outcome"].to_numpy()
            figures.append(
                (
                    "basins",
                    plot_basins(
                        self.function,
                        self.start_rows,
                        panels,
                        grid=self.starts_mode == "grid",
                        steps=len(values) - 1,
                    ),
                )
            )
        if self.lrs is not None and len(self.lrs) > 1:
            figures.append(
                (
                    "lr_sensitivity",
                    plot_lr_sensitivity(
                        stats,
                        title=f"{self.function.name}: sensitivity to the learning rate "
                        f"({self.n_starts} start{'s' if self.n_starts > 1 else ''}, "
                        f"{len(values) - 1} steps)",
                        target=self.target_gap,
                    ),
                )
            )
        for stem, fig in figures:
            path = run_dir / f"{stem}.png"
            fig.savefig(path, dpi=120)
            recorder.log_figure(f"figures/{stem}", fig)
            plt.close(fig)
            log.info("Wrote %s", describe_file(path))
        if self.animate and trajectories:
            path = run_dir / "paths.gif"
            animate_paths(self.function, trajectories, path, title=title)
            log.info("Wrote %s", describe_file(path))

    def _shown_blocks(self, stats: pd.DataFrame) -> list[int]:
        """The block of each optimizer drawn in the figures: its best rate."""
        best = best_rates(stats)
        index = []
        for row in best.itertuples():
            match = stats.index[(stats["optimizer"] == row.optimizer) & (stats["lr"] == row.lr)]
            index.append(int(match[0]))
        return index

    def hparams(self) -> dict[str, Any]:
        hp = {"task": self.name, "start": str(list(self.start)), "dim": self.function.dim}
        if self.n_rows > 1:
            hp.update(n_starts=self.n_starts, starts=self.starts_mode)
        return hp


def _start_outcome(row: Any) -> str:
    """What became of one start, for a legend."""
    if not math.isnan(row["diverged_at_step"]):
        return f"diverged at step {int(row['diverged_at_step']):,}"
    gap = f"final gap {row['final_gap']:.2g}"
    if not math.isnan(row["steps_to_target"]):
        return f"target at step {int(row['steps_to_target']):,}, {gap}"
    return f"{gap}, target not reached"


def statistics_of(starts: pd.DataFrame) -> dict[str, Any]:
    """The summary statistics of a set of starts (rows of :meth:`FunctionTask.per_start`).

    ``success_rate``: fraction whose final gap (or distance) is under the target;
    ``reached_fraction``: fraction under it at some step; ``steps_to_target_*``: quartiles
    over every start, a start that never reached the target counting as infinitely slow
    (so a quartile is null when fewer starts reached it), values of the sample without
    interpolation; ``final_gap_*``: quartiles over the starts that did not diverge;
    ``final_gap_all_median``: the median final gap over every start, a diverged start
    counting as an infinite gap (null when the median start diverged), which is what
    :func:`best_rates` ranks by; ``diverged_fraction``, ``n_diverged``.
    """
    steps = starts["steps_to_target"].to_numpy(dtype=float)
    steps = np.where(np.isnan(steps), np.inf, steps)
    gaps = starts["final_gap"].to_numpy(dtype=float)
    diverged = starts["outcome"].to_numpy() == DIVERGED
    (g_all,) = sample_quantiles(np.where(diverged | np.isnan(gaps), np.inf, gaps), [0.5])
    gaps = gaps[np.isfinite(gaps)]
    s25, s50, s75 = sample_quantiles(steps, [0.25, 0.5, 0.75])
    g25, g50, g75 = (
        [float(v) for v in np.quantile(gaps, [0.25, 0.5, 0.75])] if gaps.size else [None] * 3
    )
    return {
        "success_rate": float(np.mean(starts["outcome"].to_numpy() >= 0)),
        "reached_fraction": float(np.mean(np.isfinite(steps))),
        "steps_to_target_median": s50,
        "steps_to_target_q25": s25,
        "steps_to_target_q75": s75,
        "final_gap_median": g50,
        "final_gap_q25": g25,
        "final_gap_q75": g75,
        "final_gap_all_median": g_all,
        "diverged_fraction": float(np.mean(diverged)),
        "n_diverged": int(np.sum(diverged)),
    }


def block_statistics(starts: pd.DataFrame) -> pd.DataFrame:
    """:func:`statistics_of` per (optimizer, rate), in the order of the run's blocks."""
    rows = []
    for (optimizer, label), group in starts.groupby(["optimizer", "label"], sort=False):
        rows.append(
            {
                "optimizer": optimizer,
                "label": label,
                "lr": group["lr"].iloc[0],
                **statistics_of(group),
            }
        )
    frame = pd.DataFrame(rows)
    for column in (
        "steps_to_target_median",
        "steps_to_target_q25",
        "steps_to_target_q75",
        "final_gap_median",
        "final_gap_q25",
        "final_gap_q75",
        "final_gap_all_median",
    ):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def best_rates(stats: pd.DataFrame) -> pd.DataFrame:
    """Each optimizer's best rate: the highest success rate (final gap under the target, so
    a rate that touches the target and leaves it again is not preferred), then the fewest
    median steps to the target, then the lowest median final gap over every start, a
    diverged start counting as the worst gap there is (``final_gap_all_median``), then the
    smallest diverged fraction, then the median gap of the survivors. A rate at which most
    starts diverged thus never wins on the gap of its few survivors, and rates at which
    every start diverged come last."""
    key = stats.assign(
        _steps=stats["steps_to_target_median"].fillna(np.inf),
        _gap_all=stats["final_gap_all_median"].fillna(np.inf),
        _diverged=stats["diverged_fraction"],
        _gap=stats["final_gap_median"].fillna(np.inf),
        _dead=stats["diverged_fraction"] >= 1.0,
        _success=-stats["success_rate"],
    )
    ordered = key.sort_values(
        ["_dead", "_success", "_steps", "_gap_all", "_diverged", "_gap"], kind="stable"
    )
    best = ordered.groupby("optimizer", sort=False).head(1)
    order = list(dict.fromkeys(stats["optimizer"]))
    best = best.set_index("optimizer").loc[order].reset_index()
    return best[[c for c in best.columns if not c.startswith("_")]]
