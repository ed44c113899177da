"""Classifying scikit-learn's handwritten digits: a real network task with no download.

The data are the 1,797 8x8 grey-level images of digits 0-9 that ship with scikit-learn
(``sklearn.datasets.load_digits``, the test set of the UCI "Optical Recognition of
Handwritten Digits" data), pixel values 0-16, scaled here to [0, 1]. They are split once,
seeded and stratified by class (``sklearn.model_selection.train_test_split``), into
train, validation and test; the network is either an MLP on the 64 pixels
(:class:`~torchopt_bench.models.MLP`) or a small CNN on the 8x8 image
(:class:`~torchopt_bench.models.SmallCNN`), trained with the mean cross-entropy.

Per epoch the history holds ``train/loss`` (the mean mini-batch loss of the epoch),
``train/accuracy``, ``val/loss`` and ``val/accuracy``; the summary adds the test loss and
accuracy of the final model, and ``curves.png`` and ``confusion.png`` are written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split
from torch import Tensor

from ..models import MLP, SmallCNN
from ..network_figures import curves_figure
from ..tracking import RunRecorder, describe_file
from .network import NetworkTask, rows

log = logging.getLogger(__name__)

__all__ = ["DigitsTask"]

MODELS = ("mlp", "cnn")


class DigitsTask(NetworkTask):
    """Ten-class classification of 8x8 digit images.

    Args:
        name: the task name.
        model: ``mlp`` or ``cnn``.
        hidden: hidden layer widths of the MLP.
        channels: the two convolution widths of the CNN.
        val_fraction: share of the images held out for validation (stratified, seeded).
        test_fraction: share held out for the final test.
        target_accuracy: time-to-target goal for ``val/accuracy`` (None: none).
    """

    def __init__(
        self,
        name: str = "digits",
        model: str = "mlp",
        hidden: Sequence[int] = (128, 64),
        channels: Sequence[int] = (16, 32),
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        target_accuracy: float | None = None,
    ) -> None:
        super().__init__({"val/accuracy": target_accuracy})
        if model not in MODELS:
            raise ValueError(f"Invalid task.model={model!r}: choose one of {', '.join(MODELS)}")
        if not (
            0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                f"task.val_fraction and task.test_fraction must be in (0, 1) with a sum below "
                f"1, got {val_fraction} and {test_fraction}"
            )
        self.name = name
        self.model_name = model
        self.hidden = [int(h) for h in hidden]
        self.channels = [int(c) for c in channels]
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        digits = load_digits()
        X = digits.data.astype(np.float64) / 16.0
        y = digits.target.astype(np.int64)
        rows = np.arange(len(y))
        rest, test = train_test_split(
            rows, test_size=self.test_fraction, stratify=y, random_state=seed
        )
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1.0 - self.test_fraction),
            stratify=y[rest],
            random_state=seed,
        )
        self.rows = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
        self.X = {
            k: torch.as_tensor(X[r], device=device, dtype=dtype) for k, r in self.rows.items()
        }
        self.y = {k: torch.as_tensor(y[r], device=device) for k, r in self.rows.items()}
        self.n_train = len(train)
        if self.model_name == "mlp":
            self.model = MLP(X.shape[1], hidden=self.hidden, out_features=10)
        else:
            self.model = SmallCNN(8, channels=self.channels, num_classes=10)
        self.model.to(device=device, dtype=dtype)
        self._init_order(device, seed)
        log.info(
            "Digits (scikit-learn load_digits): %d images of 8x8, split (seed %d) into "
            "train %d, val %d, test %d; model %s, %d parameters, on %s",
            len(y),
            seed,
            len(train),
            len(val),
            len(test),
            self.model_name,
            sum(p.numel() for p in self.model.parameters()),
            device,
        )

    def loss(self, batch: Tensor | slice) -> Tensor:
        return F.cross_entropy(
            self.model(rows(self.X["train"], batch)), rows(self.y["train"], batch)
        )

    def _scores(self, name: str) -> tuple[float, float, Tensor]:
        """Mean cross-entropy, accuracy and the predicted classes of a whole split."""
        logits = self._outputs(self.X[name])
        loss = F.cross_entropy(logits, self.y[name])
        predicted = logits.argmax(dim=1)
        accuracy = (predicted == self.y[name]).to(torch.float64).mean()
        loss_value, accuracy_value = torch.stack([loss.to(torch.float64), accuracy]).tolist()
        return loss_value, accuracy_value, predicted

    def evaluate(self, epoch: int) -> dict[str, float]:
        row: dict[str, float] = {}
        _, row["train/accuracy"], _ = self._scores("train")
        row["val/loss"], row["val/accuracy"], _ = self._scores("val")
        return row

    def finish(
        self, run_dir: Path, recorder: RunRecorder, summary: Mapping[str, Any]
    ) -> dict[str, Any]:
        last = recorder.history[-1] if recorder.history else {}
        fields: dict[str, Any] = {
            "model": self.model_name,
            "events": {k: len(r) for k, r in self.rows.items()},
            "val_loss": last.get("val/loss"),
            "val_accuracy": last.get("val/accuracy"),
            "train_accuracy": last.get("train/accuracy"),
        }
        if summary.get("status") != "ok":
            return fields
        self.model.eval()
        fields["test_loss"], fields["test_accuracy"], predicted = self._scores("test")
        label = f"{summary.get('optimizer')}, lr {summary.get('lr', float('nan')):.3g}"
        figures = {
            "curves": curves_figure(
                recorder.history,
                [
                    ("cross-entropy loss", ["train/loss", "val/loss"]),
                    ("accuracy", ["train/accuracy", "val/accuracy"]),
                ],
                f"Digits {self.model_name.upper()}, {label}: learning curves",
            ),
            "confusion": _confusion_figure(
                self.y["test"].cpu().numpy(),
                predicted.cpu().numpy(),
                f"Test confusion matrix, {self.model_name.upper()} ({label}): "
                f"accuracy {fields['test_accuracy']:.3f}",
            ),
        }
        step = int(summary.get("steps") or 0)
        for name, fig in figures.items():
            path = run_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            recorder.log_figure(f"figures/{name}", fig, step)
            plt.close(fig)
            log.info("Wrote %s", describe_file(path))
        return fields

    def hparams(self) -> dict[str, Any]:
        return {"task": self.name, "model": self.model_name, "batch_size": self.batch_size}


def _confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> plt.Figure:
    """Counts of test images by true (rows) and predicted (columns) digit."""
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(10))
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    image = ax.imshow(counts, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if counts[i, j]:
                color = "white" if counts[i, j] > counts.max() / 2 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="test images")
    fig.tight_layout()
    return fig
