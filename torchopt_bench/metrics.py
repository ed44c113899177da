r"""Physics metrics of the Higgs boson machine learning challenge: AMS and weighted AUC.

The challenge scores a selection region (the events a classifier calls signal) by the
*approximate median significance* of a discovery in that region,

.. math::

    \mathrm{AMS} = \sqrt{2\left((s + b + b_r)\,\ln\!\left(1 + \frac{s}{b + b_r}\right)
    - s\right)},
    \qquad s = \sum_{i:\,y_i = 1,\ \text{selected}} w_i, \quad
    b = \sum_{i:\,y_i = 0,\ \text{selected}} w_i,

with the regularisation term :math:`b_r = 10` and the natural logarithm. ``s`` and ``b`` are
sums of event weights, i.e. expected numbers of signal and background events, so the AMS of a
subsample is only comparable to the challenge's when its weights are scaled to the full-dataset
totals (see :func:`torchopt_bench.data.higgs.renormalize_weights`). For :math:`s \ll b` it
reduces to the familiar :math:`s / \sqrt{b + b_r}`.

Sources: the formula and :math:`b_r = 10` are those of the CERN Open Data record 328
(DOI 10.7483/OPENDATA.ATLAS.ZBP2.M5T8) and of Kaggle's evaluation page; their derivation is in
Adam-Bourdarios et al., "Learning to discover: the Higgs boson machine learning challenge"
(CERN Open Data record 329) and in Adam-Bourdarios et al., JMLR W&CP 42:19-55 (2015).

A selection here is always ``score >= threshold``: :func:`best_ams` scans every distinct score
as a cut, :func:`ams_at_threshold` evaluates one cut.

Inputs may be numpy arrays, python sequences or torch tensors on any device (they are moved to
the CPU); results are python floats, or numpy arrays where :func:`ams` is given arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor

__all__ = [
    "AMS_B_REG",
    "ams",
    "ams_at_threshold",
    "best_ams",
    "ranking_metrics",
    "weighted_auc",
]

#: The challenge's regularisation term b_r (CERN Open Data record 328; Kaggle evaluation page).
AMS_B_REG = 10.0

# Below this value of x = s / (b + b_r) the series of (1 + x) ln(1 + x) - x is used: the
# closed form loses all its digits to cancellation when x is of the order of 1e-8 or less.
_SERIES_BELOW = 1e-4


def _as_numpy(value: Any, dtype: type = np.float64) -> np.ndarray:
    """A float numpy copy of an array-like, torch tensors included (any device)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _one_plus_x_log1p_minus_x(x: np.ndarray) -> np.ndarray:
    """(1 + x) ln(1 + x) - x for x >= 0, accurate down to x = 0."""
    small = x < _SERIES_BELOW
    # sum_{n >= 2} (-1)^n x^n / (n (n - 1)), truncated after x^5 (error below x^6 / 30).
    series = x * x * (1.0 / 2.0 - x * (1.0 / 6.0 - x * (1.0 / 12.0 - x / 20.0)))
    closed = (1.0 + x) * np.log1p(x) - x
    return np.where(small, series, closed)


def ams(s: Any, b: Any, b_reg: float = AMS_B_REG) -> float | np.ndarray:
    r"""Approximate median significance of a selection with signal ``s`` and background ``b``.

    .. math::

        \mathrm{AMS}(s, b) = \sqrt{2\left((s + b + b_r)\ln\left(1 + \frac{s}{b + b_r}\right)
        - s\right)}

    computed in float64 as :math:`\sqrt{2 (b + b_r)\, h(s / (b + b_r))}` with
    :math:`h(x) = (1 + x)\ln(1 + x) - x`, which is exact in the small-signal limit where the
    textbook form cancels to noise: there :math:`\mathrm{AMS} \to s / \sqrt{b + b_r}`.

    Args:
        s: weighted number of selected signal events (float or array), ``>= 0``.
        b: weighted number of selected background events (float or array), ``>= 0``.
        b_reg: the regularisation term :math:`b_r` (default 10, the challenge's), ``>= 0``;
            ``b + b_reg`` must be positive.

    Returns:
        A float for scalar inputs, else a float64 array of the broadcast shape.
    """
    if not np.isfinite(b_reg) or b_reg < 0:
        raise ValueError(f"b_reg must be a finite number >= 0, got {b_reg}")
    s_arr, b_arr = np.broadcast_arrays(_as_numpy(s), _as_numpy(b))
    if not np.all(np.isfinite(s_arr)) or np.any(s_arr < 0):
        raise ValueError(f"s must be finite and >= 0, got {s}")
    if not np.all(np.isfinite(b_arr)) or np.any(b_arr < 0):
        raise ValueError(f"b must be finite and >= 0, got {b}")
    denominator = b_arr + b_reg
    if np.any(denominator <= 0):
        raise ValueError(f"b + b_reg must be positive, got b={b} with b_reg={b_reg}")

    radicand = 2.0 * denominator * _one_plus_x_log1p_minus_x(s_arr / denominator)
    result = np.sqrt(np.maximum(radicand, 0.0))
    return float(result) if result.ndim == 0 else result


