"""The contract between a task and the trainer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..tracking import RunRecorder

__all__ = ["Task"]


class Task(ABC):
    """A problem the trainer minimises.

    The trainer calls, in order: :meth:`setup`; :meth:`plan`, which says how many epochs
    to run; then for each epoch one optimizer step per batch of :meth:`batches` (each step
    evaluates :meth:`loss`), then :meth:`evaluate` for the epoch's history row; at the end
    :meth:`finish` for figures and the task's part of ``summary.json``.

    A test function is a task whose "epoch" is a single step on a single batch; a network
    task has real epochs over mini-batches.
    """

    #: ``function`` or ``network``: what the task's summary fields are.
    kind: str = "function"
    #: dtype used when the run's ``dtype`` is null.
    default_dtype: torch.dtype = torch.float32
    name: str = "task"

    @abstractmethod
    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        """Build the parameters (and read any data) on ``device`` in ``dtype``."""

    @abstractmethod
    def parameters(self) -> Iterable[Tensor] | Iterable[dict[str, Any]]:
        """What the optimizer is given: tensors or param groups."""

    @abstractmethod
    def plan(self, trainer_cfg: Mapping[str, Any]) -> int:
        """Take the trainer's settings (epochs, steps, batch size) and return how many
        epochs to run (``trainer.steps`` for a test function)."""

    @abstractmethod
    def batches(self, epoch: int) -> Iterator[Any]:
        """The batches of one epoch, in order."""

    @abstractmethod
    def loss(self, batch: Any) -> Tensor:
        """The scalar training loss on ``batch``, with its graph."""

    @abstractmethod
    def evaluate(self, epoch: int) -> dict[str, float]:
        """Metrics after ``epoch``: one history row (without the step counters)."""

    def initial_row(self) -> dict[str, float] | None:
        """Metrics before the first step (a row for step 0), or None."""
        return None

    def train(self) -> None:  # noqa: B027 - optional hook
        """Switch models to training mode (dropout, batch norm)."""

    def eval(self) -> None:  # noqa: B027 - optional hook
        """Switch models to evaluation mode."""

    def params_finite(self) -> bool:
        """Whether every parameter is finite."""
        return all(bool(torch.isfinite(p).all()) for p in _tensors(self.parameters()))

    def divergence_reason(self) -> str:
        """Why :meth:`params_finite` said no, for the run's ``diverged_reason``."""
        return "non-finite parameter"

    def adapt_optimizer(self, factory: Any) -> Any:
        """The optimizer factory the trainer builds with; called before it builds. A task may
        fit the optimizer to its parameters (a test function from many starts gives a
        method that is not elementwise one optimizer per start); by default, ``factory``."""
        return factory

    def finish(
        self, run_dir: Path, recorder: RunRecorder, summary: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Write figures; return the task's fields of ``summary.json``. ``summary`` holds
        what is known so far (optimizer, status, steps, ...)."""
        return {}

    def targets(self) -> dict[str, float]:
        """Time-to-target goals: history keys and the value each must reach (``>=``); the
        trainer records when each is first met. None by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue the task exactly: by default the
        parameters; tasks with models or random data order add their own."""
        return {"parameters": [p.detach().clone() for p in _tensors(self.parameters())]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after :meth:`setup`)."""
        with torch.no_grad():
            for p, saved in zip(_tensors(self.parameters()), state["parameters"], strict=True):
                p.copy_(saved)

    def hparams(self) -> dict[str, Any]:
        """The task's settings worth comparing in the HParams dashboard."""
        return {"task": self.name}


def _tensors(params: Iterable[Tensor] | Iterable[dict[str, Any]]) -> Iterator[Tensor]:
    for item in params:
        if isinstance(item, dict):
            yield from item["params"]
        else:
            yield item
