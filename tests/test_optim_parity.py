"""Each optimizer of the package against its torch.optim counterpart, from the case table.

Every case of ``optimizer_cases.CASES`` and each of its hyperparameter variants is run for
100 steps on a small random problem: several float64 tensors of different shapes (every
other one complex when the case supports complex parameters), a nonconvex loss, two param
groups with different hyperparameters, one parameter that never gets a gradient, and a
StepLR schedule driving ``lr``. Parameters and every state entry must equal the ones
torch.optim produces from the same start, to the case's relative tolerance (1e-10).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from optimizer_cases import CASES, OptimizerCase
from torch import Tensor
from torch.optim import Optimizer

from torchopt_bench.optim._base import (
    apply_l2,
    apply_l2_foreach,
    apply_weight_decay,
    apply_weight_decay_foreach,
    decoupled_shrink,
    decoupled_shrink_foreach,
)

STEPS = 100
#: Steps before a state_dict is saved and loaded into a fresh optimizer.
SPLIT = 50
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
CASES_BY_NAME = {case.name: case for case in CASES}


def marks(case: OptimizerCase) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] if case.slow else []


VARIANTS = [
    pytest.param(case, index, id=f"{case.name}-{index}", marks=marks(case))
    for case in CASES
    for index in range(len(case.variants))
]
CASE_PARAMS = [pytest.param(case, id=case.name, marks=marks(case)) for case in CASES]
INVALID = [
    pytest.param(case, kwargs, message, id=f"{case.name}-{'-'.join(kwargs)}-{index}")
    for case in CASES
    for index, (kwargs, message) in enumerate(case.invalid)
]


# -- the problem ---------------------------------------------------------------------------


def real_view(p: Tensor) -> Tensor:
    return torch.view_as_real(p) if p.is_complex() else p


@dataclass
class Problem:
    r"""A nonconvex loss over several tensors, seen as one flat real vector :math:`z`:

    .. math::
        f(z) = \sum_i \log(1 + (z_i - c_i)^2) + \tfrac12 \sin(3 z_i + \phi_i)
            + 0.1 \tanh(w^\top z)^2

    Its gradient is bounded in every direction, so ascending (``maximize``) stays finite.
    The gradient is written out by hand (checked against autograd below), which keeps
    the many runs of this file fast.
    """

    init: list[Tensor]
    #: Starting value of a parameter that is in the optimizer but never in the loss.
    frozen: Tensor
    center: Tensor
    phase: Tensor
    weight: Tensor

    def flat(self, params: list[Tensor]) -> Tensor:
        return torch.cat([real_view(p).reshape(-1) for p in params])

    def loss(self, params: list[Tensor]) -> Tensor:
        """The loss, differentiable by autograd (tensor by tensor: a slice of a
        concatenation cannot be viewed back as complex in the backward pass)."""
        sizes = [real_view(p).numel() for p in params]
        pieces = zip(
            params, self.center.split(sizes), self.phase.split(sizes), self.weight.split(sizes)
        )
        smooth, projection = 0.0, 0.0
        for p, center, phase, weight in pieces:
            z = real_view(p).reshape(-1)
            d = z - center
            smooth = smooth + (torch.log1p(d * d) + 0.5 * torch.sin(3 * z + phase)).sum()
            projection = projection + weight @ z
        return smooth + 0.1 * torch.tanh(projection) ** 2

    @torch.no_grad()
    def loss_and_grad(self, params: list[Tensor]) -> Tensor:
        """The loss; sets each ``p.grad`` to a fresh tensor as ``backward`` would (for a
        complex ``p``, the gradient with respect to its real and imaginary parts)."""
        z = self.flat(params)
        d = z - self.center
        coupling = torch.tanh(self.weight @ z)
        grad = (
            2 * d / (1 + d * d)
            + 1.5 * torch.cos(3 * z + self.phase)
            + 0.2 * coupling * (1 - coupling**2) * self.weight
        )
        pieces = grad.split([real_view(p).numel() for p in params])
        for p, piece in zip(params, pieces):
            piece = piece.reshape(real_view(p).shape).clone()
            p.grad = torch.view_as_complex(piece) if p.is_complex() else piece
        smooth = (torch.log1p(d * d) + 0.5 * torch.sin(3 * z + self.phase)).sum()
        return smooth + 0.1 * coupling**2


def make_problem(case: OptimizerCase, seed: int = 0, with_complex: bool | None = None) -> Problem:
    """Tensors of the case's shapes; every other one complex if the case supports it."""
    with_complex = case.supports_complex if with_complex is None else with_complex
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    init = []
    for index, shape in enumerate(case.shapes):
        value = randn(*shape)
        if with_complex and index % 2 == 0:
            value = torch.complex(value, randn(*shape))
        init.append(value)
    size = sum(real_view(p).numel() for p in init)
    return Problem(
        init=init,
        frozen=randn(*case.shapes[0]),
        center=randn(size),
        phase=2 * math.pi * torch.rand(size, generator=generator, dtype=torch.float64),
        weight=randn(size) / size**0.5,
    )


