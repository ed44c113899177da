"""Figures: optimisation paths over a test function's contour map."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation  # noqa: E402

from .functions import TestFunction  # noqa: E402

__all__ = ["contour_grid", "log_levels", "plot_trajectories"]


def contour_grid(
    function: TestFunction,
    window: tuple[tuple[float, float], tuple[float, float]] | None = None,
    resolution: int = 300,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The function on a ``resolution``-square grid over ``window`` (its plot window by
    default), evaluated in float64; for more than 2 coordinates the others are held at the
    first minimiser's values."""
    (x0, x1), (y0, y1) = window or function.window
    xs = np.linspace(x0, x1, resolution)
    ys = np.linspace(y0, y1, resolution)
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.zeros(resolution, resolution, function.dim, dtype=torch.float64)
    if function.dim > 2:
        points[..., 2:] = torch.tensor(function.minimizers[0][2:], dtype=torch.float64)
    points[..., 0] = torch.from_numpy(grid_x)
    points[..., 1] = torch.from_numpy(grid_y)
    with torch.no_grad():
        values = function(points).numpy()
    return grid_x, grid_y, values


def log_levels(gap: np.ndarray, n_levels: int = 30) -> np.ndarray:
    """Logarithmically spaced contour levels for a non-negative array ``gap``.

    Zero (the minimum itself) and rounding below it cannot be shown on a log scale, so the
    lowest level is the smallest strictly positive value of the array."""
    positive = gap[np.isfinite(gap) & (gap > 0)]
    if positive.size == 0:
        return np.array([1e-12, 1.0])
    low, high = positive.min(), positive.max()
    if high <= low:
        high = low * 10
    return np.logspace(np.log10(low), np.log10(high), n_levels)


def plot_trajectories(
    function: TestFunction,
    paths: Mapping[str, np.ndarray],
    title: str | None = None,
    window: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Figure:
    """Paths (label -> array of shape ``(steps + 1, >=2)``) over log-scaled contours of
    ``function - f*``, with each start (circle), end (cross) and every global minimiser
    (star) marked."""
    grid_x, grid_y, values = contour_grid(function, window)
    # Shift by the lower of f* and the grid's minimum so that f - shift >= 0 everywhere,
    # including functions whose minimum is negative and grid points that round below f*.
    shift = min(function.minimum, float(np.nanmin(values)))
    gap = values - shift
    levels = log_levels(gap)
    gap = np.clip(gap, levels[0], None)

    fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
    contours = ax.contourf(
        grid_x, grid_y, gap, levels=levels, norm=LogNorm(), cmap="viridis", alpha=0.85
    )
    ax.contour(
        grid_x,
        grid_y,
        gap,
        levels=levels[::3],
        norm=LogNorm(),
        colors="k",
        linewidths=0.3,
        alpha=0.5,
    )
    cbar = fig.colorbar(contours, ax=ax)
    decades = np.arange(np.floor(np.log10(levels[0])), np.ceil(np.log10(levels[-1])) + 1)
    ticks = 10.0**decades
    cbar.set_ticks(ticks[(ticks >= levels[0]) & (ticks <= levels[-1])])
    cbar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    offset = "f*" if shift == function.minimum else f"{shift:.4g}"
    cbar.set_label(f"f(x, y) - {offset}   (log scale)")

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, path) in enumerate(paths.items()):
        path = np.asarray(path, dtype=float)
        color = "tab:red" if len(paths) == 1 else colors[(i + 3) % len(colors)]
        ax.plot(path[:, 0], path[:, 1], "-", color=color, lw=1.5, label=label)
        ax.plot(path[0, 0], path[0, 1], "o", color=color, ms=7, mec="k")
        ax.plot(path[-1, 0], path[-1, 1], "X", color=color, ms=9, mec="k")

    minimizers = np.array([m[:2] for m in function.minimizers])
    ax.plot(
        minimizers[:, 0],
        minimizers[:, 1],
        "*",
        color="white",
        mec="k",
        ms=15,
        label="global minimum" if len(minimizers) == 1 else "global minima",
    )
    (x0, x1), (y0, y1) = window or function.window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title or f"{function.name}: start (o), end (X)")
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig
