"""Minimising a test function of :mod:`torchopt_bench.functions` with autograd."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from ..functions import TestFunction, get_function
from ..plots import plot_trajectories
from ..tracking import RunRecorder, describe_file
from .base import Task

log = logging.getLogger(__name__)

__all__ = ["FunctionTask"]


class FunctionTask(Task):
    """Minimise ``f(x)`` over a point ``x`` that starts at ``start``.

    Each epoch is one optimizer step; the history has one row per step, row 0 being the
    start. The point is held as a parameter of shape ``(1, dim)``.

    Args:
        name: the task name (``rosenbrock`` ...), also the function's name by default.
        function: the function's name in :data:`~torchopt_bench.functions.FUNCTIONS`,
            if it differs from ``name``.
        start: the starting point; None for the function's default start.
        dim: coordinates, for n-dimensional functions; None for the function's default.
        target_gap: ``steps_to_target`` is the first step with ``f - f* < target_gap``.
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
        self.target_gap = float(target_gap)
        self.path: list[np.ndarray] = []

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        self.x = torch.tensor([self.start], dtype=dtype, device=device, requires_grad=True)
        self.path = []

    def parameters(self) -> list[Tensor]:
        return [self.x]

    def plan(self, trainer_cfg: Mapping[str, Any]) -> int:
        return int(trainer_cfg["steps"])

    def batches(self, epoch: int) -> Iterator[None]:
        yield None

    def loss(self, batch: None) -> Tensor:
        return self.function(self.x).sum()

    def _row(self) -> dict[str, float]:
        with torch.no_grad():
            value = float(self.function(self.x).sum())
        point = self.x.detach().cpu().numpy()[0].astype(float)
        self.path.append(point)
        row = {"train/loss": value, "train/gap": value - self.function.minimum}
        row.update({f"x{i}": float(v) for i, v in enumerate(point)})
        return row

    def initial_row(self) -> dict[str, float]:
        return self._row()

    def evaluate(self, epoch: int) -> dict[str, float]:
        return self._row()

    def trajectory(self) -> np.ndarray:
        """The visited points, shape ``(steps + 1, dim)``, the start first."""
        return np.array(self.path)

    def finish(
        self, run_dir: Path, recorder: RunRecorder, summary: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = self.trajectory()
        finite = path[np.isfinite(path).all(axis=1)]
        gaps = np.array([row["train/gap"] for row in recorder.history])
        hits = np.flatnonzero(gaps < self.target_gap)
        final = path[-1]
        minimizers = np.array(self.function.minimizers)
        distance = float(np.min(np.linalg.norm(minimizers - final, axis=1)))
        fields = {
            "function": self.function.name,
            "dim": self.function.dim,
            "start": list(self.start),
            "final_point": final.tolist(),
            "final_gap": float(gaps[-1]),
            "distance_to_minimum": distance,
            "target_gap": self.target_gap,
            "steps_to_target": int(hits[0]) if hits.size else None,
            "minimum": self.function.minimum,
        }

        if len(finite) and self.function.dim >= 2:
            label = f"{summary.get('optimizer')} (lr {summary.get('lr', float('nan')):.3g})"
            fig = plot_trajectories(
                self.function,
                {f"{label}: {len(path) - 1} steps, {summary.get('status')}": finite},
                title=f"{self.function.name} from {list(self.start)}",
            )
            figure_path = run_dir / "trajectory.png"
            fig.savefig(figure_path, dpi=120)
            recorder.log_figure("figures/trajectory", fig)
            plt.close(fig)
            log.info("Wrote %s", describe_file(figure_path))
        return fields

    def hparams(self) -> dict[str, Any]:
        return {"task": self.name, "start": str(list(self.start)), "dim": self.function.dim}
