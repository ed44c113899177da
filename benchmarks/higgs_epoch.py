"""How fast one training epoch of the Higgs MLP runs: the trainer against a DataLoader.

One epoch over 818,238 synthetic events of the real data's shape (41 standardised features:
the 30 of the file and 11 missing-value indicators; a third of them signal; positive
weights), the notebook's MLP (41 -> 64 x 4 -> 1), Adam as ``conf/optimizer/adam.yaml``
builds it (lr 1e-3; ``foreach: null``, which on the CPU is the per-tensor loop) and the
class-balanced weighted BCE of ``task=higgs``, at batch sizes 256, 1024 and 4096. Per batch
size, in the same process:

* ``trainer``: :class:`~torchopt_bench.trainer.Trainer` on
  :class:`~torchopt_bench.tasks.higgs.HiggsTask`, as a run does it (data as tensors on the
  device, a seeded permutation per epoch sliced into index batches, the closure, the
  loss accumulation, the norms of the last step), from ``wall_time_s``;
* ``plain``: the same steps as a bare loop (permutation, the task's gathers and loss,
  forward, backward, step), the floor the trainer's per-batch overhead is measured against;
* ``dataloader``: ``torch.utils.data.DataLoader(TensorDataset(X, y, w), shuffle=True)``,
  the same model, loss and optimizer: the usual baseline, with per-sample indexing and
  collation.

The metrics of an epoch (validation loss, weighted AUC, best AMS with its cut, on a
validation split a quarter the size of the training split, as in the full file: 50,000
against 200,000 events) are timed by the trainer as ``eval_time_s`` and reported as a share
of the epoch's training time.

All three loops use the same optimizer settings. ``--foreach true`` (or ``false``) overrides
the config's ``foreach``, to time the multi-tensor path as ``optimizer.foreach=true`` runs it.

Run from the repository root (on a shared machine, serialised with the other benchmarks)::

    flock /tmp/bench.lock python -m benchmarks.higgs_epoch
    flock /tmp/bench.lock python -m benchmarks.higgs_epoch --batch-sizes 4096 --foreach true
    python -m benchmarks.higgs_epoch --events 200000 --batch-sizes 1024 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.optim import Optimizer
from torch.utils.data import DataLoader, TensorDataset

from torchopt_bench.data.higgs import FULL_DATASET_EVENTS, HiggsData, HiggsSplit
from torchopt_bench.models import MLP
from torchopt_bench.runtime import resolve_device
from torchopt_bench.tasks.higgs import HiggsTask, class_balanced_weights, weighted_bce
from torchopt_bench.tasks.network import rows
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import Trainer

N_FEATURES = 41
#: The optimizer config a run with the default ``optimizer=adam`` builds from.
ADAM_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "optimizer" / "adam.yaml"

OptimizerFactory = Callable[[Any], Optimizer]


def adam_factory(foreach: bool | None = None) -> tuple[OptimizerFactory, str]:
    """Adam as ``conf/optimizer/adam.yaml`` builds it (``foreach`` overriding the config's
    value when given), and a description of the update path it takes."""
    cfg = OmegaConf.load(ADAM_CONFIG)
    if foreach is not None:
        cfg.foreach = foreach
    if cfg.get("fused"):
        path = "fused"
    elif cfg.get("foreach"):
        path = "foreach"
    elif cfg.get("foreach") is False:
        path = "per-tensor loop"
    else:
        path = "foreach null: the per-tensor loop on the CPU, foreach on accelerators"
    return instantiate(cfg), f"Adam lr {cfg.lr:g} ({path})"


def synthetic_split(n: int, rng: np.random.Generator) -> HiggsSplit:
    """``n`` events of the real data's shape; the label depends on the features, so the
    network has something to learn and the metrics are not degenerate."""
    X = np.empty((n, N_FEATURES), dtype=np.float32)
    X[:, :30] = rng.standard_normal((n, 30), dtype=np.float32)
    X[:, 30:] = rng.random((n, N_FEATURES - 30)) < 0.3
    logit = X[:, :5].sum(axis=1) - 0.7
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    w = np.where(y == 1, rng.uniform(1e-3, 5e-3, n), rng.uniform(0.5, 5.0, n))
    return HiggsSplit(X=X, y=y, w=w, event_id=np.arange(n), w_file=w)


def synthetic_data(n_train: int, seed: int = 0) -> HiggsData:
    rng = np.random.default_rng(seed)
    train, val = synthetic_split(n_train, rng), synthetic_split(max(n_train // 4, 2), rng)
    names = [f"f{i}" for i in range(N_FEATURES)]
    return HiggsData(train, val, None, None, names, {"path": "synthetic", "rows": n_train})


def time_trainer(
    data: HiggsData,
    batch_size: int,
    device: torch.device,
    log_norms: bool,
    factory: OptimizerFactory,
) -> tuple[float, float, int]:
    """Training and evaluation seconds of one trainer epoch, and its steps."""
    torch.manual_seed(0)
    task = HiggsTask(data={"path": "synthetic"})
    task.setup_data(data, device, torch.float32, seed=0)
    trainer = Trainer(epochs=1, batch_size=batch_size, progress=False, log_norms=log_norms)
    with tempfile.TemporaryDirectory() as tmp, RunRecorder(Path(tmp), tensorboard=False) as rec:
        summary = trainer.fit(task, factory, rec)
    return summary["wall_time_s"], summary["eval_time_s"], summary["steps"]


def _tensors(data: HiggsData, device: torch.device) -> tuple[torch.Tensor, ...]:
    split = data.train
    w = class_balanced_weights(split.y, split.w)
    return (
        torch.as_tensor(split.X, device=device),
        torch.as_tensor(split.y, device=device),
        torch.as_tensor(w, device=device, dtype=torch.float32),
    )


def _step(model, opt, xb, yb, wb) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = weighted_bce(model(xb), yb, wb)
    loss.backward()
    opt.step()
    return loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_plain(
    data: HiggsData, batch_size: int, device: torch.device, factory: OptimizerFactory
) -> float:
    """Seconds of one epoch of the bare loop over device tensors."""
    X, y, w = _tensors(data, device)
    torch.manual_seed(0)
    model = MLP(X.shape[1]).to(device)
    opt = factory(model.parameters())
    gen = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    for idx in torch.randperm(len(y), generator=gen, device=device).split(batch_size):
        _step(model, opt, rows(X, idx), rows(y, idx), rows(w, idx))
    _sync(device)
    return time.perf_counter() - start


def time_dataloader(
    data: HiggsData, batch_size: int, device: torch.device, factory: OptimizerFactory
) -> float:
    """Seconds of one epoch with a shuffling DataLoader over a TensorDataset (host
    tensors, each batch copied to the device, as such a loop usually runs)."""
    X, y, w = _tensors(data, torch.device("cpu"))
    torch.manual_seed(0)
    model = MLP(X.shape[1]).to(device)
    opt = factory(model.parameters())
    loader = DataLoader(TensorDataset(X, y, w), batch_size=batch_size, shuffle=True)
    _sync(device)
    start = time.perf_counter()
    for xb, yb, wb in loader:
        _step(model, opt, xb.to(device), yb.to(device), wb.to(device))
    _sync(device)
    return time.perf_counter() - start


def _warm_up(device: torch.device, factory: OptimizerFactory) -> None:
    small = synthetic_data(20_000, seed=1)
    time_trainer(small, 1024, device, log_norms=True, factory=factory)
    time_plain(small, 1024, device, factory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=FULL_DATASET_EVENTS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-dataloader", action="store_true", help="skip the baseline")
    parser.add_argument(
        "--foreach",
        choices=["true", "false"],
        help="override conf/optimizer/adam.yaml's foreach (default: the config's value)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    factory, described = adam_factory(None if args.foreach is None else args.foreach == "true")
    data = synthetic_data(args.events)
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"{args.events:,} training events x {N_FEATURES} features, "
        f"{len(data.val):,} validation events; {described}"
    )
    _warm_up(device, factory)

    header = (
        f"{'batch':>6} {'steps':>6} {'trainer/s':>11} {'plain/s':>11} {'loader/s':>11} "
        f"{'vs loader':>9} {'overhead':>12} {'norms off':>11} {'metrics':>8}"
    )
    print(header)
    results = []
    for batch in args.batch_sizes:
        train_s, eval_s, steps = time_trainer(data, batch, device, True, factory)
        quiet_s, _, _ = time_trainer(data, batch, device, False, factory)
        plain_s = time_plain(data, batch, device, factory)
        loader_s = (
            float("nan") if args.no_dataloader else time_dataloader(data, batch, device, factory)
        )
        n = args.events
        row = {
            "batch_size": batch,
            "optimizer": described,
            "steps": steps,
            "trainer_samples_per_s": n / train_s,
            "trainer_no_norms_samples_per_s": n / quiet_s,
            "plain_samples_per_s": n / plain_s,
            "dataloader_samples_per_s": n / loader_s,
            "speedup_vs_dataloader": loader_s / train_s,
            "trainer_overhead_us_per_step": (train_s - plain_s) / steps * 1e6,
            "metrics_share_of_epoch": eval_s / train_s,
            "epoch_s": train_s,
            "metrics_s": eval_s,
        }
        results.append(row)
        print(
            f"{batch:>6} {steps:>6} {row['trainer_samples_per_s']:>11,.0f} "
            f"{row['plain_samples_per_s']:>11,.0f} {row['dataloader_samples_per_s']:>11,.0f} "
            f"{row['speedup_vs_dataloader']:>8.1f}x "
            f"{row['trainer_overhead_us_per_step']:>9.0f} us "
            f"{row['trainer_no_norms_samples_per_s']:>11,.0f} "
            f"{row['metrics_share_of_epoch']:>7.1%}"
        )
    print(
        "trainer/plain/loader: samples per second of one epoch; overhead: trainer minus "
        "plain loop per step; norms off: the trainer without grad/update norms; metrics: "
        "the epoch's evaluation time as a share of its training time."
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
