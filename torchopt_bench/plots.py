"""Figures of test-function runs: paths over the contour map, gap curves, an animation of the
paths, basins of attraction and sensitivity to the learning rate."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation  # noqa: E402

from .functions import TestFunction  # noqa: E402

Window = tuple[tuple[float, float], tuple[float, float]]

__all__ = [
    "animate_paths",
    "contour_grid",
    "log_levels",
    "plot_basins",
    "plot_gap_curves",
    "plot_lr_sensitivity",
    "plot_trajectories",
]


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


def _gap_grid(
    function: TestFunction, window: Window | None, resolution: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """The grid, ``f - shift`` clipped to its lowest log level, the levels and the shift.

    The shift is the lower of f* and the grid's minimum so that ``f - shift >= 0``
    everywhere, including functions whose minimum is negative and grid points that round
    below f*."""
    grid_x, grid_y, values = contour_grid(function, window, resolution)
    shift = min(function.minimum, float(np.nanmin(values)))
    gap = values - shift
    levels = log_levels(gap)
    return grid_x, grid_y, np.clip(gap, levels[0], None), levels, shift


def draw_contours(
    ax: Axes,
    function: TestFunction,
    window: Window | None = None,
    filled: bool = True,
    colorbar: bool = True,
    raster: bool = False,
) -> None:
    """Log-scaled contours of ``f - f*`` over ``window`` (filled, with a colour bar, or as
    thin grey lines), every global minimiser marked with a white star."""
    grid_x, grid_y, gap, levels, shift = _gap_grid(function, window, 200 if raster else 300)
    if raster:
        # An image instead of filled contours: far cheaper to redraw, for animations.
        (x0, x1), (y0, y1) = window or function.window
        ax.imshow(
            gap,
            origin="lower",
            extent=(x0, x1, y0, y1),
            aspect="auto",
            norm=LogNorm(levels[0], levels[-1]),
            cmap="viridis",
            alpha=0.85,
            interpolation="bilinear",
        )
    elif filled:
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
        if colorbar:
            cbar = ax.figure.colorbar(contours, ax=ax)
            decades = np.arange(np.floor(np.log10(levels[0])), np.ceil(np.log10(levels[-1])) + 1)
            ticks = 10.0**decades
            cbar.set_ticks(ticks[(ticks >= levels[0]) & (ticks <= levels[-1])])
            cbar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
            offset = "f*" if shift == function.minimum else f"{shift:.4g}"
            cbar.set_label(f"f(x, y) - {offset}   (log scale)")
    else:
        ax.contour(
            grid_x,
            grid_y,
            gap,
            levels=levels[::2],
            norm=LogNorm(),
            colors="0.3",
            linewidths=0.4,
            alpha=0.6,
        )
    minimizers = np.array([m[:2] for m in function.minimizers])
    ax.plot(
        minimizers[:, 0],
        minimizers[:, 1],
        "*",
        color="white",
        mec="k",
        ms=15,
        zorder=5,
        label="global minimum" if len(minimizers) == 1 else "global minima",
    )
    (x0, x1), (y0, y1) = window or function.window
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x" if function.dim == 2 else "x0")
    ax.set_ylabel("y" if function.dim == 2 else "x1")


def _path_colors(n: int) -> list[str]:
    if n == 1:
        return ["tab:red"]
    palette = [
        "#e6194b",
        "#f58231",
        "#ffe119",
        "#f032e6",
        "#ffffff",
        "#42d4f4",
        "#3cb44b",
        "#bfef45",
        "#fabed4",
        "#dcbeff",
    ]
    return [palette[i % len(palette)] for i in range(n)]


def plot_trajectories(
    function: TestFunction,
    paths: Mapping[str, np.ndarray],
    title: str | None = None,
    window: Window | None = None,
) -> Figure:
    """Paths (label -> array of shape ``(steps + 1, >=2)``) over log-scaled contours of
    ``function - f*``, with each start (circle), end (cross) and every global minimiser
    (star) marked. Several paths get a legend below the map."""
    many = len(paths) > 2
    fig, ax = plt.subplots(figsize=(7.5, 6.8 if many else 5.5), layout="constrained")
    draw_contours(ax, function, window)
    for color, (label, path) in zip(_path_colors(len(paths)), paths.items()):
        path = np.asarray(path, dtype=float)
        ax.plot(
            path[:, 0], path[:, 1], "-", color=color, lw=1.6, label=label, path_effects=_outline()
        )
        ax.plot(path[0, 0], path[0, 1], "o", color=color, ms=7, mec="k", zorder=6)
        ax.plot(path[-1, 0], path[-1, 1], "X", color=color, ms=9, mec="k", zorder=6)
    ax.set_title(title or f"{function.name}: start (o), end (X)")
    if many:
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    else:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return fig


def _outline() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.Stroke(linewidth=3.0, foreground="black"), patheffects.Normal()]


def _positive(values: np.ndarray, floor: float) -> np.ndarray:
    """Gaps for a log axis: rounding below f* (gap <= 0) is drawn at ``floor``."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), np.maximum(values, floor), np.nan)


