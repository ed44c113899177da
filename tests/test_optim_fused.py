"""The ``fused=True`` path of every optimizer that has one, against its per-tensor loop.

Each row of ``optimizer_cases.FUSED_CASES`` runs 10 float64 steps on tensors of several
shapes (every other one complex), in two param groups with different hyperparameters,
with one parameter that never gets a gradient and a learning rate that a scheduler
changes on every step; halfway the state_dict is saved and loaded into a fresh fused
optimizer. Parameters and state must equal those of the uninterrupted per-tensor loop to
1e-12 relative, and the changing learning rate must not compile anything again. The
compiled rows compile once each (a few seconds on a CPU); nothing here measures time.
"""

from __future__ import annotations

import copy
import gc
import logging
import subprocess
import sys
import weakref
from typing import Any

import pytest
import torch
from optimizer_cases import FUSED_CASES, FusedCase
from test_optim_parity import assert_close, packed_state
from torch import Tensor
from torch.optim import Optimizer

from torchopt_bench.optim import OPTIMIZERS, _fused
from torchopt_bench.optim._base import default_foreach

STEPS = 10
SPLIT = 5
RTOL = 1e-12
SHAPES = ((3, 4), (5,), (2, 3, 2), (1,))

FUSED_VARIANTS = [
    pytest.param(case, index, id=f"{case}-{index}")
    for case in FUSED_CASES
    for index in range(len(case.variants))
]


def initial_tensors(seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for index, shape in enumerate(SHAPES):
        value = torch.randn(shape, generator=generator, dtype=torch.float64)
        if index % 2 == 0:
            imaginary = torch.randn(shape, generator=generator, dtype=torch.float64)
            value = torch.complex(value, imaginary)
        tensors.append(value)
    return tensors


def set_gradients(params: list[Tensor]) -> None:
    """The gradient of a nonconvex, coupled loss, bounded in every direction."""
    for index, p in enumerate(params):
        x = torch.view_as_real(p.detach()) if p.is_complex() else p.detach()
        grad = torch.sin(3 * x + index) + 0.3 * torch.tanh(x.sum()) + 0.1 * x
        p.grad = torch.view_as_complex(grad.contiguous()) if p.is_complex() else grad


def build(case: FusedCase, kwargs: dict[str, Any], start: list[Tensor]) -> tuple:
    params = [t.detach().clone().requires_grad_() for t in start]
    frozen = torch.ones(2, dtype=torch.float64, requires_grad=True)
    groups = [
        {"params": [params[0], params[1], frozen]},
        {"params": params[2:], **case.group_overrides},
    ]
    return case.cls(groups, **kwargs), params, frozen


def run(optimizer: Optimizer, params: list[Tensor], first: int, last: int) -> None:
    """Steps ``first`` to ``last`` (exclusive), with an lr that changes on every step."""
    for group in optimizer.param_groups:
        group.setdefault("base_lr", float(group["lr"]))
    for step in range(first, last):
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] / (1 + 0.3 * step)
        set_gradients(params)
        optimizer.step()


@pytest.mark.parametrize(("case", "index"), FUSED_VARIANTS)
def test_fused_matches_single_tensor(case: FusedCase, index: int) -> None:
    kwargs = case.variants[index]
    start = initial_tensors()

    compiles = []

    def resumed_run(flags: dict[str, Any]) -> tuple[Optimizer, Optimizer, list[Tensor], Tensor]:
        # Both runs go through the state_dict: loading casts some scalar state (ASGD's
        # eta, NAdam's mu_product) to the parameters' dtype, in torch as here.
        compiles.append(len(_fused.cache_info()["compiles"]))
        first, params, frozen = build(case, {**kwargs, **flags}, start)
        run(first, params, 0, SPLIT)
        compiles.append(len(_fused.cache_info()["compiles"]))
        saved = copy.deepcopy(first.state_dict())
        second, params, _ = build(case, {**kwargs, **flags}, params)
        second.load_state_dict(saved)
        run(second, params, SPLIT, STEPS)
        compiles.append(len(_fused.cache_info()["compiles"]))
        return first, second, params, frozen

    _, plain, plain_params, _ = resumed_run({"foreach": False})
    fused, resumed, resumed_params, frozen = resumed_run({"fused": True})

    for i, (p, q) in enumerate(zip(resumed_params, plain_params)):
        assert_close(p.detach(), q.detach(), RTOL, f"param {i}")
    assert_close(packed_state(resumed), packed_state(plain), RTOL, "state")
    moved = max((p.detach() - t).abs().max().item() for p, t in zip(plain_params, start))
    assert moved > 1e-3, "the parameters barely moved: the test would not see a wrong update"

    # The untouched parameter has no state (unless all state is eager); the changing lr
    # compiled nothing again: the compiled kind compiles at most one graph for the 5 steps
    # of each optimizer (none where an earlier one had the same layout; the reload may
    # change the layout, as ASGD's eta and mu become float64), the torch kernels none.
    assert torch.equal(frozen.detach(), torch.ones(2, dtype=torch.float64))
    assert bool(fused.state.get(frozen)) == case.eager_state
    expected = 1 if case.cls.fused_path == "inductor" else 0
    assert compiles[1] - compiles[0] == 0 and compiles[2] - compiles[1] == 0, "plain loop"
    assert compiles[4] - compiles[3] <= expected and compiles[5] - compiles[4] <= expected


