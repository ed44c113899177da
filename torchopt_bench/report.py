"""Compare the optimizers of a sweep: ``python -m torchopt_bench.report SWEEP_DIR``.

Reads every job under ``SWEEP_DIR`` (any folder holding ``.hydra/overrides.yaml``, at any
depth, so a grid and its seed reruns in sub-folders are read together), with its
``summary.json`` and ``history.csv``, and writes ``SWEEP_DIR/report/``:

* ``results.csv``: one row per run: ``job`` (its folder), ``task``, ``optimizer``, ``lr``,
  ``seed``, ``status``, every override as a column, every summary field. A job is one run,
  except a test function job that ran several optimizers or rates in one process
  (``task.optimizers``, ``task.lrs``; ``experiment=compare_functions``): its own
  ``results.csv`` gives one run per optimizer and rate (``job_run`` names it), which the
  report compares and chooses among as it does separate jobs;
* ``best.csv`` and ``report.md``: for each task and optimizer, the learning rate chosen on
  validation, the mean and 95% bootstrap confidence interval over seeds at that rate, and
  the counts of diverged and failed runs;
* figures: curves at the chosen rates with seed bands, learning-rate sensitivity, a
  performance profile across tasks, and the trajectories on test functions.

Conventions, the DeepOBS protocol (Schneider, Balles & Hennig, ICLR 2019):

* **Chosen on validation, never on test.** A test function is scored by its final gap
  ``f - f*`` (lower is better); a run over several starts (``task.n_starts``) by the
  median over its starts, a diverged start counting as infinite; a network by its
  validation AUC (higher is better). Test metrics are reported at the chosen rate and
  never used to choose it.
* **Same seeds for every rate.** Each rate is scored by its mean over the seeds that every
  rate of that optimizer was run with, so seeds rerun at the chosen rate afterwards add to
  its statistics without changing the choice. A diverged run counts as the worst possible
  score; a failed run (an error, e.g. an invalid value) is left out. Ties go to the smaller
  rate. An optimizer whose every rate diverged has no chosen rate.
* **Bootstrap interval.** The percentile bootstrap of the mean over the ``ok`` seeds at the
  chosen rate: :data:`BOOTSTRAP_RESAMPLES` resamples drawn by
  ``numpy.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (resamples, n))``, the 2.5th
  and 97.5th percentiles of their means. One seed gives a zero-width interval.
* **Performance profile** (Dolan & Moré 2002, as AlgoPerf uses it, Dahl et al. 2023): per
  task, each optimizer's steps to reach a target at its chosen rate (median over seeds;
  never reached: infinite), divided by the fewest steps any optimizer needed;
  ``rho(tau)`` is the fraction of tasks on which that ratio is at most ``tau``. The target
  of a test function is its ``target_gap``; that of a network is the best validation value
  any optimizer reached, within :data:`NETWORK_TARGET_TOLERANCE` (relative).

An Optuna study (a folder with ``optimization_results.yaml``) gets a section with the best
trial the sweeper recorded, except where every trial diverged: then no rate was chosen.

An optimizer's identity is its config name plus any ``optimizer.*`` override other than the
learning rate that varies in the sweep (``adam (optimizer.betas=[0.9,0.99])``); likewise a
task is its name plus any other override that varies (``rosenbrock (trainer.steps=100)``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import shlex
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from .functions import get_function  # noqa: E402
from .plots import plot_trajectories  # noqa: E402
from .tracking import flatten  # noqa: E402

log = logging.getLogger(__name__)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "FUNCTION_OBJECTIVE",
    "NETWORK_OBJECTIVE",
    "NETWORK_TARGET_TOLERANCE",
    "Objective",
    "bootstrap_ci",
    "build_report",
    "choose_learning_rates",
    "collect_jobs",
    "main",
    "performance_profile",
]

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
#: A network's target: within 1% (relative) of the best validation value on the task.
NETWORK_TARGET_TOLERANCE = 0.01

#: Overrides that never make a task or optimizer different: what varies by design (seed,
#: learning rate, the config names) and settings of the outputs, not of the computation.
_NOT_IDENTITY = {
    "seed",
    "optimizer",
    "optimizer.lr",
    "task",
    "experiment",
    "logger",
    "trainer.progress",
    "skip_completed",
    "runs_dir",
    "task.lrs",
    "task.n_paths",
    "task.animate",
    "task.figures",
}
#: Summary fields left out of results.csv: long text or what the other columns already say.
_SUMMARY_LEFT_OUT = {"overrides", "config", "traceback", "run_dir"}

#: The columns of the ``results.csv`` that a test function job with several optimizers or
#: rates writes in its own folder (one row per optimizer and rate), which the report needs.
_BATCH_COLUMNS = (
    "optimizer",
    "label",
    "lr",
    "success_rate",
    "steps_to_target_median",
    "final_gap_all_median",
    "diverged_fraction",
)
#: Summary fields of such a job that are not true of each of its runs: those of the first
#: start of the first optimizer and rate, and the statistics over all runs together. Each
#: run's own statistics come from the job's ``results.csv`` instead.
_BATCH_JOB_ONLY = {
    "final_lr",
    "final_point",
    "final_gap",
    "distance_to_minimum",
    "steps_to_target",
    "final_loss",
    "lr",
    "diverged_at_step",
    "diverged_reason",
    "best_lr",
    "lrs",
    "optimizers",
    "n_runs",
    "success_rate",
    "reached_fraction",
    "steps_to_target_median",
    "steps_to_target_q25",
    "steps_to_target_q75",
    "final_gap_median",
    "final_gap_q25",
    "final_gap_q75",
    "final_gap_all_median",
    "diverged_fraction",
    "n_diverged",
}
#: Times of such a job, kept with a ``job_`` prefix: they are the whole job's, not a run's.
_JOB_TIMES = {"wall_time_s", "eval_time_s", "compile_time_s", "total_time_s"}


@dataclass(frozen=True)
class Objective:
    """What a task is judged by.

    Attributes:
        metric: the ``summary.json`` field the learning rate is chosen on (validation).
        maximize: whether higher is better.
        label: the metric's name in tables and axis labels.
        curve: the ``history.csv`` column of the same quantity over training.
        panels: the history columns drawn in the curves figure, with a log scale or not.
        x: the history column of the curves' x axis (``step`` or ``epoch``).
        test_metric: a test metric reported at the chosen rate (never used to choose).
        log_scale: whether the metric is drawn on a log scale.
        seeded: whether the seed changes a run (a network's initialisation and batches);
            a test function from a fixed start gives the same run for every seed.
        steps_field: the summary field with the steps to reach the task's own target
            (``steps_to_target`` of a test function); None: the target is derived from the
            best validation value (see :data:`NETWORK_TARGET_TOLERANCE`).
    """

    metric: str
    maximize: bool
    label: str
    curve: str
    panels: tuple[tuple[str, str, bool], ...]
    x: str
    test_metric: str | None = None
    log_scale: bool = False
    seeded: bool = True
    steps_field: str | None = None


FUNCTION_OBJECTIVE = Objective(
    metric="final_gap",
    maximize=False,
    label="final gap f - f*",
    curve="train/gap",
    panels=(("train/gap", "f(x) - f*  (log scale)", True),),
    x="step",
    log_scale=True,
    seeded=False,
    steps_field="steps_to_target",
)
NETWORK_OBJECTIVE = Objective(
    metric="val_auc",
    maximize=True,
    label="validation AUC",
    curve="val/auc",
    panels=(
        ("train/loss", "training loss (weighted BCE, log scale)", True),
        ("val/auc", "validation AUC (weighted)", False),
    ),
    x="epoch",
    test_metric="test_private_auc",
)


# -- reading a sweep ---------------------------------------------------------------------


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts job 2 before job 10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.as_posix())]


def _parse_value(text: str) -> Any:
    """An override's value as Hydra reads it: numbers as numbers, ``[a,b]`` as a list."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text not in ("null", "~") else value


def _read_overrides(path: Path) -> dict[str, Any]:
    """``key=value`` overrides as a mapping; ``+key`` and ``++key`` read as ``key``,
    deletions (``~key``) left out."""
    overrides: dict[str, Any] = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, sep, value = str(item).partition("=")
        if not sep or key.startswith("~"):
            continue
        overrides[key.lstrip("+")] = _parse_value(value)
    return overrides


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool, nor text such as an
    unresolved ``${...}`` interpolation), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _config_lr(job_dir: Path) -> float | None:
    """``optimizer.lr`` of the job's saved ``.hydra/config.yaml``; None where it is absent
    or not a number (an interpolation such as ``${lr_table...}``, which Hydra saves
    unresolved)."""
    path = job_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    config = yaml.safe_load(path.read_text()) or {}
    return _number((config.get("optimizer") or {}).get("lr"))


