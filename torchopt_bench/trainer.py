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

Checkpoints and resume (network tasks): every ``checkpoint_every`` epochs, and after the
last one, ``checkpoint.pt`` in the run directory is replaced (atomically) by the task's
state (model, data-order generator), every optimizer's ``state_dict``, the RNG states of
Python, NumPy and torch (CPU and every CUDA device), the history so far, the epoch, the step
and the time-to-target bookkeeping. ``resume=True`` loads it from the run directory the
recorder writes to (the same ``hydra.run.dir``) and carries on with the next epoch; as every
source of randomness is restored, the resumed run computes exactly what the uninterrupted
run computes. Without a checkpoint there, the run starts from the beginning.

Time to target, as AlgoPerf measures training algorithms: for each metric the task names in
:meth:`~torchopt_bench.tasks.base.Task.targets` (``val/auc >= 0.9``, say), the first epoch
whose history row reaches it, with the optimizer steps and the training wall time up to that
epoch (``wall_time_s``, the steps alone, evaluation excluded as in AlgoPerf's submission
time, and the one-off compilation of a fused optimizer's update too) and the time
including the evaluations (``elapsed_s``).

Resuming checks that the checkpoint belongs to this run: the same task, seed (which also
drew the data splits), optimizer classes, parameter shapes, batch size and optimizer
settings as built (``optimizer.lr`` and the rest); any difference is refused with the
settings named. The number of epochs may grow, not fall below the checkpoint's.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer
from tqdm.auto import tqdm

from .optim import Capabilities, compile_seconds
from .tasks.base import Task
from .tracking import RunRecorder

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_NAME", "Trainer", "capabilities_of"]

#: The checkpoint file in the run directory.
CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_VERSION = 2

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


def _rng_states() -> dict[str, Any]:
    """Every global random state a run draws from, as tensors and plain values (loadable
    with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(states: Mapping[str, Any]) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _build(factory: OptimizerFactory, params: Any) -> Optimizer:
    """The optimizer over ``params``; a setting it refuses is reported with where to set it."""
    try:
        return factory(params)
    except (ValueError, TypeError) as err:
        raise type(err)(
            f"{err} (an optimizer setting: give it as optimizer.KEY=VALUE; the defaults are "
            "in conf/optimizer/)"
        ) from err


def _count(key: str, value: Any, minimum: int, expected: str) -> int:
    """The whole number ``trainer.KEY`` holds, or a ``ValueError`` naming the key, the value
    and what it must be. A float with no fractional part (``trainer.steps=1e3``) is taken
    as its integer; a bool is not a number here."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"trainer.{key} must be {expected}, got {value!r}; set it as trainer.{key}=N "
            "(the defaults are in conf/trainer/default.yaml)"
        )
    return int(value)


