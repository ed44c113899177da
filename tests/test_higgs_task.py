"""The Higgs task with the trainer: checkpoints and an exact resume, time to target, the
validation cut applied to the leaderboard splits, the notebook's run, figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import test_higgs_data
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from torchopt_bench.data.higgs import load_higgs
from torchopt_bench.metrics import ams, best_ams, weighted_auc
from torchopt_bench.models import MLP
from torchopt_bench.runtime import seed_everything
from torchopt_bench.tasks.higgs import HiggsTask, weighted_bce
from torchopt_bench.tasks.network import rows
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import CHECKPOINT_NAME, Trainer

events = test_higgs_data.events
served_sample = test_higgs_data.served_sample  # the local HTTP server fixture

CONF = Path(__file__).resolve().parents[1] / "conf"
SAMPLE = (
    Path(__file__).resolve().parents[2]
    / "shared/data/higgs/atlas-higgs-challenge-2014-v2-sample.csv"
)
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"no real sample at {SAMPLE}")

# 240 training, 60 public and 60 private leaderboard events.
SETS = "t" * 240 + "b" * 60 + "v" * 60


@pytest.fixture
def higgs_file(tmp_path: Path) -> Path:
    path = tmp_path / "higgs.csv"
    events(SETS, seed=3).to_csv(path, index=False)
    return path


def optimizer(name: str, **overrides: Any):
    cfg = OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg)


class Stopped(RuntimeError):
    """Stands in for a run killed in the middle."""


class StopsAt(HiggsTask):
    """The Higgs task, but the run dies during the evaluation of epoch ``stop``."""

    def __init__(self, stop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stop = stop

    def evaluate(self, epoch: int) -> dict[str, float]:
        if epoch == self.stop:
            raise Stopped(f"stopped at epoch {epoch}")
        return super().evaluate(epoch)


def fit(task: HiggsTask, run_dir: Path, seed: int = 0, opt: str = "adam", **trainer: Any):
    """One run as the application does it: seed, set up, train; returns (summary, history)."""
    seed_everything(seed)
    task.setup(torch.device("cpu"), torch.float32, seed)
    with RunRecorder(run_dir, tensorboard=True) as recorder:
        summary = Trainer(progress=False, **trainer).fit(task, optimizer(opt, lr=0.01), recorder)
        summary.update(task.finish(run_dir, recorder, summary))
        return summary, [dict(row) for row in recorder.history]


def metrics_of(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items()} for row in history]


# --- Checkpoints and resume ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt", "batch_size"), [("adam", 64), ("momentum", 50), ("rmsprop", None)]
)
def test_resume_reaches_exactly_the_uninterrupted_result(
    tmp_path: Path, higgs_file: Path, opt: str, batch_size: int | None
) -> None:
    data = {"path": str(higgs_file), "cache": False}
    options = {"epochs": 5, "batch_size": batch_size, "checkpoint_every": 2}

    whole = HiggsTask(data=data)
    summary, history = fit(whole, tmp_path / "whole", opt=opt, **options)

    # A run that dies during epoch 4: its last checkpoint is epoch 2's.
    stopped = StopsAt(4, data=data)
    with pytest.raises(Stopped):
        fit(stopped, tmp_path / "stopped", opt=opt, **options)
    saved = torch.load(tmp_path / "stopped" / CHECKPOINT_NAME, weights_only=True)
    assert saved["epoch"] == 2
    assert [row["epoch"] for row in saved["history"]] == [1, 2]

    # A fresh process with other global RNG states continues it.
    resumed = HiggsTask(data=data)
    summary_r, history_r = fit(
        resumed, tmp_path / "stopped", seed=0, opt=opt, resume=True, **options
    )
    assert summary_r["resumed_from_epoch"] == 2
    assert metrics_of(history_r) == metrics_of(history)  # every metric of every epoch, exactly
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    for key in ("steps", "final_loss", "val_auc", "val_ams", "public_ams", "private_ams"):
        assert summary_r[key] == summary[key], key

    # TensorBoard shows one value per epoch: the stopped run's events after its checkpoint
    # (epoch 3) are superseded by the resumed run's.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(tmp_path / "stopped")).Reload().Scalars("val/auc")
    assert [e.step for e in scalars] == [row["step"] for row in history]
    assert [e.value for e in scalars] == pytest.approx([r["val/auc"] for r in history], rel=1e-6)


def test_resume_restores_the_global_rngs(tmp_path: Path, higgs_file: Path) -> None:
    """A draw from the global generators after the checkpoint is the same draw as in the
    uninterrupted run, whatever state the new process starts in."""
    data = {"path": str(higgs_file), "cache": False}

    class Draws(HiggsTask):
        def evaluate(self, epoch: int) -> dict[str, float]:
            row = super().evaluate(epoch)
            row["draw/torch"] = float(torch.rand(()))
            row["draw/numpy"] = float(np.random.random())  # noqa: NPY002
            return row

    _, history = fit(Draws(data=data), tmp_path / "a", epochs=4, batch_size=64, checkpoint_every=2)
    fit(Draws(data=data), tmp_path / "b", epochs=2, batch_size=64, checkpoint_every=2)
    # The resumed process starts from the seed's fresh state, not the checkpoint's.
    _, resumed = fit(
        Draws(data=data), tmp_path / "b", seed=0, epochs=4, batch_size=64, resume=True
    )
    assert [r["draw/torch"] for r in resumed] == [r["draw/torch"] for r in history]
    assert [r["draw/numpy"] for r in resumed] == [r["draw/numpy"] for r in history]


def test_resume_without_checkpoint_starts_from_the_beginning(
    tmp_path: Path, higgs_file: Path
) -> None:
    data = {"path": str(higgs_file), "cache": False}
    _, plain = fit(HiggsTask(data=data), tmp_path / "a", epochs=2, batch_size=64)
    summary, resumed = fit(
        HiggsTask(data=data), tmp_path / "b", epochs=2, batch_size=64, resume=True
    )
    assert "resumed_from_epoch" not in summary
    assert metrics_of(resumed) == metrics_of(plain)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path, higgs_file: Path) -> None:
    data = {"path": str(higgs_file), "cache": False}
    fit(HiggsTask(data=data), tmp_path, epochs=2, batch_size=64, checkpoint_every=1)
    with pytest.raises(ValueError, match=r"another run \(batch_size: 64 in the checkpoint, 32"):
        fit(HiggsTask(data=data), tmp_path, epochs=3, batch_size=32, resume=True)


def test_resume_refuses_other_optimizer_settings(tmp_path: Path, higgs_file: Path) -> None:
    """The checkpoint's param groups would win over a changed learning rate while the
    recorded config said otherwise: resuming with other settings is refused, by name."""
    data = {"path": str(higgs_file), "cache": False}
    seed_everything(0)
    task = HiggsTask(data=data)
    task.setup(torch.device("cpu"), torch.float32, 0)
    options = {"epochs": 2, "batch_size": 64, "checkpoint_every": 1, "progress": False}
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        Trainer(**options).fit(task, optimizer("adam", lr=0.01), recorder)
    task = HiggsTask(data=data)
    task.setup(torch.device("cpu"), torch.float32, 0)
    options.update(epochs=3, resume=True)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        with pytest.raises(
            ValueError, match=r"another run \(optimizer.lr: 0.01 in the checkpoint, 0.05 now\)"
        ):
            Trainer(**options).fit(task, optimizer("adam", lr=0.05), recorder)
        # The same settings continue it.
        summary = Trainer(**options).fit(task, optimizer("adam", lr=0.01), recorder)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs"] == 3


def test_resume_refuses_another_seed_and_fewer_epochs(tmp_path: Path, higgs_file: Path) -> None:
    """The seed drew the splits and the initial weights: another seed would continue the
    checkpoint on other splits. Fewer epochs than the checkpoint holds would leave
    summary and config disagreeing. Both are refused by name."""
    data = {"path": str(higgs_file), "cache": False}
    fit(HiggsTask(data=data), tmp_path, epochs=3, batch_size=64, checkpoint_every=1)
    with pytest.raises(ValueError, match=r"another run \(seed: 0 in the checkpoint, 7 now\)"):
        fit(HiggsTask(data=data), tmp_path, seed=7, epochs=4, batch_size=64, resume=True)
    with pytest.raises(ValueError, match=r"is at epoch 3, past trainer.epochs=2; set trainer"):
        fit(HiggsTask(data=data), tmp_path, epochs=2, batch_size=64, resume=True)
    with pytest.raises(ValueError, match=r"another run \(optimizers: \['Adam'\] in the "):
        fit(HiggsTask(data=data), tmp_path, opt="momentum", epochs=4, batch_size=64, resume=True)


def test_compilation_of_a_fused_update_is_kept_out_of_the_step_time(
    tmp_path: Path, higgs_file: Path
) -> None:
    """A fused optimizer compiles its update during its first step; ``wall_time_s`` leaves
    that out and ``compile_time_s`` holds it (the process-wide compile log's seconds)."""
    from torchopt_bench.optim import _fused

    data = {"path": str(higgs_file), "cache": False}
    seed_everything(0)
    task = HiggsTask(data=data, model={"hidden": [7, 5]})  # a layout no test compiles
    task.setup(torch.device("cpu"), torch.float32, 0)
    before = len(_fused.cache_info()["compiles"])
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        summary = Trainer(epochs=2, batch_size=256, progress=False).fit(
            task, optimizer("rmsprop", lr=0.01, fused=True), recorder
        )
    compiled = [seconds for _, _, seconds in _fused.cache_info()["compiles"][before:]]
    assert compiled, "the fused update did not compile in this run"
    assert summary["compile_time_s"] == pytest.approx(sum(compiled))
    assert 0 < summary["wall_time_s"] < summary["compile_time_s"]


def test_checkpoint_interval_is_validated() -> None:
    with pytest.raises(ValueError, match="checkpoint_every must be a non-negative"):
        Trainer(checkpoint_every=-1)


# --- The training step's operations ---------------------------------------------------------


def _module_by_module(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP's output by calling its submodules in turn, as ``nn.Sequential`` does."""
    for module in model:
        x = module(x)
    return x.squeeze(-1)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "silu"])
