"""The time of one ``optimizer.step()``: ours against torch.optim's, in one process.

For every method, each path (ours: the default, per-tensor loop, foreach, fused;
torch.optim's: per-tensor loop, foreach, fused where torch has it) gets its own copy of
the parameters,
all sharing one set of fixed float32 gradients. After a warm-up (which includes the
compilation of our fused path, logged with its duration) the paths are timed in turns:
each repetition times one ``step()`` of every path, in an order shuffled anew each time
(seeded), so that the load of a shared machine, and the path that ran just before (whose
threads and cache footprint the next step inherits), fall on all of them alike; the
median of each is reported. A fixed rotation would keep the same neighbour before each
path: after torch's fused SGD, for one, a foreach-sized step measured 40% slower.

Two parameter sets (``--sizes``):

* ``higgs``: the parameters of the Higgs MLP, ``MLP(30)`` (30 -> 64 x 4 -> 1, 14,529
  entries in 10 tensors), where the fixed cost per tensor and per call dominates;
* ``large``: 20 tensors of 1.25M entries (25M in all), where memory bandwidth does.

The ratios printed (time of ours over time of theirs; below 1 is faster):

* ``default/torch_foreach``: our default path (``foreach=None``: on a CPU the
  multi-tensor path for tensors of up to 32,768 entries and the per-tensor loop for
  larger ones, on CUDA the multi-tensor path as torch's) over torch's foreach path;
  goal <= 1.10. On a CPU torch's own default is its loop, so ``default/torch_default``
  and ``foreach/torch_foreach`` (like against like) are printed beside it;
* ``fused/torch_fused``: where torch has a fused kernel (Adam, AdamW, SGD, Adagrad);
  goal <= 1.15;
* ``speedup``: torch's fastest path (methods torch has without a fused kernel), or our
  own fastest other path, default, loop or foreach (methods torch does not have), over
  our fused path; goal >= 2.

On a machine shared with other work, OpenMP worker threads that spin while they wait
for the next parallel region take the cores from the processes that need them, and a
step of a few hundred microseconds can take tens of milliseconds; unless told otherwise
(the ``OMP_WAIT_POLICY`` environment variable), the benchmark makes them wait passively,
for both torch's paths and ours.

Run from the repository root (``--optimizers`` takes names from the table below)::

    python -m benchmarks.optimizer_step
    python -m benchmarks.optimizer_step --sizes higgs --repeats 50 --optimizers Adam Lion
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Read by OpenMP when torch loads it, so it must precede the import (see the docstring).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import torchopt_bench.optim as ours  # noqa: E402
from torchopt_bench.models import MLP  # noqa: E402

logger = logging.getLogger("benchmarks.optimizer_step")


@dataclass(frozen=True)
class Method:
    """One optimizer of ours, its torch.optim counterpart (if any) and the settings used."""

    name: str
    cls: type[torch.optim.Optimizer]
    torch_cls: type[torch.optim.Optimizer] | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    torch_fused: bool = False


METHODS = [
    Method("SGD", ours.SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}, torch_fused=True),
    Method("Adam", ours.Adam, torch.optim.Adam, {"lr": 1e-3}, torch_fused=True),
    Method("AdamW", ours.AdamW, torch.optim.AdamW, {"lr": 1e-3}, torch_fused=True),
    Method("Adagrad", ours.Adagrad, torch.optim.Adagrad, {"lr": 1e-2}, torch_fused=True),
    Method("RMSprop", ours.RMSprop, torch.optim.RMSprop, {"lr": 1e-3}),
    Method("Adadelta", ours.Adadelta, torch.optim.Adadelta, {"lr": 1.0}),
    Method("Adamax", ours.Adamax, torch.optim.Adamax, {"lr": 1e-3}),
    Method("NAdam", ours.NAdam, torch.optim.NAdam, {"lr": 1e-3}),
    Method("RAdam", ours.RAdam, torch.optim.RAdam, {"lr": 1e-3}),
    Method("Rprop", ours.Rprop, torch.optim.Rprop, {"lr": 1e-3}),
    Method("ASGD", ours.ASGD, torch.optim.ASGD, {"lr": 1e-3}),
    Method("Adafactor", ours.Adafactor, torch.optim.Adafactor, {"lr": 1e-2}),
    Method("AdaBelief", ours.AdaBelief, None, {"lr": 1e-3}),
    Method("ADOPT", ours.ADOPT, None, {"lr": 1e-3}),
    Method("Lion", ours.Lion, None, {"lr": 1e-4}),
    Method("ScheduleFreeAdamW", ours.ScheduleFreeAdamW, None, {"lr": 1e-3}),
    Method("Yogi", ours.Yogi, None, {"lr": 1e-3}),
]
METHODS_BY_NAME = {method.name: method for method in METHODS}


def parameter_shapes(size: str) -> list[tuple[int, ...]]:
    if size == "higgs":
        return [tuple(p.shape) for p in MLP(30).parameters()]
    if size == "large":
        return [(1_250_000,)] * 20
    raise ValueError(f"Invalid size {size!r}: choose 'higgs' or 'large'")


def make_paths(
    method: Method, shapes: list[tuple[int, ...]], grads: list[Tensor]
) -> dict[str, Callable[[], Any]]:
    """One ``step`` callable per path, each over its own copy of the parameters."""

    def build(cls: type[torch.optim.Optimizer], **flags: Any) -> Callable[[], Any]:
        generator = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]
        for p, g in zip(params, grads):
            p.grad = g
        return cls(params, **method.kwargs, **flags).step

    paths = {"ours_default": build(method.cls), "ours_single": build(method.cls, foreach=False)}
    if method.cls.capabilities.foreach:
        paths["ours_foreach"] = build(method.cls, foreach=True)
    if method.cls.capabilities.fused:
        paths["ours_fused"] = build(method.cls, fused=True)
    if method.torch_cls is not None:
        paths["torch_single"] = build(method.torch_cls, foreach=False)
        paths["torch_foreach"] = build(method.torch_cls, foreach=True)
        if method.torch_fused:
            paths["torch_fused"] = build(method.torch_cls, fused=True)
    return paths


def time_paths(paths: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of one step of each path, timed in turns in a shuffled order."""
    for name, step in paths.items():
        start = time.perf_counter()
        step()
        logger.debug("%s: first step %.3f s", name, time.perf_counter() - start)
        for _ in range(warmup):
            step()
    names = list(paths)
    samples: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            step = paths[name]
            start = time.perf_counter()
            step()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def ratios(method: Method, times: dict[str, float]) -> dict[str, float | None]:
    """The three ratios of the module docstring (None where they do not apply)."""
    default = times["ours_default"]
    row: dict[str, float | None] = {
        "default/torch_foreach": None,
        "default/torch_default": None,
        "foreach/torch_foreach": None,
        "fused/torch_fused": None,
        "speedup": None,
    }
    if "torch_foreach" in times:
        row["default/torch_foreach"] = default / times["torch_foreach"]
        row["default/torch_default"] = default / times["torch_single"]
        if "ours_foreach" in times:
            row["foreach/torch_foreach"] = times["ours_foreach"] / times["torch_foreach"]
    if "ours_fused" in times:
        if "torch_fused" in times:
            row["fused/torch_fused"] = times["ours_fused"] / times["torch_fused"]
        elif method.torch_cls is not None:
            fastest = min(times["torch_single"], times["torch_foreach"])
            row["speedup"] = fastest / times["ours_fused"]
        else:
            fastest = min(times["ours_default"], times["ours_single"], times["ours_foreach"])
            row["speedup"] = fastest / times["ours_fused"]
    return row


