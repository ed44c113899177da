"""AMS and weighted AUC against hand-worked values and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from torchopt_bench.metrics import (
    ams,
    ams_at_threshold,
    best_ams,
    ranking_metrics,
    weighted_auc,
)


def ams_reference(s: float, b: float, b_reg: float = 10.0) -> float:
    """The challenge's formula written out in plain floats (record 328)."""
    return math.sqrt(2.0 * ((s + b + b_reg) * math.log(1.0 + s / (b + b_reg)) - s))


# (s, b, b_reg, AMS). Worked by hand, then to 40 digits with decimal:
#   s=10, b=100:  B = 110, 120 ln(12/11) - 10 = 0.441368...,  sqrt(2 x) = 0.939537...
#   s=5,  b=0:    B = 10,  15 ln(1.5) - 5 = 1.081976...,       sqrt(2 x) = 1.471038...
#   s=3,  b=1, b_reg=0:    4 ln 4 - 3 = 2.545177...,           sqrt(2 x) = 2.256181...
#   s=2,  b=50:   B = 60,  62 ln(31/30) - 2 = 0.032968...,     sqrt(2 x) = 0.256784...
#   s=0:          0 whatever b.
HAND_WORKED = [
    (10.0, 100.0, 10.0, 0.9395373741960156),
    (5.0, 0.0, 10.0, 1.4710381515259662),
    (3.0, 1.0, 0.0, 2.2561814840475766),
    (2.0, 50.0, 10.0, 0.2567840143990041),
    (0.0, 1234.5, 10.0, 0.0),
]


@pytest.mark.parametrize(("s", "b", "b_reg", "expected"), HAND_WORKED)
def test_ams_hand_worked(s: float, b: float, b_reg: float, expected: float) -> None:
    assert ams(s, b, b_reg) == pytest.approx(expected, rel=1e-13, abs=1e-15)
    assert isinstance(ams(s, b, b_reg), float)


def test_ams_default_b_reg_is_the_challenges() -> None:
    assert ams(10.0, 100.0) == pytest.approx(0.9395373741960156, rel=1e-13)


def test_ams_broadcasts_arrays_and_tensors() -> None:
    s = np.array([10.0, 5.0, 2.0])
    b = np.array([100.0, 0.0, 50.0])
    expected = [ams_reference(si, bi) for si, bi in zip(s, b)]
    np.testing.assert_allclose(ams(s, b), expected, rtol=1e-12)
    np.testing.assert_allclose(ams(torch.tensor(s), torch.tensor(b)), expected, rtol=1e-12)
    np.testing.assert_allclose(ams(s, 100.0), [ams_reference(x, 100.0) for x in s], rtol=1e-12)


@pytest.mark.parametrize(("s", "b"), [(1e-6, 1e8), (1e-3, 1e5), (0.5, 1e6)])
def test_ams_small_signal_limit(s: float, b: float) -> None:
    # For s << b: AMS^2 = s^2 / B (1 - x/3 + x^2/6 - ...), x = s / B, B = b + b_reg, so
    # AMS -> s / sqrt(B), and with b_reg = 0, s / sqrt(b). The first correction is x / 6.
    for b_reg in (0.0, 10.0):
        big_b = b + b_reg
        x = s / big_b
        limit = s / math.sqrt(big_b)
        assert ams(s, b, b_reg) == pytest.approx(limit * math.sqrt(1 - x / 3), rel=1e-12)
        assert ams(s, b, b_reg) == pytest.approx(limit, rel=x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"s": -1.0, "b": 10.0}, "s must be finite and >= 0"),
        ({"s": 1.0, "b": -10.0}, "b must be finite and >= 0"),
        ({"s": 1.0, "b": 10.0, "b_reg": -1.0}, "b_reg must be a finite number >= 0"),
        ({"s": 1.0, "b": 0.0, "b_reg": 0.0}, "b \\+ b_reg must be positive"),
        ({"s": float("nan"), "b": 1.0}, "s must be finite"),
    ],
)
def test_ams_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ams(**kwargs)