def test_every_fused_optimizer_has_a_row() -> None:
    with_fused = {name for name, cls in OPTIMIZERS.items() if cls.capabilities.fused}
    assert with_fused == {case.cls.__name__ for case in FUSED_CASES}
    for name in with_fused:
        assert OPTIMIZERS[name].fused_path, name


def test_every_elementwise_optimizer_has_a_fused_path() -> None:
    for name, cls in OPTIMIZERS.items():
        assert cls.capabilities.fused == cls.capabilities.elementwise, name


@pytest.mark.parametrize(
    "cls", [cls for cls in OPTIMIZERS.values() if not cls.capabilities.fused], ids=str
)
def test_fused_rejected_where_there_is_none(cls: type[Optimizer]) -> None:
    param = torch.zeros(3, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="`fused=True` is not supported by"):
        cls([param], fused=True)
    if not cls.capabilities.foreach:
        with pytest.raises(RuntimeError, match="`foreach=True` is not supported by"):
            cls([param], foreach=True)


@pytest.mark.parametrize("cls", [case.cls for case in FUSED_CASES], ids=lambda c: c.__name__)
def test_fused_and_foreach_together_raise(cls: type[Optimizer]) -> None:
    param = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        cls([param], fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="floating point"):
        cls([torch.zeros(3, dtype=torch.int64)], fused=True)


def test_compiled_update_is_shared_by_layout_and_logged(caplog) -> None:
    """Two optimizers over tensors of one layout share one compilation, whatever their
    learning rates; a new layout compiles once more; each compilation is logged."""
    cls = OPTIMIZERS["Lion"]
    shapes = [(7, 3), (11,)]
    compiles_before = len(_fused.cache_info()["compiles"])

    def steps(lr: float, shapes: list[tuple[int, ...]]) -> None:
        params = [torch.ones(shape, requires_grad=True) for shape in shapes]
        optimizer = cls(params, lr=lr, fused=True)
        for _ in range(2):
            for p in params:
                p.grad = torch.full_like(p, -1.0)
            optimizer.step()
        # Lion moves every entry by exactly lr per step (the update is a sign).
        for p in params:
            torch.testing.assert_close(p.detach(), torch.full_like(p, 1 + 2 * lr))

    with caplog.at_level(logging.INFO, logger="torchopt_bench.optim._fused"):
        steps(0.1, shapes)
        steps(0.25, shapes)
        assert len(_fused.cache_info()["compiles"]) == compiles_before + 1
        steps(0.1, [(4,)])
    assert len(_fused.cache_info()["compiles"]) == compiles_before + 2
    logged = [r.getMessage() for r in caplog.records if "compiled the fused" in r.getMessage()]
    assert len(logged) == 2
    assert "Lion update for 2 tensors (32 entries" in logged[0]
    assert "Lion update for 1 tensors (4 entries" in logged[1]