# -- running an optimizer ---------------------------------------------------------------


@dataclass
class Run:
    optimizer: Optimizer
    params: list[Tensor]
    frozen: Tensor


def build(
    cls: type[Optimizer],
    case: OptimizerCase,
    problem: Problem,
    kwargs: dict[str, Any],
    start: list[Tensor] | None = None,
) -> Run:
    """Two param groups: the first holds half the tensors and the frozen parameter, the
    second the rest with the case's ``group_overrides``."""
    start = problem.init if start is None else start
    params = [p.detach().clone().requires_grad_() for p in start]
    frozen = problem.frozen.clone().requires_grad_()
    half = max(1, len(params) // 2)
    groups = [
        {"params": [*params[:half], frozen]},
        {"params": params[half:], **case.group_overrides},
    ]
    return Run(cls(groups, **kwargs), params, frozen)


def train(run: Run, case: OptimizerCase, problem: Problem, steps: int, schedule: bool) -> None:
    optimizer = run.optimizer
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.5) if schedule else None
    )

    def closure() -> Tensor:
        return problem.loss_and_grad(run.params)

    for _ in range(steps):
        if case.needs_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()


def with_foreach(case: OptimizerCase, kwargs: dict[str, Any], foreach: bool) -> dict[str, Any]:
    return {**kwargs, "foreach": foreach} if case.supports_foreach else dict(kwargs)


@functools.cache
def full_run(name: str, index: int, reference: bool, foreach: bool) -> Run:
    """The 100-step scheduled run of variant ``index`` of case ``name``, by our class or
    the reference, computed once and shared by the tests that read it."""
    case = CASES_BY_NAME[name]
    problem = make_problem(case)
    kwargs = with_foreach(case, case.variants[index], foreach)
    run = build(case.reference if reference else case.cls, case, problem, kwargs)
    train(run, case, problem, STEPS, schedule=True)
    return run


# -- comparing -----------------------------------------------------------------------------