def scored_events(n: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores (rounded to create ties if asked) and challenge-like weights."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.float64)
    score = rng.random(n) * 0.6 + 0.4 * y  # signal tends to score higher
    if ties:
        score = np.round(score, 2)
    w = np.where(y == 1, rng.uniform(0.5, 2.0, n), rng.uniform(5.0, 40.0, n))
    return y, score, w


@pytest.mark.parametrize(
    ("seed", "ties", "b_reg"), [(0, False, 10.0), (1, True, 10.0), (2, True, 1.0)]
)
def test_best_ams_matches_brute_force(seed: int, ties: bool, b_reg: float) -> None:
    y, score, w = scored_events(400, seed, ties)

    # Every distinct score as a threshold, sums taken event by event.
    best_value, best_threshold = -1.0, None
    for threshold in sorted(set(score.tolist()), reverse=True):
        s = sum(wi for yi, fi, wi in zip(y, score, w) if yi == 1 and fi >= threshold)
        b = sum(wi for yi, fi, wi in zip(y, score, w) if yi == 0 and fi >= threshold)
        value = ams_reference(s, b, b_reg)
        if value > best_value:
            best_value, best_threshold = value, threshold

    value, threshold = best_ams(y, score, w, b_reg)
    assert value == pytest.approx(best_value, rel=1e-10)
    assert threshold == best_threshold
    assert ams_at_threshold(y, score, w, threshold, b_reg) == pytest.approx(value, rel=1e-12)


def test_best_ams_accepts_tensors() -> None:
    y, score, w = scored_events(200, 3, ties=False)
    expected = best_ams(y, score, w)
    assert best_ams(torch.tensor(y), torch.tensor(score), torch.tensor(w)) == expected


def test_best_ams_without_signal_selects_nothing() -> None:
    y = np.zeros(5)
    assert best_ams(y, np.arange(5.0), np.ones(5)) == (0.0, float("inf"))


def test_ams_at_threshold_hand_worked() -> None:
    y = [1, 0, 1, 0]
    score = [0.9, 0.8, 0.3, 0.1]
    w = [2.0, 50.0, 3.0, 40.0]
    # score >= 0.5 selects events 0 and 1: s = 2, b = 50 (AMS 0.256784..., see HAND_WORKED).
    assert ams_at_threshold(y, score, w, 0.5) == pytest.approx(0.2567840143990041, rel=1e-13)
    # score >= 0.3 adds event 2: s = 5, b = 50.
    assert ams_at_threshold(y, score, w, 0.3) == pytest.approx(ams_reference(5.0, 50.0))
    assert ams_at_threshold(y, score, w, 0.95) == 0.0


def test_weighted_auc_hand_worked() -> None:
    # Signal (0.9, w=1), (0.4, w=2); background (0.5, w=3), (0.1, w=4).
    # Ordered pairs won by the signal: 0.9>0.5 (1*3), 0.9>0.1 (1*4), 0.4>0.1 (2*4) = 15,
    # out of (1+2) * (3+4) = 21.
    auc = weighted_auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1], [1.0, 2.0, 3.0, 4.0])
    assert auc == pytest.approx(15 / 21, rel=1e-12)


def test_weighted_auc_matches_pairwise_count() -> None:
    y, score, w = scored_events(120, 4, ties=True)
    won = total = 0.0
    for i, j in itertools.product(range(len(y)), repeat=2):
        if y[i] == 1 and y[j] == 0:
            pair = w[i] * w[j]
            total += pair
            won += pair * (1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0)
    assert weighted_auc(y, score, w) == pytest.approx(won / total, rel=1e-10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1, 1], [0.1, 0.2], [1.0, 1.0]), "needs both signal and background"),
        (([1, 2], [0.1, 0.2], [1.0, 1.0]), "y must hold labels 0"),
        (([1, 0], [0.1], [1.0, 1.0]), "same length"),
        (([1, 0], [0.1, 0.2], [1.0, -1.0]), "w must be finite and >= 0"),
        (([1, 0], [0.1, float("nan")], [1.0, 1.0]), "score must be finite"),
    ],
)
def test_weighted_auc_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_auc(*args)


@pytest.mark.parametrize(
    ("seed", "ties", "b_reg"), [(0, False, 10.0), (1, True, 10.0), (2, True, 1.0), (4, True, 0.5)]
)
def test_ranking_metrics_on_the_device_match_sklearn_and_the_ams_scan(
    seed: int, ties: bool, b_reg: float
) -> None:
    """The one-sort tensor version against scikit-learn's AUC and the brute-force-checked
    best_ams, ties included."""
    y, score, w = scored_events(3000, seed, ties)
    auc, value, threshold = ranking_metrics(
        torch.tensor(y), torch.tensor(score, dtype=torch.float32), torch.tensor(w), b_reg
    )
    score32 = score.astype(np.float32).astype(np.float64)
    assert auc == pytest.approx(weighted_auc(y, score32, w), rel=1e-12)
    assert (value, threshold) == pytest.approx(best_ams(y, score32, w, b_reg), rel=1e-12)


def test_ranking_metrics_auc_counts_ties_as_one_half() -> None:
    # Signal (w 1, 2) at scores 0.9 and 0.5, background (w 3, 4) at 0.5 and 0.1:
    # pairs signal > background: 1*3 + 1*4 + 2*4 = 15, tied (0.5 = 0.5): 2*3 = 6 counts 3;
    # AUC = (15 + 3) / (3 * 7) = 18 / 21.
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    score = torch.tensor([0.9, 0.5, 0.5, 0.1])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    auc, _, _ = ranking_metrics(y, score, w)
    assert auc == pytest.approx(18 / 21, rel=1e-15)


def test_ranking_metrics_without_signal_weight_selects_nothing() -> None:
    y = torch.tensor([1.0, 0.0, 0.0])
    _, value, threshold = ranking_metrics(
        y, torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.0, 1.0, 1.0])
    )
    assert (value, threshold) == (0.0, float("inf"))