def test_default_foreach_is_torchs() -> None:
    """On CPU (and on the meta device) torch defaults to the per-tensor loop."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    for device in ["cpu", "meta"]:
        params = [torch.zeros(2, device=device), torch.zeros(3, 2, device=device)]
        assert default_foreach(params) == _default_to_fused_or_foreach(params, False)[1]


def test_a_parameter_whose_layout_changes_is_compiled_anew() -> None:
    """The compiled call is specialised to the layout it was compiled for. A parameter
    whose storage is replaced by one of other strides (``param.data = ...``), between
    two steps of the same optimizer, must get a new compilation, not the old kernel:
    parameters and state equal the per-tensor loop's."""
    cls = OPTIMIZERS["RMSprop"]
    start = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)

    def two_steps(fused: bool) -> tuple[Tensor, Tensor]:
        param = start.clone().requires_grad_()
        optimizer = cls([param], lr=0.1, momentum=0.5, fused=fused)
        param.grad = torch.sin(3 * param.detach())
        optimizer.step()
        # The same values, stored column-major: strides (1, 3) instead of (4, 1).
        param.data = param.detach().t().contiguous().t()
        param.grad = torch.cos(2 * param.detach()).t().contiguous().t()
        optimizer.step()
        assert param.stride() == (1, 3)
        return param.detach(), optimizer.state[param]["momentum_buffer"]

    compiles_before = len(_fused.cache_info()["compiles"])
    fused = two_steps(True)
    assert len(_fused.cache_info()["compiles"]) - compiles_before <= 2
    plain = two_steps(False)
    assert_close(fused[0], plain[0], RTOL, "param")
    assert_close(fused[1], plain[1], RTOL, "momentum_buffer")


def test_a_parameter_whose_shape_changes_is_refused() -> None:
    """A parameter reshaped under its optimizer no longer matches its state: the fused
    step raises, as the per-tensor loop does, instead of running the old kernel."""
    cls = OPTIMIZERS["RMSprop"]
    for fused in (False, True):
        param = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
        optimizer = cls([param], lr=0.1, fused=fused)
        param.grad = torch.ones_like(param)
        optimizer.step()
        param.data = torch.ones(5, 3, dtype=torch.float64)
        param.grad = torch.ones_like(param)
        with pytest.raises(RuntimeError):
            optimizer.step()


def test_step_counters_on_another_device_advance_outside_the_call() -> None:
    """A ``step`` counter that does not live on its parameter's device (here on ``meta``,
    which Lion's scalars never read) is advanced before the compiled call, the others in
    it; the parameters move as in the per-tensor loop."""
    cls = OPTIMIZERS["Lion"]
    start = [torch.linspace(-1, 1, 6, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)]
    results = []
    for fused in (False, True):
        params = [t.clone().requires_grad_() for t in start]
        optimizer = cls(params, lr=0.1, fused=fused)
        for p in params:
            p.grad = torch.cos(p.detach())
        optimizer.step()
        away = torch.zeros((), device="meta")
        optimizer.state[params[0]]["step"] = away
        for p in params:
            p.grad = torch.sin(p.detach())
        optimizer.step()
        if fused:
            assert away.device.type == "meta" and optimizer.state[params[0]]["step"] is away
            assert optimizer.state[params[1]]["step"].item() == 2
        results.append([p.detach() for p in params])
    for fused, plain in zip(*results):
        assert_close(fused, plain, RTOL, "param")


def test_loading_a_state_dict_drops_the_compiled_plans() -> None:
    """``load_state_dict`` replaces the state tensors (ASGD's eta and mu become float64
    here): the optimizer forgets the plans made for the old ones, and the continuation
    equals the per-tensor loop's."""
    cls = OPTIMIZERS["ASGD"]
    start = torch.linspace(-1, 1, 6, dtype=torch.float64)
    results = []
    for fused in (False, True):
        param = start.clone().requires_grad_()
        optimizer = cls([param], lr=0.1, lambd=0.01, fused=fused)
        for step in range(4):
            param.grad = torch.sin(param.detach() + step)
            optimizer.step()
            if step == 1:
                if fused:
                    assert optimizer.__dict__.get("_fused_plans")
                optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
                assert "_fused_plans" not in optimizer.__dict__
        assert optimizer.state[param]["eta"].dtype == torch.float64
        results.append((param.detach(), optimizer.state[param]["ax"]))
    assert_close(results[1][0], results[0][0], RTOL, "param")
    assert_close(results[1][1], results[0][1], RTOL, "ax")


