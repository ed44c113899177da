"""The device paths on CUDA: skipped where there is no CUDA device.

What the CPU suite cannot reach: the multi-tensor path (the default on CUDA, as in
torch), the fused paths (torch's kernels and the updates compiled by inductor into Triton
kernels) and a Higgs run whose data, model, permutations and metrics live on the GPU,
with its checkpoint and exact resume. Each is checked against the per-tensor loop or the
CPU computation it must equal; nothing here measures time. Run them on a machine with a
GPU with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import test_higgs_data
import torch
from optimizer_cases import FUSED_CASES, FusedCase
from test_higgs_task import SETS, optimizer
from test_optim_fused import RTOL, SPLIT, STEPS, build, initial_tensors, run
from test_optim_parity import assert_close, packed_state

from torchopt_bench.metrics import ranking_metrics, weighted_auc
from torchopt_bench.optim._base import default_foreach
from torchopt_bench.runtime import seed_everything
from torchopt_bench.tasks.higgs import HiggsTask
from torchopt_bench.tracking import RunRecorder
from torchopt_bench.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
VARIANTS = [
    pytest.param(case, index, id=f"{case}-{index}")
    for case in FUSED_CASES
    for index in range(len(case.variants))
]


def resumed_run(case: FusedCase, kwargs: dict[str, Any]) -> tuple[Any, list[torch.Tensor]]:
    """10 steps on CUDA tensors, with a state_dict reload halfway (see test_optim_fused)."""
    start = [t.to(CUDA) for t in initial_tensors()]
    first, params, _ = build(case, kwargs, start)
    run(first, params, 0, SPLIT)
    saved = copy.deepcopy(first.state_dict())
    second, params, _ = build(case, kwargs, params)
    second.load_state_dict(saved)
    run(second, params, SPLIT, STEPS)
    return second, params


def on_cpu(value: Any) -> Any:
    """Tensors (nested in dicts and lists) moved to the CPU: the per-tensor loop keeps
    its ``step`` counters there, the fused paths on the parameters' device."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


@pytest.mark.parametrize(("case", "index"), VARIANTS)
def test_default_and_fused_paths_follow_the_loop_on_cuda(case: FusedCase, index: int) -> None:
    """The default path (multi-tensor on CUDA) and ``fused=True`` equal the per-tensor
    loop on the GPU to 1e-12 in float64, state included."""
    kwargs = case.variants[index]
    assert default_foreach([torch.zeros(1, device=CUDA)])
    plain, plain_params = resumed_run(case, {**kwargs, "foreach": False})
    for flags in ({}, {"fused": True}):
        other, params = resumed_run(case, {**kwargs, **flags})
        for i, (p, q) in enumerate(zip(params, plain_params)):
            assert p.device.type == "cuda"
            assert_close(p.detach().cpu(), q.detach().cpu(), RTOL, f"{flags} param {i}")
        assert_close(
            on_cpu(packed_state(other)), on_cpu(packed_state(plain)), RTOL, f"{flags} state"
        )


def test_device_metrics_equal_the_host_computation_on_cuda() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(5000, generator=generator, dtype=torch.float64)
    labels = (torch.rand(5000, generator=generator, dtype=torch.float64) < scores).double()
    weights = torch.rand(5000, generator=generator, dtype=torch.float64) + 0.1
    on_gpu = ranking_metrics(labels.to(CUDA), scores.to(CUDA), weights.to(CUDA))
    on_host = ranking_metrics(labels, scores, weights)
    assert on_gpu == pytest.approx(on_host, rel=1e-12)
    assert on_gpu[0] == pytest.approx(
        weighted_auc(labels.numpy(), scores.numpy(), weights.numpy()), rel=1e-12
    )


def fit_on_cuda(run_dir: Path, data: dict[str, Any], **trainer: Any):
    seed_everything(0)
    task = HiggsTask(data=data)
    task.setup(CUDA, torch.float32, 0)
    with RunRecorder(run_dir, tensorboard=False) as recorder:
        summary = Trainer(progress=False, **trainer).fit(
            task, optimizer("adam", lr=0.01), recorder
        )
        summary.update(task.finish(run_dir, recorder, summary))
        return task, summary, [dict(row) for row in recorder.history]


def test_higgs_on_cuda_keeps_everything_on_the_device_and_resumes_exactly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "higgs.csv"
    test_higgs_data.events(SETS, seed=3).to_csv(path, index=False)
    data = {"path": str(path), "cache": False}
    options = {"batch_size": 64, "checkpoint_every": 2}

    task, summary, history = fit_on_cuda(tmp_path / "whole", data, epochs=4, **options)
    assert summary["status"] == "ok"
    assert all(p.device.type == "cuda" for p in task.parameters())
    assert all(split.X.device.type == "cuda" for split in task.splits.values())

    fit_on_cuda(tmp_path / "stopped", data, epochs=2, **options)
    resumed, summary_r, history_r = fit_on_cuda(
        tmp_path / "stopped", data, epochs=4, resume=True, **options
    )
    assert summary_r["resumed_from_epoch"] == 2
    assert history_r == history
    for a, b in zip(task.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
