"""The sweep report: a real small sweep, and hand-made sweeps whose answers are known."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from scipy import stats

import torchopt_bench.report as report_module
from torchopt_bench.report import (
    MAX_STEM,
    build_report,
    choose_learning_rates,
    collect_jobs,
    label_jobs,
    main,
    performance_profile,
    plot_lr_sensitivity,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- a real sweep --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> Path:
    """SGD and Adam on Rosenbrock over three rates (SGD diverges at 1.0) and one invalid
    rate, 30 steps each, then the report through its command line."""
    sweep = tmp_path_factory.mktemp("real") / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchopt_bench",
            "-m",
            "optimizer=sgd,adam",
            "optimizer.lr=0.001,0.01,1.0,-1.0",
            "trainer.steps=30",
            "logger=none",
            "trainer.progress=false",
            f"hydra.sweep.dir={sweep}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # The invalid rate fails two jobs, which a sweep may report through its exit status.
    assert run.returncode in (0, 1), run.stderr
    assert len(list(sweep.glob("*/summary.json"))) == 8, run.stdout + run.stderr
    report = subprocess.run(
        [sys.executable, "-m", "torchopt_bench.report", str(sweep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == str(sweep / "report" / "report.md")
    return sweep


def read_summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


def test_results_csv_has_one_row_per_job_with_overrides_and_metrics(real_sweep):
    results = pd.read_csv(real_sweep / "report" / "results.csv")
    summaries = read_summaries(real_sweep)
    assert len(summaries) == 8
    assert len(results) == 8
    for column in (
        "job",
        "optimizer",
        "optimizer.lr",
        "trainer.steps",
        "status",
        "final_gap",
        "steps",
        "wall_time_s",
        "error",
    ):
        assert column in results, column
    by_job = results.set_index(results["job"].astype(str))
    for s in summaries:
        row = by_job.loc[Path(s["run_dir"]).name]
        assert row["status"] == s["status"]
        assert row["optimizer"] == s["optimizer"]
        assert row["optimizer.lr"] == pytest.approx(s["config"]["optimizer"]["lr"])
        if s["status"] == "ok":
            assert row["final_gap"] == pytest.approx(s["final_gap"])


def test_best_rate_and_counts_match_the_raw_summaries(real_sweep):
    best = pd.read_csv(real_sweep / "report" / "best.csv").set_index("optimizer")
    summaries = read_summaries(real_sweep)
    for name in ("sgd", "adam"):
        mine = [s for s in summaries if s["optimizer"] == name]
        ok = [s for s in mine if s["status"] == "ok"]
        winner = min(ok, key=lambda s: s["final_gap"])
        assert best.loc[name, "lr"] == pytest.approx(winner["config"]["optimizer"]["lr"])
        assert best.loc[name, "mean"] == pytest.approx(winner["final_gap"])
        assert best.loc[name, "diverged"] == sum(s["status"] == "diverged" for s in mine)
        assert best.loc[name, "failed"] == sum(s["status"] == "failed" for s in mine) == 1
        assert best.loc[name, "runs"] == 4
    assert best.loc["sgd", "diverged"] >= 1  # lr 1.0 on Rosenbrock
    for s in summaries:
        if s["status"] == "diverged":  # what overflowed is null; the status tells why
            assert s["final_loss"] is None and s["final_gap"] is None
            assert "non-finite" in s["diverged_reason"]

    report = (real_sweep / "report" / "report.md").read_text()
    assert "## rosenbrock" in report
    assert "ValueError: Invalid learning rate: -1.0" in report
    figures = [
        "curves_rosenbrock.png",
        "lr_sensitivity_rosenbrock.png",
        "trajectories_rosenbrock.png",
    ]
    # The profile is drawn only if some run reached its target (else it is 0 everywhere).
    if any(s.get("steps_to_target") is not None for s in summaries):
        figures.append("performance_profile.png")
    else:
        assert "No optimizer reached the target on any task" in report
        assert not (real_sweep / "report" / "performance_profile.png").exists()
    for name in figures:
        assert f"]({name})" in report
        assert (real_sweep / "report" / name).read_bytes()[:8] == PNG_MAGIC, name


# -- hand-made sweeps ------------------------------------------------------------------------


def write_job(
    root: Path, job: str, summary: dict, overrides: list[str], history: pd.DataFrame | None = None
) -> None:
    """A job folder as the app writes it: summary.json, .hydra/overrides.yaml, history.csv."""
    folder = root / job
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "summary.json").write_text(json.dumps(summary))
    if history is not None:
        history.to_csv(folder / "history.csv", index=False)


def write_network_job(
    root: Path,
    job: str,
    optimizer: str,
    lr: float,
    seed: int,
    val_auc: float | None,
    test_auc: float | None = None,
    status: str = "ok",
    epochs: int = 3,
) -> None:
    summary = {
        "optimizer": optimizer,
        "task": "higgs",
        "status": status,
        "seed": seed,
        "lr": lr,
        "val_auc": val_auc,
        "test_private_auc": test_auc,
    }
    if status == "failed":
        summary["error"] = "ValueError: boom"
    history = None
    if status != "failed":
        epoch = np.arange(1, epochs + 1)
        final = val_auc if val_auc is not None else 0.5
        history = pd.DataFrame(
            {
                "step": 10 * epoch,
                "epoch": epoch,
                "train/loss": 1.0 / epoch,
                "val/auc": final - 0.1 * (epochs - epoch) / epochs,
            }
        )
    write_job(
        root,
        job,
        summary,
        [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}", "task=higgs"],
        history,
    )


def chosen(out: Path, optimizer: str) -> pd.Series:
    best = pd.read_csv(out / "report" / "best.csv")
    return best.set_index("optimizer").loc[optimizer]


def test_rate_is_chosen_on_validation_not_on_test(tmp_path):
    # lr 0.01 is best on validation, lr 0.1 on test: the report must take 0.01.
    vals = {0.01: [0.90, 0.91, 0.89], 0.1: [0.85, 0.86, 0.84]}
    tests = {0.01: [0.80, 0.81, 0.79], 0.1: [0.95, 0.96, 0.94]}
    n = 0
    for lr in vals:
        for seed in range(3):
            write_network_job(tmp_path, str(n), "adam", lr, seed, vals[lr][seed], tests[lr][seed])
            n += 1
    build_report(tmp_path)
    row = chosen(tmp_path, "adam")
    assert row["lr"] == 0.01
    assert row["mean"] == pytest.approx(0.90)
    assert row["test_metric"] == "test_private_auc"
    assert row["test_mean"] == pytest.approx(0.80)
    assert "| adam | 0.01 |" in (tmp_path / "report" / "report.md").read_text()


def percentile_bootstrap(values, resamples=10_000, seed=0, confidence=0.95):
    """The documented interval, transcribed: resample indices, mean, percentiles."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[draws].mean(axis=1)
    return np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])