def _switch(key: str, value: Any) -> bool:
    """The bool ``trainer.KEY`` holds, or a ``ValueError`` naming the key and the value."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(
            f"trainer.{key} must be true or false, got {value!r}; set it as "
            f"trainer.{key}=true or trainer.{key}=false"
        )
    return bool(value)


def _global_norm(tensors: list[Tensor]) -> float:
    if not tensors:
        return 0.0
    norms = torch._foreach_norm([t.detach() for t in tensors])
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
        checkpoint_every: write ``checkpoint.pt`` every this many epochs and after the last
            (network tasks; 0: never).
        resume: continue from the run directory's ``checkpoint.pt`` when there is one.

    Every setting is checked here, where :func:`trainer_from_config` hands over the
    ``trainer`` config: a value of the wrong kind or range is a ``ValueError`` naming
    ``trainer.KEY``, the value and what it must be.
    """

    def __init__(
        self,
        steps: int = 1000,
        epochs: int = 100,
        batch_size: int | None = None,
        progress: bool = True,
        log_norms: bool = True,
        fallback_optimizer: OptimizerFactory | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
    ) -> None:
        self.steps = _count("steps", steps, 0, "a non-negative integer (optimizer steps)")
        self.epochs = _count("epochs", epochs, 0, "a non-negative integer (epochs)")
        self.batch_size = (
            None
            if batch_size is None
            else _count("batch_size", batch_size, 1, "a positive integer or null (full batch)")
        )
        self.checkpoint_every = _count(
            "checkpoint_every",
            checkpoint_every,
            0,
            "a non-negative number of epochs (0: no checkpoints)",
        )
        self.progress = _switch("progress", progress)
        self.log_norms = _switch("log_norms", log_norms)
        self.resume = _switch("resume", resume)
        self.fallback_optimizer = fallback_optimizer

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs, "batch_size": self.batch_size}

    def build_optimizers(self, factory: OptimizerFactory, task: Task) -> list[Optimizer]:
        """The optimizer over the task's parameters, plus the fallback for a
        ``matrix_only`` method's non-matrix parameters."""
        caps = capabilities_of(factory)
        params = list(task.parameters())
        if not caps.matrix_only:
            return [_build(factory, params)]
        matrices, others = _split_matrices(params)
        if not matrices:
            raise ValueError(
                "this optimizer updates matrices only and the task has no 2-D parameter; "
                "choose another optimizer for this task"
            )
        optimizers = [_build(factory, matrices)]
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

        Fields: ``status`` (``ok`` or ``diverged``), ``steps``, ``epochs`` (network tasks
        only: a test function's "epoch" is a single step, so its summary counts ``steps``
        alone), ``final_loss``, ``wall_time_s`` (the optimisation steps alone, without
        evaluation and figures, and without the compilation of a fused update, which is
        ``compile_time_s``), ``eval_time_s`` and, for a divergence, ``diverged_at_step``
        and ``diverged_reason``.
        With targets (:meth:`Task.targets`): ``time_to_target`` (per metric: ``target``,
        ``reached``, ``epoch``, ``steps``, ``wall_time_s``, ``elapsed_s``) and, for the first
        target, ``steps_to_target`` and ``time_to_target_s`` (None if never reached). A
        resumed run adds ``resumed_from_epoch``.

        A row's ``train/loss`` is the mean of the epoch's mini-batch losses, as the steps
        computed them, unless the task's :meth:`Task.evaluate` gives its own.
        """
        factory = task.adapt_optimizer(factory)
        caps = capabilities_of(factory)
        optimizers = self.build_optimizers(factory, task)
        primary = optimizers[0]
        params = [p for group in primary.param_groups for p in group["params"]]
        for opt in optimizers[1:]:
            params += [p for group in opt.param_groups for p in group["params"]]

        n_epochs = task.plan(self.config())
        step = 0
        train_time = eval_time = compile_time = 0.0
        status, reason = "ok", None
        device = params[0].device if params else torch.device("cpu")
        last: dict[str, Any] = {}
        norms: dict[str, float] = {}
        targets = dict(task.targets())
        reached: dict[str, dict[str, Any]] = {}
        checkpoint = Path(recorder.run_dir) / CHECKPOINT_NAME
        checkpoints = task.kind == "network"
        if not checkpoints and (self.checkpoint_every or self.resume):
            log.warning(
                "trainer.checkpoint_every / trainer.resume apply to network tasks; task %s "
                "is a %s and runs without checkpoints",
                task.name,
                task.kind,
            )
        fingerprint = {
            "task": task.name,
            "optimizers": [type(opt).__name__ for opt in optimizers],
            "shapes": [list(p.shape) for p in params],
            "batch_size": self.batch_size,
            "seed": getattr(task, "seed", None),
            **_hyperparameters(optimizers),
        }

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

        start_epoch = 1
        resumed = None
        if checkpoints and self.resume:
            resumed = self._load_checkpoint(checkpoint, fingerprint, task, optimizers, n_epochs)
        set_modes(training=False)
        first = None
        if resumed is None:
            first = task.initial_row()
            if first is not None:
                recorder.log_row(0, {"step": 0, "epoch": 0, **first, "lr": self._lr(primary)})
        else:
            start_epoch = resumed["epoch"] + 1
            step = resumed["step"]
            train_time, eval_time = resumed["train_time"], resumed["eval_time"]
            compile_time = resumed.get("compile_time", 0.0)
            reached = resumed["reached"]
            recorder.history[:] = resumed["history"]
            last = recorder.history[-1] if recorder.history else {}
            if recorder.writer is not None:
                # Events a stopped run wrote after its checkpoint are superseded, as
                # SummaryWriter(purge_step=...) does it.
                from tensorboard.compat.proto.event_pb2 import Event, SessionLog

                recorder.writer._get_file_writer().add_event(
                    Event(step=step + 1, session_log=SessionLog(status=SessionLog.START))
                )

        bar = tqdm(
            range(start_epoch, n_epochs + 1),
            disable=None if self.progress else True,
            desc=task.name,
            unit="step" if task.kind == "function" else "epoch",
            leave=False,
            initial=start_epoch - 1,
            total=n_epochs,
        )
        for epoch in bar:
            set_modes(training=True)
            batches = list(task.batches(epoch))
            # The steps' losses stay on the device and are summed once after the epoch:
            # no per-step kernel or host synchronisation for the bookkeeping.
            losses: list[Tensor] = []
            compiled_before = compile_seconds()
            start = time.perf_counter()
            for i, batch in enumerate(batches):
                record = norms if (self.log_norms and i == len(batches) - 1) else None
                if record is not None:
                    record.clear()
                loss = one_step(batch, record)
                losses.append(loss.detach())
                step += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            # A fused optimizer's first steps compile its update: counted apart.
            compiled = compile_seconds() - compiled_before
            train_time += time.perf_counter() - start - compiled
            compile_time += compiled

            start = time.perf_counter()
            set_modes(training=False)
            step_loss = (
                float(torch.stack(losses).to(torch.float64).sum()) / len(losses)
                if losses
                else float("nan")
            )
            if not math.isfinite(step_loss):
                status, reason = "diverged", f"non-finite training loss ({step_loss})"
            elif not task.params_finite():
                status, reason = "diverged", task.divergence_reason()
            row = {"step": step, "epoch": epoch, "train/loss": step_loss}
            row.update(task.evaluate(epoch))
            row["lr"] = self._lr(primary)
            infinite = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
            if status == "ok" and infinite:
                named = ", ".join(f"{k} = {row[k]}" for k in infinite)
                status, reason = "diverged", f"non-finite metric ({named})"
            if self.log_norms:
                row.update({f"opt/{k}": v for k, v in norms.items()})
            recorder.log_row(step, row)
            eval_time += time.perf_counter() - start
            last = row
            if status != "ok":
                log.warning("Run diverged at step %d (epoch %d): %s", step, epoch, reason)
                break
            for metric, target in targets.items():
                value = row.get(metric)
                if metric not in reached and value is not None and value >= target:
                    reached[metric] = {
                        "epoch": epoch,
                        "steps": step,
                        "wall_time_s": train_time,
                        "elapsed_s": train_time + eval_time,
                    }
                    log.info(
                        "%s reached its target %g at epoch %d (step %d) after %.3g s of training",
                        metric,
                        target,
                        epoch,
                        step,
                        train_time,
                    )
            if (
                checkpoints
                and self.checkpoint_every
                and (epoch % self.checkpoint_every == 0 or epoch == n_epochs)
            ):
                self._save_checkpoint(
                    checkpoint,
                    {
                        "version": _CHECKPOINT_VERSION,
                        "fingerprint": fingerprint,
                        "epoch": epoch,
                        "step": step,
                        "train_time": train_time,
                        "eval_time": eval_time,
                        "compile_time": compile_time,
                        "reached": reached,
                        "history": recorder.history,
                        "task": task.state_dict(),
                        "optimizers": [opt.state_dict() for opt in optimizers],
                        "rng": _rng_states(),
                    },
                )
            if "train/loss" in row:
                bar.set_postfix(loss=f"{row['train/loss']:.4g}", refresh=False)
        bar.close()

        summary: dict[str, Any] = {"status": status, "steps": step}
        if task.kind == "network":
            # A test function's "epoch" is one step: its summary counts steps only.
            summary["epochs"] = last.get("epoch", 0)
        summary.update(
            final_loss=last.get("train/loss", first.get("train/loss") if first else None),
            lr=self._lr(primary),
            wall_time_s=train_time,
            eval_time_s=eval_time,
            compile_time_s=compile_time,
        )
        if status == "diverged":
            summary.update(diverged_at_step=step, diverged_reason=reason)
        if resumed is not None:
            summary["resumed_from_epoch"] = resumed["epoch"]
        if targets:
            summary["time_to_target"] = {
                metric: {"target": target, "reached": metric in reached, **reached.get(metric, {})}
                for metric, target in targets.items()
            }
            primary_target = reached.get(next(iter(targets)), {})
            summary["steps_to_target"] = primary_target.get("steps")
            summary["time_to_target_s"] = primary_target.get("wall_time_s")
        return summary

    @staticmethod
    def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
        """Write ``state`` to ``path`` atomically: a stopped write leaves the previous
        checkpoint in place."""
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        log.debug("Checkpoint at epoch %d: %s", state["epoch"], path)

    @staticmethod
    def _load_checkpoint(
        path: Path,
        fingerprint: Mapping[str, Any],
        task: Task,
        optimizers: list[Optimizer],
        epochs: int,
    ) -> dict[str, Any] | None:
        """Restore the task, the optimizers and the RNGs from ``path``; return the loop's
        counters and history, or None when there is no checkpoint."""
        if not path.is_file():
            log.info("trainer.resume: no checkpoint at %s, starting from the beginning", path)
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"trainer.resume: cannot read the checkpoint {path} ({type(err).__name__}: "
                f"{err}); delete it to start from the beginning"
            ) from err
        if state.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(
                f"trainer.resume: {path} was written by another version of the trainer "
                f"(version {state.get('version')}); delete it to start from the beginning"
            )
        differ = [k for k, v in fingerprint.items() if state["fingerprint"].get(k) != v]
        if "optimizers" in differ:
            # Other classes: their settings differ by name too, which says nothing more.
            differ = [k for k in differ if not k.startswith("optimizer")] + ["optimizers"]
            differ = list(dict.fromkeys(differ))
        if differ:
            detail = ", ".join(
                f"{k}: {state['fingerprint'].get(k)} in the checkpoint, {fingerprint[k]} now"
                for k in differ
            )
            raise ValueError(
                f"trainer.resume: the checkpoint {path} belongs to another run ({detail}); "
                "resume with the settings of the stopped run, or use another hydra.run.dir"
            )
        if state["epoch"] > epochs:
            raise ValueError(
                f"trainer.resume: the checkpoint {path} is at epoch {state['epoch']}, past "
                f"trainer.epochs={epochs}; set trainer.epochs={state['epoch']} or more to "
                "continue it, or use another hydra.run.dir"
            )
        task.load_state_dict(state["task"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        _set_rng_states(state["rng"])
        log.info("Resumed from %s: epoch %d, step %d", path, state["epoch"], state["step"])
        return state

    @staticmethod
    def _lr(optimizer: Optimizer) -> float:
        lr = optimizer.param_groups[0].get("lr", float("nan"))
        return float(lr)


def _hyperparameters(optimizers: list[Optimizer]) -> dict[str, str]:
    """Each optimizer's settings as built, ``optimizer.lr`` (``optimizer[1].lr`` for a
    second optimizer, ``optimizer.group[1].lr`` for a second param group) to the value's
    repr: a checkpoint records them, and resuming with other settings is refused."""
    out = {}
    for i, opt in enumerate(optimizers):
        name = "optimizer" if len(optimizers) == 1 else f"optimizer[{i}]"
        for j, group in enumerate(opt.param_groups):
            prefix = name if len(opt.param_groups) == 1 else f"{name}.group[{j}]"
            for key, value in group.items():
                if key != "params":
                    out[f"{prefix}.{key}"] = repr(value)
    return out


def trainer_from_config(cfg: Mapping[str, Any], fallback: OptimizerFactory | None) -> Trainer:
    """A :class:`Trainer` from the ``trainer`` config group."""
    keys = {"steps", "epochs", "batch_size", "progress", "log_norms", "checkpoint_every", "resume"}
    unknown = set(cfg) - keys - {"fallback_optimizer"}
    if unknown:
        raise ValueError(f"Unknown trainer setting(s) {sorted(unknown)}; known: {sorted(keys)}")
    return Trainer(**{k: cfg[k] for k in keys if k in cfg}, fallback_optimizer=fallback)