def test_mlp_forward_is_its_modules_called_in_turn(activation: str) -> None:
    torch.manual_seed(0)
    model = MLP(7, hidden=(6, 5), activation=activation)
    x = torch.randn(33, 7)
    kept = x.clone()
    out = model(x)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    ref = _module_by_module(model, x)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(model.parameters()))
    assert torch.equal(out, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.equal(g, r)
    # The in-place activation works on the layers' outputs, never on the input.
    assert torch.equal(x, kept)
    assert list(model.state_dict()) == [f"{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")]


def test_mlp_second_derivatives_match_the_modules() -> None:
    # Hessian-vector products (Newton, Sophia) differentiate through the in-place ReLU.
    torch.manual_seed(1)
    model = MLP(5, hidden=(8, 8))
    x, v = torch.randn(20, 5), [torch.randn_like(p) for p in model.parameters()]

    def hvp(forward) -> list[torch.Tensor]:
        grads = torch.autograd.grad(
            forward(x).sigmoid().sum(), list(model.parameters()), create_graph=True
        )
        dot = sum((g * u).sum() for g, u in zip(grads, v, strict=True))
        return list(torch.autograd.grad(dot, list(model.parameters()), allow_unused=True))

    for h, r in zip(hvp(model), hvp(lambda t: _module_by_module(model, t)), strict=True):
        torch.testing.assert_close(h, r, rtol=0, atol=0)


