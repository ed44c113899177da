"""Which path ``foreach=None`` takes, and that taking it changes nothing but the time.

On a CPU the default sends the tensors of at most ``FOREACH_MAX_NUMEL`` entries through
the multi-tensor path and the larger ones through the per-tensor loop. Every tensor must
then end exactly (bit for bit, in float32) where the explicit path it was sent to takes
it: the two paths update each tensor independently of the others.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from torchopt_bench.optim import OPTIMIZERS
from torchopt_bench.optim._base import FOREACH_MAX_NUMEL

#: Two tensors on each side of the threshold, one of them exactly at it.
SHAPES = ((3, 4), (FOREACH_MAX_NUMEL,), (5,), (FOREACH_MAX_NUMEL + 1,), (200, 200))
SMALL = [i for i, shape in enumerate(SHAPES) if torch.Size(shape).numel() <= FOREACH_MAX_NUMEL]
LARGE = [i for i in range(len(SHAPES)) if i not in SMALL]
STEPS = 4

WITH_FOREACH = sorted(
    name
    for name, cls in OPTIMIZERS.items()
    if cls.capabilities.foreach and not cls.capabilities.needs_closure
)


def run(
    name: str, foreach: bool | None, calls: list | None = None, shapes: tuple = SHAPES
) -> list[Tensor]:
    """``STEPS`` float32 steps of a nonconvex elementwise loss from a fixed start; with
    ``calls``, the parameter indices each path was handed, step by step."""
    cls = OPTIMIZERS[name]
    torch.manual_seed(0)  # Sophia's probes come from the global generator
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]
    optimizer = cls(params, foreach=foreach)
    if calls is not None:
        index = {id(p): i for i, p in enumerate(params)}
        for path in ("_foreach", "_single_tensor"):
            method = getattr(optimizer, path)

            def record(group, ps, grads, states, method=method, path=path):
                calls.append((path, [index[id(p)] for p in ps]))
                method(group, ps, grads, states)

            setattr(optimizer, path, record)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = sum((torch.sin(3 * p) + 0.1 * p * p).sum() for p in params)
        loss.backward(create_graph=cls.capabilities.needs_create_graph)
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("name", WITH_FOREACH)
def test_default_sends_each_tensor_to_the_path_of_its_size(name: str) -> None:
    calls: list = []
    run(name, None, calls)
    if not OPTIMIZERS[name].foreach_by_default:
        # A method whose multi-tensor path costs memory takes it only on request.
        assert calls == [("_single_tensor", list(range(len(SHAPES))))] * STEPS
        return
    assert calls == [("_foreach", SMALL), ("_single_tensor", LARGE)] * STEPS


@pytest.mark.parametrize("name", WITH_FOREACH)
def test_default_ends_where_the_explicit_paths_do(name: str) -> None:
    default, loop, multi = run(name, None), run(name, False), run(name, True)
    chosen = SMALL if OPTIMIZERS[name].foreach_by_default else []
    for i in range(len(SHAPES)):
        expected = multi[i] if i in chosen else loop[i]
        assert torch.equal(default[i], expected), f"{name}: tensor {i} of shape {SHAPES[i]}"


@pytest.mark.parametrize("foreach", [False, True])
def test_an_explicit_setting_takes_one_path_for_every_tensor(foreach: bool) -> None:
    calls: list = []
    run("Adam", foreach, calls)
    path = "_foreach" if foreach else "_single_tensor"
    assert calls == [(path, list(range(len(SHAPES))))] * STEPS


def test_a_method_without_a_multi_tensor_path_gets_the_whole_group_at_once() -> None:
    """Muon (matrices only) has no multi-tensor path: its loop gets every tensor."""
    calls: list = []
    run("Muon", None, calls, shapes=((3, 4), (200, 200)))
    assert calls == [("_single_tensor", [0, 1])] * STEPS


# -- the step's hooks and profiler label, as torch.optim's wrapper gives them ------------


@pytest.mark.parametrize("name", ["Lion", "ScheduleFreeAdamW", "Sophia", "LBFGS"])
def test_step_hooks_run_once_per_step_in_torchs_order(name: str) -> None:
    """Global and per-optimizer pre- and post-hooks run once per step, in torch's order,
    also for a class whose own ``step`` calls the base class's."""
    cls = OPTIMIZERS[name]
    cls([torch.zeros(1, requires_grad=True)])  # the class is wrapped once, not per instance
    param = torch.ones(3, requires_grad=True)
    optimizer = cls([param])
    calls: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda *_: calls.append("global pre")),
        optimizer.register_step_pre_hook(lambda *_: calls.append("pre")),
        optimizer.register_step_post_hook(lambda *_: calls.append("post")),
        register_optimizer_step_post_hook(lambda *_: calls.append("global post")),
    ]
    try:

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = (param**4).sum()
            loss.backward(create_graph=cls.capabilities.needs_create_graph)
            return loss

        for _ in range(2):
            if cls.capabilities.needs_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre", "post", "global post"] * 2


def test_a_pre_hook_may_replace_the_arguments() -> None:
    param = torch.ones(2, requires_grad=True)
    optimizer = OPTIMIZERS["LBFGS"]([param], lr=0.1)
    seen = []

    def closure() -> Tensor:
        seen.append(True)
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    # As in torch.optim, the hook's args are (optimizer, *step's args).
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: ((args[0], closure), {}))
    optimizer.step(lambda: pytest.fail("the hook's closure should have replaced this one"))
    assert seen


@pytest.mark.parametrize("ours", [False, True])
def test_hooks_see_the_arguments_as_torchs_do(ours: bool) -> None:
    """The same hooks give the same arguments on torch.optim's SGD and on ours."""
    cls = OPTIMIZERS["SGD"] if ours else torch.optim.SGD
    param = torch.ones(2, requires_grad=True)
    optimizer = cls([param], lr=0.1)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", args)))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(("post", args)))
    param.grad = torch.ones_like(param)
    optimizer.step()
    closure = lambda: torch.tensor(2.0)  # noqa: E731
    assert optimizer.step(closure) == 2.0
    assert seen == [
        ("pre", (optimizer,)),
        ("post", (optimizer,)),
        ("pre", (optimizer, closure)),
        ("post", (optimizer, closure)),
    ]


def test_the_step_is_labelled_for_the_profiler() -> None:
    param = torch.ones(2, requires_grad=True)
    optimizer = OPTIMIZERS["Lion"]([param], lr=0.1)
    param.grad = torch.ones_like(param)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        optimizer.step()
    names = [event.name for event in profile.events()]
    assert "Optimizer.step#Lion.step" in names


def test_a_scheduler_sees_the_step() -> None:
    """torch's schedulers wrap ``optimizer.step`` to warn when they step first: stepping
    in the right order warns of nothing."""
    param = torch.ones(2, requires_grad=True)
    optimizer = OPTIMIZERS["Adam"]([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            param.grad = torch.ones_like(param)
            optimizer.step()
            scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