def plot_gap_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    target: float | None = None,
    title: str = "f - f* per step",
) -> Figure:
    """``f - f*`` against the step on a log scale, one line per label; ``median`` is the
    line and, when given, ``low`` and ``high`` a shaded band (the quartiles over the starts
    still alive). Gaps at or below 0 (f* reached to rounding) are drawn at 1e-16.

    A curve may also give ``diverged``, the fraction of its starts diverged by each step:
    when any is above 0 it is drawn as a thin dotted line on a secondary axis (0-100 %) on
    the right, since the median and band are over the survivors only and drop when the
    worst starts diverge."""
    floor = 1e-16
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    banded = any("low" in curve and "high" in curve for curve in curves.values())
    dying = any(
        "diverged" in curve and np.nanmax(np.asarray(curve["diverged"], float), initial=0) > 0
        for curve in curves.values()
    )
    side = ax.twinx() if dying else None
    for i, (label, curve) in enumerate(curves.items()):
        median = _positive(curve["median"], floor)
        steps = np.arange(len(median))
        color = colors[i % len(colors)]
        if side is not None and "diverged" in curve:
            fraction = np.asarray(curve["diverged"], dtype=float)
            final = fraction[-1] if len(fraction) else 0.0
            label = f"{label}  [{final:.0%} diverged]"
            side.plot(np.arange(len(fraction)), 100.0 * fraction, color=color, lw=0.9, ls=":")
        ax.plot(steps, median, color=color, lw=1.6, label=label)
        if "low" in curve and "high" in curve:
            ax.fill_between(
                steps,
                _positive(curve["low"], floor),
                _positive(curve["high"], floor),
                color=color,
                alpha=0.18,
                lw=0,
            )
    if target is not None:
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
    ax.set_yscale("log")
    # Starts on their way to diverging can reach 1e300 for a few steps: the axis stops two
    # decades above where the curves begin, so that the descent stays readable.
    first = [_positive(curve.get("high", curve["median"]), floor)[0] for curve in curves.values()]
    first = [v for v in first if np.isfinite(v)]
    if first:
        ax.set_ylim(top=min(max(first) * 100.0, 1e300))
    ax.set_xlabel("step")
    if banded:
        ax.set_ylabel(
            "f(x) - f*  (log scale)\nline: median over the starts still alive,\n"
            "band: their quartiles",
            fontsize=9,
        )
    else:
        ax.set_ylabel("f(x) - f*   (log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if side is not None:
        side.set_ylim(0, 100)
        side.set_ylabel("starts diverged so far, % (dotted lines)", fontsize=9)
        ax.plot([], [], color="0.3", lw=0.9, ls=":", label="diverged starts, % (right axis)")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    return fig


def animate_paths(
    function: TestFunction,
    paths: Mapping[str, np.ndarray],
    out_path: Path,
    title: str | None = None,
    frames: int = 48,
    fps: int = 10,
    window: Window | None = None,
) -> Path:
    """A GIF of the paths growing over the contour map (matplotlib's PillowWriter).

    The frames are spaced geometrically in the step (paths move fast at first and slowly
    near a minimum), at most ``frames`` of them; the last frame is the whole path."""
    longest = max(len(p) for p in paths.values())
    steps = np.unique(np.geomspace(1, max(longest - 1, 1), frames).round().astype(int))
    fig, ax = plt.subplots(figsize=(6.4, 5.2), layout="constrained")
    draw_contours(ax, function, window, colorbar=False, raster=True)
    lines, heads = [], []
    for color, (label, path) in zip(_path_colors(len(paths)), paths.items()):
        path = np.asarray(path, dtype=float)
        ax.plot(path[0, 0], path[0, 1], "o", color=color, ms=6, mec="k", zorder=6)
        (line,) = ax.plot([], [], "-", color=color, lw=1.6, label=label, path_effects=_outline())
        (head,) = ax.plot([], [], "o", color=color, ms=6, mec="k", zorder=7)
        lines.append((line, path))
        heads.append(head)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.85)
    heading = ax.set_title("")

    def draw(step: int) -> list[Any]:
        for (line, path), head in zip(lines, heads):
            shown = path[: step + 1]
            line.set_data(shown[:, 0], shown[:, 1])
            head.set_data(shown[-1:, 0], shown[-1:, 1])
        heading.set_text(f"{title or function.name}\nstep {step:,}")
        return [line for line, _ in lines] + heads

    animation = FuncAnimation(fig, draw, frames=list(steps), blit=False)
    animation.save(str(out_path), writer=PillowWriter(fps=fps))
    plt.close(fig)
    return out_path


