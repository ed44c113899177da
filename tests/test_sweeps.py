"""Sweeps as a user runs them: launchers, failure isolation, resuming, Optuna, configs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO
from omegaconf import OmegaConf

from torchopt_bench.cli import _config_differences, _resolved_config, objective_value


def rosenbrock_gd(start, lr, steps):
    """Gradient descent on Rosenbrock with its gradient written by hand."""
    x, y = start
    for _ in range(steps):
        dx = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x)
        dy = 200.0 * (y - x * x)
        x, y = x - lr * dx, y - lr * dy
    return np.array([x, y])


def output(result) -> str:
    """What a command wrote to the terminal (Hydra logs a sweep to stdout)."""
    return result.stdout + result.stderr


def summaries(sweep_dir: Path) -> dict[str, dict]:
    """Job folder name -> its summary.json."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def test_joblib_runs_jobs_in_parallel_processes_and_isolates_a_failure(cli):
    result = cli(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer=sgd",
        "optimizer.lr=0.001,-1.0",
        "trainer.steps=5",
        "logger=none",
        multirun=True,
    )
    assert result.returncode == 1, result.stderr  # a job failed; the other ran
    assert "Joblib.Parallel(n_jobs=2" in output(result)
    assert f"1 of 2 jobs failed: {result.run_dir / '1'}; the others finished" in output(result)
    jobs = summaries(result.run_dir)
    assert sorted(jobs) == ["0", "1"]
    ok, failed = jobs["0"], jobs["1"]
    assert ok["status"] == "ok"
    np.testing.assert_allclose(
        ok["final_point"], rosenbrock_gd((-0.5, 0.5), 0.001, 5), rtol=0, atol=1e-12
    )
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ValueError: Invalid learning rate: -1.0 ")
    assert (result.run_dir / "0" / "history.csv").exists()


def test_rerun_skips_ok_jobs_and_reruns_failed_ones_and_changed_configs(cli):
    args = ("optimizer=sgd", "optimizer.lr=0.001,-1.0", "trainer.steps=5", "logger=none")
    first = cli(*args, multirun=True)
    assert first.returncode == 1, first.stderr
    ok_dir, failed_dir = first.run_dir / "0", first.run_dir / "1"
    ok_text = (ok_dir / "summary.json").read_text()
    ok_history = (ok_dir / "history.csv").stat().st_mtime_ns
    failed_text = (failed_dir / "summary.json").read_text()
    assert json.loads(ok_text)["config"]["optimizer"]["lr"] == 0.001

    # The same command again: the ok job is untouched, the failed one runs again.
    second = cli(*args, multirun=True)
    assert second.returncode == 1, second.stderr
    # The skipped job is one of the sweep's jobs, and it did not fail.
    assert f"1 of 2 jobs failed: {failed_dir}; the others finished" in output(second)
    assert "Skipped job 0" in output(second)
    assert "Skipped job 0" in (ok_dir / "torchopt_bench.log").read_text()
    assert "Skipped job 1" not in output(second)
    assert "has status failed" in output(second)
    assert (ok_dir / "summary.json").read_text() == ok_text
    assert (ok_dir / "history.csv").stat().st_mtime_ns == ok_history
    rerun = json.loads((failed_dir / "summary.json").read_text())
    assert rerun["status"] == "failed"
    assert rerun["total_time_s"] != json.loads(failed_text)["total_time_s"]

    # Another number of steps into the same folder: the config differs, the job runs.
    third = cli(
        "optimizer=sgd", "optimizer.lr=0.001,-1.0", "trainer.steps=7", "logger=none", multirun=True
    )
    assert third.returncode == 1, third.stderr
    assert "Skipped job" not in output(third)
    assert "differs in trainer.steps" in output(third)
    summary = json.loads((ok_dir / "summary.json").read_text())
    assert summary["steps"] == 7
    np.testing.assert_allclose(
        summary["final_point"], rosenbrock_gd((-0.5, 0.5), 0.001, 7), rtol=0, atol=1e-12
    )