def test_confidence_interval_is_the_seeded_percentile_bootstrap(tmp_path):
    values = [0.81, 0.86, 0.84, 0.90, 0.79, 0.83]
    for seed, value in enumerate(values):
        write_network_job(tmp_path, str(seed), "sgd", 0.1, seed, value, value - 0.02)
    build_report(tmp_path)
    row = chosen(tmp_path, "sgd")
    assert row["seeds"] == 6
    assert row["mean"] == pytest.approx(np.mean(values))
    low, high = percentile_bootstrap(values)
    assert row["ci_low"] == pytest.approx(low, abs=1e-12)
    assert row["ci_high"] == pytest.approx(high, abs=1e-12)
    assert row["ci_low"] < np.mean(values) < row["ci_high"]
    test_low, test_high = percentile_bootstrap(np.array(values) - 0.02)
    assert row["test_ci_low"] == pytest.approx(test_low, abs=1e-12)
    assert row["test_ci_high"] == pytest.approx(test_high, abs=1e-12)
    # An independent implementation (scipy) agrees up to its own resampling noise.
    reference = stats.bootstrap(
        (np.array(values),), np.mean, method="percentile", n_resamples=10_000, random_state=1
    ).confidence_interval
    assert row["ci_low"] == pytest.approx(reference.low, abs=0.004)
    assert row["ci_high"] == pytest.approx(reference.high, abs=0.004)