def plot_basins(
    function: TestFunction,
    starts: np.ndarray,
    panels: Mapping[str, np.ndarray],
    grid: bool = False,
    steps: int | None = None,
) -> Figure:
    """Which global minimiser each start reached: one panel per label, each start drawn at
    its starting position, coloured by the global minimiser it reached (outcome >= 0, the
    index in ``function.minimizers``), light grey if it did not reach one (outcome -1),
    black if it diverged (-2).

    ``starts`` has one row per start, the first being the run's reference start (drawn as
    a ringed dot); with ``grid`` the other rows form a regular grid and are drawn as
    cells, otherwise as dots."""
    starts = np.asarray(starts, dtype=float)
    n_min = len(function.minimizers)
    palette = plt.get_cmap("tab10" if n_min <= 10 else "tab20")
    colors = [palette(i % palette.N) for i in range(n_min)]
    colors = ["black", "#b0b0b0", *colors]  # outcome -2, -1, 0, 1, ...
    cmap = ListedColormap(colors)
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.4 * cols, 4.0 * rows + 0.9), squeeze=False, layout="constrained"
    )
    points = starts[1:] if grid else starts
    xs, ys = np.unique(points[:, 0]), np.unique(points[:, 1])
    x0, x1 = float(starts[:, 0].min()), float(starts[:, 0].max())
    y0, y1 = float(starts[:, 1].min()), float(starts[:, 1].max())
    window = ((x0, x1), (y0, y1))
    for ax, (label, outcome) in zip(axes.flat, panels.items()):
        outcome = np.asarray(outcome)
        codes = outcome + 2
        rest = codes[1:] if grid else codes
        if grid and len(xs) * len(ys) == len(rest) and function.dim == 2:
            image = rest.reshape(len(ys), len(xs))
            ax.pcolormesh(
                xs, ys, image, cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, shading="nearest"
            )
        else:
            ax.scatter(
                points[:, 0],
                points[:, 1],
                c=rest,
                cmap=cmap,
                vmin=-0.5,
                vmax=len(colors) - 0.5,
                s=max(6.0, 8000.0 / max(len(rest), 1)),
                lw=0,
            )
        draw_contours(ax, function, window, filled=False)
        ax.plot(
            starts[0, 0],
            starts[0, 1],
            "o",
            color=colors[codes[0]],
            mec="red",
            mew=2,
            ms=9,
            zorder=6,
        )
        reached = np.mean(outcome >= 0)
        ax.set_title(f"{label}\nreached a global minimum: {reached:.0%}", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles = [
        Patch(color=colors[0], label="diverged"),
        Patch(color=colors[1], label="no minimum reached"),
    ]
    for i, m in enumerate(function.minimizers):
        where = ", ".join(f"{v:.3g}" for v in m[:2])
        handles.append(Patch(color=colors[i + 2], label=f"reached ({where})"))
    handles.append(
        Line2D([], [], marker="o", ls="", color="w", mec="red", mew=2, ms=8, label="task.start")
    )
    after = f" after {steps:,} steps" if steps is not None else ""
    cell = f"each {'cell' if grid else 'dot'} is a start, drawn where it started"
    heading = f"{function.name}: which global minimiser each start reached{after}"
    fig.suptitle(
        textwrap.fill(heading, width=48 * cols) + f"\n({cell})",
        fontsize=11,
    )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 2 if cols == 1 else 4),
        fontsize=8,
        frameon=False,
    )
    return fig


