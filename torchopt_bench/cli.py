"""The Hydra application: ``python -m torchopt_bench optimizer=adam task=rosenbrock``.

One run reads the composed config, builds the task and the optimizer, runs the trainer
and writes everything into its own directory (``runs/<date>/<time>/``, or
``runs/multirun/<date>/<time>/<job>/`` in a sweep): the resolved config (``.hydra/``), the
log, TensorBoard events, ``history.csv``, ``summary.json`` and the task's figures.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .runtime import config_dir, project_root, resolve_device, resolve_dtype, seed_everything
from .tracking import RunRecorder, describe_file, flatten
from .trainer import trainer_from_config

log = logging.getLogger("torchopt_bench")

__all__ = ["main", "run"]

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))


class RunFailed(RuntimeError):
    """A run ended with status ``failed``; its summary is already written."""


def _optimizer_hparams(cfg: DictConfig) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg, resolve=True)
    return {
        f"optimizer.{k}": v
        for k, v in flatten(node).items()
        if not k.startswith("_") and k not in {"foreach", "fused", "differentiable", "capturable"}
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job of the composed config and return its summary.

    A diverged run is a result (status ``diverged``). An error is recorded as status
    ``failed`` with the message in ``summary.json``; in a multirun the other jobs go on,
    in a single run :class:`RunFailed` is raised after the summary is written.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    choices = hydra_cfg.runtime.choices
    summary: dict[str, Any] = {
        "optimizer": choices.get("optimizer"),
        "task": cfg.task.get("name", choices.get("task")),
        "status": "failed",
        "seed": cfg.seed,
        "overrides": list(hydra_cfg.overrides.task),
        "run_dir": str(run_dir),
    }
    log.info("Run directory: %s", run_dir)

    started = time.perf_counter()
    with RunRecorder(run_dir, tensorboard=cfg.logger.tensorboard) as recorder:
        task = None
        try:
            seed_everything(cfg.seed)
            device = resolve_device(cfg.device)
            task = instantiate(cfg.task, _convert_="all")
            dtype = resolve_dtype(cfg.dtype, task.default_dtype)
            log.info("Task %s (%s) on %s in %s", task.name, cfg.task._target_, device, dtype)
            task.setup(device, dtype, cfg.seed)

            factory = instantiate(cfg.optimizer)
            fallback = cfg.trainer.get("fallback_optimizer")
            fallback = instantiate(fallback) if fallback is not None else None
            trainer = trainer_from_config(cfg.trainer, fallback)
            log.info("Optimizer %s (%s)", summary["optimizer"], cfg.optimizer._target_)

            summary.update(device=str(device), dtype=str(dtype).removeprefix("torch."))
            summary.update(trainer.fit(task, factory, recorder))
            summary.update(task.finish(run_dir, recorder, summary))
        except Exception as err:  # recorded, then re-raised for a single run
            summary.update(status="failed", error=f"{type(err).__name__}: {err}")
            summary["traceback"] = traceback.format_exc()
            log.error("Run failed: %s", summary["error"])
        finally:
            summary["total_time_s"] = time.perf_counter() - started
            if recorder.history:
                log.info("Wrote %s", describe_file(recorder.write_history()))
            hp = {"optimizer": summary["optimizer"], "seed": cfg.seed}
            hp.update(_optimizer_hparams(cfg.optimizer))
            if task is not None:
                hp.update(task.hparams())
            recorder.log_hparams(hp, {k: v for k, v in summary.items() if k != "seed"})
            summary_path = recorder.write_summary(summary)
            log.info("Wrote %s", describe_file(summary_path))

    log.info(
        "Status %s after %s steps; final loss %s", summary["status"], summary.get("steps"),
        summary.get("final_loss"),
    )
    if summary["status"] == "failed" and not multirun:
        raise RunFailed(summary["error"])
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except RunFailed as err:
        # The error and its traceback are in summary.json; the terminal gets one line.
        print(f"torchopt_bench: run failed: {err}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    """Entry point of ``python -m torchopt_bench`` and the ``torchopt-bench`` script."""
    _hydra_main()
