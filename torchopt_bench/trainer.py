"""The one training loop: any optimizer of the package on any task.

What an optimizer needs from the loop is read from its ``capabilities`` (see
:class:`~torchopt_bench.optim.Capabilities`), never from its name:

* every step goes through ``optimizer.step(closure)``, so closure-driven methods (L-BFGS,
  Newton) re-evaluate the loss as often as they need, and for the others the closure is
  simply the forward and backward pass;
* ``needs_create_graph``: the backward pass keeps its graph, for Hessian-vector products;
* ``has_train_eval``: ``optimizer.train()`` / ``optimizer.eval()`` bracket evaluation
  (schedule-free methods evaluate at a different point than they train at);
* ``matrix_only``: parameters that are not matrices go to ``fallback_optimizer``.

A loss or parameter that stops being finite ends the run with status ``diverged``: it is a
result, not a crash.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from tqdm.auto import tqdm

from .optim import Capabilities
from .tasks.base import Task
from .tracking import RunRecorder

log = logging.getLogger(__name__)

__all__ = ["Trainer", "capabilities_of"]

OptimizerFactory = Callable[[Any], Optimizer]


def capabilities_of(factory: OptimizerFactory | type) -> Capabilities:
    """The capabilities declared by the class behind an optimizer factory (a class or a
    ``functools.partial`` of one, as Hydra's ``_partial_: true`` builds); the defaults of
    :class:`Capabilities` for classes that declare none (e.g. torch.optim's own)."""
    target = factory
    while isinstance(target, partial):
        target = target.func
    return getattr(target, "capabilities", Capabilities())


def _split_matrices(params: Iterable[Any]) -> tuple[list[Any], list[Any]]:
    """Param groups (or tensors) split into 2-D tensors and all others."""
    matrices, others = [], []
    for item in params:
        if isinstance(item, dict):
            group_m = [p for p in item["params"] if p.ndim == 2]
            group_o = [p for p in item["params"] if p.ndim != 2]
            if group_m:
                matrices.append({**item, "params": group_m})
            if group_o:
                others.append({**item, "params": group_o})
        else:
            (matrices if item.ndim == 2 else others).append(item)
    return matrices, others


def _global_norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    norms = torch._foreach_norm(tensors)
    return float(torch.linalg.vector_norm(torch.stack(norms)))


class Trainer:
    """Runs an optimizer on a task and records what happened.

    Args:
        steps: optimizer steps for a test function.
        epochs: epochs for a network task.
        batch_size: mini-batch size for a network task (None: full batch).
        progress: show a progress bar over epochs (off when output is not a terminal).
        log_norms: record the gradient and update norms of the last step of each epoch.
        fallback_optimizer: factory for the parameters a ``matrix_only`` optimizer does not
            take (None: such parameters are an error).
    """

    def __init__(
        self,
        steps: int = 1000,
        epochs: int = 100,
        batch_size: int | None = None,
        progress: bool = True,
        log_norms: bool = True,
        fallback_optimizer: OptimizerFactory | None = None,
    ) -> None:
        if steps < 0:
            raise ValueError(f"trainer.steps must be non-negative, got {steps}")
        if epochs < 0:
            raise ValueError(f"trainer.epochs must be non-negative, got {epochs}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(
                f"trainer.batch_size must be a positive integer or null (full batch), "
                f"got {batch_size}"
            )
        self.steps = steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.progress = progress
        self.log_norms = log_norms
        self.fallback_optimizer = fallback_optimizer

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs, "batch_size": self.batch_size}

    def build_optimizers(self, factory: OptimizerFactory, task: Task) -> list[Optimizer]:
        """The optimizer over the task's parameters, plus the fallback for a
        ``matrix_only`` method's non-matrix parameters."""
        caps = capabilities_of(factory)
        params = list(task.parameters())
        if not caps.matrix_only:
            return [factory(params)]
        matrices, others = _split_matrices(params)
        if not matrices:
            raise ValueError(
                "this optimizer updates matrices only and the task has no 2-D parameter; "
                "choose another optimizer for this task"
            )
        optimizers = [factory(matrices)]
        if others:
            if self.fallback_optimizer is None:
                raise ValueError(
                    "this optimizer updates matrices only; set trainer.fallback_optimizer "
                    "for the other parameters (biases, vectors)"
                )
            optimizers.append(self.fallback_optimizer(others))
            log.info(
                "%d non-matrix parameter tensor(s) go to the fallback optimizer",
                sum(len(g["params"]) if isinstance(g, dict) else 1 for g in others),
            )
        return optimizers

    def fit(
        self,
        task: Task,
        factory: OptimizerFactory,
        recorder: RunRecorder,
    ) -> dict[str, Any]:
        """Run the loop; return the trainer's fields of ``summary.json``.

        Fields: ``status`` (``ok`` or ``diverged``), ``steps``, ``epochs``, ``final_loss``,
        ``wall_time_s`` (the optimisation steps alone, without evaluation and figures),
        ``eval_time_s`` and, for a divergence, ``diverged_at_step`` and ``diverged_reason``.
        """
        caps = capabilities_of(factory)
        optimizers = self.build_optimizers(factory, task)
        primary = optimizers[0]
        params = [p for group in primary.param_groups for p in group["params"]]
        for opt in optimizers[1:]:
            params += [p for group in opt.param_groups for p in group["params"]]

        n_epochs = task.plan(self.config())
        step = 0
        train_time = eval_time = 0.0
        status, reason = "ok", None
        device = params[0].device if params else torch.device("cpu")
        last: dict[str, Any] = {}
        norms: dict[str, float] = {}

        def set_modes(training: bool) -> None:
            (task.train if training else task.eval)()
            if caps.has_train_eval:
                for opt in optimizers:
                    (opt.train if training else opt.eval)()

        def closure_for(batch: Any, record: dict[str, float] | None) -> Callable[[], Tensor]:
            def closure() -> Tensor:
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss = task.loss(batch)
                loss.backward(create_graph=caps.needs_create_graph)
                if record is not None and "grad_norm" not in record:
                    grads = [p.grad for p in params if p.grad is not None]
                    record["grad_norm"] = _global_norm(grads)
                return loss

            return closure

        def one_step(batch: Any, record: dict[str, float] | None) -> Tensor:
            closure = closure_for(batch, record)
            before = [p.detach().clone() for p in params] if record is not None else None
            if len(optimizers) == 1:
                loss = primary.step(closure)
            else:
                loss = closure()
                for opt in optimizers:
                    opt.step()
            if before is not None:
                record["update_norm"] = _global_norm(
                    torch._foreach_sub([p.detach() for p in params], before)
                )
            return loss

        set_modes(training=False)
        first = task.initial_row()
        if first is not None:
            recorder.log_row(0, {"step": 0, "epoch": 0, **first, "lr": self._lr(primary)})

        bar = tqdm(
            range(1, n_epochs + 1),
            disable=None if self.progress else True,
            desc=task.name,
            unit="step" if task.kind == "function" else "epoch",
            leave=False,
        )
        for epoch in bar:
            set_modes(training=True)
            batches = list(task.batches(epoch))
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                record = norms if (self.log_norms and i == len(batches) - 1) else None
                if record is not None:
                    record.clear()
                loss = one_step(batch, record)
                loss_sum += loss.detach().to(torch.float64)
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - start

            start = time.perf_counter()
            set_modes(training=False)
            step_loss = float(loss_sum) / max(len(batches), 1)
            if not math.isfinite(step_loss):
                status, reason = "diverged", f"non-finite training loss ({step_loss})"
            elif not task.params_finite():
                status, reason = "diverged", "non-finite parameter"
            row = {"step": step, "epoch": epoch, **task.evaluate(epoch), "lr": self._lr(primary)}
            if status == "ok" and not all(
                math.isfinite(v) for v in row.values() if isinstance(v, float)
            ):
                status, reason = "diverged", "non-finite metric"
            if self.log_norms:
                row.update({f"opt/{k}": v for k, v in norms.items()})
            recorder.log_row(step, row)
            eval_time += time.perf_counter() - start
            last = row
            if status != "ok":
                log.warning("Run diverged at step %d (epoch %d): %s", step, epoch, reason)
                break
            if "train/loss" in row:
                bar.set_postfix(loss=f"{row['train/loss']:.4g}", refresh=False)
        bar.close()

        summary: dict[str, Any] = {
            "status": status,
            "steps": step,
            "epochs": last.get("epoch", 0),
            "final_loss": last.get("train/loss", first.get("train/loss") if first else None),
            "lr": self._lr(primary),
            "wall_time_s": train_time,
            "eval_time_s": eval_time,
        }
        if status == "diverged":
            summary.update(diverged_at_step=step, diverged_reason=reason)
        return summary

    @staticmethod
    def _lr(optimizer: Optimizer) -> float:
        lr = optimizer.param_groups[0].get("lr", float("nan"))
        return float(lr)


def trainer_from_config(cfg: Mapping[str, Any], fallback: OptimizerFactory | None) -> Trainer:
    """A :class:`Trainer` from the ``trainer`` config group."""
    keys = {"steps", "epochs", "batch_size", "progress", "log_norms"}
    unknown = set(cfg) - keys - {"fallback_optimizer"}
    if unknown:
        raise ValueError(f"Unknown trainer setting(s) {sorted(unknown)}; known: {sorted(keys)}")
    return Trainer(**{k: cfg[k] for k in keys if k in cfg}, fallback_optimizer=fallback)