def assert_close(actual: Any, expected: Any, rtol: float, where: str) -> None:
    """Recursive comparison; tensors to ``rtol`` relative to their largest entry."""
    if isinstance(expected, Tensor):
        assert isinstance(actual, Tensor), f"{where}: {type(actual)} is not a tensor"
        assert actual.dtype == expected.dtype, f"{where}: {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: {actual.shape} != {expected.shape}"
        scale = expected.abs().max().item() if expected.numel() else 0.0
        torch.testing.assert_close(
            actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{where}: {m}"
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {type(actual)} is not a dict"
        assert sorted(map(str, actual)) == sorted(map(str, expected)), f"{where}: keys differ"
        for key in expected:
            assert_close(actual[key], expected[key], rtol, f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rtol, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=1e-300), where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def packed_state(optimizer: Optimizer) -> dict[int, dict[str, Any]]:
    """The state_dict's state by parameter index, without empty entries: torch.optim.SGD
    without momentum never touches ``state[p]``, while merely reading it creates an empty
    entry; both mean "no state"."""
    return {index: state for index, state in optimizer.state_dict()["state"].items() if state}


def assert_same_run(ours: Run, ref: Run, rtol: float) -> None:
    """Parameters, and the state of every parameter under every key, agree."""
    for index, (p, q) in enumerate(zip(ours.params, ref.params)):
        assert_close(p.detach(), q.detach(), rtol, f"param {index}")
    assert_close(ours.frozen.detach(), ref.frozen.detach(), 0.0, "frozen param")
    assert_close(packed_state(ours.optimizer), packed_state(ref.optimizer), rtol, "state")


# -- the problem itself --------------------------------------------------------------------


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_problem_gradient_matches_autograd(case: OptimizerCase) -> None:
    """The hand-written gradient is the autograd gradient (complex tensors included)."""
    problem = make_problem(case, with_complex=True)
    by_hand = [p.clone().requires_grad_() for p in problem.init]
    by_autograd = [p.clone().requires_grad_() for p in problem.init]
    loss = problem.loss_and_grad(by_hand)
    problem.loss(by_autograd).backward()
    assert any(p.is_complex() for p in by_hand)
    torch.testing.assert_close(loss, problem.loss(by_autograd).detach(), rtol=1e-14, atol=0)
    for p, q in zip(by_hand, by_autograd):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14)


# -- parity --------------------------------------------------------------------------------


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize(("case", "index"), VARIANTS)
def test_matches_torch(case: OptimizerCase, index: int, foreach: bool) -> None:
    """Same flag for both: the per-tensor loop against torch's, the foreach path against
    torch's foreach path. Two groups, complex tensors where supported, a frozen
    parameter and a StepLR schedule."""
    if foreach and not case.supports_foreach:
        pytest.skip("no multi-tensor path")
    ours = full_run(case.name, index, reference=False, foreach=foreach)
    ref = full_run(case.name, index, reference=True, foreach=foreach)
    assert_same_run(ours, ref, case.rtol)

    problem = make_problem(case)
    moved = max((p - q).abs().max().item() for p, q in zip(ours.params, problem.init))
    assert moved > 1e-3, "the parameters barely moved: the test would not see a wrong update"
    for group in ours.optimizer.param_groups:  # StepLR halved lr at steps 30, 60, 90
        assert group["lr"] == pytest.approx(group["initial_lr"] / 8, rel=1e-15)

    # A parameter without a gradient is never updated, and has no state unless the
    # reference creates all state up front.
    assert torch.equal(ours.frozen.detach(), problem.frozen)
    frozen_index = len(ours.optimizer.param_groups[0]["params"]) - 1
    state = packed_state(ours.optimizer)
    assert (frozen_index in state) == case.eager_state
    if case.has_state_step:
        steps = [state[i]["step"] for i in state if i != frozen_index]
        assert steps and all(step.ndim == 0 and step.item() == STEPS for step in steps)


@pytest.mark.parametrize(("case", "index"), VARIANTS)
def test_foreach_matches_single_tensor(case: OptimizerCase, index: int) -> None:
    if not case.supports_foreach:
        pytest.skip("no multi-tensor path")
    multi = full_run(case.name, index, reference=False, foreach=True)
    single = full_run(case.name, index, reference=False, foreach=False)
    assert_same_run(multi, single, case.rtol)


