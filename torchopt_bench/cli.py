"""The Hydra application: ``python -m torchopt_bench optimizer=adam task=rosenbrock``.

One run reads the composed config, builds the task and the optimizer, runs the trainer
and writes everything into its own directory (``runs/<date>/<time>/``, or
``runs/multirun/<date>/<time>/<job>/`` in a sweep): the resolved config (``.hydra/``), the
log, TensorBoard events, ``history.csv``, ``summary.json`` and the task's figures.

In a sweep, a job whose directory already holds an ``ok`` summary of the same resolved
config is not run again (``skip_completed: true``), so an interrupted sweep started again
with the same command into the same directory resumes where it stopped. Under a sweeper
that optimises (Optuna, ``conf/experiment/tuning.yaml``) the app returns the summary field
named by the top-level ``objective`` key.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .runtime import config_dir, project_root, resolve_device, resolve_dtype, seed_everything
from .tracking import RunRecorder, describe_file, flatten, to_jsonable
from .trainer import CHECKPOINT_NAME, trainer_from_config

log = logging.getLogger("torchopt_bench")

__all__ = ["SweepFailures", "main", "objective_value", "run"]

#: Settings that say where outputs go or how a run is displayed, not what it computes:
#: left out when a job's config is compared with the one of a completed job.
RESUME_IGNORED_KEYS = ("runs_dir", "skip_completed", "trainer.progress", "trainer.resume")

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))


#: Exit status of a sweep in which jobs failed (every job has run), as of a failed run.
SWEEP_FAILED_STATUS = 1
#: Exit status after Ctrl-C (SIGINT), the shell's 128 + 2.
INTERRUPTED_STATUS = 130


class RunFailed(RuntimeError):
    """A run ended with status ``failed``; its summary is already written."""


def _check_seed(value: Any) -> int:
    """The integer ``seed`` holds; a float with no fractional part (``1e3``) is taken as
    its integer. Anything else is a ``ValueError`` naming the key and the fix."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"seed must be an integer, got {value!r}; set it as seed=N")


def _one_line(text: str) -> str:
    """``text`` on one line: its lines (OmegaConf's errors add ``full_key: ...`` lines)
    joined with ``; ``."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _optimizer_hparams(cfg: DictConfig) -> dict[str, Any]:
    node = OmegaConf.to_container(cfg, resolve=True)
    return {
        f"optimizer.{k}": v
        for k, v in flatten(node).items()
        if not k.startswith("_") and k not in {"foreach", "fused", "differentiable", "capturable"}
    }


def _resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The job's config resolved to plain JSON values, as ``summary.json`` records it: a
    setting that is not a finite number (``growth_rate: .inf``) as text, ``"inf"``."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(to_jsonable(container, nonfinite_as_text=True)))


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Flattened keys whose values differ, leaving out :data:`RESUME_IGNORED_KEYS`."""
    old_flat, new_flat = flatten(old), flatten(new)
    keys = (set(old_flat) | set(new_flat)) - set(RESUME_IGNORED_KEYS)
    return sorted(k for k in keys if old_flat.get(k, "<absent>") != new_flat.get(k, "<absent>"))


