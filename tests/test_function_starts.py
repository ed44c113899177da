"""Many starts of a test function in one batch: the same results as separate runs.

The reference for a batched run is always the plain thing it stands for: one run of the
trainer per start (and per learning rate, and per optimizer), each with its own
``(1, dim)`` point and its own optimizer. Statistics of a batch are checked against values
computed with numpy from those separate runs, or worked out by hand on the sphere.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from torchopt_bench.functions import FUNCTIONS
from torchopt_bench.tasks import FunctionTask
from torchopt_bench.tasks.starts import OptimizerSet, capabilities_of, start_points
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
FALLBACK = instantiate(OmegaConf.load(CONF / "trainer" / "default.yaml").fallback_optimizer)


def factory(name: str, **overrides: Any):
    cfg = OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg)


def configs_where(elementwise: bool) -> list[str]:
    """Optimizer configs whose class declares ``capabilities.elementwise`` as given."""
    names = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
    return [n for n in names if capabilities_of(factory(n)).elementwise == elementwise]


ELEMENTWISE = configs_where(True)
COUPLED = configs_where(False)


def run(
    task: FunctionTask, opt: Any, steps: int, out: Path, dtype: torch.dtype = torch.float64
) -> tuple[dict, dict]:
    """Set up and run ``task`` through the trainer; return the trainer's summary and the
    task's summary fields."""
    task.setup(torch.device("cpu"), dtype, seed=0)
    with RunRecorder(out, tensorboard=False) as recorder:
        summary = Trainer(steps=steps, progress=False, fallback_optimizer=FALLBACK).fit(
            task, opt, recorder
        )
        fields = task.finish(out, recorder, {**summary, "optimizer": "opt"})
    return summary, fields


def separate(
    function: str, starts: np.ndarray, opt: Any, steps: int, out: Path, **task_kwargs: Any
) -> list[dict[str, Any]]:
    """One trainer run per start: its path, summary and task fields."""
    results = []
    for i, start in enumerate(starts):
        task = FunctionTask(function, start=list(start), figures=False, **task_kwargs)
        summary, fields = run(task, opt, steps, out / f"start{i}")
        results.append({"path": task.trajectory(), "summary": summary, "fields": fields})
    return results


def assert_paths_match(batched: np.ndarray, single: dict[str, Any]) -> None:
    """The batched row's path equals the separate run's, bit for bit, up to where the
    separate run stopped (its divergence, or the end)."""
    path = single["path"]
    np.testing.assert_array_equal(batched[: len(path)], path)


STARTS = 5
STEPS = 30


def some_starts(function: str, n: int = STARTS) -> np.ndarray:
    return start_points(FUNCTIONS[function], FUNCTIONS[function].start, n, "uniform", "domain")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_batched_starts_and_rates_equal_separate_runs(name: str, tmp_path: Path) -> None:
    """N starts x 2 rates in one batch: every row follows its separate run exactly, and
    diverges (or reaches the target) at the same step. Rosenbrock over its whole domain
    makes some starts diverge for the plain-gradient methods."""
    lr = float(OmegaConf.load(CONF / "optimizer" / f"{name}.yaml").lr)
    rates = [lr, lr / 2]
    starts = some_starts("rosenbrock")
    task = FunctionTask("rosenbrock", n_starts=STARTS, lrs=rates, n_paths=STARTS, figures=False)
    summary, fields = run(task, factory(name), STEPS, tmp_path / "batched")
    assert len(task.tensors) == 2 and task.tensors[0].shape == (STARTS, 2)
    np.testing.assert_array_equal(task.start_rows, starts)
    frame = task.per_start()
    for r, rate in enumerate(rates):
        singles = separate("rosenbrock", starts, factory(name, lr=rate), STEPS, tmp_path / f"{r}")
        for i, single in enumerate(singles):
            assert_paths_match(task.trajectory(r * STARTS + i), single)
            row = frame.iloc[r * STARTS + i]
            if single["summary"]["status"] == "diverged":
                assert row["diverged_at_step"] == single["summary"]["diverged_at_step"]
                assert row["outcome"] == -2
            else:
                assert math.isnan(row["diverged_at_step"])
                want = single["fields"]["steps_to_target"]
                assert (math.isnan(row["steps_to_target"]) and want is None) or row[
                    "steps_to_target"
                ] == want
    assert summary["status"] == "ok" and fields["n_runs"] == 2 * STARTS
    assert fields["n_diverged"] == int((frame["outcome"] == -2).sum())