def _job_lr(overrides: Mapping[str, Any], job_dir: Path, summary: Mapping[str, Any]) -> float:
    """The rate a job was run at (its initial ``optimizer.lr``), from the first of: the
    override; the resolved config the summary holds (``summary["config"]``, where an
    interpolated rate has its value); the saved ``.hydra/config.yaml``; the summary's
    ``lr`` (the rate at the end of training, the same unless a schedule changed it).
    NaN where none holds a number."""
    config = summary.get("config")
    resolved = (config.get("optimizer") or {}).get("lr") if isinstance(config, dict) else None
    candidates = (
        lambda: overrides.get("optimizer.lr"),
        lambda: resolved,
        lambda: _config_lr(job_dir),
        lambda: summary.get("lr"),
    )
    for candidate in candidates:
        lr = _number(candidate())
        if lr is not None:
            return lr
    return math.nan


def _cell(value: Any) -> Any:
    """A summary value as one CSV cell: lists as JSON text, ``null`` (a number that was not
    finite, or no value) as an empty cell, and the texts ``"inf"``, ``"-inf"``, ``"nan"``
    (an override, or a summary written before non-finite numbers became null) as floats."""
    if isinstance(value, list):
        return json.dumps(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def _check_sweep_dir(sweep_dir: Path) -> None:
    if not sweep_dir.exists():
        raise ValueError(
            f"sweep_dir={str(sweep_dir)!r} does not exist; pass the folder a sweep wrote "
            "(its hydra.sweep.dir, e.g. multirun/DATE/TIME or runs/NAME)"
        )
    if not sweep_dir.is_dir():
        raise ValueError(f"sweep_dir={str(sweep_dir)!r} is a file, not a directory")


def _batch_runs(job_dir: Path, summary: Mapping[str, Any]) -> pd.DataFrame | None:
    """The runs of a test function job that ran several optimizers or rates in one process
    (``task.optimizers``, ``task.lrs``; ``experiment=compare_functions``): its own
    ``results.csv``, one row per optimizer and rate. None for a job of one run (its summary
    lists no ``optimizers``) and for a job that did not finish (failed, missing)."""
    if summary.get("status") not in ("ok", "diverged") or not summary.get("optimizers"):
        return None
    path = job_dir / "results.csv"
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: the job ran several optimizers or rates (its summary.json "
            "lists optimizers) and its per-run table is needed; run the job again "
            "(skip_completed=false) or move the folder out of the sweep"
        )
    table = pd.read_csv(path)
    missing = [c for c in _BATCH_COLUMNS if c not in table]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {', '.join(missing)}: it is not the table of a test "
            "function job with several optimizers or rates; run the job again "
            "(skip_completed=false)"
        )
    n_runs, n_starts = _number(summary.get("n_runs")), _number(summary.get("n_starts"))
    if n_runs and n_starts and len(table) * n_starts != n_runs:
        raise ValueError(
            f"{path} has {len(table)} rows, but summary.json says {n_runs:g} runs of "
            f"{n_starts:g} starts ({n_runs / n_starts:g} optimizer-rate rows): the table is "
            "left from another run of the job; run the job again (skip_completed=false)"
        )
    return table


def _expand_batch(
    row: Mapping[str, Any], overrides: Mapping[str, Any], table: pd.DataFrame
) -> list[dict[str, Any]]:
    """One row per optimizer and rate of a job of several (:func:`_batch_runs`).

    Each row has the job's identity, overrides and the summary fields true of every run
    (function, start, steps, ...; the job's times as ``job_*``), then the run's own
    statistics from the job's ``results.csv``. ``job_run`` is the run's label there
    (``adam lr=0.01``). As for any run over several starts (:func:`_over_starts`),
    ``final_gap`` is the median final gap over the starts (a diverged start counting as
    infinite) and ``steps_to_target`` the median steps; ``status`` is ``diverged`` only
    when every start diverged. An override ``task.optimizers.NAME.KEY=V`` becomes
    ``optimizer.KEY`` of NAME's rows, as ``optimizer.KEY=V`` is for a job of one run."""
    base: dict[str, Any] = {}
    for key, value in row.items():
        top = key.split(".")[0]
        if top in _BATCH_JOB_ONLY or key == "optimizer.lr":  # task.lrs set the rates
            continue
        base[f"job_{key}" if top in _JOB_TIMES else key] = value
    runs = []
    for record in table.to_dict("records"):
        name = str(record["optimizer"])
        lr = _number(record["lr"])
        diverged = _number(record["diverged_fraction"])
        run: dict[str, Any] = {
            "job": base["job"],
            "job_run": str(record["label"]),
            "task": base["task"],
            "optimizer": name,
            "lr": math.nan if lr is None else lr,
            "seed": base["seed"],
            "status": "diverged" if diverged is not None and diverged >= 1.0 else "ok",
        }
        prefix = f"task.optimizers.{name}."
        for key, value in overrides.items():
            if key.startswith(prefix):
                run[f"optimizer.{key[len(prefix) :]}"] = _cell(value)
        for key, value in base.items():
            run.setdefault(key, value)
        for key, value in record.items():
            if key not in ("optimizer", "label", "lr"):
                run[key] = value
        run["final_gap"] = record["final_gap_all_median"]
        run["steps_to_target"] = record["steps_to_target_median"]
        runs.append(run)
    return runs


def _over_starts(row: dict[str, Any]) -> dict[str, Any]:
    """A test function run over several starts (``task.n_starts`` > 1) scored as one result:
    ``final_gap`` the median final gap over its starts, a diverged start counting as
    infinite (``final_gap_all_median``; none when more than half diverged, which scores
    worst), ``steps_to_target`` the median steps (``steps_to_target_median``), so that a
    run of many starts is not judged by its first start alone. The first start's values
    (``task.start``) stay as ``start_final_gap`` and ``start_steps_to_target``."""
    n_starts = _number(row.get("n_starts"))
    if n_starts is None or n_starts <= 1 or "final_gap_all_median" not in row:
        return row
    row = dict(row)
    row["start_final_gap"] = row.get("final_gap")
    row["start_steps_to_target"] = row.get("steps_to_target")
    row["final_gap"] = row["final_gap_all_median"]
    row["steps_to_target"] = row.get("steps_to_target_median")
    return row