def plot_lr_sensitivity(
    stats: Any,
    title: str = "sensitivity to the learning rate",
    target: float | None = None,
) -> Figure:
    """Three panels against the learning rate (log scale), one line and one marker shape
    per optimizer: steps to the target (median over every start; rates whose median start
    never reaches it are drawn as open markers along the top, each optimizer's a little
    apart so that none hides another), the final gap f - f* (median over the starts that
    did not diverge, labelled with the diverged fraction where some did; rates at which
    every start diverged as crosses along the top) and the fraction of starts diverged.
    ``stats`` is a table with ``optimizer``, ``lr``, ``steps_to_target_median``,
    ``final_gap_median`` and ``diverged_fraction`` columns."""
    fig, (left, right, dead_ax) = plt.subplots(
        1, 3, figsize=(14, 4.6), layout="constrained", width_ratios=[1.0, 1.0, 0.7]
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = ["o", "s", "D", "^", "v", "P", "*", "h"]
    all_steps = stats["steps_to_target_median"].to_numpy(dtype=float)
    anyone = bool(np.isfinite(all_steps).any())
    steps_top = np.nanmax(all_steps, initial=1.0)
    gap_values = stats["final_gap_median"].to_numpy(dtype=float)
    gap_top = np.nanmax(np.maximum(gap_values, 1e-16), initial=1.0)
    groups = list(stats.groupby("optimizer", sort=False))
    k = len(groups)
    for i, (name, rows) in enumerate(groups):
        color = colors[i % len(colors)]
        marker = markers[i % len(markers)]
        # Markers along the top are shifted sideways per optimizer (on the log axis).
        shift = 10.0 ** (0.04 * (i - (k - 1) / 2.0))
        rows = rows.sort_values("lr")
        lr = rows["lr"].to_numpy(dtype=float)
        steps = rows["steps_to_target_median"].to_numpy(dtype=float)
        gap = np.maximum(rows["final_gap_median"].to_numpy(dtype=float), 1e-16)
        fraction = rows["diverged_fraction"].to_numpy(dtype=float)
        dead = fraction >= 1.0
        left.plot(lr, steps, "-", marker=marker, color=color, label=name, ms=5)
        missing = np.isnan(steps)
        top = steps_top * 2.0 if anyone else 1.0
        left.plot(
            lr[missing] * shift,
            np.full(missing.sum(), top),
            marker,
            color=color,
            mfc="none",
            mew=1.5,
            ms=8,
        )
        right.plot(lr, np.where(dead, np.nan, gap), "-", marker=marker, color=color, ms=5)
        for x, y, f in zip(lr, gap, fraction):
            if 0.0 < f < 1.0:
                right.annotate(
                    f"{f:.0%} div.",
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, 4 + 9 * i),
                    fontsize=7,
                    color=color,
                )
        right.plot(
            lr[dead] * shift, np.full(dead.sum(), gap_top * 10.0), "x", color=color, ms=8, mew=2
        )
        dead_ax.plot(lr, 100.0 * fraction, "-", marker=marker, color=color, label=name, ms=5)
    for ax in (left, right, dead_ax):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.grid(alpha=0.3, which="both")
    right.set_yscale("log")
    target_text = f" < {target:g}" if target is not None else ""
    if anyone:
        left.set_yscale("log")
        left.set_ylabel(f"steps to f - f*{target_text} (median over starts)")
        left.set_title(
            "steps to the target\n(open marker at the top: the median start never reached it)",
            fontsize=9,
        )
    else:
        left.set_yticks([])
        left.set_ylim(0.0, 2.0)
        left.set_ylabel(f"steps to f - f*{target_text}")
        left.text(
            0.5,
            0.3,
            f"the median start never reached f - f*{target_text}\nat any rate, for any optimizer",
            transform=left.transAxes,
            ha="center",
            va="center",
            fontsize=9,
        )
        left.set_title("steps to the target\n(open markers: not reached)", fontsize=9)
    right.set_ylabel("final f - f* (median over the surviving starts;\n0 drawn at 1e-16)")
    right.set_title(
        "final gap (label: fraction of starts diverged)\n(cross at the top: every start diverged)",
        fontsize=9,
    )
    dead_ax.set_ylim(-3, 103)
    dead_ax.set_ylabel("starts diverged, %")
    dead_ax.set_title("divergence", fontsize=9)
    left.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    return fig