def run(sizes: list[str], names: list[str], repeats: dict[str, int]) -> pd.DataFrame:
    rows = []
    for size in sizes:
        shapes = parameter_shapes(size)
        generator = torch.Generator().manual_seed(1)
        grads = [torch.randn(shape, generator=generator) for shape in shapes]
        numel = sum(g.numel() for g in grads)
        logger.info("size %s: %d tensors, %d entries (float32)", size, len(shapes), numel)
        for name in names:
            method = METHODS_BY_NAME[name]
            paths = make_paths(method, shapes, grads)
            times = time_paths(paths, repeats[size], warmup=3)
            row = {"size": size, "method": name, **{k: v * 1e3 for k, v in times.items()}}
            row.update(ratios(method, times))
            rows.append(row)
            logger.info(
                "%s %s: %s",
                size,
                name,
                ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in times.items()),
            )
            del paths
            gc.collect()
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub markdown (times in ms, ratios to two decimals)."""
    columns = [
        "size", "method", "ours_default", "ours_single", "ours_foreach", "ours_fused",
        "torch_single", "torch_foreach", "torch_fused",
        "default/torch_foreach", "default/torch_default", "foreach/torch_foreach",
        "fused/torch_fused", "speedup",
    ]  # fmt: skip
    columns = [c for c in columns if c in table]

    def cell(value: Any, column: str) -> str:
        if isinstance(value, str):
            return value
        if value is None or pd.isna(value):
            return ""
        if "/" in column or column == "speedup":
            return f"{value:.2f}"
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(row.get(c), c) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["higgs", "large"])
    parser.add_argument("--optimizers", nargs="+", default=[m.name for m in METHODS])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed steps per path (default: 300 for higgs, 15 for large)",
    )
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.optimizers) - set(METHODS_BY_NAME))
    if unknown:
        parser.error(f"unknown optimizers {unknown}: choose from {sorted(METHODS_BY_NAME)}")
    for size in args.sizes:
        parameter_shapes(size)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    repeats = {"higgs": 300, "large": 15}
    if args.repeats is not None:
        repeats = dict.fromkeys(repeats, args.repeats)
    logger.info(
        "torch %s, %d threads, %s CPUs, %s, OMP_WAIT_POLICY=%s, load average %s",
        torch.__version__, torch.get_num_threads(), os.cpu_count(),
        platform.processor() or platform.machine(), os.environ["OMP_WAIT_POLICY"],
        " ".join(f"{x:.1f}" for x in os.getloadavg()),
    )  # fmt: skip
    table = run(args.sizes, args.optimizers, repeats)
    if args.csv:
        table.to_csv(args.csv, index=False)
        logger.info("wrote %s (%d rows)", args.csv, len(table))
    print(markdown(table))


if __name__ == "__main__":
    main()