def collect_jobs(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run of the sweep: identity columns, every override, every summary field.

    A job is a folder with ``.hydra/overrides.yaml``; one without ``summary.json`` (still
    running, or killed) has status ``missing``. A job is one run, except a test function job
    that ran several optimizers or rates in one process, which gives one row per optimizer
    and rate (:func:`_expand_batch`). ``lr`` is the run's initial ``optimizer.lr`` (see
    :func:`_job_lr`; NaN where no file holds it). The summary's own ``lr`` (the optimizer's
    rate at the end) is the column ``final_lr``. ``objective`` is the summary field a
    sweeper that optimises (Optuna) was given, where the job's config names one.
    """
    sweep_dir = Path(sweep_dir)
    _check_sweep_dir(sweep_dir)
    report_dir = sweep_dir / "report"
    rows = []
    for overrides_path in sorted(sweep_dir.rglob(".hydra/overrides.yaml"), key=_natural_key):
        job_dir = overrides_path.parent.parent
        if report_dir in job_dir.parents:
            continue
        overrides = _read_overrides(overrides_path)
        summary_path = job_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        row: dict[str, Any] = {
            "job": job_dir.relative_to(sweep_dir).as_posix(),
            "task": summary.get("task", overrides.get("task")),
            "optimizer": summary.get("optimizer", overrides.get("optimizer")),
            "lr": _job_lr(overrides, job_dir, summary),
            "seed": summary.get("seed", overrides.get("seed", 0)),
            "status": summary.get("status", "missing"),
        }
        for key, value in overrides.items():
            row.setdefault(key, _cell(value))
        for key, value in flatten(summary).items():
            if key.split(".")[0] in _SUMMARY_LEFT_OUT:
                continue
            row.setdefault("final_lr" if key == "lr" else key, _cell(value))
        config = summary.get("config")
        if isinstance(config, dict) and config.get("objective") is not None:
            row.setdefault("objective", config["objective"])
        table = _batch_runs(job_dir, summary)
        if table is None:
            rows.append(_over_starts(row))
        else:
            rows += _expand_batch(row, overrides, table)
    if not rows:
        raise ValueError(f"no job (a folder with .hydra/overrides.yaml) under {sweep_dir}")
    jobs = pd.DataFrame(rows)
    log.info(
        "Read %d runs (%d jobs) from %s: %s",
        len(jobs),
        jobs["job"].nunique(),
        sweep_dir,
        ", ".join(f"{n} {s}" for s, n in jobs["status"].value_counts().items()),
    )
    return jobs


def _varying(rows: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if rows[k].astype(str).nunique(dropna=False) > 1]


def _override_keys(jobs: pd.DataFrame, sweep_dir: Path | None) -> list[str]:
    """The columns that came from overrides (every key seen in an overrides file). A
    setting of one member of ``task.optimizers`` (``task.optimizers.adam.betas``) is that
    optimizer's ``optimizer.betas`` (see :func:`_expand_batch`)."""
    keys: set[str] = set()
    if sweep_dir is not None:
        for job in jobs["job"].unique():
            path = sweep_dir / job / ".hydra" / "overrides.yaml"
            if path.is_file():
                keys.update(_read_overrides(path))
    member = re.compile(r"^task\.optimizers\.[^.]+\.(.+)$")
    keys = {f"optimizer.{m.group(1)}" if (m := member.match(k)) else k for k in keys}
    return sorted(
        k
        for k in keys
        if k in jobs and k not in _NOT_IDENTITY and not k.startswith(("hydra", "task.optimizers"))
    )


def label_jobs(jobs: pd.DataFrame, override_keys: Sequence[str]) -> pd.DataFrame:
    """Add ``task_label`` and ``variant``: the task and optimizer names, extended by the
    overrides that vary within them (``optimizer.*`` ones name the optimizer variant,
    the others the task)."""
    jobs = jobs.copy()
    jobs["task_label"] = jobs["task"].astype(str)
    jobs["variant"] = jobs["optimizer"].astype(str)
    task_keys = [k for k in override_keys if not k.startswith("optimizer.")]
    optimizer_keys = [k for k in override_keys if k.startswith("optimizer.")]
    for _, rows in jobs.groupby("task", dropna=False):
        keys = _varying(rows, task_keys)
        if keys:
            jobs.loc[rows.index, "task_label"] = rows.apply(
                lambda r, keys=keys: _label(r["task"], r, keys), axis=1
            )
    for _, rows in jobs.groupby(["task_label", "optimizer"], dropna=False):
        keys = _varying(rows, optimizer_keys)
        if keys:
            jobs.loc[rows.index, "variant"] = rows.apply(
                lambda r, keys=keys: _label(r["optimizer"], r, keys), axis=1
            )
    return jobs


def _label(name: Any, row: pd.Series, keys: Sequence[str]) -> str:
    """``name (k1=v1 k2=v2)`` over the settings ``row`` has; one the job did not set (NaN:
    absent from its overrides, so the config's default) is left out, which still tells
    the groups apart: the settings a job does set, with their values, name it."""
    settings = [f"{k}={_setting_text(row[k])}" for k in keys if not _absent(row[k])]
    return f"{name} ({' '.join(settings)})" if settings else str(name)


