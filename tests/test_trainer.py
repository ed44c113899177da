"""The trainer drives every optimizer config of ``conf/optimizer/``, reading capabilities."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from torchopt_bench.optim import Capabilities
from torchopt_bench.tasks import FunctionTask
from torchopt_bench.tasks.base import Task
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import Trainer, capabilities_of, trainer_from_config

CONF = Path(__file__).resolve().parents[1] / "conf"
OPTIMIZER_CONFIGS = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
FALLBACK = instantiate(OmegaConf.load(CONF / "trainer" / "default.yaml").fallback_optimizer)


def factory(name: str, **overrides: Any):
    cfg = OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return instantiate(cfg)


class TinyRegression(Task):
    """Least squares with a two-layer network on fixed random data, two mini-batches."""

    kind = "network"
    name = "tiny"

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(64, 5, generator=gen, dtype=dtype)
        self.y = self.X @ torch.randn(5, generator=gen, dtype=dtype)
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
        self.modes: list[bool] = []

    def parameters(self):
        return list(self.model.parameters())

    def plan(self, trainer_cfg: Mapping[str, Any]) -> int:
        return trainer_cfg["epochs"]

    def batches(self, epoch: int) -> Iterator[slice]:
        yield slice(0, 32)
        yield slice(32, 64)

    def loss(self, batch: slice) -> torch.Tensor:
        return ((self.model(self.X[batch]).squeeze(-1) - self.y[batch]) ** 2).mean()

    def evaluate(self, epoch: int) -> dict[str, float]:
        self.modes.append(self.model.training)
        with torch.no_grad():
            return {"train/loss": float(self.loss(slice(None)))}

    def initial_row(self) -> dict[str, float]:
        return self.evaluate(0)

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()


@pytest.mark.parametrize("name", OPTIMIZER_CONFIGS)
def test_trainer_drives_every_optimizer_on_a_test_function(name, tmp_path):
    task = FunctionTask("rosenbrock")
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        summary = Trainer(steps=15, progress=False, fallback_optimizer=FALLBACK).fit(
            task, factory(name), recorder
        )
    assert summary["status"] in ("ok", "diverged")
    assert summary["steps"] == len(recorder.history) - 1 or summary["status"] == "diverged"
    assert "epochs" not in summary  # a test function counts steps, not epochs
    # The point moved away from the start (every method takes a nonzero first step here).
    assert task.trajectory()[-1].tolist() != [-0.5, 0.5]


@pytest.mark.parametrize("name", OPTIMIZER_CONFIGS)
def test_trainer_drives_every_optimizer_on_a_network(name, tmp_path):
    task = TinyRegression()
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        summary = Trainer(epochs=3, progress=False, fallback_optimizer=FALLBACK).fit(
            task, factory(name), recorder
        )
    assert summary["status"] == "ok"
    assert summary["steps"] == 6  # 3 epochs of 2 batches
    assert summary["epochs"] == 3
    assert summary["final_loss"] == recorder.history[-1]["train/loss"]
    assert all(not training for training in task.modes)  # evaluation in eval mode


def test_capabilities_are_read_through_hydra_partials():
    assert capabilities_of(factory("lbfgs")).needs_closure
    assert capabilities_of(factory("sophia")).needs_create_graph
    assert capabilities_of(factory("schedulefree_adamw")).has_train_eval
    assert capabilities_of(factory("muon")).matrix_only
    assert capabilities_of(torch.optim.Adam) == Capabilities()


def test_matrix_only_method_sends_other_tensors_to_the_fallback(tmp_path):
    task = TinyRegression()
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    optimizers = Trainer(fallback_optimizer=FALLBACK).build_optimizers(factory("muon"), task)
    assert [type(o).__name__ for o in optimizers] == ["Muon", "Adam"]
    assert all(p.ndim == 2 for g in optimizers[0].param_groups for p in g["params"])
    assert all(p.ndim == 1 for g in optimizers[1].param_groups for p in g["params"])
    with pytest.raises(ValueError, match="fallback_optimizer"):
        Trainer(fallback_optimizer=None).build_optimizers(factory("muon"), task)


def test_gradient_descent_matches_a_hand_loop_on_a_network(tmp_path):
    """One trainer step per batch is one SGD step on that batch's loss."""
    task = TinyRegression()
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    reference = TinyRegression()
    reference.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        Trainer(epochs=2, progress=False).fit(task, factory("sgd", lr=0.1), recorder)
    for _ in range(2):
        for batch in reference.batches(0):
            grads = torch.autograd.grad(reference.loss(batch), reference.parameters())
            with torch.no_grad():
                for p, g in zip(reference.parameters(), grads):
                    p -= 0.1 * g
    for got, want in zip(task.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


class NoTrainLoss(TinyRegression):
    """Reports no train/loss of its own: the trainer's mean of the step losses stands in."""

    def evaluate(self, epoch: int) -> dict[str, float]:
        return {}

    def initial_row(self) -> None:
        return None


def test_train_loss_defaults_to_the_mean_of_the_epochs_step_losses(tmp_path):
    task = NoTrainLoss()
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    reference = TinyRegression()
    reference.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        Trainer(epochs=2, progress=False).fit(task, factory("sgd", lr=0.1), recorder)
    for epoch in range(2):
        # The loss of each batch before its step, as the hand loop computes it.
        step_losses = []
        for batch in reference.batches(epoch):
            loss = reference.loss(batch)
            step_losses.append(float(loss))
            grads = torch.autograd.grad(loss, reference.parameters())
            with torch.no_grad():
                for p, g in zip(reference.parameters(), grads):
                    p -= 0.1 * g
        assert recorder.history[epoch]["train/loss"] == pytest.approx(
            sum(step_losses) / 2, rel=1e-14
        )


def test_checkpoint_settings_leave_a_function_task_alone(tmp_path, caplog):
    task = FunctionTask("rosenbrock")
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(tmp_path, tensorboard=False) as recorder:
        summary = Trainer(steps=5, progress=False, checkpoint_every=1, resume=True).fit(
            task, factory("sgd"), recorder
        )
    assert summary["status"] == "ok" and summary["steps"] == 5
    assert not (tmp_path / "checkpoint.pt").exists()
    assert "apply to network tasks" in caplog.text


# --- Settings -----------------------------------------------------------------------------

TRAINER_DEFAULTS = OmegaConf.load(CONF / "trainer" / "default.yaml")

BAD_SETTINGS = [
    ("steps", "abc", "a non-negative integer"),
    ("steps", -3, "a non-negative integer"),
    ("steps", 2.5, "a non-negative integer"),
    ("steps", True, "a non-negative integer"),
    ("epochs", "ten", "a non-negative integer"),
    ("epochs", -1, "a non-negative integer"),
    ("checkpoint_every", "x", "a non-negative number of epochs"),
    ("checkpoint_every", -2, "a non-negative number of epochs"),
    ("batch_size", 0, "a positive integer or null"),
    ("batch_size", "big", "a positive integer or null"),
    ("progress", "maybe", "true or false"),
    ("log_norms", 1, "true or false"),
    ("resume", "yes", "true or false"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_SETTINGS)
def test_a_bad_trainer_setting_names_the_key_the_value_and_what_it_must_be(key, value, expected):
    cfg = OmegaConf.merge(TRAINER_DEFAULTS, {key: value})
    del cfg["fallback_optimizer"]
    with pytest.raises(ValueError) as info:
        trainer_from_config(cfg, FALLBACK)
    message = str(info.value)
    assert message.startswith(f"trainer.{key} must be {expected}")
    assert f"got {value!r}" in message
    assert f"trainer.{key}=" in message  # how to set it


def test_whole_numbers_written_as_floats_are_taken():
    trainer = trainer_from_config({"steps": 1e3, "epochs": 5.0, "batch_size": 64.0}, None)
    assert (trainer.steps, trainer.epochs, trainer.batch_size) == (1000, 5, 64)
    assert all(type(v) is int for v in (trainer.steps, trainer.epochs, trainer.batch_size))