def test_rows_gathers_an_index_batch_and_views_the_full_batch() -> None:
    data = torch.arange(40.0).reshape(10, 4)
    idx = torch.tensor([7, 2, 2, 9])
    np.testing.assert_array_equal(rows(data, idx).numpy(), data.numpy()[[7, 2, 2, 9]])
    np.testing.assert_array_equal(rows(data[:, 0], idx).numpy(), [28.0, 8.0, 8.0, 36.0])
    whole = rows(data, slice(None))
    assert whole.data_ptr() == data.data_ptr() and whole.shape == data.shape


def test_loss_of_an_index_batch_is_the_weighted_mean_event_loss(higgs_file: Path) -> None:
    task = HiggsTask(data={"path": str(higgs_file)})
    seed_everything(0)
    task.setup(torch.device("cpu"), torch.float32, 0)
    train = task.splits["train"]
    idx = torch.tensor([5, 0, 17, 3, 3, 11])
    loss = task.loss(idx)
    with torch.no_grad():
        z = task.model(train.X[idx]).double().numpy()
    y, w = train.y.numpy()[idx.numpy()], train.loss_w.numpy()[idx.numpy()].astype(np.float64)
    # -[y log s(z) + (1 - y) log(1 - s(z))], written stably.
    per_event = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    assert float(loss) == pytest.approx((w * per_event).sum() / w.sum(), rel=1e-6)
    assert weighted_bce(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0])).item() == (
        pytest.approx(np.log(2.0))
    )