def test_reruns_at_the_chosen_rate_add_seeds_without_changing_the_choice(tmp_path):
    # The grid ran seed 0; lr 0.01 won (0.90 > 0.88). Its seeds 1-4 came out lower (0.80):
    # over all its seeds it averages 0.82, below lr 0.1's single 0.88, but the choice is
    # made on the seed both rates share, so it stays 0.01 and reports all five seeds.
    write_network_job(tmp_path, "grid/0", "adam", 0.01, 0, 0.90)
    write_network_job(tmp_path, "grid/1", "adam", 0.1, 0, 0.88)
    for seed in range(1, 5):
        write_network_job(tmp_path, f"seeds/adam/{seed - 1}", "adam", 0.01, seed, 0.80)
    build_report(tmp_path)
    row = chosen(tmp_path, "adam")
    assert row["lr"] == 0.01
    assert row["seeds"] == 5
    assert row["mean"] == pytest.approx((0.90 + 4 * 0.80) / 5)
    assert str(row["selection_seeds"]) == "0"
    results = pd.read_csv(tmp_path / "report" / "results.csv")
    assert len(results) == 6


def test_a_diverged_seed_disqualifies_a_rate_and_failures_are_counted(tmp_path):
    # lr 0.1: two excellent seeds and one divergence; lr 0.01: three good seeds. A diverged
    # run is the worst result, so 0.01 is chosen. lr 1.0 failed (an error): left out.
    write_network_job(tmp_path, "0", "adam", 0.1, 0, 0.95)
    write_network_job(tmp_path, "1", "adam", 0.1, 1, 0.95)
    write_network_job(tmp_path, "2", "adam", 0.1, 2, None, status="diverged")
    for seed in range(3):
        write_network_job(tmp_path, str(3 + seed), "adam", 0.01, seed, 0.90)
    write_network_job(tmp_path, "6", "adam", 1.0, 0, None, status="failed")
    # Every rate of sgd diverged: it has no chosen rate.
    write_network_job(tmp_path, "7", "sgd", 0.1, 0, None, status="diverged")
    build_report(tmp_path)
    adam, sgd = chosen(tmp_path, "adam"), chosen(tmp_path, "sgd")
    assert adam["lr"] == 0.01
    assert (adam["diverged"], adam["failed"], adam["runs"]) == (1, 1, 7)
    assert math.isnan(sgd["lr"]) and sgd["diverged"] == 1
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| adam | 0.01 | 3 | 3 |" in report
    assert "1/7" in report
    assert "ValueError: boom" in report


@pytest.mark.parametrize("written", [None, "inf"], ids=["null", "older inf text"])
def test_a_diverged_function_run_with_no_finite_gap_counts_as_diverged(tmp_path, written):
    # summary.json holds null where the gap overflowed (older files: the text "inf").
    for job, (lr, status, gap) in enumerate(
        [(0.01, "ok", 1e-3), (0.1, "ok", 1e-5), (1.0, "diverged", written)]
    ):
        summary = {
            "optimizer": "sgd",
            "task": "sphere",
            "status": status,
            "seed": 0,
            "final_gap": gap,
            "final_loss": gap,
        }
        if status == "diverged":
            summary.update(diverged_at_step=3, diverged_reason="non-finite value (1 start)")
        write_job(tmp_path, str(job), summary, [f"optimizer.lr={lr}", "task=sphere"])
    build_report(tmp_path)
    row = chosen(tmp_path, "sgd")
    assert row["lr"] == 0.1 and row["mean"] == pytest.approx(1e-5)
    assert (row["diverged"], row["runs"]) == (1, 3)
    results = pd.read_csv(tmp_path / "report" / "results.csv").set_index("job")
    assert results.loc[2, "status"] == "diverged"
    assert not np.isfinite(results.loc[2, "final_gap"])  # empty (NaN) or inf, never text


def test_optimizer_variants_and_task_settings_that_vary_are_told_apart(tmp_path):
    n = 0
    for betas in ("[0.9,0.99]", "[0.9,0.999]"):
        for steps, gap in ((10, 1e-2), (20, 1e-4)):
            summary = {
                "optimizer": "adam",
                "task": "sphere",
                "status": "ok",
                "seed": 0,
                "final_gap": gap * (2 if betas == "[0.9,0.99]" else 1),
                "steps_to_target": None,
            }
            write_job(
                tmp_path,
                str(n),
                summary,
                [
                    "optimizer=adam",
                    "optimizer.lr=0.1",
                    f"optimizer.betas={betas}",
                    f"trainer.steps={steps}",
                ],
            )
            n += 1
    build_report(tmp_path)
    best = pd.read_csv(tmp_path / "report" / "best.csv")
    assert set(best["task"]) == {"sphere (trainer.steps=10)", "sphere (trainer.steps=20)"}
    assert set(best["optimizer"]) == {
        "adam (optimizer.betas=[0.9, 0.99])",
        "adam (optimizer.betas=[0.9, 0.999])",
    }
    row = best.set_index(["task", "optimizer"]).loc[
        ("sphere (trainer.steps=20)", "adam (optimizer.betas=[0.9, 0.99])")
    ]
    assert row["mean"] == pytest.approx(2e-4)


