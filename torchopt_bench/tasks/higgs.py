"""Training the MLP classifier on the ATLAS Higgs Boson Machine Learning Challenge 2014 data.

The loss is an event-weighted binary cross-entropy on logits,
:math:`L = \\sum_i w_i \\ell_i / \\sum_i w_i`, with the weights chosen by ``weighting``:

* ``balanced`` (default): each event's challenge weight, rescaled per class so that the
  signal and the background each carry half of the total weight. The classes then count
  equally although signal weights are ~1000x smaller, as is usual for training on this set;
* ``physics``: the challenge weights as they are (the course notebook's choice), so that
  the loss is the physical expected-event-count weighted cross-entropy.

The metrics always use the challenge weights: weighted ROC AUC and the approximate median
significance (AMS, ``b_reg = 10``) at the selection threshold that maximises it on the
validation split; that threshold is then applied unchanged to the test splits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import to_absolute_path
from torch import Tensor

from ..data.higgs import HiggsSplit, load_higgs
from ..metrics import ams_at_threshold, best_ams, weighted_auc
from ..models import MLP
from ..tracking import RunRecorder
from .base import Task

log = logging.getLogger(__name__)

__all__ = ["HiggsTask", "class_balanced_weights"]

_EVAL_CHUNK = 65536


def class_balanced_weights(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weights rescaled so that each class sums to half the number of events (mean 1)."""
    out = np.asarray(w, dtype=np.float64).copy()
    n = len(y)
    for label in (0, 1):
        mask = y == label
        total = out[mask].sum()
        if total > 0:
            out[mask] *= 0.5 * n / total
    return out


