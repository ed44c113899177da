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

from torchopt_bench.report import build_report, main, performance_profile

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
    assert run.returncode == 0, run.stderr
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

    report = (real_sweep / "report" / "report.md").read_text()
    assert "## rosenbrock" in report
    assert "ValueError: Invalid learning rate: -1.0" in report
    for name in (
        "curves_rosenbrock.png",
        "lr_sensitivity_rosenbrock.png",
        "trajectories_rosenbrock.png",
        "performance_profile.png",
    ):
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