def test_performance_profile_by_hand():
    # Steps to target: A solves t1 fastest and t2 in twice B's steps, never t3; B is
    # twice A on t1, fastest on t2 and t3. Nobody solves t4.
    inf = math.inf
    costs = pd.DataFrame(
        {"A": [10, 40, inf, inf], "B": [20, 20, 30, inf]}, index=["t1", "t2", "t3", "t4"]
    )
    profile = performance_profile(costs, [1.0, 1.9, 2.0, 100.0])
    assert profile["A"].tolist() == [0.25, 0.25, 0.5, 0.5]
    assert profile["B"].tolist() == [0.5, 0.5, 0.75, 0.75]
    with pytest.raises(ValueError, match="positive"):
        performance_profile(pd.DataFrame({"A": [0.0]}), [1.0])


def test_network_steps_to_target_feed_the_profile(tmp_path):
    # Histories rise linearly to the final AUC by epoch 3 (steps 10, 20, 30). adam ends at
    # 0.90, sgd at 0.80: the target is 0.90 * 0.99 = 0.891. adam's curve 0.8333, 0.8667,
    # 0.90 reaches it at step 30; sgd never does.
    write_network_job(tmp_path, "0", "adam", 0.01, 0, 0.90)
    write_network_job(tmp_path, "1", "sgd", 0.1, 0, 0.80)
    build_report(tmp_path)
    profile = pd.read_csv(tmp_path / "report" / "performance_profile.csv", index_col="tau")
    assert profile["adam"].iloc[0] == 1.0
    assert profile["sgd"].max() == 0.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| adam | 30 |" in report and "| sgd | never |" in report


def test_command_line_reports_an_empty_folder_as_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 1
    assert "no job" in capsys.readouterr().err


def test_command_line_says_a_missing_folder_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "no_such_sweep"
    with pytest.raises(SystemExit) as exit_info:
        main([str(missing)])
    assert exit_info.value.code == 1
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()  # the report folder is not made inside it either


# -- a folder of many kinds of runs ----------------------------------------------------------


def write_mixed_runs(root: Path) -> str:
    """Higgs runs whose overrides differ in a long data path, in settings that some set and
    others do not (download, epochs), plus a test-function run; returns the long path."""
    long_path = "/work/shared/data/higgs/" + "/".join(["a_rather_long_folder_name"] * 10)
    settings = [
        [f"task.data.path={long_path}/sample.csv", "trainer.epochs=150", "device=cpu"],
        [f"task.data.path={long_path}/other.csv", "task.data.download=false", "dtype=float32"],
        ["task.data.download=true", "trainer.epochs=20"],
    ]
    for n, extra in enumerate(settings):
        for lr in (0.01, 0.1):
            summary = {
                "optimizer": "adam",
                "task": "higgs",
                "status": "ok",
                "seed": 0,
                "val_auc": 0.8 + lr + 0.01 * n,
            }
            epoch = np.arange(1, 4)
            history = pd.DataFrame(
                {"step": 10 * epoch, "epoch": epoch, "train/loss": 1 / epoch, "val/auc": 0.8}
            )
            overrides = ["optimizer=adam", f"optimizer.lr={lr}", "task=higgs", *extra]
            write_job(root, f"mixed/{n}/{lr}", summary, overrides, history)
    return long_path


def test_figure_names_stay_short_and_labels_never_say_nan(tmp_path):
    long_path = write_mixed_runs(tmp_path)
    report = build_report(tmp_path).read_text()
    best = pd.read_csv(tmp_path / "report" / "best.csv")
    assert len(best) == 3  # three settings of higgs, each its own task
    for label in best["task"]:
        assert "nan" not in label, label
    # Absent settings are left out of the labels, present ones named in full.
    assert f"task.data.path={long_path}/sample.csv" in " ".join(best["task"])
    assert "higgs (task.data.download=True trainer.epochs=20)" in set(best["task"])
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert len(pngs) == 2 * 3  # curves and sensitivity per task (no target reached)
    for name in pngs:
        assert len(Path(name).stem) <= len("lr_sensitivity_") + MAX_STEM, name
        assert "nan" not in name
        assert f"]({name})" in report
    # Stable: the same sweep gives the same names.
    again = tmp_path / "again"
    build_report(tmp_path, out_dir=again)
    assert sorted(p.name for p in again.glob("*.png")) == pngs