def test_rerun_runs_a_diverged_job_again_and_reads_its_null_loss(cli):
    args = ("optimizer=sgd", "optimizer.lr=0.001,1.0", "trainer.steps=200", "logger=none")
    first = cli(*args, multirun=True)
    assert first.returncode == 0, first.stderr
    diverged = json.loads((first.run_dir / "1" / "summary.json").read_text())
    assert diverged["status"] == "diverged" and "non-finite" in diverged["diverged_reason"]
    assert diverged["final_loss"] is None and diverged["final_gap"] is None
    assert objective_value(diverged, "final_gap") == math.inf

    second = cli(*args, multirun=True)
    assert second.returncode == 0, second.stderr  # a diverged job is a result, not a failure
    assert "All 2 jobs of the sweep finished" in output(second)
    assert "jobs failed" not in output(second)
    assert "Skipped job 0" in output(second)
    assert "Skipped job 1" not in output(second)
    assert "has status diverged" in output(second)
    assert json.loads((first.run_dir / "1" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("launcher", ["basic", pytest.param("joblib", marks=pytest.mark.slow)])
def test_a_sweep_counts_its_own_failed_jobs_only(cli, launcher):
    args = ("trainer.steps=3", "logger=none", f"hydra/launcher={launcher}")
    first = cli(*args, "optimizer=sgd", "optimizer.lr=0.001,-1.0,abc", multirun=True)
    sweep = first.run_dir
    assert first.returncode == 1, first.stderr
    assert f"2 of 3 jobs failed: {sweep / '1'}, {sweep / '2'}; the others finished\n" in output(
        first
    )
    assert {k: s["status"] for k, s in summaries(sweep).items()} == {
        "0": "ok",
        "1": "failed",
        "2": "failed",
    }
    # A smaller sweep into the same folder: job 2's failure is an earlier sweep's.
    second = cli(*args, "optimizer=sgd", "optimizer.lr=0.001,0.002", multirun=True)
    assert second.returncode == 0, second.stderr
    assert "All 2 jobs of the sweep finished" in output(second)
    assert summaries(sweep)["2"]["status"] == "failed"
    # Every job failed.
    third = cli(*args, "optimizer=sgd", "optimizer.lr=-1.0,-2.0", multirun=True)
    assert third.returncode == 1, third.stderr
    assert f"2 of 2 jobs failed: {sweep / '0'}, {sweep / '1'}; none finished" in output(third)


def test_a_non_finite_setting_is_recorded_as_text_and_compares_equal():
    cfg = OmegaConf.create({"optimizer": {"growth_rate": float("inf"), "lr": 1.0}})
    config = _resolved_config(cfg)
    assert config == {"optimizer": {"growth_rate": "inf", "lr": 1.0}}
    assert _config_differences(config, _resolved_config(cfg)) == []


def test_optuna_tuning_returns_the_objective_and_finds_the_best_trial(cli):
    result = cli(
        "experiment=tuning",
        "optimizer=sgd",
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=tag(log, interval(1e-5, 1e-3))",
        "trainer.steps=10",
        "logger=none",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    jobs = summaries(result.run_dir)
    assert len(jobs) == 4
    lrs = [s["config"]["optimizer"]["lr"] for s in jobs.values()]
    assert all(1e-5 <= lr <= 1e-3 for lr in lrs)
    assert len(set(lrs)) == 4
    # Each trial's value is its final gap, which for GD from (-0.5, 0.5) is known by hand.
    for s in jobs.values():
        x, y = rosenbrock_gd((-0.5, 0.5), s["config"]["optimizer"]["lr"], 10)
        assert s["final_gap"] == pytest.approx((1 - x) ** 2 + 100 * (y - x * x) ** 2)
    best = yaml.safe_load((result.run_dir / "optimization_results.yaml").read_text())
    winner = min(jobs.values(), key=lambda s: s["final_gap"])
    assert best["best_value"] == pytest.approx(winner["final_gap"])
    assert best["best_params"]["optimizer.lr"] == pytest.approx(
        winner["config"]["optimizer"]["lr"]
    )


@pytest.mark.slow
def test_submitit_local_runs_a_sweep_through_the_same_code_path(cli):
    result = cli(
        "hydra/launcher=submitit_local",
        "optimizer=sgd",
        "optimizer.lr=0.001,-1.0",
        "trainer.steps=4",
        "logger=none",
        multirun=True,
    )
    assert result.returncode == 1, result.stderr
    assert f"1 of 2 jobs failed: {result.run_dir / '1'}; the others finished" in output(result)
    jobs = summaries(result.run_dir)
    assert jobs["0"]["status"] == "ok"
    np.testing.assert_allclose(
        jobs["0"]["final_point"], rosenbrock_gd((-0.5, 0.5), 0.001, 4), rtol=0, atol=1e-12
    )
    assert jobs["1"]["error"].startswith("ValueError: Invalid learning rate: -1.0 ")
    assert (result.run_dir / ".submitit").is_dir()


@pytest.mark.parametrize(
    ("status", "maximize", "expected"),
    [
        ("ok", False, 0.25),
        ("ok", True, 0.25),
        ("diverged", False, math.inf),
        ("diverged", True, -math.inf),
    ],
)
def test_objective_value_of_ok_and_diverged_runs(status, maximize, expected):
    assert (
        objective_value({"status": status, "final_gap": 0.25}, "final_gap", maximize) == expected
    )
    if status == "diverged":  # as summary.json holds it: the gap that overflowed is null
        assert objective_value({"status": status, "final_gap": None}, "final_gap", maximize) == (
            expected
        )


def test_objective_value_of_failed_runs_and_bad_metrics():
    assert math.isnan(objective_value({"status": "failed", "error": "x"}, "final_gap"))
    assert objective_value({"status": "ok", "final_gap": 1.0}, None) is None
    with pytest.raises(ValueError, match="objective='val_auc'.*final_gap"):
        objective_value({"status": "ok", "final_gap": 1.0}, "val_auc")


def compose(*overrides: str):
    # The configs use ${project_root:}, registered by importing torchopt_bench.cli (above).
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def test_lr_sweep_is_a_wide_log_grid_over_existing_optimizers():
    params = compose("experiment=lr_sweep").hydra.sweeper.params
    lrs = np.array([float(v) for v in params["optimizer.lr"].split(",")])
    assert lrs.min() <= 1e-5 and lrs.max() >= 10.0
    ratios = lrs[1:] / lrs[:-1]
    assert np.all((ratios > 2.9) & (ratios < 3.4))  # half a decade apart, rounded
    names = params["optimizer"].split(",")
    assert {"sgd", "adam"} <= set(names)
    for name in names:
        assert (REPO / "conf" / "optimizer" / f"{name}.yaml").is_file(), name


def test_tuning_uses_optuna_on_a_log_scale_with_a_budget():
    cfg = compose("experiment=tuning")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.params["optimizer.lr"].replace(" ", "").startswith("tag(log,interval(")
    assert sweeper.n_trials == 30
    assert sweeper.direction == "minimize" and cfg.objective == "final_gap"


def test_slurm_launcher_config_builds_on_submitit():
    launcher = compose("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    for key in ("partition", "timeout_min", "cpus_per_task", "gpus_per_node"):
        assert key in launcher


def test_dev_extra_installs_the_sweep_plugins():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    plugins = {"hydra-joblib-launcher", "hydra-submitit-launcher", "hydra-optuna-sweeper"}
    for extra in ("sweeps", "dev"):
        names = {
            req.split(">")[0].split("<")[0].split("=")[0].strip().lower() for req in extras[extra]
        }
        assert plugins <= names, extra
