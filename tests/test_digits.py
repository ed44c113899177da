"""task=digits: scikit-learn's 8x8 digits with an MLP or a small CNN, through the trainer
and through the application."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score

from torchopt_bench.models import SmallCNN
from torchopt_bench.optim import Adam
from torchopt_bench.runtime import seed_everything
from torchopt_bench.tasks import DigitsTask
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import Trainer


def run(task: DigitsTask, run_dir: Path, epochs: int = 15, **trainer):
    seed_everything(0)
    task.setup(torch.device("cpu"), torch.float32, seed=0)
    with RunRecorder(run_dir, tensorboard=False) as recorder:
        summary = Trainer(epochs=epochs, batch_size=64, progress=False, **trainer).fit(
            task, lambda p: Adam(p, lr=3e-3), recorder
        )
        summary.update(task.finish(run_dir, recorder, summary))
    return summary, recorder.history


def test_split_is_seeded_stratified_and_covers_every_image() -> None:
    target = load_digits().target
    task = DigitsTask()
    task.setup(torch.device("cpu"), torch.float32, seed=0)
    rows = np.concatenate(list(task.rows.values()))
    assert sorted(rows.tolist()) == list(range(1797))
    assert {k: len(v) for k, v in task.rows.items()} == {"train": 1077, "val": 360, "test": 360}
    for name, split_rows in task.rows.items():
        share = np.bincount(target[split_rows], minlength=10) / len(split_rows)
        np.testing.assert_allclose(share, np.bincount(target) / 1797, atol=0.01, err_msg=name)
    again = DigitsTask()
    again.setup(torch.device("cpu"), torch.float32, seed=0)
    other = DigitsTask()
    other.setup(torch.device("cpu"), torch.float32, seed=1)
    assert again.rows["val"].tolist() == task.rows["val"].tolist()
    assert other.rows["val"].tolist() != task.rows["val"].tolist()
    # Pixels 0-16 scaled to [0, 1].
    assert float(task.X["train"].max()) == 1.0 and float(task.X["train"].min()) == 0.0


@pytest.mark.parametrize(("model", "epochs"), [("mlp", 15), ("cnn", 8)])
def test_both_models_learn_the_digits(tmp_path: Path, model: str, epochs: int) -> None:
    task = DigitsTask(model=model)
    summary, history = run(task, tmp_path, epochs=epochs)
    assert summary["status"] == "ok"
    assert summary["steps"] == epochs * 17  # ceil(1077 / 64) = 17 batches per epoch
    # Reported accuracies are what scikit-learn counts on the model's predictions.
    task.model.eval()
    with torch.no_grad():
        predicted = task.model(task.X["test"]).argmax(dim=1).numpy()
    assert summary["test_accuracy"] == pytest.approx(
        accuracy_score(task.y["test"].numpy(), predicted), abs=1e-12
    )
    # Well above chance (0.1); small networks reach ~0.95-0.98 on this set.
    assert summary["val_accuracy"] > 0.9 and summary["test_accuracy"] > 0.9
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy"} <= set(history[-1])
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "confusion.png").is_file()


def test_target_accuracy_and_resume(tmp_path: Path) -> None:
    summary, history = run(DigitsTask(target_accuracy=0.9), tmp_path / "a", epochs=6)
    first = next(r["epoch"] for r in history if r["val/accuracy"] >= 0.9)
    assert summary["time_to_target"]["val/accuracy"]["epoch"] == first
    run(DigitsTask(), tmp_path / "b", epochs=3, checkpoint_every=3)
    resumed, resumed_history = run(DigitsTask(), tmp_path / "b", epochs=6, resume=True)
    assert resumed["resumed_from_epoch"] == 3
    assert resumed_history == history


def test_small_cnn_takes_flat_or_image_input_and_checks_its_sizes() -> None:
    net = SmallCNN(8, channels=(4, 6), num_classes=10)
    x = torch.randn(5, 64)
    torch.testing.assert_close(net(x), net(x.reshape(5, 1, 8, 8)))
    assert net(x).shape == (5, 10)
    with pytest.raises(ValueError, match="Invalid channels"):
        SmallCNN(channels=(4,))
    with pytest.raises(ValueError, match="Invalid task.model='resnet'"):
        DigitsTask(model="resnet")


def test_cli_runs_digits_and_writes_the_usual_outputs(cli) -> None:
    result = cli("task=digits", "task.model=cnn", "trainer.epochs=2", "trainer.batch_size=128")
    assert result.returncode == 0, result.stderr
    summary = result.summary
    assert (summary["task"], summary["model"], summary["status"]) == ("digits", "cnn", "ok")
    assert summary["steps"] == 2 * 9
    assert list(result.history["epoch"]) == [1, 2]
    assert any(p.name.startswith("events.out.tfevents") for p in result.run_dir.iterdir())
