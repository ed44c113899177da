"""Figures of a network run: learning curves, weighted ROC curves, the AMS against the
selection threshold and the weighted score distributions of signal and background.

Each function returns a matplotlib figure (the Agg backend, no display needed); the caller
saves it in the run directory and sends it to TensorBoard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from .metrics import AMS_B_REG, ams  # noqa: E402

__all__ = ["ams_curve", "ams_threshold_figure", "curves_figure", "roc_figure", "score_figure"]

#: Events per labelled split: labels (1 signal, 0 background), scores, weights.
Scored = tuple[np.ndarray, np.ndarray, np.ndarray]

_COLORS = {
    "train": "tab:blue",
    "val": "tab:orange",
    "public": "tab:green",
    "test": "tab:green",
    "private": "tab:red",
}


def curves_figure(
    history: Sequence[Mapping[str, Any]], panels: Sequence[tuple[str, Sequence[str]]], title: str
) -> Figure:
    """One panel per ``(y label, history keys)``: each key against the epoch.

    Keys absent from every row are skipped; a panel whose label contains "loss" is drawn
    on a log scale when all its values are positive.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels, strict=True):
        positive = True
        for key in keys:
            points = [
                (row["epoch"], row[key])
                for row in history
                if isinstance(row.get(key), int | float) and np.isfinite(row[key])
            ]
            if not points:
                continue
            epochs, values = np.array(points).T
            positive &= bool((values > 0).all())
            split = key.split("/")[0]
            ax.plot(epochs, values, label=key, color=_COLORS.get(split), lw=1.6)
        if "loss" in label and positive and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_figure(scored: Mapping[str, Scored], aucs: Mapping[str, float], title: str) -> Figure:
    """Weighted ROC curves (true against false positive rate, the challenge's weights),
    one per split, with each split's weighted AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    for name, (y, score, w) in scored.items():
        fpr, tpr, _ = roc_curve(y, score, sample_weight=w)
        ax.plot(
            fpr,
            tpr,
            color=_COLORS.get(name.split()[0]),
            lw=1.6,
            label=f"{name} (AUC {aucs[name]:.4f})",
        )
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="random guess")
    ax.set_xlabel("false positive rate (weighted background selected)")
    ax.set_ylabel("true positive rate (weighted signal selected)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def ams_curve(
    y: np.ndarray, score: np.ndarray, w: np.ndarray, b_reg: float = AMS_B_REG
) -> tuple[np.ndarray, np.ndarray]:
    """AMS of the selection ``score >= t`` for every distinct score ``t``: ``(t, AMS)``,
    thresholds decreasing."""
    order = np.argsort(-score, kind="stable")
    s_cum = np.cumsum(np.where(y[order] == 1, w[order], 0.0))
    b_cum = np.cumsum(np.where(y[order] == 0, w[order], 0.0))
    sorted_score = score[order]
    last = np.r_[sorted_score[1:] != sorted_score[:-1], True]
    return sorted_score[last], np.asarray(ams(s_cum[last], b_cum[last], b_reg))


def ams_threshold_figure(
    scored: Mapping[str, Scored],
    threshold: float,
    b_reg: float,
    title: str,
) -> Figure:
    """The AMS against the selection threshold on each split, with the threshold chosen
    on validation marked; the AMS each split gets at that threshold is in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, (y, score, w) in scored.items():
        t, values = ams_curve(y, score, w, b_reg)
        at = values[t >= threshold][-1] if np.any(t >= threshold) else 0.0
        ax.plot(
            t,
            values,
            color=_COLORS.get(name.split()[0]),
            lw=1.4,
            label=f"{name} (AMS {at:.3f} at cut)",
        )
    if np.isfinite(threshold):
        ax.axvline(
            threshold, color="k", ls="--", lw=1, label=f"cut chosen on val: {threshold:.3f}"
        )
    ax.set_xlabel("selection threshold on the signal score (select score >= threshold)")
    ax.set_ylabel(f"AMS (b_reg = {b_reg:g})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def score_figure(
    y: np.ndarray, score: np.ndarray, w: np.ndarray, threshold: float, title: str
) -> Figure:
    """Weighted histograms of the signal score for signal and background events, each
    normalised to unit area (the two classes' total weights differ by a factor of about
    600), on a log scale, with the selection threshold marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bins = np.linspace(0.0, 1.0, 51)
    for label, name, color in ((0, "background", "tab:blue"), (1, "signal", "tab:red")):
        mask = y == label
        if mask.any():
            ax.hist(
                score[mask],
                bins=bins,
                weights=w[mask],
                density=True,
                histtype="stepfilled",
                alpha=0.35,
                color=color,
                edgecolor=color,
                lw=1.4,
                label=f"{name} ({int(mask.sum())} events, weighted)",
            )
    if np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"selection cut {threshold:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("signal score (sigmoid of the network's output)")
    ax.set_ylabel("weighted density (each class has unit area)")
    ax.set_xlim(0, 1)
    ax.legend(frameon=False, loc="upper center")
    ax.set_title(title)
    fig.tight_layout()
    return fig
