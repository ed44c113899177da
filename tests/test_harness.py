"""The harness end to end, as a user runs it: one command, one run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchopt_bench.tracking import to_jsonable


def notebook_gradient_descent(start, lr, steps):
    """The course notebook's loop: Rosenbrock's gradient written by hand, plain steps."""
    x, y = start
    path = [(x, y)]
    for _ in range(steps):
        dx = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x)
        dy = 200.0 * (y - x * x)
        x, y = x - lr * dx, y - lr * dy
        path.append((x, y))
    return np.array(path)


def test_sgd_reproduces_the_notebook_loop(cli):
    result = cli("optimizer=sgd", "optimizer.lr=0.005", "trainer.steps=100")
    assert result.returncode == 0, result.stderr

    expected = notebook_gradient_descent((-0.5, 0.5), 0.005, 100)
    got = result.history[["x0", "x1"]].to_numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)

    summary = result.summary
    x, y = expected[-1]
    assert summary["status"] == "ok"
    assert summary["optimizer"] == "sgd" and summary["task"] == "rosenbrock"
    assert summary["steps"] == 100
    assert "epochs" not in summary  # a test function's summary counts steps only
    assert summary["final_point"] == pytest.approx([x, y], abs=1e-12)
    assert summary["final_loss"] == pytest.approx((1 - x) ** 2 + 100 * (y - x * x) ** 2)
    assert summary["distance_to_minimum"] == pytest.approx(np.hypot(x - 1, y - 1))
    assert summary["steps_to_target"] is None  # 100 steps of GD do not get near (1, 1)
    assert summary["wall_time_s"] > 0
    for name in ("history.csv", "summary.json", "trajectory.png", ".hydra/config.yaml"):
        assert (result.run_dir / name).exists(), name


def test_steps_to_target_is_the_first_step_below_the_gap(cli):
    # On the sphere, GD with lr 0.25 halves each coordinate: f_t = f_0 / 4^t exactly.
    result = cli(
        "task=sphere",
        "task.start=[1.0,1.0]",
        "optimizer=sgd",
        "optimizer.lr=0.25",
        "trainer.steps=30",
        "task.target_gap=1e-6",
    )
    assert result.returncode == 0, result.stderr
    f0 = 2.0
    first = next(t for t in range(31) if f0 / 4**t < 1e-6)
    assert result.summary["steps_to_target"] == first
    np.testing.assert_allclose(result.history["train/loss"], f0 / 4.0 ** np.arange(31))


def test_divergence_is_recorded_and_exits_zero(cli):
    result = cli("optimizer=sgd", "optimizer.lr=1.0", "trainer.steps=200")
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "diverged"
    assert 0 < summary["diverged_at_step"] < 200
    assert summary["steps"] == summary["diverged_at_step"]
    assert "non-finite" in summary["diverged_reason"]
    assert len(result.history) == summary["steps"] + 1
    # Strict JSON: the loss and gap that stopped being finite are null, not "inf".
    strict = json.loads(
        (result.run_dir / "summary.json").read_text(),
        parse_constant=lambda name: pytest.fail(f"summary.json holds {name}"),
    )
    assert strict["final_loss"] is None and strict["final_gap"] is None
    assert "inf" not in {v for v in strict.values() if isinstance(v, str)}
    assert not np.isfinite(result.history["train/loss"].iloc[-1])


def test_non_finite_numbers_become_null_and_settings_keep_their_text():
    summary = {
        "a": float("inf"),
        "b": [1.0, float("nan"), np.float32("-inf")],
        "c": {"d": torch.tensor([2.0, float("inf")])},
        "e": np.float64(3.0),
    }
    assert to_jsonable(summary) == {
        "a": None,
        "b": [1.0, None, None],
        "c": {"d": [2.0, None]},
        "e": 3.0,
    }
    assert to_jsonable({"growth_rate": float("inf")}, nonfinite_as_text=True) == {
        "growth_rate": "inf"
    }


def test_invalid_hyperparameter_fails_with_a_clear_message(cli):
    result = cli("optimizer=adam", "optimizer.lr=-1.0", "trainer.steps=5")
    assert result.returncode == 1
    assert "Invalid learning rate: -1.0" in result.stderr
    assert "Traceback" not in result.stderr
    summary = result.summary
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ValueError: Invalid learning rate: -1.0 ")
    assert (
        "optimizer.lr must be a non-negative number; set it as optimizer.lr=" in summary["error"]
    )


def last_line(result) -> str:
    """The one line a failed run leaves on the terminal."""
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("torchopt_bench: run failed: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1].removeprefix("torchopt_bench: run failed: ")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # torch.optim's wording for a value that is no number, then the key and the fix.
        (
            ("optimizer=adam", "optimizer.lr=abc"),
            "ValueError: Invalid learning rate: abc (optimizer.lr must be a non-negative "
            "number; set it as optimizer.lr=VALUE, the defaults are in conf/optimizer/)",
        ),
        (
            ("optimizer=sgd", "optimizer.momentum=abc"),
            "ValueError: Invalid momentum value: abc (optimizer.momentum must be a "
            "non-negative number; set it as optimizer.momentum=VALUE, the defaults are in "
            "conf/optimizer/)",
        ),
        (
            ("optimizer=adam", "optimizer.eps=-1"),
            "ValueError: Invalid epsilon value: -1 (optimizer.eps must be a non-negative "
            "number; set it as optimizer.eps=VALUE, the defaults are in conf/optimizer/)",
        ),
        (
            ("optimizer=adam", "optimizer.betas=[0.9,abc]"),
            "ValueError: Invalid beta parameter at index 1: abc (optimizer.betas must be "
            "numbers in [0, 1); set it as optimizer.betas=VALUE, the defaults are in "
            "conf/optimizer/)",
        ),
        (
            ("optimizer=adam", "optimizer.betas=[0.9]"),
            "ValueError: Invalid betas: 2 values are needed, got [0.9] (optimizer.betas must be "
            "a list of 2 numbers in [0, 1); set it as optimizer.betas=VALUE, the defaults are "
            "in conf/optimizer/)",
        ),
        (
            ("optimizer=lion", "optimizer.betas=0.9"),
            "ValueError: Invalid betas: 2 values are needed, got 0.9 (optimizer.betas must be "
            "a list of 2 numbers in [0, 1); set it as optimizer.betas=VALUE, the defaults are "
            "in conf/optimizer/)",
        ),
        (("seed=abc",), "ValueError: seed must be an integer, got 'abc'; set it as seed=N"),
        (("seed=1.5",), "ValueError: seed must be an integer, got 1.5; set it as seed=N"),
    ],
)
def test_bad_value_fails_with_one_line_naming_key_value_and_fix(cli, overrides, message):
    result = cli(*overrides, "trainer.steps=5", "logger=none")
    assert result.returncode == 1
    assert last_line(result) == message
    assert result.summary["status"] == "failed"
    assert result.summary["error"] == message


def test_bad_higgs_data_settings_name_their_key(cli, tmp_path):
    from conftest import SAMPLE

    if not SAMPLE.is_file():
        pytest.skip("the Higgs sample is not beside the checkout")
    higgs = ("task=higgs", "trainer.epochs=1", "logger=none")
    result = cli(*higgs, f"task.data.path={SAMPLE}", "task.data.max_events=abc")
    assert result.returncode == 1
    assert last_line(result) == (
        "ValueError: task.data.max_events must be a positive integer or null (every event), "
        "got 'abc'; set it as task.data.max_events=N"
    )
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "events.csv.gz").write_bytes(b"")
    result = cli(*higgs, f"task.data.path={folder}", run_dir=tmp_path / "dir")
    assert result.returncode == 1
    assert last_line(result) == (
        f"DataNotFoundError: task.data.path={folder} is a directory; a data file is expected: "
        f"the challenge CSV (.csv or .csv.gz); it holds events.csv.gz, e.g. "
        f"task.data.path={folder / 'events.csv.gz'}"
    )


def test_status_line_shows_the_error_of_a_failed_run_and_only_numbers_that_exist(cli, tmp_path):
    failed = cli("optimizer=adam", "optimizer.lr=-1.0", "trainer.steps=5", "logger=none")
    log = (failed.run_dir / "torchopt_bench.log").read_text()
    assert "None" not in log
    (status,) = [line for line in log.splitlines() if "Status " in line]
    assert status.endswith(f"[ERROR] - Status failed: {failed.summary['error']}")

    ok = cli("optimizer=sgd", "trainer.steps=3", "logger=none", run_dir=tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    log = (ok.run_dir / "torchopt_bench.log").read_text()
    loss = ok.summary["final_loss"]
    assert f"[INFO] - Status ok after 3 steps; final loss {loss}\n" in log


def test_ctrl_c_ends_with_one_line_exit_130_and_keeps_the_outputs(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    run_dir = tmp_path / "run"
    log = run_dir / "torchopt_bench.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchopt_bench",
            "optimizer=sgd",
            "optimizer.lr=1e-5",
            "trainer.steps=100000000",
            "logger=none",
            "trainer.progress=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and "Optimizer sgd" in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.5)  # into the optimisation loop
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"torchopt_bench: interrupted; the run's outputs are kept in {run_dir}; continue a "
        "network run with trainer.resume=true hydra.run.dir=DIR when it writes checkpoints "
        "(trainer.checkpoint_every=N)"
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "interrupted before the run finished"


@pytest.mark.parametrize(
    ("override", "shown"),
    [("trainer.steps=abc", "got 'abc'"), ("trainer.epochs=-4", "got -4")],
)
def test_bad_trainer_setting_fails_with_a_clear_message(cli, override, shown):
    result = cli("optimizer=sgd", override)
    assert result.returncode == 1
    key = override.split("=")[0]
    assert f"ValueError: {key} must be a non-negative integer" in result.stderr
    assert shown in result.stderr
    assert "Traceback" not in result.stderr and "TypeError" not in result.stderr
    summary = result.summary
    assert summary["status"] == "failed"
    assert summary["error"].startswith(f"ValueError: {key} must be a non-negative integer")


def test_tensorboard_events_hold_scalars_figure_and_hparams(cli):
    result = cli("optimizer=momentum", "optimizer.lr=0.001", "trainer.steps=20")
    assert result.returncode == 0, result.stderr
    events = list(result.run_dir.glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(result.run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/gap", "lr", "opt/grad_norm", "opt/update_norm"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(21))
    assert "figures/trajectory" in tags["images"]
    assert "_hparams_/experiment" in acc.summary_metadata
    assert "_hparams_/session_start_info" in acc.summary_metadata
    # The first update of heavy-ball momentum is lr * grad at the start point.
    x, y = -0.5, 0.5
    grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    first_update = acc.Scalars("opt/update_norm")[0].value
    assert first_update == pytest.approx(0.001 * np.linalg.norm(grad), rel=1e-6)


def test_default_run_directory_is_dated_under_runs(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHOPT_BENCH_ROOT": str(tmp_path)}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "torchopt_bench", "trainer.steps=2", "trainer.progress=false"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (summary,) = (tmp_path / "runs").glob("*/*/summary.json")
    date_dir, time_dir = summary.parent.parent.name, summary.parent.name
    assert len(date_dir.split("-")) == 3 and len(time_dir.split("-")) == 3
    assert json.loads(summary.read_text())["optimizer"] == "adam"
    assert not list(cwd.iterdir())


def test_multirun_runs_every_job_and_survives_a_failing_one(cli):
    result = cli(
        "optimizer=sgd,adam", "optimizer.lr=0.001,-1.0", "trainer.steps=10", multirun=True
    )
    # Every job ran; the sweep ends with the count of the failed ones and exit status 1.
    assert result.returncode == 1, result.stderr
    sweep = result.run_dir
    assert (
        f"2 of 4 jobs failed: {sweep / '1'}, {sweep / '3'}; the others finished\n"
        in result.stdout + result.stderr
    )
    summaries = [json.loads(p.read_text()) for p in sorted(result.run_dir.glob("*/summary.json"))]
    assert len(summaries) == 4
    by_key = {(s["optimizer"], s["overrides"][1]): s for s in summaries}
    assert by_key[("sgd", "optimizer.lr=0.001")]["status"] == "ok"
    assert by_key[("adam", "optimizer.lr=0.001")]["status"] == "ok"
    assert by_key[("adam", "optimizer.lr=-1.0")]["status"] == "failed"
    assert "Invalid learning rate" in by_key[("sgd", "optimizer.lr=-1.0")]["error"]
    for job in result.run_dir.glob("[0-9]*"):
        assert (job / "history.csv").exists() or json.loads((job / "summary.json").read_text())[
            "status"
        ] == "failed"


def test_cuda_request_without_cuda_is_a_clear_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("device=cuda", "trainer.steps=2")
    assert result.returncode == 1
    assert "CUDA is not available" in result.stderr
    assert "device=auto" in result.stderr


def test_every_function_task_runs(cli, tmp_path):
    for task in ("sphere", "beale", "himmelblau"):
        result = cli(f"task={task}", "trainer.steps=5", "optimizer=sgd", run_dir=tmp_path / task)
        assert result.returncode == 0, result.stderr
        assert result.summary["task"] == task
        assert Path(result.run_dir / "trajectory.png").exists()


def test_a_failed_attempt_beside_a_finished_run_leaves_its_files_describing_it(cli, tmp_path):
    """The finished run's summary.json is kept (the attempt goes to summary.failed.json),
    and so are its Hydra files and TensorBoard events: ``.hydra/`` still says lr 0.01,
    the attempt's own Hydra files are in ``.hydra/failed/``."""
    run_dir = tmp_path / "run"
    first = cli("optimizer=sgd", "optimizer.lr=0.01", "trainer.steps=5", run_dir=run_dir)
    assert first.returncode == 0, first.stderr
    kept = (run_dir / "summary.json").read_text()
    events = sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))

    second = cli("optimizer=sgd", "optimizer.lr=-1", "trainer.steps=5", run_dir=run_dir)
    assert second.returncode == 1
    assert (run_dir / "summary.json").read_text() == kept
    assert json.loads((run_dir / "summary.failed.json").read_text())["status"] == "failed"
    hydra_dir = run_dir / ".hydra"
    assert "lr: 0.01" in (hydra_dir / "config.yaml").read_text()
    assert "optimizer.lr=0.01" in (hydra_dir / "overrides.yaml").read_text()
    assert "lr: -1" in (hydra_dir / "failed" / "config.yaml").read_text()
    assert sorted(p.name for p in run_dir.glob("events.out.tfevents.*")) == events