def _setting_text(value: Any) -> str:
    """An override's value as text; a whole number that pandas made a float (a column
    with absent values is a float column) without its ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def objective_for(rows: pd.DataFrame) -> Objective:
    """The objective of a task from the fields its summaries hold: a network's when they
    have ``val_auc``, a test function's when they have ``final_gap``. A network's test
    metric is the challenge's private test AUC, else the public one (a file without the
    private split)."""

    def present(field: str) -> bool:
        return field in rows and rows[field].notna().any()

    if present(NETWORK_OBJECTIVE.metric):
        if not present("test_private_auc") and present("test_public_auc"):
            return replace(NETWORK_OBJECTIVE, test_metric="test_public_auc")
        return NETWORK_OBJECTIVE
    # A test function's runs always record the function, also when every one diverged
    # and no final gap is left: they are still judged by their final gap.
    if present(FUNCTION_OBJECTIVE.metric) or present("function"):
        return _function_objective(rows)
    if present("val_loss"):
        return Objective(
            "val_loss",
            False,
            "validation loss",
            "val/loss",
            (("val/loss", "validation loss", False),),
            "epoch",
        )
    return Objective(
        "final_loss",
        False,
        "final training loss",
        "train/loss",
        (("train/loss", "training loss", False),),
        "step",
    )


def _starts_per_run(rows: pd.DataFrame) -> int:
    """The most starts any of ``rows`` ran from (``n_starts``; 1 where not recorded)."""
    if "n_starts" not in rows:
        return 1
    n = pd.to_numeric(rows["n_starts"], errors="coerce").max()
    return int(n) if pd.notna(n) and n > 1 else 1


def _function_objective(rows: pd.DataFrame) -> Objective:
    """:data:`FUNCTION_OBJECTIVE`, or for runs over several starts its median form (see
    :func:`_over_starts`): then the seed matters where the starts are drawn with it
    (``task.starts=uniform``), not where they are a grid."""
    n = _starts_per_run(rows)
    if n == 1:
        return FUNCTION_OBJECTIVE
    drawn = "starts" in rows and (rows["starts"] == "uniform").any()
    return replace(
        FUNCTION_OBJECTIVE,
        label=f"median final gap f - f* over {n} starts",
        # The curve of a run is its gap_curves.csv median: over the starts still alive.
        panels=(("train/gap", "median f(x) - f* over the starts still alive (log scale)", True),),
        seeded=bool(drawn),
    )


# -- statistics --------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    ``resamples`` resamples of size ``n`` with replacement, drawn as
    ``default_rng(seed).integers(0, n, (resamples, n))``; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of their means
    (``numpy.percentile``, linear interpolation). ``(nan, nan)`` for no values.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _scores(rows: pd.DataFrame, objective: Objective) -> pd.Series:
    """Each run's score, lower is better: the metric (negated when maximising); a
    diverged run, or one without the metric, scores +inf."""
    metric = (
        pd.to_numeric(rows[objective.metric], errors="coerce")
        if objective.metric in rows
        else pd.Series(math.nan, index=rows.index)
    )
    score = -metric if objective.maximize else metric
    usable = (rows["status"] == "ok") & np.isfinite(score)
    return score.where(usable, math.inf)


def _deduplicate(rows: pd.DataFrame) -> pd.DataFrame:
    """One run per (task, optimizer, lr, seed), an ``ok`` one where there is a choice.

    A job whose rate is unknown (NaN ``lr``) is never the repeat of another: pandas
    compares NaN equal to NaN in ``duplicated``, which would merge two jobs run at
    different (unrecorded) rates. Such jobs are all kept."""
    keys = ["task_label", "variant", "lr", "seed"]
    ranked = rows.assign(_rank=(rows["status"] != "ok").astype(int))
    ranked = ranked.sort_values(["_rank", "job"], kind="stable")
    dupes = ranked.duplicated(keys) & ranked["lr"].notna()
    if dupes.any():
        kept: dict[tuple[Any, ...], str] = {}
        for _, r in ranked[~dupes].iterrows():
            kept.setdefault(tuple(r[k] for k in keys), r["job"])
        log.warning(
            "%d job(s) repeat a (task, optimizer, lr, seed) of another; counted once: %s",
            int(dupes.sum()),
            ", ".join(
                f"{r['job']} (same as {kept[tuple(r[k] for k in keys)]}: {r['variant']}, "
                f"lr {_lr_text(r['lr'])}, seed {r['seed']})"
                for _, r in ranked[dupes].iterrows()
            ),
        )
    return ranked[~dupes].drop(columns="_rank").sort_index()


def choose_learning_rates(
    jobs: pd.DataFrame, objectives: Mapping[str, Objective] | None = None
) -> pd.DataFrame:
    """For each task and optimizer: the learning rate chosen on validation and the
    statistics over seeds at that rate (the module docstring gives the rules).

    ``jobs`` needs ``task_label``, ``variant``, ``lr``, ``seed``, ``status`` and the
    objectives' metrics (:func:`collect_jobs` then :func:`label_jobs`). ``objectives`` maps
    task labels to an :class:`Objective` (default: :func:`objective_for` each task).
    Returns one row per (task, optimizer) with ``lr`` (NaN if none), ``lrs_tried``,
    ``selection_seeds``, ``score`` (the chosen rate's selection mean), ``seeds``, ``mean``,
    ``ci_low``, ``ci_high``, ``test_mean``, ``test_ci_low``, ``test_ci_high``, ``runs``,
    ``diverged`` and ``failed`` (counts over every rate; ``failed``
    includes jobs without a summary), and for runs over several starts ``success_rate`` and
    ``diverged_fraction`` at the chosen rate (means over its seeds of the fraction of starts
    that ended under the target, and that diverged).
    """
    results = []
    for (task, variant), rows in jobs.groupby(["task_label", "variant"], sort=True):
        objective = (objectives or {}).get(task) or objective_for(jobs[jobs["task_label"] == task])
        runs = _deduplicate(rows)
        scored = runs[runs["status"].isin(["ok", "diverged"]) & runs["lr"].notna()]
        scored = scored.assign(_score=_scores(scored, objective))
        seeds_by_lr = scored.groupby("lr")["seed"].agg(set)
        common = set.intersection(*seeds_by_lr) if len(seeds_by_lr) else set()
        selection = scored[scored["seed"].isin(common)] if common else scored
        by_lr = selection.groupby("lr")["_score"].mean().sort_index()

        row: dict[str, Any] = {
            "task": task,
            "optimizer": variant,
            "metric": objective.metric,
            "maximize": objective.maximize,
            "lr": math.nan,
            "lrs_tried": int(runs["lr"].nunique()),
            "selection_seeds": " ".join(str(s) for s in sorted(common)) if common else "all",
            "score": math.nan,
            "seeds": 0,
            "mean": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "test_metric": objective.test_metric,
            "test_mean": math.nan,
            "test_ci_low": math.nan,
            "test_ci_high": math.nan,
            "runs": len(runs),
            "diverged": int((runs["status"] == "diverged").sum()),
            "failed": int(runs["status"].isin(["failed", "missing"]).sum()),
            "success_rate": math.nan,
            "diverged_fraction": math.nan,
        }
        if len(by_lr) and np.isfinite(by_lr.min()):
            lr = float(by_lr.idxmin())  # idxmin: the first (smallest) rate among ties
            sign = -1.0 if objective.maximize else 1.0
            at_lr = scored[(scored["lr"] == lr) & np.isfinite(scored["_score"])]
            values = sign * at_lr["_score"].to_numpy()
            row.update(
                lr=lr,
                score=sign * float(by_lr.min()),
                seeds=len(values),
                mean=float(values.mean()),
            )
            row["ci_low"], row["ci_high"] = bootstrap_ci(values)
            if _starts_per_run(at_lr) > 1:
                every_seed = scored[scored["lr"] == lr]
                for field in ("success_rate", "diverged_fraction"):
                    if field in every_seed:
                        numbers = pd.to_numeric(every_seed[field], errors="coerce").dropna()
                        row[field] = float(numbers.mean()) if len(numbers) else math.nan
            if objective.test_metric and objective.test_metric in at_lr:
                test = pd.to_numeric(at_lr[objective.test_metric], errors="coerce").dropna()
                if len(test):
                    row["test_mean"] = float(test.mean())
                    row["test_ci_low"], row["test_ci_high"] = bootstrap_ci(test.to_numpy())
        results.append(row)
    return pd.DataFrame(results)


def performance_profile(costs: pd.DataFrame, taus: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Dolan-Moré performance profile of a cost table.

    Args:
        costs: one row per task, one column per optimizer; positive costs (steps to
            target), ``inf`` or NaN where the optimizer did not reach the target.
        taus: the ratios at which to evaluate the profile (>= 1).

    Returns:
        One row per ``tau``, one column per optimizer: the fraction of tasks on which the
        optimizer's cost is at most ``tau`` times the task's lowest cost. A task that no
        optimizer solved counts as unsolved for all.
    """
    values = costs.astype(float).fillna(math.inf)
    if (values <= 0).any().any():
        raise ValueError("performance_profile needs positive costs; got a value <= 0")
    best = values.min(axis=1)
    ratios = values.div(best.where(np.isfinite(best), math.inf), axis=0).fillna(math.inf)
    profile = pd.DataFrame(
        {name: [(ratios[name] <= tau).mean() for tau in taus] for name in values.columns},
        index=pd.Index(np.asarray(taus, dtype=float), name="tau"),
    )
    return profile


# -- steps to target -----------------------------------------------------------------------


def _history(sweep_dir: Path, job: str) -> pd.DataFrame | None:
    path = sweep_dir / job / "history.csv"
    return pd.read_csv(path) if path.is_file() else None


def _run_history(sweep_dir: Path, run: Mapping[str, Any]) -> pd.DataFrame | None:
    """The curves of one run: its job's ``history.csv``; for one optimizer and rate of a job
    of several (``job_run`` set), whose history mixes them all, its own column of the job's
    ``gap_curves.csv`` as ``train/gap`` (the median over its starts still alive, or the gap
    of its only start)."""
    label = run.get("job_run")
    if not isinstance(label, str):
        return _history(sweep_dir, run["job"])
    path = sweep_dir / run["job"] / "gap_curves.csv"
    if not path.is_file():
        return None
    curves = pd.read_csv(path)
    column = next((c for c in (f"{label} median", label) if c in curves), None)
    if column is None or "step" not in curves:
        return None
    return pd.DataFrame({"step": curves["step"], "train/gap": curves[column]})


def _steps_to_target(
    sweep_dir: Path, runs: pd.DataFrame, objective: Objective, target: float | None
) -> float:
    """Median over runs of the first step at which the target is reached (inf: never;
    at least 1, so that ratios stay finite for a start already on target)."""
    steps = []
    for _, run in runs.iterrows():
        if run["status"] != "ok":
            steps.append(math.inf)
            continue
        if objective.steps_field is not None:
            reached = run.get(objective.steps_field)
            steps.append(math.inf if pd.isna(reached) else max(float(reached), 1.0))
            continue
        history = _run_history(sweep_dir, run)
        if history is None or objective.curve not in history or target is None:
            steps.append(math.inf)
            continue
        curve = history[objective.curve]
        hit = curve >= target if objective.maximize else curve <= target
        steps.append(max(float(history.loc[hit, "step"].iloc[0]), 1.0) if hit.any() else math.inf)
    return float(np.median(steps)) if steps else math.inf


def _profile_costs(
    sweep_dir: Path, jobs: pd.DataFrame, best: pd.DataFrame, objectives: Mapping[str, Objective]
) -> pd.DataFrame:
    costs: dict[str, dict[str, float]] = {}
    for task, chosen in best.groupby("task"):
        objective = objectives[task]
        target = None
        if objective.steps_field is None and chosen["mean"].notna().any():
            top = chosen["mean"].max() if objective.maximize else chosen["mean"].min()
            slack = NETWORK_TARGET_TOLERANCE * abs(top)
            target = top - slack if objective.maximize else top + slack
        for _, row in chosen.iterrows():
            runs = jobs[
                (jobs["task_label"] == task)
                & (jobs["variant"] == row["optimizer"])
                & (jobs["lr"] == row["lr"])
            ]
            cost = (
                math.inf
                if pd.isna(row["lr"])
                else _steps_to_target(sweep_dir, runs, objective, target)
            )
            costs.setdefault(row["optimizer"], {})[task] = cost
    return pd.DataFrame(costs)


# -- figures -------------------------------------------------------------------------------


#: The longest file-name stem of a figure or rerun folder (file systems allow 255 bytes).
MAX_STEM = 60


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "task"


def _stem(text: str, name: str | None = None) -> str:
    """A short, stable file-name stem for ``text`` (a task label, which names every setting
    that varies): its slug when that is at most :data:`MAX_STEM` characters, else the slug
    of ``name`` (the task's own name) cut short, then the first 10 hex digits of the SHA-1
    of ``text``. The full ``text`` goes in the figure's title and report.md."""
    slug = _slug(text)
    if len(slug) <= MAX_STEM:
        return slug
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{_slug(name or text)[: MAX_STEM - 11]}_{digest}"


def _title(text: str, width: float = 90) -> str:
    """``text`` broken into lines of at most ``width`` characters for a figure title."""
    return textwrap.fill(text, int(width), break_on_hyphens=False)


def _has_positive_data(ax: Any) -> bool:
    """Whether a line of ``ax`` (data coordinates) has a positive finite y value: a log
    axis needs one."""
    for line in ax.get_lines():
        if line.get_transform() != ax.transData:
            continue
        y = np.asarray(line.get_ydata(), dtype=float)
        if np.any(np.isfinite(y) & (y > 0)):
            return True
    return False


def _lr_text(lr: float) -> str:
    return f"{lr:.3g}"


def plot_curves(
    sweep_dir: Path, jobs: pd.DataFrame, best: pd.DataFrame, task: str, objective: Objective
) -> Figure:
    """Each optimizer at its chosen rate: the mean over seeds as a line, the range from the
    lowest to the highest seed as a band."""
    panels = objective.panels
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.5 * len(panels), 4.6), layout="constrained", squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (_, row) in enumerate(best[best["task"] == task].iterrows()):
        if pd.isna(row["lr"]):
            continue
        runs = jobs[
            (jobs["task_label"] == task)
            & (jobs["variant"] == row["optimizer"])
            & (jobs["lr"] == row["lr"])
            & jobs["status"].isin(["ok", "diverged"])
        ]
        histories = [
            h for h in (_run_history(sweep_dir, r) for _, r in runs.iterrows()) if h is not None
        ]
        if not histories:
            continue
        color = colors[i % len(colors)]
        seeds = f"{len(histories)} seed{'s' if len(histories) > 1 else ''}"
        label = f"{row['optimizer']} (lr {_lr_text(row['lr'])}, {seeds})"
        for ax, (column, _, log_scale) in zip(axes[0], panels):
            table = pd.concat(
                [
                    h.set_index(objective.x)[column].rename(k)
                    for k, h in enumerate(histories)
                    if column in h
                ],
                axis=1,
            )
            if table.empty:
                continue
            table = table.replace([np.inf, -np.inf], np.nan)
            if log_scale:
                table = table.where(table > 0)
            x = table.index.to_numpy()
            ax.plot(x, table.mean(axis=1), color=color, lw=1.6, label=label)
            if table.shape[1] > 1:
                ax.fill_between(
                    x, table.min(axis=1), table.max(axis=1), color=color, alpha=0.2, lw=0
                )
    for ax, (_, ylabel, log_scale) in zip(axes[0], panels):
        if log_scale and _has_positive_data(ax):
            ax.set_yscale("log")
        ax.set_xlabel(objective.x)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(
        f"{_title(task, 10 * len(panels) * 6.5)}: each optimizer at its chosen learning rate\n"
        "line: mean over seeds; band: lowest to highest seed",
        fontsize=11,
    )
    return fig