@pytest.mark.parametrize(("case", "index"), VARIANTS)
def test_state_dict_continuation(case: OptimizerCase, index: int) -> None:
    """After SPLIT steps the state_dict is saved and loaded into a fresh optimizer over
    copies of the parameters, which continues; torch does the same. Ours continues
    identically from its own state_dict and from torch's."""
    problem = make_problem(case)
    kwargs = case.variants[index]

    def first_half(cls: type[Optimizer]) -> tuple[list[Tensor], dict[str, Any]]:
        run = build(cls, case, problem, kwargs)
        train(run, case, problem, SPLIT, schedule=False)
        return run.params, copy.deepcopy(run.optimizer.state_dict())

    def second_half(cls: type[Optimizer], params: list[Tensor], saved: dict) -> Run:
        run = build(cls, case, problem, kwargs, start=params)
        run.optimizer.load_state_dict(copy.deepcopy(saved))
        train(run, case, problem, STEPS - SPLIT, schedule=False)
        return run

    ref_params, ref_saved = first_half(case.reference)
    our_params, our_saved = first_half(case.cls)
    ref = second_half(case.reference, ref_params, ref_saved)
    assert_same_run(second_half(case.cls, our_params, our_saved), ref, case.rtol)
    assert_same_run(second_half(case.cls, ref_params, ref_saved), ref, case.rtol)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_maximize(case: OptimizerCase) -> None:
    """``maximize=True`` on the first variant, against torch."""
    if not case.supports_maximize:
        pytest.skip("no maximize")
    problem = make_problem(case, seed=1)
    kwargs = {**case.variants[0], "maximize": True}
    ours = build(case.cls, case, problem, kwargs)
    ref = build(case.reference, case, problem, kwargs)
    train(ours, case, problem, STEPS, schedule=False)
    train(ref, case, problem, STEPS, schedule=False)
    assert_same_run(ours, ref, case.rtol)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_tensor_lr_matches_float_lr(case: OptimizerCase) -> None:
    """A 1-element tensor ``lr`` (as schedulers of compiled runs use) steps exactly like
    the float, on both paths. torch.optim rejects it on its foreach path, so the float
    run of our class, checked against torch above, is the reference."""
    kwargs = case.variants[0]
    if not isinstance(kwargs.get("lr"), float):
        pytest.skip("no float lr in the first variant")
    problem = make_problem(case)
    for foreach in [False, True] if case.supports_foreach else [False]:
        with_float = build(case.cls, case, problem, with_foreach(case, kwargs, foreach))
        tensor_kwargs = {**kwargs, "lr": torch.tensor(kwargs["lr"], dtype=torch.float64)}
        with_tensor = build(case.cls, case, problem, with_foreach(case, tensor_kwargs, foreach))
        train(with_float, case, problem, 10, schedule=False)
        train(with_tensor, case, problem, 10, schedule=False)
        for p, q in zip(with_tensor.params, with_float.params):
            assert_close(p.detach(), q.detach(), case.rtol, f"foreach={foreach}")


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "kwargs", "message"), INVALID)
def test_invalid_hyperparameters(
    case: OptimizerCase, kwargs: dict[str, Any], message: str
) -> None:
    """Both classes reject the input with the same ValueError message, word for word."""
    param = torch.zeros(case.shapes[0], requires_grad=True)
    with pytest.raises(ValueError) as ours:
        case.cls([param], **kwargs)
    with pytest.raises(ValueError) as ref:
        case.reference([param], **kwargs)
    assert str(ref.value) == message
    assert str(ours.value) == message