def test_a_failed_compilation_names_the_way_out(monkeypatch) -> None:
    """When inductor cannot compile (no C++ compiler, say), the step stops with an error
    that names the method and the default path, not inductor's own traceback alone."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("no compiler found")

    monkeypatch.setattr(torch._inductor, "compile", refuse)
    monkeypatch.setattr(_fused, "_CACHE", {})
    param = torch.ones(3, 2, requires_grad=True)
    optimizer = OPTIMIZERS["Yogi"]([param], fused=True)
    param.grad = torch.ones_like(param)
    with pytest.raises(RuntimeError, match=r"could not compile the Yogi update for cpu .*"
                       r"no compiler found.*fused=False"):  # fmt: skip
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(3, 2))


def _first_moment_key(state: dict[str, Any]) -> str:
    return next(k for k, v in state.items() if isinstance(v, Tensor) and v.dim() > 0)


#: What a user may do before a step (by step), and whether the fused step may then repeat
#: the previous step's compiled call with new gradients and scalars (True), or must be
#: planned again (False); see ``BenchOptimizer._fused_step_again``.
EVENTS = {
    2: ("nothing", True),
    3: ("replace a state tensor", False),
    4: ("drop a gradient", None),  # no call is repeated with a parameter left out ...
    5: ("nothing", None),  # ... nor planned from such a step
    6: ("replace a parameter's storage", True),
    7: ("switch maximize", False),
    8: ("add a param group", False),
    9: ("change lr", True),
    10: ("reset a step counter in place", True),
    11: ("clear the state", False),
    12: ("nothing", True),
}


@pytest.mark.parametrize("name", ["Adamax", "ScheduleFreeAdamW", "ASGD"])
def test_a_repeated_fused_step_sees_every_change(name: str) -> None:
    """Parameters and state equal the per-tensor loop's after every kind of change, and
    the repeated call ran exactly where nothing it depends on had changed."""
    cls = OPTIMIZERS[name]
    start = [
        torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3),
        torch.ones(4, dtype=torch.float64),
    ]
    extra = torch.linspace(0.5, 1, 3, dtype=torch.float64)
    results, repeated = [], {}
    for fused in (False, True):
        params = [t.clone().requires_grad_() for t in start]
        added = extra.clone().requires_grad_()
        optimizer = cls(params, lr=0.05, fused=fused)
        now = [0]
        if fused:
            again = optimizer._fused_step_again

            def spy(plan: Any, again: Any = again, now: list = now) -> bool:
                repeated[now[0]] = again(plan)
                return repeated[now[0]]

            optimizer._fused_step_again = spy
        for step in range(13):
            now[0] = step
            event = EVENTS.get(step, ("nothing", None))[0]
            state = optimizer.state[params[0]]
            if event == "replace a state tensor":
                key = _first_moment_key(state)
                state[key] = state[key] * 0.5 + 0.01
            elif event == "replace a parameter's storage":
                params[1].data = params[1].detach() + 0.25
            elif event == "switch maximize":
                optimizer.param_groups[0]["maximize"] = True
            elif event == "add a param group":
                # With the first group's maximize: groups of other flags get calls of their own.
                optimizer.add_param_group({"params": [added], "lr": 0.02, "maximize": True})
            elif event == "change lr":
                optimizer.param_groups[0]["lr"] = 0.03
            elif event == "reset a step counter in place":
                state["step"].fill_(1)
            elif event == "clear the state":
                optimizer.state.clear()
            for index, p in enumerate([*params, added]):
                p.grad = torch.sin(2 * p.detach() + index + step)
            if event == "drop a gradient":
                params[1].grad = None
            optimizer.step()
        results.append(([p.detach().clone() for p in [*params, added]], packed_state(optimizer)))
    (plain, plain_state), (fused, fused_state) = results
    for index, (p, q) in enumerate(zip(fused, plain)):
        assert_close(p, q, RTOL, f"param {index}")
    assert_close(fused_state, plain_state, RTOL, "state")
    expected = {step: again for step, (_, again) in EVENTS.items() if again is not None}
    assert {step: repeated.get(step) for step in expected} == expected
    assert 4 not in repeated or repeated[4] is False
    assert 5 not in repeated


def test_a_fused_step_keeps_no_gradient_alive() -> None:
    """After ``zero_grad()`` a gradient is freed: the call kept for the next step holds
    the parameters and state, not the gradients (a second copy of them in memory)."""
    param = torch.ones(3, 2, requires_grad=True)
    optimizer = OPTIMIZERS["Lion"]([param], lr=0.1, fused=True)
    for _ in range(3):  # planned on the first step, repeated on the others
        param.grad = torch.ones_like(param)
        grad = weakref.ref(param.grad)
        optimizer.step()
        optimizer.zero_grad()
        gc.collect()
        assert grad() is None
    assert "_fused_step" in optimizer.__dict__


def test_a_fused_step_counts_as_an_in_place_change_for_autograd() -> None:
    """The compiled call writes parameters in place as the loop's operations do, and
    autograd learns of it: a graph that saved a parameter before the step refuses to run
    backward after it, on the compiling step and on the repeated call alike."""
    for fused in (False, True):
        param = torch.ones(3, requires_grad=True)
        optimizer = OPTIMIZERS["Lion"]([param], lr=0.1, fused=fused)
        for _ in range(3):
            loss = (param * param).sum()  # saves param for its backward
            param.grad = torch.ones_like(param)
            version = param._version
            optimizer.step()
            assert param._version > version
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                loss.backward()


STATE_STORAGE_REPLACED = """
import torch
from torchopt_bench.optim import RMSprop