class _DeviceSplit:
    """A split as tensors on the device: features, labels, loss weights, metric weights."""

    def __init__(
        self, split: HiggsSplit, weighting: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.y_np = split.y.astype(np.float64)
        self.w_np = split.w.astype(np.float64)
        loss_w = class_balanced_weights(split.y, split.w) if weighting == "balanced" else split.w
        self.X = torch.as_tensor(split.X, device=device, dtype=dtype)
        self.y = torch.as_tensor(split.y, device=device, dtype=dtype)
        self.loss_w = torch.as_tensor(loss_w, device=device, dtype=dtype)
        self.n = len(split.y)


class HiggsTask(Task):
    """Binary classification of signal against background events with an MLP.

    Args:
        name: the task name.
        data: options of :func:`~torchopt_bench.data.higgs.load_higgs` (``path``,
            ``max_events``, ``val_fraction``, ``missing``, ``weight``, ``download``, ``url``,
            ``sha256``, ``cache``); a relative ``path`` is taken from the directory the
            command was started in.
        model: options of :class:`~torchopt_bench.models.MLP` (``hidden``, ``activation``).
        weighting: ``balanced`` or ``physics``, the loss weights (see the module docstring).
        b_reg: the AMS regularisation term.
    """

    kind = "network"
    default_dtype = torch.float32

    def __init__(
        self,
        name: str = "higgs",
        data: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        weighting: str = "balanced",
        b_reg: float = 10.0,
    ) -> None:
        if weighting not in ("balanced", "physics"):
            raise ValueError(f"Invalid task.weighting={weighting!r}: choose balanced or physics")
        self.name = name
        self.data_options = dict(data or {})
        if "path" not in self.data_options:
            raise ValueError("task.data.path is required: the challenge CSV (.csv or .csv.gz)")
        self.model_options = dict(model or {})
        self.weighting = weighting
        self.b_reg = float(b_reg)
        self.batch_size: int | None = None
        self.last_scores: dict[str, np.ndarray] = {}

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        options = dict(self.data_options)
        path = Path(to_absolute_path(str(options.pop("path"))))
        self.data = load_higgs(path, seed=seed, **options)
        self.splits = {
            name: _DeviceSplit(split, self.weighting, device, dtype)
            for name, split in (
                ("train", self.data.train),
                ("val", self.data.val),
                ("test_public", self.data.test_public),
                ("test_private", self.data.test_private),
            )
            if split is not None
        }
        in_features = self.splits["train"].X.shape[1]
        self.model = MLP(in_features, **self.model_options).to(device=device, dtype=dtype)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = device
        log.info(
            "Model %s: %d -> %s -> 1, %d parameters",
            type(self.model).__name__,
            in_features,
            list(self.model_options.get("hidden", (64, 64, 64, 64))),
            sum(p.numel() for p in self.model.parameters()),
        )

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def plan(self, trainer_cfg: Mapping[str, Any]) -> int:
        self.batch_size = trainer_cfg.get("batch_size")
        return int(trainer_cfg["epochs"])

    def batches(self, epoch: int) -> Iterator[Tensor | slice]:
        """Full batch, or a fresh seeded permutation of the training events cut into
        mini-batches (the last one may be smaller)."""
        n = self.splits["train"].n
        if self.batch_size is None or self.batch_size >= n:
            yield slice(None)
            return
        order = torch.randperm(n, generator=self.generator).to(self.device)
        yield from order.split(self.batch_size)

    def _weighted_bce(self, logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
        losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        return (w * losses).sum() / w.sum()

    def loss(self, batch: Tensor | slice) -> Tensor:
        train = self.splits["train"]
        logits = self.model(train.X[batch])
        return self._weighted_bce(logits, train.y[batch], train.loss_w[batch])

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    @torch.no_grad()
    def _logits(self, split: _DeviceSplit) -> Tensor:
        return torch.cat([self.model(x) for x in split.X.split(_EVAL_CHUNK)])

    def evaluate(self, epoch: int) -> dict[str, float]:
        row: dict[str, float] = {}
        self.last_scores = {}
        for name in ("train", "val"):
            split = self.splits[name]
            logits = self._logits(split)
            row[f"{name}/loss"] = float(self._weighted_bce(logits, split.y, split.loss_w))
            scores = torch.sigmoid(logits.float()).cpu().numpy().astype(np.float64)
            self.last_scores[name] = scores
            if not np.isfinite(scores).all():
                row[f"{name}/auc"] = float("nan")
                continue
            row[f"{name}/auc"] = weighted_auc(split.y_np, scores, split.w_np)
        if np.isfinite(self.last_scores["val"]).all():
            val = self.splits["val"]
            val_ams, threshold = best_ams(val.y_np, self.last_scores["val"], val.w_np, self.b_reg)
            row["val/ams"] = float(val_ams)
            row["val/threshold"] = float(threshold)
        return row

    def finish(
        self, run_dir: Path, recorder: RunRecorder, summary: Mapping[str, Any]
    ) -> dict[str, Any]:
        last = recorder.history[-1] if recorder.history else {}
        fields: dict[str, Any] = {
            "events": {name: split.n for name, split in self.splits.items()},
            "val_loss": last.get("val/loss"),
            "val_auc": last.get("val/auc"),
            "val_ams": last.get("val/ams"),
            "val_threshold": last.get("val/threshold"),
            "train_auc": last.get("train/auc"),
            "weighting": self.weighting,
            "data": self.data.source,
        }
        threshold = last.get("val/threshold")
        for name in ("test_public", "test_private"):
            split = self.splits.get(name)
            if split is None or threshold is None or summary.get("status") != "ok":
                continue
            self.model.eval()
            scores = torch.sigmoid(self._logits(split).float()).cpu().numpy()
            fields[f"{name}_auc"] = weighted_auc(split.y_np, scores, split.w_np)
            fields[f"{name}_ams"] = ams_at_threshold(
                split.y_np, scores, split.w_np, threshold, self.b_reg
            )
        return fields

    def hparams(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "batch_size": self.batch_size,
            "weighting": self.weighting,
            "max_events": self.data_options.get("max_events"),
        }