def _check_labelled(y: Any, score: Any, w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and flatten labels (0/1), scores and non-negative weights of equal length."""
    y_arr = _as_numpy(y).ravel()
    score_arr = _as_numpy(score).ravel()
    w_arr = _as_numpy(w).ravel()
    if not (len(y_arr) == len(score_arr) == len(w_arr)):
        raise ValueError(
            "y, score and w must have the same length, got "
            f"{len(y_arr)}, {len(score_arr)} and {len(w_arr)}"
        )
    if len(y_arr) == 0:
        raise ValueError("y, score and w are empty: there are no events to score")
    if not np.all((y_arr == 0) | (y_arr == 1)):
        bad = y_arr[(y_arr != 0) & (y_arr != 1)][:5]
        raise ValueError(f"y must hold labels 0 (background) and 1 (signal), got {bad}")
    if not np.all(np.isfinite(score_arr)):
        raise ValueError(f"score must be finite, got {score_arr[~np.isfinite(score_arr)][:5]}")
    if not np.all(np.isfinite(w_arr)) or np.any(w_arr < 0):
        raise ValueError(f"w must be finite and >= 0, got {w_arr[~(w_arr >= 0)][:5]}")
    return y_arr, score_arr, w_arr


def weighted_auc(y: Any, score: Any, w: Any) -> float:
    r"""Area under the ROC curve with event weights.

    The probability that a signal event outranks a background event when both are drawn
    with probability proportional to their weights, ties counting one half:

    .. math::

        \mathrm{AUC} = \frac{\sum_{i: y_i = 1} \sum_{j: y_j = 0} w_i w_j
        \left(\mathbb{1}[f_i > f_j] + \tfrac12 \mathbb{1}[f_i = f_j]\right)}
        {\sum_{i: y_i = 1} w_i \sum_{j: y_j = 0} w_j}.

    This is ``sklearn.metrics.roc_auc_score(y, score, sample_weight=w)``.

    Args:
        y: labels, 1 for signal and 0 for background; both must be present.
        score: classifier outputs, larger meaning more signal-like.
        w: event weights, ``>= 0``.
    """
    y_arr, score_arr, w_arr = _check_labelled(y, score, w)
    if y_arr.min() == y_arr.max():
        raise ValueError(
            f"weighted_auc needs both signal and background events, got only y={y_arr[0]:g}"
        )
    return float(roc_auc_score(y_arr, score_arr, sample_weight=w_arr))


def ams_at_threshold(
    y: Any, score: Any, w: Any, threshold: float, b_reg: float = AMS_B_REG
) -> float:
    """AMS of the selection ``score >= threshold``.

    Args:
        y: labels, 1 for signal and 0 for background.
        score: classifier outputs, larger meaning more signal-like.
        w: event weights, ``>= 0``, already scaled to the totals the AMS should refer to.
        threshold: the cut; events with ``score >= threshold`` are selected.
        b_reg: the regularisation term (default 10, the challenge's).
    """
    y_arr, score_arr, w_arr = _check_labelled(y, score, w)
    if np.isnan(threshold):
        raise ValueError(f"threshold must be a number, got {threshold}")
    selected = score_arr >= threshold
    s = float(np.sum(w_arr[selected & (y_arr == 1)]))
    b = float(np.sum(w_arr[selected & (y_arr == 0)]))
    return float(ams(s, b, b_reg))


def best_ams(y: Any, score: Any, w: Any, b_reg: float = AMS_B_REG) -> tuple[float, float]:
    """The best AMS over all selections ``score >= threshold``, and its threshold.

    Every distinct score is tried as the threshold, in one pass: the events are sorted by
    decreasing score, the signal and background weights are accumulated with ``cumsum``, and
    the AMS is evaluated at the last event of each run of equal scores (tied events are
    always selected together). Cost O(n log n), no python loop.

    Args:
        y: labels, 1 for signal and 0 for background.
        score: classifier outputs, larger meaning more signal-like.
        w: event weights, ``>= 0``, already scaled to the totals the AMS should refer to.
        b_reg: the regularisation term (default 10, the challenge's).

    Returns:
        ``(ams, threshold)``. Among equally good cuts the highest threshold is returned.
        When no cut selects any signal weight the AMS is 0 and the threshold ``inf`` (the
        empty selection).
    """
    y_arr, score_arr, w_arr = _check_labelled(y, score, w)

    # Decreasing score; a stable sort keeps the result independent of ties' order.
    order = np.argsort(-score_arr, kind="stable")
    sorted_score = score_arr[order]
    s_cum = np.cumsum(np.where(y_arr[order] == 1, w_arr[order], 0.0))
    b_cum = np.cumsum(np.where(y_arr[order] == 0, w_arr[order], 0.0))

    # A cut at sorted_score[k] selects everything up to the last event with that score.
    last_of_run = np.r_[sorted_score[1:] != sorted_score[:-1], True]
    values = ams(s_cum[last_of_run], b_cum[last_of_run], b_reg)
    thresholds = sorted_score[last_of_run]

    best = int(np.argmax(values))
    if values[best] <= 0.0:
        return 0.0, float("inf")
    return float(values[best]), float(thresholds[best])


def ranking_metrics(
    y: Tensor, score: Tensor, w: Tensor, b_reg: float = AMS_B_REG
) -> tuple[float, float, float]:
    r"""Weighted ROC AUC, best AMS and its threshold from one sort, on the tensors' device.

    The per-epoch validation metrics of the network tasks, computed where the scores are
    (CPU or CUDA) with one descending sort: cumulative signal and background weights at the
    last event of each run of equal scores give both the ROC curve, whose trapezoidal area
    is the weighted AUC with ties counting one half (what :func:`weighted_auc`, i.e.
    scikit-learn, returns), and the AMS of every cut (what :func:`best_ams` scans). Only the
    three numbers are copied to the host. Computed in float64; inputs are not validated
    (the host functions do that), labels must be 0/1 and both classes present.

    Returns:
        ``(auc, ams, threshold)``, as :func:`weighted_auc` and :func:`best_ams` define them
        (threshold ``inf`` and AMS 0 when no cut selects signal).
    """
    score = score.detach().to(torch.float64).reshape(-1)
    y = y.detach().to(torch.float64).reshape(-1)
    w = w.detach().to(torch.float64).reshape(-1)

    # Decreasing score, stable, as best_ams sorts.
    order = torch.argsort(score, descending=True, stable=True)
    sorted_score = score[order]
    signal_w = w[order] * y[order]
    s_cum = torch.cumsum(signal_w, 0)
    b_cum = torch.cumsum(w[order] - signal_w, 0)
    last = torch.ones_like(sorted_score, dtype=torch.bool)
    last[:-1] = sorted_score[1:] != sorted_score[:-1]
    s_at, b_at, thresholds = s_cum[last], b_cum[last], sorted_score[last]

    # ROC area by the trapezoidal rule over the tie groups.
    zero = s_at.new_zeros(1)
    s_steps, b_steps = torch.cat([zero, s_at]), torch.cat([zero, b_at])
    area = torch.sum((b_steps[1:] - b_steps[:-1]) * (s_steps[1:] + s_steps[:-1])) / 2
    auc = area / (s_at[-1] * b_at[-1])

    # AMS of every cut, the small-signal series where the closed form cancels.
    denominator = b_at + b_reg
    x = s_at / denominator
    series = x * x * (1.0 / 2.0 - x * (1.0 / 6.0 - x * (1.0 / 12.0 - x / 20.0)))
    closed = (1.0 + x) * torch.log1p(x) - x
    values = torch.sqrt(
        torch.clamp(2.0 * denominator * torch.where(x < _SERIES_BELOW, series, closed), min=0.0)
    )
    best = torch.argmax(values)  # the first maximum: the highest threshold among ties
    result = torch.stack([auc, values[best], thresholds[best]]).tolist()
    if result[1] <= 0.0:
        return result[0], 0.0, float("inf")
    return result[0], result[1], result[2]