def _completed_summary(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The summary already in ``run_dir`` if it says ``ok`` and was computed from the same
    resolved config (up to :data:`RESUME_IGNORED_KEYS`); None when the job must run."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("Running again: %s cannot be read (%s)", path, err)
        return None
    status = previous.get("status")
    if status != "ok":
        log.info("Running again: the previous result in %s has status %s", run_dir, status)
        return None
    if "config" not in previous:
        log.info("Running again: the previous result in %s records no config", run_dir)
        return None
    differences = _config_differences(previous["config"], config)
    if differences:
        log.info(
            "Running again: the previous result in %s was computed with another config "
            "(differs in %s)",
            run_dir,
            ", ".join(differences[:5]),
        )
        return None
    return previous


def _error_text(err: BaseException, optimizer_key: str = "optimizer") -> str:
    """One line for a failed run: the error itself, not Hydra's wrapper around it.

    Hydra reports an exception raised while building a config node (a task's or an
    optimizer's constructor refusing a setting) as an ``InstantiationException`` whose text
    repeats the target and the config; the original error is its cause.

    An optimizer's refusal of a hyperparameter (the checks of
    :mod:`torchopt_bench.optim._base`, in torch.optim's wording, ``Invalid learning rate:
    abc``) says which constructor argument it concerns (``setting``); the line then names
    its config key, ``optimizer_key.SETTING``, and what it takes.
    """
    where = ""
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        key = getattr(err, "full_key", None)
        where = f" (while building {key}; set its keys as {key}.KEY=VALUE)" if key else ""
        err = err.__cause__
    refused: BaseException | None = err
    while refused is not None and not hasattr(refused, "setting"):
        refused = refused.__cause__
    if refused is not None:
        key = f"{optimizer_key}.{refused.setting}"  # type: ignore[attr-defined]
        expected = getattr(refused, "expected", "a valid value")
        where = (
            f" ({key} must be {expected}; set it as {key}=VALUE, the defaults are in "
            "conf/optimizer/)"
        )
        err = refused
    return _one_line(f"{type(err).__name__}: {err}{where}")


def _status_line(summary: dict[str, Any]) -> str:
    """The run's last log line: the status and the numbers it has, or the error."""
    if summary["status"] == "failed":
        return f"Status failed: {summary.get('error')}"
    line = f"Status {summary['status']}"
    if summary.get("steps") is not None:
        line += f" after {summary['steps']} steps"
    if summary.get("final_loss") is not None:
        line += f"; final loss {summary['final_loss']}"
    return line


def _summary_name(run_dir: Path, summary: dict[str, Any]) -> str:
    """``summary.json``, unless this run failed in a directory whose ``summary.json``
    holds a finished result (``ok`` or ``diverged``, e.g. a refused ``trainer.resume``):
    that result is kept and the failure goes to ``summary.failed.json``."""
    path = run_dir / "summary.json"
    if summary["status"] != "failed" or not path.is_file():
        return path.name
    try:
        previous = json.loads(path.read_text()).get("status")
    except (OSError, json.JSONDecodeError, AttributeError):
        return path.name
    if previous not in {"ok", "diverged"}:
        return path.name
    log.warning(
        "Kept the earlier result in %s (status %s); this failed attempt is recorded in "
        "summary.failed.json",
        path,
        previous,
    )
    return "summary.failed.json"


#: Where a finished run keeps a copy of its Hydra files (``.hydra/finished/``): a later
#: attempt in the same directory that fails gets its own copy in ``.hydra/failed/``, and
#: ``.hydra/`` again describes the result that ``summary.json`` holds.
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _keep_hydra_files(run_dir: Path, kept_result: bool, events_before: set[Path]) -> None:
    """After a finished run, copy its Hydra files into ``.hydra/finished/``. After a
    failed attempt beside a kept result, move the attempt's Hydra files to
    ``.hydra/failed/``, put the finished run's back and remove the TensorBoard events
    file the attempt opened (its summary is in ``summary.failed.json``)."""
    hydra_cfg = HydraConfig.get()
    if not hydra_cfg.output_subdir:
        return
    hydra_dir = run_dir / hydra_cfg.output_subdir
    finished, failed = hydra_dir / "finished", hydra_dir / "failed"
    if not kept_result:
        finished.mkdir(parents=True, exist_ok=True)
        for name in HYDRA_FILES:
            if (hydra_dir / name).is_file():
                shutil.copy2(hydra_dir / name, finished / name)
        return
    failed.mkdir(parents=True, exist_ok=True)
    for name in HYDRA_FILES:
        if (hydra_dir / name).is_file():
            shutil.move(hydra_dir / name, failed / name)
        if (finished / name).is_file():
            shutil.copy2(finished / name, hydra_dir / name)
    for events in set(run_dir.glob("events.out.tfevents.*")) - events_before:
        events.unlink()
    log.info(
        "%s describes the kept result again; this attempt's Hydra files are in %s",
        hydra_dir,
        failed,
    )


def objective_value(
    summary: dict[str, Any], metric: str | None, maximize: bool = False
) -> float | None:
    """The number a sweeper that optimises receives from a job: ``summary[metric]``.

    A diverged run is a result, the worst one possible (``inf`` when minimising, ``-inf``
    when maximising), so the search learns to avoid the region. A failed run (an error,
    say an invalid hyperparameter) says nothing about the optimizer and returns ``nan``,
    which Optuna records as a failed trial. No ``metric``: None (a plain sweep).
    """
    if metric is None:
        return None
    status = summary.get("status")
    if status == "diverged":
        return -math.inf if maximize else math.inf
    if status != "ok":
        return math.nan
    value = summary.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        numeric = sorted(
            k for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
        )
        raise ValueError(
            f"objective={metric!r} is not a numeric field of this run's summary "
            f"(got {value!r}); numeric fields: {', '.join(numeric)}"
        )
    return float(value)


def _sweeper_maximizes() -> bool:
    """Whether the sweeper's ``direction`` (Optuna's) is ``maximize``; False without one."""
    direction = HydraConfig.get().sweeper.get("direction")
    if direction is None:
        return False
    name = str(getattr(direction, "name", direction))
    if name not in {"minimize", "maximize"}:
        raise ValueError(
            f"hydra.sweeper.direction={name!r}: the objective is one number, so the direction "
            "must be minimize or maximize"
        )
    return name == "maximize"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job of the composed config and return its summary.

    A diverged run is a result (status ``diverged``). An error is recorded as status
    ``failed`` with the message in ``summary.json``; in a multirun the other jobs go on,
    in a single run :class:`RunFailed` is raised after the summary is written.

    The resolved config is recorded in ``summary.json`` (``config``). In a multirun with
    ``skip_completed: true``, a job whose directory already holds an ``ok`` summary of the
    same config (up to :data:`RESUME_IGNORED_KEYS`) is skipped and that summary returned;
    failed and diverged jobs, and jobs whose config changed, run again.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    choices = hydra_cfg.runtime.choices
    try:
        config: dict[str, Any] | None = _resolved_config(cfg)
    except OmegaConfBaseException:  # the same error fails the run below, where it is recorded
        config = None
    if multirun and config is not None and cfg.get("skip_completed", False):
        previous = _completed_summary(run_dir, config)
        if previous is not None:
            log.info(
                "Skipped job %s (%s): %s already holds an ok result of the same config",
                hydra_cfg.job.num,
                " ".join(hydra_cfg.overrides.task),
                run_dir,
            )
            return previous
    summary: dict[str, Any] = {
        "optimizer": choices.get("optimizer"),
        "task": cfg.task.get("name", choices.get("task")),
        "status": "failed",
        "seed": cfg.seed,
        "overrides": list(hydra_cfg.overrides.task),
        "run_dir": str(run_dir),
    }
    log.info("Run directory: %s", run_dir)

    # The optimizer configs the run builds: the run's own, or those of task.optimizers.
    several = cfg.task.get("optimizers") if isinstance(cfg.task, DictConfig) else None
    if isinstance(several, DictConfig) and len(several):
        optimizer_nodes = {f"task.optimizers.{name}": node for name, node in several.items()}
        optimizer_key = (
            "task.optimizers.<name>" if len(several) > 1 else next(iter(optimizer_nodes))
        )
    else:
        optimizer_nodes, optimizer_key = {"optimizer": cfg.optimizer}, "optimizer"

    started = time.perf_counter()
    events_before = set(run_dir.glob("events.out.tfevents.*"))
    with RunRecorder(run_dir, tensorboard=cfg.logger.tensorboard) as recorder:
        task = None
        try:
            seed = _check_seed(cfg.seed)
            seed_everything(seed)
            device = resolve_device(cfg.device)
            # The trainer's and the optimizers' settings are checked before the task reads
            # any data.
            fallback = cfg.trainer.get("fallback_optimizer")
            fallback = instantiate(fallback) if fallback is not None else None
            trainer = trainer_from_config(cfg.trainer, fallback)
            task = instantiate(cfg.task, _convert_="all")
            dtype = resolve_dtype(cfg.dtype, task.default_dtype)
            log.info("Task %s (%s) on %s in %s", task.name, cfg.task._target_, device, dtype)
            task.setup(device, dtype, seed)

            factory = instantiate(cfg.optimizer)
            log.info("Optimizer %s (%s)", summary["optimizer"], cfg.optimizer._target_)

            summary.update(device=str(device), dtype=str(dtype).removeprefix("torch."))
            summary.update(trainer.fit(task, factory, recorder))
            summary.update(task.finish(run_dir, recorder, summary))
        except Exception as err:  # recorded, then re-raised for a single run
            summary.update(status="failed", error=_error_text(err, optimizer_key))
            summary["traceback"] = traceback.format_exc()
        finally:
            if summary["status"] == "failed" and "error" not in summary:
                summary["error"] = "interrupted before the run finished"
            summary["total_time_s"] = time.perf_counter() - started
            if recorder.history:
                log.info("Wrote %s", describe_file(recorder.write_history()))
            hp = {"optimizer": summary["optimizer"], "seed": cfg.seed}
            hp.update(_optimizer_hparams(cfg.optimizer))
            if task is not None:
                hp.update(task.hparams())
            recorder.log_hparams(hp, {k: v for k, v in summary.items() if k != "seed"})
            summary["config"] = config
            summary_path = recorder.write_summary(summary, _summary_name(run_dir, summary))
            log.info("Wrote %s", describe_file(summary_path))
    kept_result = summary_path.name != "summary.json"
    if kept_result or summary["status"] != "failed":
        _keep_hydra_files(run_dir, kept_result, events_before)

    (log.error if summary["status"] == "failed" else log.info)(_status_line(summary))
    if summary["status"] == "failed" and not multirun:
        raise RunFailed(summary["error"])
    return summary


def _interrupted_message() -> str:
    """What the terminal gets after Ctrl-C: where the outputs are and how to go on."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hydra_cfg.sweep.dir)
        return (
            f"interrupted; the sweep's outputs are kept in {sweep_dir}; the same command with "
            f"hydra.sweep.dir={sweep_dir} runs the jobs that did not finish (finished ones are "
            "skipped)"
        )
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if (run_dir / CHECKPOINT_NAME).is_file():
        how = f"continue it with trainer.resume=true hydra.run.dir={run_dir}"
    else:
        how = (
            "continue a network run with trainer.resume=true hydra.run.dir=DIR when it "
            "writes checkpoints (trainer.checkpoint_every=N)"
        )
    return f"interrupted; the run's outputs are kept in {run_dir}; {how}"


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except RunFailed as err:
        # The error and its traceback are in summary.json; the terminal gets one line.
        print(f"torchopt_bench: run failed: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # summary.json already says "interrupted before the run finished"; a sweep stops.
        print(f"torchopt_bench: {_interrupted_message()}", file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)
    metric = cfg.get("objective")
    return None if metric is None else objective_value(summary, metric, _sweeper_maximizes())


#: Set by :class:`SweepFailures` at the end of a sweep: the directories of its failed jobs.
_failed_jobs: list[Path] = []


def _job_marks(sweep_dir: Path, marker: str) -> dict[Path, int]:
    """Job directory -> modification time (ns) of the file Hydra writes into every job's
    directory when the job starts (``.hydra/overrides.yaml``, or the same file of the
    job's last failed attempt in ``.hydra/failed/`` where that is newer), for every job
    under ``sweep_dir``."""
    if not sweep_dir.is_dir():
        return {}
    depth = len(Path(marker).parts)
    marks = {}
    for path in sweep_dir.rglob(Path(marker).name):
        if path.as_posix().endswith(marker):
            job = path.parents[depth - 1]
            marks[job] = path.stat().st_mtime_ns
            # A failed attempt beside a kept result moved its own Hydra files to
            # .hydra/failed/ and put the kept run's (older) ones back.
            attempt = path.parent / "failed" / path.name
            if attempt.is_file():
                marks[job] = max(marks[job], attempt.stat().st_mtime_ns)
    return marks


def _job_failed(job_dir: Path, started_ns: int) -> bool:
    """Whether the job of ``job_dir`` that started at ``started_ns`` failed: its summary
    says ``failed``, it wrote ``summary.failed.json`` (a failed attempt beside a kept
    result), or it wrote no summary at all."""
    failed_attempt = job_dir / "summary.failed.json"
    if failed_attempt.is_file() and failed_attempt.stat().st_mtime_ns >= started_ns:
        return True
    try:
        return json.loads((job_dir / "summary.json").read_text()).get("status") == "failed"
    except (OSError, json.JSONDecodeError, AttributeError):
        return True


class SweepFailures(Callback):
    """At the end of a sweep, one line that counts its failed jobs and names their
    directories; :func:`main` then exits with :data:`SWEEP_FAILED_STATUS`.

    The jobs of this sweep are the directories under ``hydra.sweep.dir`` whose
    ``.hydra/overrides.yaml`` Hydra wrote after the sweep started (so a job skipped as
    already completed counts, a folder left by an earlier sweep does not). Their summaries
    are read from disk, so this works with every launcher, in-process or not (joblib,
    submitit). Registered in ``conf/config.yaml`` (``hydra.callbacks``).
    """

    def __init__(self) -> None:
        self._before: dict[Path, int] = {}

    @staticmethod
    def _where(config: DictConfig) -> tuple[Path, str]:
        subdir = config.hydra.get("output_subdir")
        return Path(
            config.hydra.sweep.dir
        ), f"{subdir}/overrides.yaml" if subdir else "summary.json"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _failed_jobs.clear()
        self._before = _job_marks(*self._where(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        marks = _job_marks(*self._where(config))
        jobs = sorted(job for job, mtime in marks.items() if self._before.get(job) != mtime)
        failed = [job for job in jobs if _job_failed(job, marks[job])]
        # The last in-process job's logging config writes into its own log file; the
        # sweep's line goes to the terminal, as Hydra's own lines do.
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        if not failed:
            log.info("All %d jobs of the sweep finished", len(jobs))
            return
        others = "none finished" if len(failed) == len(jobs) else "the others finished"
        log.error(
            "%d of %d jobs failed: %s; %s",
            len(failed),
            len(jobs),
            ", ".join(str(job) for job in failed),
            others,
        )
        _failed_jobs.extend(failed)


def main() -> None:
    """Entry point of ``python -m torchopt_bench`` and the ``torchopt-bench`` script.

    Exit status: 0 when the run or every job of the sweep finished (``ok`` or
    ``diverged``); 1 when the run failed, or when jobs of a sweep failed (each job still
    ran and kept its outputs); 130 after Ctrl-C.
    """
    _hydra_main()
    if _failed_jobs:
        sys.exit(SWEEP_FAILED_STATUS)
