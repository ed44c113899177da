"""Training the MLP classifier on the ATLAS Higgs Boson Machine Learning Challenge 2014 data.

The loss is an event-weighted binary cross-entropy on logits,
:math:`L = \\sum_i w_i \\ell_i / \\sum_i w_i` over the events of a batch, with the weights
chosen by ``weighting``:

* ``balanced`` (default): each event's challenge weight, rescaled per class so that the
  signal and the background each carry half of the total weight. The classes then count
  equally although signal weights are ~1000x smaller, as is usual for training on this set;
* ``physics``: the challenge weights of the split, scaled per label to the full-dataset
  totals (see :mod:`torchopt_bench.data.higgs`), i.e. expected event counts;
* ``file``: the weight column exactly as the file holds it (``KaggleWeight`` by default),
  unscaled: the course notebook's weighted BCE.

The metrics always use the challenge weights scaled to the full-dataset totals: weighted ROC
AUC and the approximate median significance (AMS, ``b_reg = 10``) at the selection threshold
that maximises it on the validation split. At the end of the run that threshold is applied
unchanged to the public (KaggleSet ``b``) and private (``v``) test splits, as the
challenge's leaderboards scored a submission; on a file without ``b``/``v`` rows the test
split carved from the training events stands in for the public one and there is no private
one.

Per epoch the history holds ``train/loss`` (the mean of the epoch's mini-batch losses, as
the steps computed them; with ``train_metrics: full`` instead the loss and AUC of the whole
training split after the epoch), ``val/loss``, ``val/auc``, ``val/ams`` and
``val/threshold``. Validation costs one forward pass over the validation split, a copy of
its scores to the host and two sorts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import to_absolute_path
from torch import Tensor

from ..data.higgs import HiggsData, HiggsSplit, check_options, load_higgs
from ..metrics import ams_at_threshold, ranking_metrics, weighted_auc
from ..models import MLP
from ..network_figures import ams_threshold_figure, curves_figure, roc_figure, score_figure
from ..tracking import RunRecorder, describe_file
from .network import NetworkTask, rows

log = logging.getLogger(__name__)

__all__ = ["WEIGHTINGS", "HiggsTask", "class_balanced_weights", "weighted_bce"]

#: Loss weightings (see the module docstring).
WEIGHTINGS = ("balanced", "physics", "file")
#: Summary names of the test splits, as the challenge's leaderboards were called.
_LEADERBOARDS = {"test_public": "public", "test_private": "private"}


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


def weighted_bce(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """The event-weighted binary cross-entropy on logits,
    :math:`\\sum_i w_i \\ell_i / \\sum_i w_i`: the per-event losses of
    ``F.binary_cross_entropy_with_logits``, weighted and summed.

    Passing the weights to the kernel instead (``weight=w, reduction="sum"``) gives the
    same loss with one kernel fewer each way, but measured no faster at batch 256 or 4096
    and rounds the gradient differently in the last bit, so this form stays.
    """
    losses = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (w * losses).sum() / w.sum()


def _loss_weights(split: HiggsSplit, weighting: str) -> np.ndarray:
    if weighting == "balanced":
        return class_balanced_weights(split.y, split.w)
    if weighting == "file":
        if split.w_file is None:
            raise ValueError("weighting=file needs the file's weights, which this split lacks")
        return split.w_file
    return split.w


class _DeviceSplit:
    """A split on the device (features, labels, loss weights) and its labels and metric
    weights on the host, where the ranking metrics are computed."""

    def __init__(
        self, split: HiggsSplit, weighting: str, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.y_np = split.y.astype(np.float64)
        self.w_np = split.w.astype(np.float64)
        self.X = torch.as_tensor(split.X, device=device, dtype=dtype)
        self.y = torch.as_tensor(split.y, device=device, dtype=dtype)
        self.loss_w = torch.as_tensor(_loss_weights(split, weighting), device=device, dtype=dtype)
        # Labels and metric weights in float64 on the device, for the per-epoch metrics.
        self.y64 = torch.as_tensor(self.y_np, device=device)
        self.w64 = torch.as_tensor(self.w_np, device=device)
        self.n = len(split.y)


class HiggsTask(NetworkTask):
    """Binary classification of signal against background events with an MLP.

    Args:
        name: the task name.
        data: options of :func:`~torchopt_bench.data.higgs.load_higgs` (``path``,
            ``max_events``, ``val_fraction``, ``missing``, ``weight``, ``download``, ``url``,
            ``sha256``, ``cache``); a relative ``path`` is taken from the directory the
            command was started in.
        model: options of :class:`~torchopt_bench.models.MLP` (``hidden``, ``activation``).
        weighting: ``balanced``, ``physics`` or ``file``, the loss weights (see the module
            docstring).
        b_reg: the AMS regularisation term.
        train_metrics: ``running`` (the mean mini-batch loss of the epoch, free) or ``full``
            (loss and AUC of the whole training split after each epoch: one more forward
            pass over it).
        target_auc: time-to-target goal for ``val/auc`` (None: none).
        target_ams: time-to-target goal for ``val/ams`` (None: none).
    """

    def __init__(
        self,
        name: str = "higgs",
        data: Mapping[str, Any] | None = None,
        model: Mapping[str, Any] | None = None,
        weighting: str = "balanced",
        b_reg: float = 10.0,
        train_metrics: str = "running",
        target_auc: float | None = None,
        target_ams: float | None = None,
    ) -> None:
        super().__init__({"val/auc": target_auc, "val/ams": target_ams})
        if weighting not in WEIGHTINGS:
            raise ValueError(
                f"Invalid task.weighting={weighting!r}: choose one of {', '.join(WEIGHTINGS)}"
            )
        if train_metrics not in ("running", "full"):
            raise ValueError(
                f"Invalid task.train_metrics={train_metrics!r}: choose running or full"
            )
        self.name = name
        self.data_options = dict(data or {})
        self.model_options = dict(model or {})
        self.weighting = weighting
        self.b_reg = float(b_reg)
        self.train_metrics = train_metrics

    def setup(self, device: torch.device, dtype: torch.dtype, seed: int) -> None:
        options = dict(self.data_options)
        if "path" not in options:
            raise ValueError("task.data.path is required: the challenge CSV (.csv or .csv.gz)")
        path = Path(to_absolute_path(str(options.pop("path"))))
        # Settings are checked here, so that a bad one is named by its command-line key.
        checked = ("max_events", "val_fraction", "test_fraction", "missing", "weight")
        given = {k: options[k] for k in checked if k in options}
        options["max_events"] = check_options(prefix="task.data.", **given)
        self.setup_data(load_higgs(path, seed=seed, **options), device, dtype, seed)

    def setup_data(
        self, data: HiggsData, device: torch.device, dtype: torch.dtype, seed: int
    ) -> None:
        """Put already loaded splits on ``device`` and build the model (seeded by the
        global torch seed, as :meth:`setup` leaves it)."""
        self.data = data
        self.splits = {
            name: _DeviceSplit(split, self.weighting, device, dtype)
            for name, split in (
                ("train", data.train),
                ("val", data.val),
                ("test_public", data.test_public),
                ("test_private", data.test_private),
            )
            if split is not None
        }
        self.n_train = self.splits["train"].n
        in_features = self.splits["train"].X.shape[1]
        self.model = MLP(in_features, **self.model_options).to(device=device, dtype=dtype)
        self._init_order(device, seed)
        log.info(
            "Model %s: %d -> %s -> 1, %d parameters, on %s; data on %s: %s",
            type(self.model).__name__,
            in_features,
            list(self.model_options.get("hidden", (64, 64, 64, 64))),
            sum(p.numel() for p in self.model.parameters()),
            device,
            device,
            ", ".join(f"{k} {v.n}" for k, v in self.splits.items()),
        )

    def loss(self, batch: Tensor | slice) -> Tensor:
        train = self.splits["train"]
        logits = self.model(rows(train.X, batch))
        return weighted_bce(logits, rows(train.y, batch), rows(train.loss_w, batch))

    def _device_scores(self, split: _DeviceSplit) -> tuple[Tensor, Tensor]:
        """The weighted loss and the signal scores (float64, so that scores near 0 or 1
        stay distinct) of a whole split, on the device."""
        logits = self._outputs(split.X)
        loss = weighted_bce(logits, split.y, split.loss_w)
        return loss, torch.sigmoid(logits.to(torch.float64))

    def _scored(self, split: _DeviceSplit) -> tuple[float, np.ndarray]:
        """:meth:`_device_scores` with the scores copied to the host."""
        loss, scores = self._device_scores(split)
        return float(loss), scores.cpu().numpy()

    def evaluate(self, epoch: int) -> dict[str, float]:
        """Loss, weighted AUC and best AMS with its cut, computed on the device
        (:func:`~torchopt_bench.metrics.ranking_metrics`); only the numbers reach the host."""
        row: dict[str, float] = {}
        names = ("train", "val") if self.train_metrics == "full" else ("val",)
        for name in names:
            split = self.splits[name]
            loss, scores = self._device_scores(split)
            row[f"{name}/loss"] = float(loss)
            if not bool(torch.isfinite(scores).all()):
                row[f"{name}/auc"] = float("nan")
                continue
            auc, best, threshold = ranking_metrics(split.y64, scores, split.w64, self.b_reg)
            row[f"{name}/auc"] = auc
            if name == "val":
                row["val/ams"], row["val/threshold"] = best, threshold
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
            "weighting": self.weighting,
            "b_reg": self.b_reg,
            "data": self.data.source,
        }
        if "train/auc" in last:  # task.train_metrics=full: the whole split's AUC
            fields["train_auc"] = last["train/auc"]
        threshold = last.get("val/threshold")
        if threshold is None or summary.get("status") != "ok":
            return fields

        # The cut chosen on validation, unchanged on the leaderboard splits.
        self.model.eval()
        scored: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        aucs: dict[str, float] = {}
        random_split = self.data.source.get("split") == "random"
        for name in ("train", "val", "test_public", "test_private"):
            split = self.splits.get(name)
            if split is None:
                continue
            _, scores = self._scored(split)
            key = _LEADERBOARDS.get(name, name)
            # The figures say when the "public" split is only carved from the t events.
            shown = "test (random split)" if key == "public" and random_split else key
            scored[shown] = (split.y_np, scores, split.w_np)
            aucs[shown] = weighted_auc(split.y_np, scores, split.w_np)
            if name in _LEADERBOARDS:
                fields[f"{key}_auc"] = aucs[shown]
                fields[f"{key}_ams"] = ams_at_threshold(
                    split.y_np, scores, split.w_np, threshold, self.b_reg
                )
                # The names the report reads.
                fields[f"{name}_auc"] = aucs[shown]
        if random_split:
            fields["public_split"] = "random split of the training events (no KaggleSet b)"
        log.info(
            "AMS at the validation cut %.4f: val %.4f, public %s, private %s",
            threshold,
            fields["val_ams"],
            _fmt(fields.get("public_ams")),
            _fmt(fields.get("private_ams")),
        )
        self._figures(run_dir, recorder, scored, aucs, threshold, summary)
        return fields

    def _figures(
        self,
        run_dir: Path,
        recorder: RunRecorder,
        scored: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
        aucs: Mapping[str, float],
        threshold: float,
        summary: Mapping[str, Any],
    ) -> None:
        label = f"{summary.get('optimizer')}, lr {summary.get('lr', float('nan')):.3g}"
        events = f"{self.data.source.get('rows')} events read"
        held_out = {k: v for k, v in scored.items() if k != "train"}
        panels = [
            ("weighted BCE loss", ["train/loss", "val/loss"]),
            ("weighted ROC AUC", ["train/auc", "val/auc"]),
            (f"AMS (b_reg {self.b_reg:g}) at the best val cut", ["val/ams"]),
        ]
        figures = {
            "curves": curves_figure(
                recorder.history, panels, f"Higgs MLP, {label}: learning curves ({events})"
            ),
            "roc": roc_figure(scored, aucs, f"Weighted ROC curves ({label})"),
            "ams_threshold": ams_threshold_figure(
                held_out, threshold, self.b_reg, f"AMS against the selection cut ({label})"
            ),
            "scores": score_figure(
                *scored["val"], threshold, f"Validation scores by class ({label})"
            ),
        }
        step = int(summary.get("steps") or 0)
        for name, fig in figures.items():
            path = run_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            recorder.log_figure(f"figures/{name}", fig, step)
            plt.close(fig)
            log.info("Wrote %s", describe_file(path))

    def hparams(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "batch_size": self.batch_size,
            "weighting": self.weighting,
            "max_events": self.data_options.get("max_events"),
        }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