def run(fused, replace):
    param = torch.nn.Parameter(torch.linspace(-1, 1, 4000, dtype=torch.float64))
    optimizer = RMSprop([param], lr=0.01, foreach=False, fused=fused)
    for step in range(4):
        param.grad = torch.cos(param.detach())
        if step == 2:
            replace(optimizer.state[param]["square_avg"])
        optimizer.step()
    return param.detach()

def smaller(square_avg):
    square_avg.data = torch.zeros(10, dtype=torch.float64)

def narrower(square_avg):
    square_avg.data = square_avg.data.float()

for fused in (False, True):
    try:
        run(fused, smaller)
        print("smaller", fused, "ran")
    except RuntimeError:
        print("smaller", fused, "refused")
gap = (run(True, narrower) - run(False, narrower)).abs().max().item()
print("narrower gap", gap)
"""


def test_a_state_tensor_whose_storage_is_replaced_is_seen() -> None:
    """``state[p][key].data = ...`` keeps the tensor object: the fused step must still
    see the new layout, not run the compiled call over a buffer of another size or dtype
    (which writes out of bounds). A smaller buffer is refused as the loop refuses it; a
    float32 one is updated as the loop updates it. Run in a child process, since the
    failure this guards against is a crash."""
    child = subprocess.run(
        [sys.executable, "-c", STATE_STORAGE_REPLACED],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines[:2] == ["smaller False refused", "smaller True refused"]
    assert float(lines[2].split()[-1]) < 1e-6


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_torch_kernels_get_gradients_in_their_parameters_layout(name: str) -> None:
    """torch's fused kernels read each tensor as one flat array, pairing the wrong entries
    when a gradient's strides differ from its parameter's (torch.optim's own fused Adam
    then differs from its loop by 0.26 here). Such a gradient, transposed or expanded, is
    copied into the parameter's layout first: the fused step equals the loop."""
    cls = OPTIMIZERS[name]
    kwargs = {"lr": 0.1, **({"momentum": 0.9} if name == "SGD" else {})}
    results = []
    for fused in (False, True):
        generator = torch.Generator().manual_seed(0)
        param = torch.randn(4, 3, dtype=torch.float64, generator=generator).requires_grad_()
        optimizer = cls([param], foreach=False, fused=fused, **kwargs)
        for step in range(4):
            grad = torch.randn(4, 3, dtype=torch.float64, generator=generator)
            if step == 1:
                grad = grad.t().contiguous().t()  # the same values, column-major
            elif step == 2:
                grad = grad[:1].expand(4, 3)  # stride 0 along the rows
            param.grad = grad
            optimizer.step()
        results.append(param.detach())
    assert_close(results[1], results[0], RTOL, "param")


def test_torch_kernels_refuse_state_of_another_layout() -> None:
    """A parameter given new strides under its state (``param.data = ...``) no longer
    shares one flat layout with it: the fused step says so and names the default path."""
    param = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    optimizer = OPTIMIZERS["Adam"]([param], lr=0.1, fused=True)
    param.grad = torch.ones_like(param)
    optimizer.step()
    param.data = param.detach().t().contiguous().t()
    param.grad = torch.ones_like(param)
    with pytest.raises(RuntimeError, match=r"Adam with fused=True: parameter 0 .*fused=False"):
        optimizer.step()