# --- Time to target ----------------------------------------------------------------------------


def test_time_to_target_is_the_first_epoch_reaching_it(tmp_path: Path, higgs_file: Path) -> None:
    data = {"path": str(higgs_file), "cache": False}
    # The target is the median of the validation AUCs of the same run without a target.
    _, history = fit(HiggsTask(data=data), tmp_path / "a", epochs=6, batch_size=64)
    aucs = [row["val/auc"] for row in history if row["epoch"] > 0]
    target = float(np.median(aucs))
    first = next(i for i, auc in enumerate(aucs, start=1) if auc >= target)

    summary, history = fit(
        HiggsTask(data=data, target_auc=target, target_ams=1e9),
        tmp_path / "b",
        epochs=6,
        batch_size=64,
    )
    reached = summary["time_to_target"]["val/auc"]
    assert reached["reached"] and reached["epoch"] == first
    steps_per_epoch = -(-summary["events"]["train"] // 64)
    assert reached["steps"] == summary["steps_to_target"] == first * steps_per_epoch
    assert 0 < reached["wall_time_s"] == summary["time_to_target_s"] <= summary["wall_time_s"]
    assert reached["elapsed_s"] >= reached["wall_time_s"]
    assert summary["time_to_target"]["val/ams"] == {"target": 1e9, "reached": False}


# --- The leaderboard splits ------------------------------------------------------------------


def test_validation_cut_is_applied_unchanged_to_public_and_private(
    tmp_path: Path, higgs_file: Path
) -> None:
    task = HiggsTask(data={"path": str(higgs_file), "cache": False})
    summary, _ = fit(task, tmp_path, epochs=3, batch_size=64)
    task.model.eval()

    def scores(split):
        with torch.no_grad():
            return torch.sigmoid(task.model(torch.as_tensor(split.X)).double()).numpy()

    val = task.data.val
    best, cut = best_ams(val.y, scores(val), val.w)
    assert summary["val_threshold"] == pytest.approx(cut, rel=1e-12)
    assert summary["val_ams"] == pytest.approx(best, rel=1e-12)
    for name, split in (("public", task.data.test_public), ("private", task.data.test_private)):
        selected = scores(split) >= cut
        s = split.w[selected & (split.y == 1)].sum()
        b = split.w[selected & (split.y == 0)].sum()
        assert summary[f"{name}_ams"] == pytest.approx(ams(s, b, 10.0), rel=1e-12)
        assert summary[f"{name}_auc"] == pytest.approx(
            weighted_auc(split.y, scores(split), split.w)
        )
    assert summary["events"] == {"train": 192, "val": 48, "test_public": 60, "test_private": 60}


def test_figures_are_written_and_sent_to_tensorboard(tmp_path: Path, higgs_file: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(
        HiggsTask(data={"path": str(higgs_file), "cache": False}),
        tmp_path,
        epochs=2,
        batch_size=64,
    )
    names = ["curves", "roc", "ams_threshold", "scores"]
    for name in names:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    events_ = EventAccumulator(str(tmp_path), size_guidance={"images": 0}).Reload()
    assert {f"figures/{n}" for n in names} <= set(events_.Tags()["images"])
    assert {"val/auc", "val/ams", "train/loss"} <= set(events_.Tags()["scalars"])


# --- The course notebook --------------------------------------------------------------------


@needs_sample
def test_notebook_experiment_is_full_batch_gradient_descent_on_kaggleweight(cli) -> None:
    """``experiment=notebook_higgs`` is 100 steps of ``theta -= 0.001 * grad`` on the
    KaggleWeight-weighted BCE of the first 1000 events' training split: a hand loop."""
    result = cli(
        "experiment=notebook_higgs", f"task.data.path={SAMPLE}", "trainer.checkpoint_every=100"
    )
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert (summary["steps"], summary["optimizer"], summary["lr"]) == (100, "sgd", 0.001)
    assert summary["data"]["rows"] == 1000
    assert sum(summary["events"].values()) == 1000

    data = load_higgs(SAMPLE, max_events=1000, cache=False, seed=0)
    X = torch.as_tensor(data.train.X)
    y = torch.as_tensor(data.train.y)
    w = torch.as_tensor(data.train.w_file, dtype=torch.float32)
    # The file's KaggleWeight column, unscaled.
    raw = pd.read_csv(SAMPLE, nrows=1000).set_index("EventId")["KaggleWeight"]
    np.testing.assert_array_equal(data.train.w_file, raw.loc[data.train.event_id].to_numpy())

    torch.manual_seed(0)
    model = MLP(X.shape[1])
    for _ in range(100):
        loss = (
            w * F.binary_cross_entropy_with_logits(model(X), y, reduction="none")
        ).sum() / w.sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads, strict=True):
                p -= 0.001 * g
    saved = torch.load(result.run_dir / CHECKPOINT_NAME, weights_only=True)["task"]["model"]
    for (name, p), (_, q) in zip(model.state_dict().items(), saved.items(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        final = float(
            (w * F.binary_cross_entropy_with_logits(model(X), y, reduction="none")).sum() / w.sum()
        )
    assert summary["final_loss"] == pytest.approx(final, rel=1e-5)


@needs_sample
@pytest.mark.slow
def test_cli_resume_of_a_run_continues_it_exactly(cli, tmp_path: Path) -> None:
    """Resume through the application: the same hydra.run.dir with trainer.resume=true."""
    common = [
        "task=higgs",
        f"task.data.path={SAMPLE}",
        "task.data.max_events=3000",
        "trainer.batch_size=256",
        "trainer.checkpoint_every=2",
        "optimizer=nesterov",
        "optimizer.lr=0.01",
    ]
    whole = cli(*common, "trainer.epochs=4", run_dir=tmp_path / "whole")
    first = cli(*common, "trainer.epochs=2", run_dir=tmp_path / "part")
    second = cli(*common, "trainer.epochs=4", "trainer.resume=true", run_dir=tmp_path / "part")
    for result in (whole, first, second):
        assert result.returncode == 0, result.stderr
    a, b = whole.history, second.history
    pd.testing.assert_frame_equal(a, b)
    assert second.summary["resumed_from_epoch"] == 2
    for key in ("final_loss", "val_auc", "val_ams", "public_ams", "public_auc"):
        assert second.summary[key] == whole.summary[key]
    assert json.loads((tmp_path / "part" / "summary.json").read_text())["status"] == "ok"

    # A resume the checkpoint refuses leaves the finished run's result as it was.
    kept = (tmp_path / "part" / "summary.json").read_text()
    refused = cli(
        *common[:-2],
        "optimizer=adam",
        "trainer.epochs=4",
        "trainer.resume=true",
        run_dir=tmp_path / "part",
    )
    assert refused.returncode == 1
    assert "belongs to another run" in refused.stderr
    assert (tmp_path / "part" / "summary.json").read_text() == kept
    failed = json.loads((tmp_path / "part" / "summary.failed.json").read_text())
    assert failed["status"] == "failed" and "belongs to another run" in failed["error"]


@needs_sample
def test_cli_downloads_the_file_when_asked(cli, tmp_path: Path, served_sample) -> None:
    """task.data.download=true through the application, from a real local HTTP server."""
    base, sha256 = served_sample
    target = tmp_path / "data" / "higgs.csv.gz"
    result = cli(
        "task=higgs",
        f"task.data.path={target}",
        "task.data.download=true",
        f"task.data.url={base}/sample.csv.gz",
        f"task.data.sha256={sha256}",
        "task.data.max_events=1000",
        "trainer.epochs=1",
    )
    assert result.returncode == 0, result.stderr
    assert result.summary["data"]["sha256"] == sha256
    assert target.is_file()


def test_a_non_finite_metric_is_named_in_the_divergence_reason(
    tmp_path: Path, higgs_file: Path
) -> None:
    class NanLoss(HiggsTask):
        def evaluate(self, epoch: int) -> dict[str, float]:
            return {**super().evaluate(epoch), "val/loss": float("nan")}

    seed_everything(0)
    task = NanLoss(data={"path": str(higgs_file), "cache": False})
    task.setup(torch.device("cpu"), torch.float32, 0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        summary = Trainer(epochs=3, batch_size=64, progress=False).fit(
            task, optimizer("adam", lr=0.01), recorder
        )
        history = recorder.write_history().read_text().splitlines()
    assert summary["status"] == "diverged" and summary["epochs"] == 1
    assert summary["diverged_reason"] == "non-finite metric (val/loss = nan)"
    # The measured NaN is written as such, not as the empty cell of a value not measured.
    columns = history[0].split(",")
    last = dict(zip(columns, history[-1].split(",")))
    assert last["val/loss"] == "nan"
    assert float(last["val/auc"]) > 0