def test_a_figure_that_fails_is_logged_and_the_report_still_written(tmp_path, monkeypatch, caplog):
    for seed in range(2):
        write_network_job(tmp_path, str(seed), "adam", 0.01, seed, 0.9)

    def broken(*args, **kwargs):
        raise RuntimeError("drawing went wrong")

    monkeypatch.setattr(report_module, "plot_lr_sensitivity", broken)
    report = build_report(tmp_path).read_text()
    assert "`lr_sensitivity_higgs.png` could not be drawn: RuntimeError: drawing went wrong" in (
        report
    )
    assert "](curves_higgs.png)" in report
    assert (tmp_path / "report" / "curves_higgs.png").read_bytes()[:8] == PNG_MAGIC
    assert "drawing went wrong" in caplog.text


# -- the rate of each job, and repeats ----------------------------------------------------------


def write_experiment_job(root: Path, job: str, lr: float | None, status: str = "failed") -> None:
    """A job whose rate came from a table (``optimizer.lr: ${lr_table...}`` in the saved
    config, no lr override) that failed before training, so its summary has no ``lr``;
    the resolved rate is in ``summary["config"]`` (None: no summary config either)."""
    summary = {
        "optimizer": "sgd",
        "task": "higgs",
        "status": status,
        "seed": 0,
        "error": "DataNotFoundError: no file",
        "config": {"optimizer": {"lr": lr}} if lr is not None else None,
    }
    write_job(root, job, summary, ["experiment=higgs", "optimizer=sgd", "seed=0"])
    config = {"optimizer": {"lr": "${lr_table.${hydra:runtime.choices.optimizer}}"}}
    (root / job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def test_jobs_at_different_rates_are_never_taken_as_repeats(tmp_path, caplog):
    # Two sgd jobs, seed 0, at lr 0.1 and 0.001 that only the resolved config in the
    # summary records: each has its own rate, neither repeats the other.
    write_experiment_job(tmp_path, "div", 0.1)
    write_experiment_job(tmp_path, "multirun/0", 0.001)
    jobs = collect_jobs(tmp_path).set_index("job")
    assert jobs.loc["div", "lr"] == 0.1
    assert jobs.loc["multirun/0", "lr"] == 0.001
    build_report(tmp_path)
    row = chosen(tmp_path, "sgd")
    assert (row["runs"], row["failed"], row["lrs_tried"]) == (2, 2, 2)
    assert "repeat" not in caplog.text


def test_jobs_whose_rate_is_unknown_are_all_counted(tmp_path, caplog):
    # No file holds the rate of these two (NaN): NaN must not make them equal.
    write_experiment_job(tmp_path, "a", None)
    write_experiment_job(tmp_path, "b", None)
    write_network_job(tmp_path, "c", "sgd", 0.1, 0, 0.9)
    build_report(tmp_path)
    row = chosen(tmp_path, "sgd")
    assert (row["runs"], row["failed"], row["lr"]) == (3, 2, 0.1)
    assert "repeat" not in caplog.text
    # A real repeat (same rate and seed) is still counted once, and named.
    write_network_job(tmp_path, "d", "sgd", 0.1, 0, 0.9)
    build_report(tmp_path)
    assert chosen(tmp_path, "sgd")["runs"] == 3
    assert "d (same as c: sgd, lr 0.1, seed 0)" in caplog.text


# -- one rate, and targets nobody reached ------------------------------------------------------


def test_a_single_rate_is_called_the_only_rate_run(tmp_path):
    write_network_job(tmp_path, "0", "sgd", 0.3, 0, 0.85)
    write_network_job(tmp_path, "1", "adam", 1e-4, 0, 0.88)
    report = build_report(tmp_path).read_text()
    assert "| optimizer | lr (the only rate run) |" in report
    assert "chosen lr" not in report
    jobs = label_jobs(collect_jobs(tmp_path), [])
    best = choose_learning_rates(jobs)
    fig = plot_lr_sensitivity(jobs, best, "higgs", report_module.NETWORK_OBJECTIVE)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "the only rate run (nothing to choose from)" in legend
    assert not any("best on validation" in t for t in legend)


def test_no_profile_figure_when_no_optimizer_reached_the_target(tmp_path):
    for n, (name, lr) in enumerate((("sgd", 0.1), ("adam", 0.01))):
        summary = {
            "optimizer": name,
            "task": "rosenbrock",
            "status": "ok",
            "seed": 0,
            "final_gap": 0.5,
            "steps_to_target": None,
        }
        write_job(tmp_path, str(n), summary, [f"optimizer={name}", f"optimizer.lr={lr}"])
    report = build_report(tmp_path).read_text()
    assert "No optimizer reached the target on any task" in report
    assert not (tmp_path / "report" / "performance_profile.png").exists()
    assert "| sgd | never |" in report and "| adam | never |" in report


# -- jobs of several optimizers and rates, and runs over several starts ------------------------


@pytest.fixture(scope="module")
def compare_sweep(tmp_path_factory) -> Path:
    """``experiment=compare_functions`` cut down: SGD and Adam at three rates from 5 starts
    (a 2 x 2 grid and task.start) on Rosenbrock, 50 steps, one job; then the report."""
    sweep = tmp_path_factory.mktemp("compare") / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchopt_bench",
            "experiment=compare_functions",
            "hydra.sweeper.params.task=rosenbrock",
            *(f"~task.optimizers.{n}" for n in ("momentum", "nesterov", "adagrad", "rmsprop")),
            "task.lrs=[0.001,0.01,1.0]",
            "task.n_starts=5",
            "task.animate=false",
            "task.figures=false",
            "trainer.steps=50",
            "logger=none",
            "trainer.progress=false",
            f"hydra.sweep.dir={sweep}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    build_report(sweep)
    return sweep


def median_gap_over_starts(gaps: pd.Series) -> float:
    """The median final gap of one optimizer and rate, a diverged start (no gap) counting as
    infinite: with 5 starts, the third smallest."""
    values = np.sort(gaps.fillna(np.inf).to_numpy(dtype=float))
    assert len(values) == 5
    return float(values[2])


def test_a_job_of_several_optimizers_and_rates_is_compared_rate_by_rate(compare_sweep):
    starts = pd.read_csv(compare_sweep / "0" / "starts.csv")
    assert len(starts) == 2 * 3 * 5
    best = pd.read_csv(compare_sweep / "report" / "best.csv").set_index("optimizer")
    assert sorted(best.index) == ["adam", "sgd"]
    for name in ("sgd", "adam"):
        mine = starts[starts["optimizer"] == name]
        medians = {lr: median_gap_over_starts(g["final_gap"]) for lr, g in mine.groupby("lr")}
        finite = {lr: m for lr, m in medians.items() if np.isfinite(m)}
        winner = min(finite, key=lambda lr: (finite[lr], lr))
        all_diverged = sum(g["final_gap"].isna().all() for _, g in mine.groupby("lr"))
        row = best.loc[name]
        assert row["lr"] == pytest.approx(winner)
        assert row["mean"] == pytest.approx(finite[winner])
        assert (row["lrs_tried"], row["runs"], row["seeds"]) == (3, 3, 1)
        assert row["diverged"] == all_diverged
        at_winner = mine[mine["lr"] == winner]
        assert row["diverged_fraction"] == pytest.approx(at_winner["final_gap"].isna().mean())
    results = pd.read_csv(compare_sweep / "report" / "results.csv")
    assert len(results) == 6 and set(results["job"].astype(str)) == {"0"}
    assert set(results["job_run"]) == {
        f"{o} lr={lr:g}" for o in ("sgd", "adam") for lr in (0.001, 0.01, 1.0)
    }
    report = (compare_sweep / "report" / "report.md").read_text()
    assert "sgd,adam" not in report
    assert "one rate only" not in report and "the only rate run" not in report
    assert "Chosen on: median final gap f - f* over 5 starts (lower is better)." in report
    assert "`seeds` counts seeds (one job each), not starts" in report
    assert "The starts are a fixed grid" in report
    assert "1 jobs, 6 runs" in report
    assert (compare_sweep / "report" / "curves_rosenbrock.png").read_bytes()[:8] == PNG_MAGIC


def write_batch_job(
    root: Path, job: str, seed: int, stats: list[tuple[str, float, float | None, float]]
) -> None:
    """A job of several optimizers and rates over 4 uniform starts as the function task
    writes it: summary.json, overrides and results.csv with (optimizer, lr, median final
    gap with diverged starts as inf (None: more than half diverged), diverged fraction)."""
    optimizers = list(dict.fromkeys(s[0] for s in stats))
    summary = {
        "optimizer": ",".join(optimizers),
        "task": "sphere",
        "status": "ok",
        "seed": seed,
        "function": "sphere",
        "dim": 2,
        "final_gap": 123.0,  # the first start of the first optimizer and rate only
        "steps_to_target": 7,
        "n_starts": 4,
        "starts": "uniform",
        "n_runs": 4 * len(stats),
        "success_rate": 0.99,
        "optimizers": optimizers,
        "lrs": sorted({s[1] for s in stats}),
        "best_lr": {name: 1.0 for name in optimizers},
    }
    overrides = ["task=sphere", "task.n_starts=4", "task.starts=uniform", f"seed={seed}"]
    overrides.append("task.optimizers.adam.betas=[0.8,0.99]")
    write_job(root, job, summary, overrides)
    table = pd.DataFrame(
        [
            {
                "optimizer": name,
                "label": f"{name} lr={lr:g}",
                "lr": lr,
                "success_rate": 1.0 - diverged,
                "reached_fraction": 1.0 - diverged,
                "steps_to_target_median": None,
                "final_gap_median": gap,
                "final_gap_all_median": gap,
                "diverged_fraction": diverged,
                "n_diverged": int(4 * diverged),
            }
            for name, lr, gap, diverged in stats
        ]
    )
    table.to_csv(root / job / "results.csv", index=False)


def test_jobs_of_several_rates_over_seeds_choose_on_the_median_over_starts(tmp_path):
    # adam at 0.1 wins seed 0 but its median start diverged at seed 1: 0.01 is chosen, with
    # the mean of its two seeds. sgd at 0.1 lost every start on both seeds: diverged twice.
    write_batch_job(
        tmp_path,
        "0",
        0,
        [
            ("sgd", 0.01, 0.5, 0.0),
            ("sgd", 0.1, None, 1.0),
            ("adam", 0.01, 1e-3, 0.0),
            ("adam", 0.1, 1e-4, 0.25),
        ],
    )
    write_batch_job(
        tmp_path,
        "1",
        1,
        [
            ("sgd", 0.01, 0.7, 0.25),
            ("sgd", 0.1, None, 1.0),
            ("adam", 0.01, 3e-3, 0.0),
            ("adam", 0.1, None, 0.5),
        ],
    )
    build_report(tmp_path)
    best = pd.read_csv(tmp_path / "report" / "best.csv").set_index("optimizer")
    adam = best.loc["adam"]  # its betas are set in every job: the same variant throughout
    assert adam["lr"] == 0.01 and adam["seeds"] == 2
    assert adam["mean"] == pytest.approx(2e-3)
    low, high = percentile_bootstrap([1e-3, 3e-3])
    assert (adam["ci_low"], adam["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    sgd = best.loc["sgd"]
    assert sgd["lr"] == 0.01 and sgd["mean"] == pytest.approx(0.6)
    assert (sgd["diverged"], sgd["runs"], sgd["lrs_tried"]) == (2, 4, 2)
    assert sgd["diverged_fraction"] == pytest.approx(0.125)
    assert sgd["success_rate"] == pytest.approx(0.875)
    results = pd.read_csv(tmp_path / "report" / "results.csv")
    assert len(results) == 8
    assert 123.0 not in set(results["final_gap"]) and 0.99 not in set(results["success_rate"])
    assert "job_success_rate" not in results and "best_lr.sgd" not in results
    betas = results[results["job"] == 0].set_index("job_run")["optimizer.betas"]
    assert betas["adam lr=0.01"] == "[0.8, 0.99]" and pd.isna(betas["sgd lr=0.01"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| sgd | 0.01 | 2 | 2 | 0.6 |" in report
    assert "The starts are drawn with the seed" in report
    assert "python -m torchopt_bench -m" not in report  # a rerun would run every rate


def test_a_stale_table_of_runs_is_refused_by_name(tmp_path):
    write_batch_job(tmp_path, "0", 0, [("sgd", 0.01, 0.5, 0.0), ("sgd", 0.1, 0.4, 0.0)])
    summary_path = tmp_path / "0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["n_runs"] = 12  # three rates of four starts; results.csv has two
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(ValueError, match=r"results.csv has 2 rows.*run the job again"):
        collect_jobs(tmp_path)


def test_a_run_over_several_starts_is_judged_by_its_median_start(tmp_path):
    # From task.start lr 0.1 is better (1e-6 < 1e-3), over the 9 starts 0.01 is (0.2 < 0.9).
    for job, (lr, start_gap, median_gap) in enumerate([(0.01, 1e-3, 0.2), (0.1, 1e-6, 0.9)]):
        summary = {
            "optimizer": "sgd",
            "task": "sphere",
            "status": "ok",
            "seed": 0,
            "function": "sphere",
            "final_gap": start_gap,
            "steps_to_target": None,
            "n_starts": 9,
            "starts": "grid",
            "final_gap_all_median": median_gap,
            "steps_to_target_median": None,
        }
        write_job(tmp_path, str(job), summary, [f"optimizer.lr={lr}", "task.n_starts=9"])
    build_report(tmp_path)
    row = chosen(tmp_path, "sgd")
    assert row["lr"] == 0.01 and row["mean"] == pytest.approx(0.2)
    results = pd.read_csv(tmp_path / "report" / "results.csv").set_index("job")
    assert results.loc[1, "start_final_gap"] == pytest.approx(1e-6)


def test_an_empty_folder_leaves_no_report_folder_behind(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no job" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    with pytest.raises(ValueError, match="no job"):
        build_report(tmp_path, out_dir=tmp_path / "elsewhere")
    assert list(tmp_path.iterdir()) == []


# -- Optuna studies --------------------------------------------------------------------------


def write_study(root: Path, name: str, trials: list[tuple[float, float | None]]) -> None:
    """An Optuna study of ``name`` on Rosenbrock as the sweeper leaves it: one job per
    (lr, final gap; None: diverged) trial and ``optimization_results.yaml`` with the trial
    Optuna calls best (the smallest value, a diverged trial's being inf)."""
    values = []
    for n, (lr, gap) in enumerate(trials):
        status = "ok" if gap is not None else "diverged"
        summary = {
            "optimizer": name,
            "task": "rosenbrock",
            "status": status,
            "seed": 0,
            "function": "rosenbrock",
            "final_gap": gap,
            "final_loss": gap,
            "steps_to_target": None,
            "config": {"objective": "final_gap", "optimizer": {"lr": lr}},
        }
        job = f"{name}/{n}"
        overrides = [f"optimizer.lr={lr}", "experiment=tuning", f"optimizer={name}"]
        write_job(root, job, summary, overrides)
        hydra = {"hydra": {"sweeper": {"direction": "minimize", "n_trials": len(trials)}}}
        (root / job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
        values.append((math.inf if gap is None else gap, lr))
    value, lr = min(values)
    best = {"name": "optuna", "best_params": {"optimizer.lr": lr}, "best_value": value}
    (root / name / "optimization_results.yaml").write_text(yaml.safe_dump(best))


def test_a_study_whose_every_trial_diverged_chooses_no_rate(tmp_path):
    write_study(tmp_path, "sgd", [(3.5384, None), (5.0, None), (8.0, None)])
    write_study(tmp_path, "adam", [(0.01, 0.25), (0.1, 0.05), (3.0, None)])
    assert "best_value: .inf" in (tmp_path / "sgd" / "optimization_results.yaml").read_text()
    # The study alone: no trial left a final gap, yet the task is judged by it.
    alone = build_report(tmp_path / "sgd", out_dir=tmp_path / "sgd_report").read_text()
    assert "Chosen on: final gap f - f* (lower is better)." in alone
    assert "final training loss" not in alone
    assert "| `.` | sgd | 3 (3 diverged) | final_gap (minimize) | - (none chosen) | - |" in alone
    assert "- `.`: every one of its 3 trials diverged; no rate was chosen." in alone
    assert "3.54" not in alone.split("## Optuna studies")[1].split("\n\n")[2]  # the table

    report = build_report(tmp_path).read_text()
    assert "Chosen on: final gap f - f* (lower is better)." in report
    assert "- `sgd`: every one of its 3 run(s) diverged; no rate was chosen" in report
    assert "## Optuna studies" in report
    assert (
        "| `sgd` | sgd | 3 (3 diverged) | final_gap (minimize) | - (none chosen) | - |" in report
    )
    assert "- `sgd`: every one of its 3 trials diverged; no rate was chosen." in report
    assert "| `adam` | adam | 3 (2 ok, 1 diverged) | final_gap (minimize) | 0.1 | 0.05 |" in report
    best = pd.read_csv(tmp_path / "report" / "best.csv").set_index("optimizer")
    assert math.isnan(best.loc["sgd", "lr"]) and best.loc["sgd", "diverged"] == 3
    assert best.loc["adam", "lr"] == 0.1