def _is_deterministic(name: str, tmp_path: Path) -> bool:
    """Whether a method gives the same path under two different global seeds (a method
    that draws random probes does not, and cannot match separate runs draw for draw)."""
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        task = FunctionTask("rosenbrock")
        task.setup(torch.device("cpu"), torch.float64, seed=0)
        with RunRecorder(tmp_path / f"seed{seed}", tensorboard=False) as recorder:
            Trainer(steps=3, progress=False, fallback_optimizer=FALLBACK).fit(
                task, factory(name), recorder
            )
        paths.append(task.trajectory())
    return bool(np.array_equal(paths[0], paths[1], equal_nan=True))


@pytest.mark.parametrize("name", COUPLED)
def test_coupled_optimizers_are_refused_the_batch_and_run_separately(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    starts = some_starts("rosenbrock", 3)
    task = FunctionTask("rosenbrock", n_starts=3, n_paths=3, figures=False)
    with caplog.at_level(logging.WARNING, logger="torchopt_bench.tasks.function"):
        run(task, factory(name), 8, tmp_path / "batched")
    assert any("is not elementwise" in r.message for r in caplog.records)
    assert "separate optimizers" in caplog.text
    assert [t.shape for t in task.tensors] == [(1, 2)] * 3
    assert isinstance(task._optimizer, OptimizerSet) and len(task._optimizer.members) == 3
    if _is_deterministic(name, tmp_path / "seeds"):
        for i, single in enumerate(separate("rosenbrock", starts, factory(name), 8, tmp_path)):
            assert_paths_match(task.trajectory(i), single)


def test_optimizers_side_by_side_equal_their_separate_runs(tmp_path: Path) -> None:
    """Three optimizers in one run (an OptimizerSet), one of them needing its own closure:
    each block's paths are its separate runs'."""
    names = ["momentum", "adam", "lbfgs"]
    starts = some_starts("himmelblau", 3)
    task = FunctionTask(
        "himmelblau",
        n_starts=3,
        n_paths=3,
        optimizers={n: factory(n) for n in names},
        figures=False,
    )
    _, fields = run(task, factory("sgd"), 12, tmp_path / "batched")
    assert fields["optimizers"] == names
    for b, name in enumerate(names):
        for i, single in enumerate(separate("himmelblau", starts, factory(name), 12, tmp_path)):
            assert_paths_match(task.trajectory(b * 3 + i), single)
    assert set(fields["best_lr"]) == set(names)


def test_a_diverging_start_is_masked_and_the_others_go_on(tmp_path: Path) -> None:
    starts = some_starts("rosenbrock", 8)
    opt = factory("sgd", lr=1e-3)
    singles = separate("rosenbrock", starts, opt, 40, tmp_path)
    diverged = [s["summary"]["status"] == "diverged" for s in singles]
    assert 0 < sum(diverged) < len(diverged)  # the test needs both kinds

    task = FunctionTask("rosenbrock", n_starts=8, n_paths=8, figures=False)
    summary, fields = run(task, opt, 40, tmp_path / "batched")
    assert summary["status"] == "ok" and summary["steps"] == 40
    assert fields["n_diverged"] == sum(diverged)
    assert fields["diverged_fraction"] == pytest.approx(np.mean(diverged))
    for i, single in enumerate(singles):
        assert_paths_match(task.trajectory(i), single)
        if not diverged[i]:  # the survivors ran all 40 steps, to the separate run's point
            np.testing.assert_array_equal(task.trajectory(i)[-1], single["path"][-1])
    # Gradients of the diverged rows are exactly zero (masked), not NaN.
    assert torch.isfinite(task.x.grad).all()


def test_the_run_diverges_only_when_every_start_has(tmp_path: Path) -> None:
    task = FunctionTask("rosenbrock", n_starts=4, figures=False)
    summary, fields = run(task, factory("sgd", lr=1.0), 200, tmp_path)
    assert summary["status"] == "diverged"
    assert summary["steps"] == summary["diverged_at_step"] < 200
    assert fields["diverged_fraction"] == 1.0


def test_summary_statistics_on_the_sphere_worked_by_hand(tmp_path: Path) -> None:
    """GD with lr 0.25 on the sphere halves every coordinate: f_t = f_0 / 4^t, so each
    start's steps_to_target is the first t with f_0 / 4^t < target."""
    target, steps, n = 1e-6, 11, 60
    task = FunctionTask("sphere", n_starts=n, target_gap=target, figures=False)
    _, fields = run(task, factory("sgd", lr=0.25), steps, tmp_path)
    f0 = (task.start_rows**2).sum(axis=1)
    first = np.array(
        [next((t for t in range(steps + 1) if f / 4**t < target), np.inf) for f in f0]
    )
    final_gap = f0 / 4.0**steps

    reached = np.isfinite(first)
    assert 0 < reached.sum() < n  # some reach the target within the budget, some do not
    assert fields["reached_fraction"] == pytest.approx(reached.mean())
    assert fields["success_rate"] == pytest.approx(np.mean(final_gap < target))
    for q, key in ((0.25, "q25"), (0.5, "median"), (0.75, "q75")):
        want = np.quantile(first, q, method="inverted_cdf")
        got = fields[f"steps_to_target_{key}"]
        assert (got is None and not np.isfinite(want)) or got == want
        assert fields[f"final_gap_{key}"] == pytest.approx(np.quantile(final_gap, q), rel=1e-9)
    assert fields["diverged_fraction"] == 0.0 and fields["n_diverged"] == 0
    frame = task.per_start()
    np.testing.assert_array_equal(frame["steps_to_target"].fillna(np.inf), first)


def test_history_rows_are_aggregates_over_the_starts(tmp_path: Path) -> None:
    task = FunctionTask("sphere", n_starts=20, start_region="window")
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        Trainer(steps=3, progress=False).fit(task, factory("sgd", lr=0.25), recorder)
    f0 = (task.start_rows**2).sum(axis=1)
    for t, row in enumerate(recorder.history):
        values = f0 / 4.0**t
        assert row["train/loss"] == pytest.approx(np.median(values), rel=1e-12)
        assert row["train/gap_q25"] == pytest.approx(np.quantile(values, 0.25), rel=1e-12)
        assert row["train/success"] == np.mean(values < 1e-6)
        assert row["train/diverged"] == 0.0
    assert "x0" not in recorder.history[0]


def test_start_points_grid_and_uniform() -> None:
    rosen = FUNCTIONS["rosenbrock"]
    grid = start_points(rosen, (-0.5, 0.5), 26, "grid", "window")
    (x0, x1), (y0, y1) = rosen.window
    assert grid.shape == (26, 2) and grid[0].tolist() == [-0.5, 0.5]
    xs, ys = np.meshgrid(np.linspace(x0, x1, 5), np.linspace(y0, y1, 5))
    np.testing.assert_array_equal(grid[1:], np.stack([xs.ravel(), ys.ravel()], axis=-1))

    # Rosenbrock's window is (-2, 2) x (-1, 3): the 5 x 5 grid holds (1, 1), its minimiser,
    # as start 14 (y = 1 is the third row of 5, x = 1 the fourth column; start 0 is the
    # given one).
    assert (x0, x1, y0, y1) == (-2, 2, -1, 3)
    assert grid[14].tolist() == [1.0, 1.0]

    uniform = start_points(rosen, (-0.5, 0.5), 1000, "uniform", "domain", seed=3)
    low, high = np.array(rosen.domain).T
    assert uniform.shape == (1000, 2) and uniform[0].tolist() == [-0.5, 0.5]
    assert (uniform[1:] >= low).all() and (uniform[1:] <= high).all()
    np.testing.assert_array_equal(
        uniform, start_points(rosen, (-0.5, 0.5), 1000, "uniform", "domain", seed=3)
    )
    assert not np.array_equal(
        uniform, start_points(rosen, (-0.5, 0.5), 1000, "uniform", "domain", seed=4)
    )
    # a uniform draw covers the domain: each half of each axis gets about half the starts
    assert abs(np.mean(uniform[1:, 0] < (low[0] + high[0]) / 2) - 0.5) < 0.06


def test_grid_starts_on_a_minimiser_are_named(caplog) -> None:
    rosen = FUNCTIONS["rosenbrock"]
    with caplog.at_level(logging.WARNING, logger="torchopt_bench.tasks.starts"):
        start_points(rosen, (-0.5, 0.5), 26, "grid", "window")
    assert "start(s) 14 lie on a global minimiser" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="torchopt_bench.tasks.starts"):
        start_points(rosen, (-0.5, 0.5), 37, "grid", "window")  # 6 x 6: no (1, 1)
    assert "global minimiser" not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_starts": 0}, "task.n_starts must be a positive integer"),
        ({"n_starts": 5, "starts": "random"}, "task.starts='random' is not known"),
        ({"n_starts": 5, "start_region": "box"}, "task.start_region='box' is not known"),
        ({"lrs": []}, "task.lrs must be a non-empty list"),
        ({"lrs": [-1.0]}, "task.lrs must be a non-empty list"),
        ({"optimizers": {"sgd": 3}}, "are not optimizer factories"),
        ({"n_paths": 0}, "task.n_paths must be a positive integer"),
        ({"target_distance": 0.0}, "task.target_distance must be positive"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FunctionTask("rosenbrock", **kwargs)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_has_a_task_config_that_runs(name: str, tmp_path: Path) -> None:
    cfg = OmegaConf.load(CONF / "task" / f"{name}.yaml")
    function = FUNCTIONS[name]
    assert cfg.name == name
    assert cfg.start is None if function.n_dimensional else list(cfg.start) == list(function.start)
    task = instantiate(cfg, _convert_="all", n_starts=4, figures=False)
    assert task.start == function.start
    run(task, factory("sgd", lr=1e-6), 3, tmp_path)
    if function.n_dimensional:
        task = instantiate(cfg, _convert_="all", dim=3)
        assert task.start_rows.shape == (1, 3)


# -- the command line ----------------------------------------------------------------------


def test_compare_functions_experiment_writes_every_figure(cli, tmp_path: Path) -> None:
    """``experiment=compare_functions`` is a multirun by itself (no ``-m``): here one job,
    on a non-smooth function, small enough for the test suite."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep = tmp_path / "compare"
    result = cli(
        "experiment=compare_functions",
        "hydra.sweeper.params.task=bukin6",
        "trainer.steps=25",
        "task.n_starts=10",
        "task.lrs=[1e-3,1e-2]",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    job = sweep / "0"
    summary = json_of(job / "summary.json")
    assert summary["status"] == "ok" and summary["task"] == "bukin6"
    names = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
    assert summary["optimizers"] == names and set(summary["best_lr"]) == set(names)
    assert summary["n_starts"] == 10 and summary["n_runs"] == 6 * 2 * 10
    for field in ("success_rate", "final_gap_median", "diverged_fraction"):
        assert field in summary
    figures = ["trajectories", "loss_gap", "basins", "lr_sensitivity"]
    for name in [f"{f}.png" for f in figures] + ["paths.gif", "lr_table.md", "starts.csv"]:
        assert (job / name).stat().st_size > 0, name
    table = (job / "lr_table.md").read_text()
    assert all(f"| {n} |" in table for n in names)
    acc = EventAccumulator(str(job), size_guidance={"images": 0})
    acc.Reload()
    assert {f"figures/{f}" for f in figures} <= set(acc.Tags()["images"])


def json_of(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def test_many_starts_from_the_command_line(cli) -> None:
    result = cli(
        "task=himmelblau",
        "task.n_starts=26",
        "task.starts=grid",
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "trainer.steps=60",
    )
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert summary["status"] == "ok" and summary["n_runs"] == 26
    # Himmelblau from a grid over its domain: GD at 0.01 takes every start to a minimum.
    assert summary["success_rate"] == 1.0 and summary["steps_to_target_median"] < 60
    history = result.history
    assert len(history) == 61 and history["train/success"].iloc[-1] == 1.0
    for name in ("trajectories.png", "loss_gap.png", "basins.png", "starts.csv"):
        assert (result.run_dir / name).exists(), name


def test_basin_outcomes_name_the_minimiser_each_start_reached(tmp_path: Path) -> None:
    """On Himmelblau (four global minima) every grid start that succeeds is labelled with
    the minimiser nearest to its final point, computed here with numpy."""
    task = FunctionTask("himmelblau", n_starts=50, starts="grid", figures=False)
    _, fields = run(task, factory("sgd", lr=0.01), 150, tmp_path)
    frame = task.per_start()
    final = frame[["final_x0", "final_x1"]].to_numpy()
    minimizers = np.array(FUNCTIONS["himmelblau"].minimizers)
    nearest = np.linalg.norm(final[:, None] - minimizers, axis=-1).argmin(axis=1)
    success = frame["final_gap"].to_numpy() < 1e-6
    assert success.mean() > 0.9
    np.testing.assert_array_equal(frame["outcome"][success], nearest[success])
    assert (frame["outcome"][~success] == -1).all()
    assert set(nearest[success]) == {0, 1, 2, 3}  # the grid finds all four basins
    assert fields["success_rate"] == pytest.approx(success.mean())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n_starts", [1, 4])
def test_half_precision_runs_and_converges_on_the_sphere(
    dtype: torch.dtype, n_starts: int, tmp_path: Path
) -> None:
    """Gradient descent on f = x^2 + y^2 from [1, 1] at lr 0.1: x_t = x_0 (1 - 2 lr)^t,
    here each step rounded to the run's dtype, computed by hand with a multiplication
    (the optimizer subtracts lr * 2x instead: the two roundings may differ by an ulp a
    step). The distances to the minimiser (``target_distance``) go through cdist, which
    has no float16 or bfloat16 kernel."""
    lr, steps = 0.1, 20
    task = FunctionTask(
        "sphere", start=[1.0, 1.0], n_starts=n_starts, target_distance=0.05, figures=False
    )
    summary, fields = run(task, factory("sgd", lr=lr), steps, tmp_path, dtype=dtype)
    assert summary["status"] == "ok" and summary["steps"] == steps
    x = torch.tensor(1.0, dtype=dtype)
    factor = torch.tensor(1.0 - 2.0 * lr, dtype=dtype)
    for _ in range(steps):
        x = x * factor
    expected = float(x)  # 0.8^20 = 0.01153 in exact arithmetic
    eps = torch.finfo(dtype).eps
    assert fields["final_point"] == pytest.approx([expected, expected], rel=steps * eps)
    assert fields["final_gap"] == pytest.approx(2 * expected**2, rel=3 * steps * eps)
    assert fields["final_gap"] < 1e-3  # from f = 2
    # |x_t| < 0.05 / sqrt(2) from step 15 on: 0.8^15 = 0.0352 < 0.0354 < 0.8^14.
    frame = task.per_start()
    assert frame["steps_to_target"].iloc[0] == 15
    assert (frame["outcome"].iloc[:1] == 0).all()


def test_overflow_ceiling_leaves_the_sum_over_starts_finite() -> None:
    from torchopt_bench.tasks.function import overflow_ceiling

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        big = torch.finfo(dtype).max
        for n in (1, 3, 10_000):
            ceiling = overflow_ceiling(dtype, n)
            assert ceiling == big / (4 * n)
            # n values at the ceiling sum to a finite number in the dtype itself.
            values = torch.full((n,), ceiling, dtype=dtype)
            assert torch.isfinite(values.sum())
    assert overflow_ceiling(torch.float16, 1) == 65504 / 4


@pytest.mark.parametrize(
    ("dtype", "start", "lr", "reason"),
    [
        # f(100, 100) = 20,000 > 65,504 / 4 = 16,376: diverged at the start.
        (torch.float16, [100.0, 100.0], 0.1, "value above the overflow ceiling 1.64e+04"),
        # x_1 = -2e160 is finite, f(x_1) = 8e320 is not.
        (torch.float64, [1.0, 1.0], 1e160, "non-finite value"),
        # x_1 = 1e10 (1 - 2e300) overflows to -inf.
        (torch.float64, [1e10, 1e10], 1e300, "non-finite parameter"),
    ],
)
def test_divergence_reason_says_what_happened(
    dtype: torch.dtype, start: list[float], lr: float, reason: str, tmp_path: Path
) -> None:
    task = FunctionTask("sphere", start=start, figures=False)
    summary, _ = run(task, factory("sgd", lr=lr), 5, tmp_path, dtype=dtype)
    assert summary["status"] == "diverged"
    assert summary["diverged_reason"] == f"{reason} (1 start)"
    assert task.per_start()["diverged_reason"].iloc[0] == reason.split(" 1.64")[0]


def synthetic_starts(gaps_by_lr: dict[float, list[float]]) -> Any:
    """Rows of ``per_start`` for one optimizer: NaN gap = diverged, none under the target."""
    import pandas as pd

    rows = []
    for lr, gaps in gaps_by_lr.items():
        for i, gap in enumerate(gaps):
            rows.append(
                {
                    "optimizer": "sgd",
                    "lr": lr,
                    "label": f"sgd lr={lr:g}",
                    "start_index": i,
                    "final_gap": gap,
                    "steps_to_target": math.nan,
                    "diverged_at_step": 3.0 if math.isnan(gap) else math.nan,
                    "outcome": -2 if math.isnan(gap) else -1,
                }
            )
    return pd.DataFrame(rows)


def test_a_diverged_start_counts_as_the_worst_gap_in_the_ranking() -> None:
    """Rate 0.1: 9 of 10 starts diverged, the survivor at gap 1e-3; rate 0.01: every start
    alive, gaps 1, ..., 10. The survivors' median prefers 0.1; counting the diverged as
    infinite gaps, the median over all starts is inf at 0.1 and 5 at 0.01 (the 5th of 10
    sorted values, no interpolation)."""
    from torchopt_bench.tasks.function import best_rates, block_statistics

    nan = math.nan
    starts = synthetic_starts({0.1: [nan] * 9 + [1e-3], 0.01: [float(g) for g in range(1, 11)]})
    stats = block_statistics(starts)
    by_lr = stats.set_index("lr")
    assert by_lr.loc[0.1, "final_gap_median"] == 1e-3  # survivors only
    assert math.isnan(by_lr.loc[0.1, "final_gap_all_median"])  # the median start diverged
    assert by_lr.loc[0.01, "final_gap_all_median"] == 5.0
    assert by_lr.loc[0.1, "diverged_fraction"] == 0.9
    assert best_rates(stats)["lr"].tolist() == [0.01]
    # Equal medians over all starts: the smaller diverged fraction wins.
    starts = synthetic_starts({0.1: [nan, 1.0, 2.0, 2.0, 3.0], 0.01: [4.0, 1.0, 2.0, 2.0, 3.0]})
    assert best_rates(block_statistics(starts))["lr"].tolist() == [0.01]


def test_best_rate_is_not_the_one_where_most_starts_diverged(tmp_path: Path) -> None:
    """SGD on Rosenbrock from 100 starts over the domain: at lr 3e-3 most starts diverge
    and the few survivors sit lowest; the chosen rate is the small one, and the table
    shows the diverged fraction of every rate."""
    task = FunctionTask("rosenbrock", n_starts=100, lrs=[1e-4, 3e-3], figures=False)
    _, fields = run(task, factory("sgd"), 300, tmp_path)
    frame = task.per_start()
    dead = (frame["outcome"] == -2).groupby(frame["lr"]).mean()
    survivors = frame.groupby("lr")["final_gap"].median()  # NaN (diverged) skipped
    assert dead[3e-3] > 0.5 > dead[1e-4]
    assert survivors[3e-3] < survivors[1e-4]  # what used to pick 3e-3
    assert fields["best_lr"] == {"opt": 1e-4}
    table = (tmp_path / "lr_table.md").read_text()
    assert f"| {dead[3e-3]:.0%} |" in table and f"| {dead[1e-4]:.0%} |" in table
    assert "inf (diverged)" in table


def test_figures_say_what_their_statistics_are_over() -> None:
    """The gap plot's band is over the starts still alive and it shows the diverged
    fraction; the not-reached markers of two optimizers at the same rate do not sit on
    one spot; the basins title says the dots are starts."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from torchopt_bench.plots import plot_basins, plot_gap_curves, plot_lr_sensitivity

    steps = np.arange(5)
    curve = {
        "low": 1.0 / (1 + steps),
        "median": 2.0 / (1 + steps),
        "high": 3.0 / (1 + steps),
        "diverged": np.array([0.0, 0.0, 0.25, 0.5, 0.5]),
    }
    fig = plot_gap_curves({"sgd": curve}, target=1e-6)
    main, side = fig.axes
    assert "still alive" in main.get_ylabel()
    assert "diverged" in side.get_ylabel() and side.get_ylim() == (0.0, 100.0)
    np.testing.assert_array_equal(side.lines[0].get_ydata(), 100.0 * curve["diverged"])
    labels = [t.get_text() for t in main.get_legend().get_texts()]
    assert "sgd  [50% diverged]" in labels
    plt.close(fig)

    stats = pd.DataFrame(
        {
            "optimizer": ["a", "a", "b", "b"],
            "lr": [0.1, 1.0, 0.1, 1.0],
            "steps_to_target_median": [math.nan] * 4,
            "final_gap_median": [1.0, 2.0, 1.0, math.nan],
            "diverged_fraction": [0.0, 0.4, 0.0, 1.0],
        }
    )
    fig = plot_lr_sensitivity(stats, target=1e-6)
    left, right, dead = fig.axes
    a_top, b_top = left.lines[1].get_xdata(), left.lines[3].get_xdata()
    assert len(a_top) == len(b_top) == 2 and (np.abs(np.log10(a_top / b_top)) > 0.02).all()
    assert "never reached" in " ".join(t.get_text() for t in left.texts)
    assert [t.get_text() for t in right.texts] == ["40% div."]
    np.testing.assert_array_equal(dead.lines[1].get_ydata(), [0.0, 100.0])
    plt.close(fig)

    function = FUNCTIONS["himmelblau"]
    starts = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    fig = plot_basins(function, starts, {"sgd": np.array([0, -1, -2])}, steps=7)
    title = " ".join(fig.get_suptitle().split())  # the title is wrapped to the figure
    assert "which global minimiser each start reached after 7 steps" in title
    assert "each dot is a start" in title
    plt.close(fig)


def test_single_run_legend_gives_the_final_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One start that does not reach the target: the legend gives its final gap, not "ok";
    one that does: the step it did."""
    import matplotlib.pyplot as plt

    from torchopt_bench.tasks import function as function_module

    seen: list[str] = []
    original = function_module.plot_trajectories

    def spy(function, trajectories, **kwargs):
        seen.extend(trajectories)
        return original(function, trajectories, **kwargs)

    monkeypatch.setattr(function_module, "plot_trajectories", spy)
    task = FunctionTask("sphere", start=[1.0, 1.0])
    run(task, factory("sgd", lr=0.1), 3, tmp_path / "short")
    # f after 3 steps: 2 * 0.8^6 = 0.5243
    task = FunctionTask("sphere", start=[1.0, 1.0])
    run(task, factory("sgd", lr=0.25), 30, tmp_path / "long")
    # x_t = 0.5^t: f = 2 * 0.25^t < 1e-6 first at t = 11 (1.9e-7; t = 10: 1.9e-6)
    plt.close("all")
    assert seen[0] == "opt (lr 0.1), 3 steps: final gap 0.52, target not reached"
    assert seen[1].startswith("opt (lr 0.25), 30 steps: target at step 11, final gap ")