def plot_lr_sensitivity(
    jobs: pd.DataFrame, best: pd.DataFrame, task: str, objective: Objective
) -> Figure:
    """The selection metric (mean over the ``ok`` seeds) against the learning rate, one line
    per optimizer; diverged rates as crosses on the worse edge, chosen rates as stars."""
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    # Crosses on the worse edge, one row per optimizer so that they do not hide each other.
    worse_edge, row_step = (0.03, 0.04) if objective.maximize else (0.97, -0.04)
    rows = jobs[jobs["task_label"] == task]
    any_diverged = False
    for i, (variant, runs) in enumerate(rows.groupby("variant", sort=True)):
        color = colors[i % len(colors)]
        ok = runs[runs["status"] == "ok"].copy()
        ok["_metric"] = pd.to_numeric(ok.get(objective.metric), errors="coerce")
        means = ok.groupby("lr")["_metric"].mean().sort_index()
        if objective.log_scale:
            means = means.where(means > 0)
        ax.plot(means.index, means.to_numpy(), "o-", color=color, ms=4, lw=1.4, label=variant)
        diverged = sorted(set(runs.loc[runs["status"] == "diverged", "lr"]) - set(means.index))
        if diverged:
            any_diverged = True
            ax.plot(
                diverged,
                [worse_edge + i * row_step] * len(diverged),
                "x",
                color=color,
                ms=8,
                mew=2,
                transform=edge,
                clip_on=False,
            )
        chosen = best[(best["task"] == task) & (best["optimizer"] == variant)]["lr"]
        if len(chosen) and pd.notna(chosen.iloc[0]) and chosen.iloc[0] in means.index:
            lr = chosen.iloc[0]
            ax.plot([lr], [means[lr]], "*", color=color, ms=16, mec="k", zorder=5)
    tried = rows[rows["lr"].notna()].groupby("variant")["lr"].nunique()
    if len(tried) and (tried == 1).all():
        star = "the only rate run (nothing to choose from)"
    elif len(tried) and (tried == 1).any():
        star = "chosen rate (best y value; an optimizer with one point: the only rate run)"
    else:
        star = "chosen rate (best y value)"
    ax.plot([], [], "*", color="0.6", mec="k", ms=12, label=star)
    if any_diverged:
        ax.plot([], [], "x", color="0.3", ms=8, mew=2, label="diverged (every seed)")
    ax.set_xscale("log")
    if not _has_positive_data(ax) and not any(
        np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any()
        for line in ax.get_lines()
        if line.get_transform() == ax.transData
    ):
        ax.set_yticks([])
        ax.text(
            0.5,
            0.5,
            "no run finished: every rate diverged or failed",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
    elif objective.log_scale and _has_positive_data(ax):
        ax.set_yscale("log")
    better = "higher" if objective.maximize else "lower"
    scale = ", log scale" if objective.log_scale else ""
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(_title(f"{objective.label} (mean over seeds{scale}; {better} is better)", 64))
    ax.set_title(_title(f"{task}: sensitivity to the learning rate", 72), fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_performance_profile(profile: pd.DataFrame, n_tasks: int) -> Figure:
    """The profile as step functions of tau on a log axis."""
    fig, ax = plt.subplots(figsize=(7.5, 5), layout="constrained")
    for name in profile.columns:
        ax.step(profile.index, profile[name], where="post", lw=1.8, label=name)
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("tau: steps to target / fewest steps of any optimizer on the task (log scale)")
    ax.set_ylabel(f"fraction of the {n_tasks} task(s) within tau of the best")
    ax.set_title(
        "Performance profile at the chosen learning rates\n"
        "a line that stays below 1 never reached the target on some task",
        fontsize=11,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_task_trajectories(
    sweep_dir: Path, jobs: pd.DataFrame, best: pd.DataFrame, task: str
) -> Figure | None:
    """The path of each optimizer at its chosen rate (its first seed) over the contours."""
    rows = jobs[jobs["task_label"] == task]
    if "function" not in rows or rows["function"].isna().all():
        return None
    first = rows[rows["function"].notna()].iloc[0]
    dim = int(first["dim"]) if pd.notna(first.get("dim")) else None
    function = get_function(str(first["function"]), dim)
    paths = {}
    for _, row in best[best["task"] == task].iterrows():
        if pd.isna(row["lr"]):
            continue
        runs = rows[
            (rows["variant"] == row["optimizer"])
            & (rows["lr"] == row["lr"])
            & rows["status"].isin(["ok", "diverged"])
        ].sort_values("seed")
        history = _run_history(sweep_dir, runs.iloc[0]) if len(runs) else None
        columns = [f"x{i}" for i in range(function.dim)]
        if history is None or not set(columns) <= set(history):
            continue
        path = history[columns].to_numpy(dtype=float)
        path = path[np.isfinite(path).all(axis=1)]
        steps = int(history["step"].iloc[-1])
        paths[f"{row['optimizer']} (lr {_lr_text(row['lr'])}, {steps} steps)"] = path
    if not paths:
        return None
    start = json.loads(first["start"]) if isinstance(first.get("start"), str) else None
    where = f" from {start}" if start else ""
    return plot_trajectories(
        function,
        paths,
        title=_title(task + where, 70)
        + "\npaths at the chosen learning rates: start (o), end (X)",
    )


# -- the report ----------------------------------------------------------------------------


def _fmt(value: float, maximize: bool | None = None) -> str:
    if value is None or pd.isna(value):
        return "-"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.3e}"
    return f"{value:.4f}" if maximize else f"{value:.4g}"


def _rerun_command(sweep_dir: Path, jobs: pd.DataFrame, row: pd.Series, seeds: int) -> str | None:
    """The command that runs the chosen rate again over the seeds ``0..seeds-1`` it lacks."""
    runs = jobs[
        (jobs["task_label"] == row["task"])
        & (jobs["variant"] == row["optimizer"])
        & (jobs["lr"] == row["lr"])
    ]
    missing = sorted(set(range(seeds)) - {int(s) for s in runs["seed"]})
    if not missing or runs.empty:
        return None
    if "job_run" in runs and runs["job_run"].notna().any():
        return None  # its job runs every optimizer and rate again; report.md says so
    overrides_path = sweep_dir / runs.iloc[0]["job"] / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) or []
    kept = [
        o for o in overrides if not str(o).lstrip("+").startswith(("seed=", "hydra.", "hydra/"))
    ]
    target = sweep_dir / "seeds" / _stem(f"{row['task']}_{row['optimizer']}")
    words = [
        "python -m torchopt_bench -m",
        *map(shlex.quote, kept),
        f"seed={','.join(map(str, missing))}",
        shlex.quote(f"hydra.sweep.dir={target}"),
    ]
    return " ".join(words)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _save_figure(path: Path, draw: Callable[[], Figure | None]) -> list[str]:
    """Draw a figure (``draw()`` returns it, or None for none) and save it to ``path``;
    the report.md lines that show it. A failure is logged and told in report.md instead,
    so that one figure cannot stop the report."""
    try:
        fig = draw()
        if fig is None:
            return []
        try:
            fig.savefig(path, dpi=110)
        finally:
            plt.close(fig)
    except Exception as err:  # one broken figure must not lose the rest of the report
        log.exception("Could not draw %s", path)
        return [f"Figure `{path.name}` could not be drawn: {type(err).__name__}: {err}", ""]
    log.info("Wrote %s (%d bytes)", path, path.stat().st_size)
    return [f"![{path.name}]({path.name})", ""]


def _percent(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.0%}"


def _unchosen_lines(chosen: pd.DataFrame) -> list[str]:
    """report.md's lines on the optimizers of a task for which no rate was chosen, with why:
    every run diverged, every run failed, or some of each."""
    lines = []
    for _, row in chosen[chosen["lr"].isna()].iterrows():
        runs, diverged, failed = int(row["runs"]), int(row["diverged"]), int(row["failed"])
        if diverged == runs:
            why = f"every one of its {runs} run(s) diverged"
        elif failed == runs:
            why = f"every one of its {runs} run(s) failed (see Failed jobs)"
        else:
            why = f"of its {runs} runs, {diverged} diverged and {failed} failed"
        lines.append(f"- `{row['optimizer']}`: {why}; no rate was chosen (`-`).")
    return lines + [""] if lines else []


def _starts_lines(n_starts: int, objective: Objective, batched: bool) -> list[str]:
    """report.md's account of a task whose runs start from several points at once."""
    lines = [
        f"Each run started from {n_starts} points at once (`task.n_starts`): its value is "
        "the median final gap over its starts, a diverged start counting as infinite (no "
        "median, so the worst score, when more than half diverged), and its steps to target "
        "the median over its starts; a run counts as diverged only when every start "
        "diverged. `seeds` counts seeds (one job each), not starts: the interval is over "
        "seeds and says nothing of the spread over starts, whose quartiles are "
        "`final_gap_q25` and `final_gap_q75` in `results.csv`.",
        "",
    ]
    if batched:
        lines += [
            "These runs come from jobs that ran several optimizers and rates in one process "
            "(`task.optimizers`, `task.lrs`, as `experiment=compare_functions` does): each "
            "optimizer and rate of a job is a row of `results.csv` (`job_run`), read from the "
            "job's own `results.csv`, its curve from the job's `gap_curves.csv`. The rate is "
            f"chosen here on the {objective.label}; the job's own `lr_table.md` ranks by the "
            "fraction of starts under the target first, so the two may differ. The paths "
            "are in each job's own `trajectories.png`.",
            "",
        ]
    return lines


def _study_direction(sweep_dir: Path, job: str) -> str | None:
    """``hydra.sweeper.direction`` of a job, from its saved ``.hydra/hydra.yaml``."""
    path = sweep_dir / job / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    sweeper = ((yaml.safe_load(path.read_text()) or {}).get("hydra") or {}).get("sweeper") or {}
    direction = sweeper.get("direction")
    return None if direction is None else str(direction)


def _optuna_lines(
    sweep_dir: Path, jobs: pd.DataFrame, objectives: Mapping[str, Objective]
) -> list[str]:
    """report.md's section on the Optuna studies of the sweep: every folder holding an
    ``optimization_results.yaml`` (the best trial as the sweeper wrote it), with the trials
    below it. A study whose every trial diverged has no best trial, whatever that file says:
    Optuna still names one, of value ``inf``."""
    report_dir = sweep_dir / "report"
    paths = sorted(
        (p for p in sweep_dir.rglob("optimization_results.yaml") if report_dir not in p.parents),
        key=_natural_key,
    )
    if not paths:
        return []
    header = ["study", "optimizer", "trials", "objective", "best lr (Optuna)", "best value"]
    table, notes = [], []
    for path in paths:
        folder = path.parent.relative_to(sweep_dir).as_posix()
        inside = jobs["job"].map(lambda j, f=folder: f == "." or j.startswith(f + "/"))
        trials = jobs[inside]
        best = yaml.safe_load(path.read_text()) or {}
        params = best.get("best_params") or {}
        value = best.get("best_value")
        value = float(value) if isinstance(value, int | float) else math.nan
        lr = _number(params.get("optimizer.lr"))
        names = ", ".join(sorted(trials["optimizer"].dropna().astype(str).unique())) or "-"
        metric = "-"
        named = pd.Series(dtype=object)
        if len(trials):
            named = trials["objective"].dropna() if "objective" in trials else named
            metric = str(named.iloc[0]) if len(named) else "-"
            direction = _study_direction(sweep_dir, trials.iloc[0]["job"])
            metric += f" ({direction})" if direction else ""
        statuses = trials["status"].value_counts()
        counts = ", ".join(f"{n} {s}" for s, n in statuses.items())
        everyone_diverged = len(trials) > 0 and statuses.get("diverged", 0) == len(trials)
        if everyone_diverged or not math.isfinite(value):
            why = (
                f"every one of its {len(trials)} trials diverged"
                if everyone_diverged
                else f"no trial has a finite value ({counts or 'no trials found'})"
            )
            named_lr = f"lr {_lr_text(lr)} " if lr is not None else ""
            notes.append(
                f"- `{folder}`: {why}; no rate was chosen. Its `optimization_results.yaml` "
                f"still names {named_lr}as best with best_value {value}: "
                "a diverged trial, not a result."
            )
            cells = ["- (none chosen)", "-"]
        else:
            cells = [_lr_text(lr) if lr is not None else str(params), _fmt(value)]
            labels = trials["task_label"].dropna().unique()
            if (
                len(labels) == 1
                and len(named)
                and str(named.iloc[0]) != (objectives[labels[0]].metric)
            ):
                notes.append(
                    f"- `{folder}`: the study optimised `{named.iloc[0]}`; the tables above "
                    f"choose on {objectives[labels[0]].label}."
                )
        table.append([f"`{folder}`", names, f"{len(trials)} ({counts})", metric, *cells])
    lines = [
        "## Optuna studies",
        "",
        "The best trial of each study as its `optimization_results.yaml` gives it (the "
        "tables above choose on the trials' own summaries, as for any sweep).",
        "",
    ]
    lines += _markdown_table(header, table) + [""]
    return lines + notes + ([""] if notes else [])


def build_report(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    objectives: Mapping[str, Objective] | None = None,
    rerun_seeds: int = 10,
) -> Path:
    """Write the report of a sweep (see the module docstring) and return ``report.md``.

    Args:
        sweep_dir: the sweep's folder (its jobs may lie at any depth below it).
        out_dir: where to write; ``sweep_dir/report`` by default.
        objectives: task label -> :class:`Objective`, for tasks judged otherwise than by
            default (a test function by its final gap, a network by its validation AUC).
        rerun_seeds: report.md suggests running the chosen rates over seeds
            ``0..rerun_seeds-1`` where some are missing.
    """
    sweep_dir = Path(sweep_dir)
    _check_sweep_dir(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    jobs = collect_jobs(sweep_dir)  # raises on a sweep without jobs, before out exists
    out.mkdir(parents=True, exist_ok=True)
    jobs = label_jobs(jobs, _override_keys(jobs, sweep_dir))
    tasks = sorted(jobs["task_label"].dropna().unique())
    objective_of = {
        t: (objectives or {}).get(t) or objective_for(jobs[jobs["task_label"] == t]) for t in tasks
    }

    results_path = out / "results.csv"
    jobs.to_csv(results_path, index=False)
    best = choose_learning_rates(jobs, objective_of)
    best.to_csv(out / "best.csv", index=False)
    log.info("Wrote %s (%d runs) and best.csv", results_path, len(jobs))

    counts = jobs["status"].value_counts()
    n_jobs = jobs["job"].nunique()
    batched = "job_run" in jobs and jobs["job_run"].notna().any()
    runs_text = (
        f"{n_jobs} jobs, {len(jobs)} runs (a job that ran several optimizers or rates in "
        "one process gives one run per optimizer and rate)"
        if batched
        else f"{len(jobs)} jobs"
    )
    lines = [
        f"# Sweep report: `{sweep_dir}`",
        "",
        f"{runs_text}, {len(tasks)} task(s): "
        + ", ".join(
            f"{counts.get(s, 0)} {s}"
            for s in ("ok", "diverged", "failed", "missing")
            if counts.get(s, 0) or s != "missing"
        )
        + ". Every run is a row of `results.csv`; the tables are `best.csv`.",
        "",
        "Each optimizer's learning rate is chosen on validation (a test function: its final "
        "gap f - f*; a network: its validation AUC), never on test, by its mean over the "
        "seeds that every rate was run with; a diverged run scores worst, a failed one is "
        "left out. Mean and 95% interval (percentile bootstrap of the mean, "
        f"{BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}) are over the seeds that "
        "finished at the chosen rate. Diverged and failed count every run of the optimizer "
        "on the task, at every rate.",
        "",
    ]
    for task in tasks:
        objective = objective_of[task]
        chosen = best[best["task"] == task]
        better = "higher" if objective.maximize else "lower"
        lines += [f"## {task}", "", f"Chosen on: {objective.label} ({better} is better).", ""]
        single = chosen["lrs_tried"] == 1
        header = [
            "optimizer",
            "lr (the only rate run)" if single.all() else "chosen lr",
            "rates tried",
            "seeds",
            f"{objective.label} mean",
            "95% CI",
        ]
        if objective.test_metric:
            header += [f"{objective.test_metric} mean (at that lr)", "95% CI"]
        n_starts = _starts_per_run(jobs[jobs["task_label"] == task])
        if n_starts > 1:
            header += ["starts under target (at that lr)", "starts diverged (at that lr)"]
        header += ["diverged", "failed"]
        table = []
        order = chosen.sort_values("mean", ascending=not objective.maximize, na_position="last")
        for _, row in order.iterrows():
            cells = [
                row["optimizer"],
                "-"
                if pd.isna(row["lr"])
                else _lr_text(row["lr"])
                + (" (the only rate run)" if row["lrs_tried"] == 1 and not single.all() else ""),
                str(row["lrs_tried"]),
                str(row["seeds"]),
                _fmt(row["mean"], objective.maximize),
                f"[{_fmt(row['ci_low'], objective.maximize)}, "
                f"{_fmt(row['ci_high'], objective.maximize)}]",
            ]
            if objective.test_metric:
                cells += [
                    _fmt(row["test_mean"], True),
                    f"[{_fmt(row['test_ci_low'], True)}, {_fmt(row['test_ci_high'], True)}]",
                ]
            if n_starts > 1:
                cells += [_percent(row["success_rate"]), _percent(row["diverged_fraction"])]
            cells += [f"{row['diverged']}/{row['runs']}", f"{row['failed']}/{row['runs']}"]
            table.append(cells)
        lines += _markdown_table(header, table) + [""]
        lines += _unchosen_lines(chosen)
        task_batched = batched and jobs.loc[jobs["task_label"] == task, "job_run"].notna().any()
        if n_starts > 1:
            lines += _starts_lines(n_starts, objective, task_batched)

        if single.all():
            lines += [
                "Each optimizer was run at one rate only: nothing was chosen; its rate is "
                "the one it was given (e.g. from a table of tuned rates).",
                "",
            ]
        stem = _stem(task, str(jobs.loc[jobs["task_label"] == task, "task"].iloc[0]))
        figures = [
            (f"curves_{stem}.png", partial(plot_curves, sweep_dir, jobs, best, task, objective)),
            (
                f"lr_sensitivity_{stem}.png",
                partial(plot_lr_sensitivity, jobs, best, task, objective),
            ),
            (
                f"trajectories_{stem}.png",
                partial(plot_task_trajectories, sweep_dir, jobs, best, task),
            ),
        ]
        for name, draw in figures:
            lines += _save_figure(out / name, draw)

        commands = [
            c
            for _, row in chosen.iterrows()
            if pd.notna(row["lr"]) and (c := _rerun_command(sweep_dir, jobs, row, rerun_seeds))
        ]
        if not objective.seeded:
            lines += [
                (
                    "The starts are a fixed grid and a test function is deterministic: every "
                    "seed runs the same, so the intervals have zero width."
                    if n_starts > 1
                    else "A test function from a fixed start runs the same for every seed: "
                    "the intervals have zero width."
                ),
                "",
            ]
        elif task_batched:
            lines += [
                "The starts are drawn with the seed: more seeds give other starts. No rerun "
                "command is printed, as a job of several optimizers and rates runs them all "
                "again; add `seed=1,2,...` to its own command for more seeds.",
                "",
            ]
        elif commands:
            lines += [
                f"Seeds 0-{rerun_seeds - 1} at the chosen rates (then report again on "
                "this sweep folder):",
                "",
                "```bash",
                *commands,
                "```",
                "",
            ]

    costs = _profile_costs(sweep_dir, jobs, best, objective_of)
    if not costs.empty:
        ratios = costs.div(costs.min(axis=1), axis=0).to_numpy()
        finite = ratios[np.isfinite(ratios)]
        ratio_max = float(finite.max()) if finite.size else 1.0
        taus = np.logspace(0, math.log10(max(2 * ratio_max, 10.0)), 400)
        profile = performance_profile(costs, taus)
        profile.to_csv(out / "performance_profile.csv")
        steps = costs.T.astype(object).where(np.isfinite(costs.T), "never")
        lines += [
            "## Performance profile",
            "",
            "Steps to target at the chosen rate (median over seeds): a test function's "
            "target is its `target_gap`; a network's is the best validation value of any "
            f"optimizer on the task, within {NETWORK_TARGET_TOLERANCE:.0%}. "
            "`performance_profile.csv` holds rho(tau).",
            "",
        ]
        lines += _markdown_table(
            ["optimizer", *steps.columns],
            [
                [name, *(v if v == "never" else f"{v:.0f}" for v in steps.loc[name])]
                for name in steps.index
            ],
        )
        lines += [""]
        if finite.size:
            lines += _save_figure(
                out / "performance_profile.png",
                partial(plot_performance_profile, profile, len(costs)),
            )
        else:
            lines += [
                "No optimizer reached the target on any task: rho(tau) is 0 everywhere, "
                "so no profile figure is drawn.",
                "",
            ]

    lines += _optuna_lines(sweep_dir, jobs, objective_of)

    failed = jobs[jobs["status"].isin(["failed", "missing"])]
    if len(failed):
        errors = failed["error"] if "error" in failed else pd.Series("", index=failed.index)
        lines += ["## Failed jobs", ""]
        lines += _markdown_table(
            ["job", "optimizer", "lr", "error"],
            [
                [
                    r["job"],
                    str(r["optimizer"]),
                    _lr_text(r["lr"]) if pd.notna(r["lr"]) else "-",
                    str(e if pd.notna(e) else r["status"]).replace("|", "\\|")[:200],
                ]
                for (_, r), e in zip(failed.iterrows(), errors)
            ],
        )
        lines += [""]

    report_path = out / "report.md"
    report_path.write_text("\n".join(lines))
    log.info("Wrote %s", report_path)
    return report_path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m torchopt_bench.report SWEEP_DIR [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m torchopt_bench.report",
        description="Compare the optimizers of a sweep: tables, figures and results.csv in "
        "SWEEP_DIR/report/.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="default: SWEEP_DIR/report")
    parser.add_argument(
        "--rerun-seeds",
        type=int,
        default=10,
        help="suggest reruns of the chosen rates over seeds 0..N-1 (default 10)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = build_report(args.sweep_dir, args.out, rerun_seeds=args.rerun_seeds)
    except ValueError as err:
        parser.exit(1, f"torchopt_bench.report: {err}\n")
    print(path)


if __name__ == "__main__":
    main()
