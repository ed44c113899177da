"""What many starts cost: N starts of Rosenbrock in one batch against a single start.

Both runs go through the trainer and the test-function task exactly as
``python -m torchopt_bench optimizer=adam task=rosenbrock task.n_starts=N`` runs them, and
the figure compared is the summary's ``wall_time_s`` (the optimisation steps alone; the
per-step records, history rows and figures are ``eval_time_s`` and later). The runs
alternate, single then batched, ``--repeats`` times, and the ratio of the medians is
printed, with the evaluation time beside it.

Run from the repository root (the goal: a ratio of at most 3)::

    python -m benchmarks.function_starts                  # 10,000 starts x 1,000 Adam steps
    python -m benchmarks.function_starts --starts 1000 --steps 300 --optimizer sgd
    python -m benchmarks.function_starts --threads 1     # one intra-op thread

On a CPU that other processes keep busy, torch's parallel regions (element-wise kernels
such as ``sqrt`` split over the cores once a tensor is large enough) wait for a core and
each costs milliseconds instead of microseconds; a single start never reaches that size,
a batch of 10,000 does. ``--threads 1`` (or ``OMP_NUM_THREADS=1``) measures without them.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from torchopt_bench.runtime import config_dir
from torchopt_bench.tasks import FunctionTask
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import trainer_from_config


def run_once(n_starts: int, steps: int, optimizer: str, lr: float, out: Path) -> dict[str, Any]:
    """One run as the CLI does it (TensorBoard off), returning the trainer's summary."""
    conf = config_dir()
    opt_cfg = OmegaConf.load(conf / "optimizer" / f"{optimizer}.yaml")
    opt_cfg.lr = lr
    trainer_cfg = OmegaConf.load(conf / "trainer" / "default.yaml")
    trainer_cfg.steps = steps
    trainer_cfg.progress = False
    fallback = instantiate(trainer_cfg.pop("fallback_optimizer"))
    task = FunctionTask("rosenbrock", n_starts=n_starts)
    torch.manual_seed(0)
    task.setup(torch.device("cpu"), torch.float64, seed=0)
    with RunRecorder(out, tensorboard=False) as recorder:
        summary = trainer_from_config(trainer_cfg, fallback).fit(
            task, instantiate(opt_cfg), recorder
        )
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice, one per core)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    times: dict[int, list[float]] = {1: [], args.starts: []}
    evals: dict[int, list[float]] = {1: [], args.starts: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n in (1, args.starts):
                summary = run_once(n, args.steps, args.optimizer, args.lr, Path(tmp) / f"{n}")
                times[n].append(summary["wall_time_s"])
                evals[n].append(summary["eval_time_s"])
                print(
                    f"repeat {repeat + 1}: {n:>6,} start(s) x {args.steps:,} {args.optimizer} "
                    f"steps: wall_time_s {summary['wall_time_s']:.3f}, "
                    f"eval_time_s {summary['eval_time_s']:.3f}"
                )
    single = statistics.median(times[1])
    batched = statistics.median(times[args.starts])
    print(
        f"\nmedian wall_time_s: 1 start {single:.3f} s, {args.starts:,} starts {batched:.3f} s"
        f"\nratio {batched / single:.2f} (goal: at most 3)"
        f"\nmedian eval_time_s (per-step records and history): 1 start "
        f"{statistics.median(evals[1]):.3f} s, {args.starts:,} starts "
        f"{statistics.median(evals[args.starts]):.3f} s"
        f"\ntorch threads: {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