# -- configs -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda path: path.stem)
def test_config_instantiates_with_every_argument(path: Path) -> None:
    """The config builds the optimizer through Hydra and lists every constructor argument
    after ``params``; a config named after its class holds the defaults."""
    cfg = OmegaConf.load(path)
    cls = hydra.utils.get_class(cfg._target_)
    param = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    optimizer = hydra.utils.instantiate(cfg)([param])
    assert type(optimizer) is cls

    signature = inspect.signature(cls.__init__).parameters
    arguments = [name for name in signature if name not in ("self", "params")]
    values = {key: value for key, value in OmegaConf.to_container(cfg).items() if key[0] != "_"}
    assert sorted(values) == sorted(arguments)

    # The values reach the param group (a list in YAML is a tuple in the group); null
    # may stand for a default the class derives.
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    group = optimizer.param_groups[0]
    for key, value in values.items():
        if key in group and value is not None:
            assert plain(group[key]) == value, key
    if path.stem == cls.__name__.lower():
        assert values == {name: plain(signature[name].default) for name in arguments}

    # A few steps: some methods (ADOPT) only initialise their state on the first one.
    capabilities = getattr(cls, "capabilities", None)
    create_graph = capabilities is not None and capabilities.needs_create_graph

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = (param**4).sum()
        loss.backward(create_graph=create_graph)
        return loss

    before = param.detach().clone()
    for _ in range(3):
        optimizer.step(closure)
    assert not torch.equal(param.detach(), before)


# --- The shared weight-decay helpers, by hand ---------------------------------------------
# Values exact in binary: grad + 0.5 param and param (1 - 0.5 * 0.5) need no rounding.


def _wd_tensors() -> tuple[Tensor, Tensor]:
    return torch.tensor([1.0, 2.0, -4.0]), torch.tensor([0.5, 0.25, 1.0])


def test_l2_helpers_add_the_decay_to_the_gradient_out_of_place() -> None:
    param, grad = _wd_tensors()
    assert apply_l2(grad, param, 0.5).tolist() == [1.0, 1.25, -1.0]
    assert grad.tolist() == [0.5, 0.25, 1.0]  # the gradient itself is left alone
    assert apply_l2(grad, param, 0.0) is grad
    (summed,) = apply_l2_foreach([grad], [param], 0.5)
    assert summed.tolist() == [1.0, 1.25, -1.0]
    assert grad.tolist() == [0.5, 0.25, 1.0]
    grads = [grad]
    assert apply_l2_foreach(grads, [param], 0.0) is grads


def test_decoupled_helpers_shrink_the_parameter_in_place() -> None:
    param, _ = _wd_tensors()
    decoupled_shrink(param, 0.5, 0.5)
    assert param.tolist() == [0.75, 1.5, -3.0]
    decoupled_shrink(param, 0.5, 0.0)
    assert param.tolist() == [0.75, 1.5, -3.0]
    decoupled_shrink_foreach([param], torch.tensor(0.5), 0.5)  # a tensor lr, as groups allow
    assert param.tolist() == [0.5625, 1.125, -2.25]


@pytest.mark.parametrize("foreach", [False, True])
def test_weight_decay_helper_takes_one_form_or_the_other(foreach: bool) -> None:
    def decay(grad: Tensor, param: Tensor, decoupled: bool) -> Tensor:
        if foreach:
            return apply_weight_decay_foreach([grad], [param], 0.5, 0.5, decoupled)[0]
        return apply_weight_decay(grad, param, 0.5, 0.5, decoupled)

    param, grad = _wd_tensors()
    assert decay(grad, param, decoupled=False).tolist() == [1.0, 1.25, -1.0]
    assert param.tolist() == [1.0, 2.0, -4.0]
    assert decay(grad, param, decoupled=True) is grad
    assert param.tolist() == [0.75, 1.5, -3.0]


@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9, "ab"])
def test_betas_of_another_length_raise_a_value_error(betas: Any) -> None:
    """torch.optim indexes ``betas[1]`` unchecked (an IndexError for one value); ours say
    how many values are needed, for every optimizer that takes betas."""
    import inspect

    from torchopt_bench.optim import OPTIMIZERS

    with_betas = [
        cls for cls in OPTIMIZERS.values() if "betas" in inspect.signature(cls).parameters
    ]
    assert len(with_betas) >= 10
    for cls in with_betas:
        count = len(inspect.signature(cls).parameters["betas"].default)
        if count != 2:
            continue
        with pytest.raises(ValueError, match=r"^Invalid betas: 2 values are needed, got "):
            cls([torch.zeros(2, requires_grad=True)], betas=betas)
