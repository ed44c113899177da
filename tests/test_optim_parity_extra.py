"""Parity checks the case table cannot express, still against torch.optim.

* L-BFGS: one param group, a closure, several inner iterations per ``step``, global state
  on the first parameter; with and without the strong-Wolfe line search.
* Muon: the 2-D-only contract, the split of a model's parameters between Muon and AdamW,
  and the Newton-Schulz orthogonalisation checked against an SVD.
* ASGD with a decaying step size, which torch's two paths compute in different
  precisions unless the default dtype is float64.
* The configs of these optimizers, instantiated through Hydra.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor
from torch.optim import Optimizer

import torchopt_bench.optim as ours
from torchopt_bench.optim.lbfgs import _cubic_minimizer
from torchopt_bench.optim.muon import _orthogonalize, split_params_for_muon

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
RTOL = 1e-10


def assert_close(actual: Any, expected: Any, where: str, rtol: float = RTOL) -> None:
    """Recursive comparison of state values: tensors (same dtype and shape) to ``rtol``
    relative to their largest entry, numbers to ``rtol``, lists and dicts entry by entry."""
    if isinstance(expected, Tensor):
        assert isinstance(actual, Tensor), f"{where}: {type(actual).__name__} is not a tensor"
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        scale = expected.abs().max().item() if expected.numel() else 0.0
        torch.testing.assert_close(
            actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{where}: {m}"
        )
    elif isinstance(expected, dict):
        assert sorted(map(str, actual)) == sorted(map(str, expected)), f"{where}: keys differ"
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}[{key!r}]", rtol)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{index}]", rtol)
    elif isinstance(expected, float):
        assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=1e-300), where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def assert_same_state(actual: Optimizer, expected: Optimizer) -> None:
    assert_close(actual.state_dict()["state"], expected.state_dict()["state"], "state")


# -- L-BFGS --------------------------------------------------------------------------------


def rosenbrock(x: Tensor) -> Tensor:
    """Rosenbrock's function over the last dimension of size 2; minimum 0 at (1, 1)."""
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


class LbfgsProblem:
    """A Rosenbrock point, a batch of Rosenbrock points coupled by a quartic, a complex
    vector on a ring (|z| = 1), and a parameter that never gets a gradient."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.init = [
            torch.tensor([-1.5, 2.0], dtype=torch.float64),
            torch.randn(3, 2, generator=generator, dtype=torch.float64),
            torch.randn(2, generator=generator, dtype=torch.complex128),
            torch.randn(4, generator=generator, dtype=torch.float64),  # never in the loss
        ]

    def loss(self, params: list[Tensor]) -> Tensor:
        point, batch, ring, _ = params
        return (
            rosenbrock(point)
            + rosenbrock(batch).sum()
            + ((batch - 0.5) ** 4).sum()
            + ((ring.abs() ** 2 - 1) ** 2).sum()
        )


def lbfgs_run(
    cls: type[Optimizer],
    kwargs: dict[str, Any],
    steps: int,
    start: list[Tensor] | None = None,
    state_dict: dict[str, Any] | None = None,
    schedule: bool = False,
) -> tuple[Optimizer, list[Tensor], list[float]]:
    """``steps`` closure steps from ``start`` (default: the problem's start); returns the
    optimizer, the parameters and the losses that ``step`` returned."""
    problem = LbfgsProblem()
    params = [p.clone().requires_grad_() for p in (start or problem.init)]
    optimizer = cls(params, **kwargs)
    if state_dict is not None:
        optimizer.load_state_dict(state_dict)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3, 0.5) if schedule else None

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        return loss

    losses = []
    for _ in range(steps):
        losses.append(optimizer.step(closure).item())
        if scheduler is not None:
            scheduler.step()
    return optimizer, params, losses


LBFGS_VARIANTS = [
    pytest.param({}, id="fixed-step"),
    pytest.param({"lr": 0.2, "max_iter": 5, "history_size": 3}, id="fixed-step-short-history"),
    pytest.param({"line_search_fn": "strong_wolfe"}, id="wolfe"),
    pytest.param(
        {"line_search_fn": "strong_wolfe", "max_iter": 7, "max_eval": 9, "history_size": 2},
        id="wolfe-tight-budget",
    ),
    pytest.param(
        {"line_search_fn": "strong_wolfe", "lr": 0.5, "tolerance_change": 1e-5},
        id="wolfe-loose-tolerance",
    ),
]


@pytest.mark.parametrize("kwargs", LBFGS_VARIANTS)
def test_lbfgs_matches_torch(kwargs: dict[str, Any]) -> None:
    """Twelve closure steps (each up to max_iter iterations): losses, parameters and the
    whole state equal torch's; the parameter without a gradient stays where it was."""
    mine, my_params, my_losses = lbfgs_run(ours.LBFGS, kwargs, steps=12)
    ref, ref_params, ref_losses = lbfgs_run(torch.optim.LBFGS, kwargs, steps=12)

    assert_close(my_losses, ref_losses, "losses")
    for index, (p, q) in enumerate(zip(my_params, ref_params)):
        assert_close(p.detach(), q.detach(), f"param {index}")
    assert_same_state(mine, ref)
    assert set(mine.state[my_params[0]]) >= {"func_evals", "n_iter", "d", "old_dirs", "H_diag"}
    assert torch.equal(my_params[3].detach(), LbfgsProblem().init[3])
    # The run did real work: many iterations, and a large decrease of the loss.
    assert mine.state[my_params[0]]["n_iter"] > 12
    assert my_losses[-1] < 0.1 * my_losses[0]


@pytest.mark.parametrize("source", ["ours", "torch"])
@pytest.mark.parametrize("kwargs", LBFGS_VARIANTS[::2])
def test_lbfgs_state_dict_continuation(kwargs: dict[str, Any], source: str) -> None:
    """Six steps, save the state_dict, load it into a fresh optimizer over copies of the
    parameters, six more steps; torch does the same. torch's state_dict loads into ours."""

    def interrupted(saving: type[Optimizer], loading: type[Optimizer]) -> list[Tensor]:
        first, params, _ = lbfgs_run(saving, kwargs, steps=6)
        saved = copy.deepcopy(first.state_dict())
        start = [p.detach() for p in params]
        second, params, _ = lbfgs_run(loading, kwargs, steps=6, start=start, state_dict=saved)
        return [second, *params]

    mine, *my_params = interrupted(
        ours.LBFGS if source == "ours" else torch.optim.LBFGS, ours.LBFGS
    )
    ref, *ref_params = interrupted(torch.optim.LBFGS, torch.optim.LBFGS)
    for index, (p, q) in enumerate(zip(my_params, ref_params)):
        assert_close(p.detach(), q.detach(), f"param {index}")
    assert_same_state(mine, ref)


@pytest.mark.parametrize("kwargs", LBFGS_VARIANTS[::2])
def test_lbfgs_with_lr_scheduler(kwargs: dict[str, Any]) -> None:
    """The learning rate is read from the group at every step, as torch does."""
    mine, my_params, _ = lbfgs_run(ours.LBFGS, kwargs, steps=10, schedule=True)
    ref, ref_params, _ = lbfgs_run(torch.optim.LBFGS, kwargs, steps=10, schedule=True)
    assert mine.param_groups[0]["lr"] == ref.param_groups[0]["lr"] < kwargs.get("lr", 1.0)
    for index, (p, q) in enumerate(zip(my_params, ref_params)):
        assert_close(p.detach(), q.detach(), f"param {index}")
    assert_same_state(mine, ref)


def test_lbfgs_reaches_rosenbrock_minimum() -> None:
    """From (-1.2, 1), the classic start, L-BFGS with the line search finds the published
    minimiser (1, 1) with f = 0."""
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    optimizer = ours.LBFGS(
        [x], max_iter=200, max_eval=400, tolerance_grad=1e-10, tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = rosenbrock(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert rosenbrock(x).item() < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"lr": -0.1}, "Invalid learning rate: -0.1")],
)
def test_lbfgs_invalid_like_torch(kwargs: dict[str, Any], message: str) -> None:
    param = torch.zeros(2, requires_grad=True)
    for cls in (ours.LBFGS, torch.optim.LBFGS):
        with pytest.raises(ValueError) as error:
            cls([param], **kwargs)
        assert str(error.value) == message


def test_lbfgs_rejects_param_groups_like_torch() -> None:
    groups = [
        {"params": [torch.zeros(2, requires_grad=True)]},
        {"params": [torch.zeros(3, requires_grad=True)], "lr": 0.1},
    ]
    messages = []
    for cls in (ours.LBFGS, torch.optim.LBFGS):
        with pytest.raises(ValueError) as error:
            cls(groups)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"line_search_fn": "armijo"},
            "Invalid line_search_fn: 'armijo'; expected one of ('strong_wolfe',) or None",
        ),
        ({"history_size": 0}, "Invalid history_size value: 0"),
    ],
)
def test_lbfgs_rejects_at_construction(kwargs: dict[str, Any], message: str) -> None:
    """Inputs torch.optim.LBFGS accepts but cannot step with are refused up front."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ours.LBFGS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_lbfgs_needs_a_closure() -> None:
    assert ours.LBFGS.capabilities.needs_closure
    optimizer = ours.LBFGS([torch.zeros(2, requires_grad=True)])
    with pytest.raises(RuntimeError, match="requires a closure"):
        optimizer.step(None)


def test_cubic_minimizer_by_hand() -> None:
    """f(x) = x^3 - 3x has f'(x) = 3x^2 - 3 and its local minimum at x = 1; the cubic
    through (0, f(0), f'(0)) and (2, f(2), f'(2)) is f itself."""
    assert _cubic_minimizer(0.0, 0.0, -3.0, 2.0, 2.0, 9.0) == pytest.approx(1.0, rel=1e-15)
    # Either order of the points, and clamping to bounds that exclude the minimiser.
    assert _cubic_minimizer(2.0, 2.0, 9.0, 0.0, 0.0, -3.0) == pytest.approx(1.0, rel=1e-15)
    assert _cubic_minimizer(0.0, 0.0, -3.0, 2.0, 2.0, 9.0, bounds=(1.5, 3.0)) == 1.5
    # Slopes 1 and 1 and a rise of 0.5 over [0, 1]: d1 = 1 + 1 - 3 * 0.5 = 0.5 and
    # d1^2 < g1 g2, so the cubic is monotone and the middle of the interval is returned.
    assert _cubic_minimizer(0.0, 0.0, 1.0, 1.0, 0.5, 1.0) == 0.5


# -- Muon ------------------------------------------------------------------------------------


def test_muon_rejects_non_matrices_like_torch() -> None:
    for shape in [(5,), (2, 3, 4), ()]:
        param = torch.zeros(shape, requires_grad=True)
        messages = []
        for cls in (ours.Muon, torch.optim.Muon):
            with pytest.raises(ValueError) as error:
                cls([torch.zeros(3, 2, requires_grad=True), param])
            messages.append(str(error.value))
        assert messages[0] == messages[1]
        assert messages[0].startswith("Muon only supports 2D parameters")


def test_muon_rejects_complex_like_torch() -> None:
    for cls in (ours.Muon, torch.optim.Muon):
        param = torch.zeros(3, 2, dtype=torch.complex128, requires_grad=True)
        optimizer = cls([param])
        param.grad = torch.ones_like(param)
        with pytest.raises(RuntimeError, match="does not support complex parameters"):
            optimizer.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ns_steps": 100}, "Number of steps must be less than 100 for computational efficiency"),
        ({"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
    ],
)
def test_muon_newton_schulz_arguments(kwargs: dict[str, Any], message: str) -> None:
    """torch raises these at the first step; the same message comes from the constructor."""
    param = torch.zeros(3, 2, requires_grad=True)
    reference = torch.optim.Muon([param], **kwargs)
    param.grad = torch.ones_like(param)
    with pytest.raises(ValueError) as ref_error:
        reference.step()
    with pytest.raises(ValueError) as error:
        ours.Muon([param], **kwargs)
    assert str(error.value) == str(ref_error.value) == message


def test_split_params_for_muon() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1, bias=False)
    )
    matrices, others = split_params_for_muon(model.parameters())
    assert [p.shape for p in matrices] == [(8, 4), (1, 8)]
    assert [p.shape for p in others] == [(8,), (8,), (8,)]
    assert len(matrices) + len(others) == len(list(model.parameters()))
    point = torch.zeros(2, requires_grad=True)
    assert split_params_for_muon([point]) == ([], [point])
    with pytest.raises(TypeError, match="expects tensors"):
        split_params_for_muon([{"params": [point]}])


@pytest.mark.parametrize("shape", [(16, 16), (24, 8), (8, 24)])
def test_newton_schulz_keeps_singular_vectors(shape: tuple[int, int]) -> None:
    """For M = U S V^T the iteration is an odd matrix polynomial, so its result is
    U p(S) V^T: U^T O V is diagonal, p(S) > 0, and with the published coefficients its
    entries lie near one for a well-conditioned M. Checked against an SVD in float64."""
    generator = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(
        torch.randn(shape[0], shape[0], generator=generator, dtype=torch.float64)
    )
    v, _ = torch.linalg.qr(
        torch.randn(shape[1], shape[1], generator=generator, dtype=torch.float64)
    )
    k = min(shape)
    singular = torch.linspace(0.3, 3.0, k, dtype=torch.float64)
    matrix = u[:, :k] @ torch.diag(singular) @ v[:, :k].T

    result = _orthogonalize(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7).double()
    assert result.shape == matrix.shape
    rotated = u[:, :k].T @ result @ v[:, :k]
    diagonal = torch.diagonal(rotated)
    off_diagonal = rotated - torch.diag(diagonal)
    # bfloat16 arithmetic: about three significant digits.
    assert off_diagonal.abs().max() < 0.05
    assert diagonal.min() > 0.5 and diagonal.max() < 1.25


def test_muon_with_adamw_fallback_matches_torch() -> None:
    """A small network: matrices by Muon, biases by AdamW, 60 steps, against the same
    split with torch.optim.Muon and torch.optim.AdamW."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(32, 1, generator=generator, dtype=torch.float64)

    def train(
        muon_cls: type[Optimizer], adamw_cls: type[Optimizer]
    ) -> tuple[torch.nn.Module, list[Tensor]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        ).double()
        start = [p.detach().clone() for p in model.parameters()]
        matrices, others = split_params_for_muon(model.parameters())
        optimizers = [
            muon_cls(matrices, lr=0.02, weight_decay=0.01),
            adamw_cls(others, lr=0.01, weight_decay=0.01),
        ]
        for _ in range(60):
            for optimizer in optimizers:
                optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(inputs), targets).backward()
            for optimizer in optimizers:
                optimizer.step()
        return model, start

    mine, start = train(ours.Muon, ours.AdamW)
    ref, _ = train(torch.optim.Muon, torch.optim.AdamW)
    for (name, p), q, p0 in zip(mine.named_parameters(), ref.parameters(), start):
        assert_close(p.detach(), q.detach(), name)
        assert (p - p0).abs().max() > 1e-2, f"{name} barely moved"


# -- ASGD with a decaying step size ------------------------------------------------------------


@pytest.fixture
def float64_default() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_problem_run(
    cls: type[Optimizer], kwargs: dict[str, Any], steps: int = 100
) -> tuple[Optimizer, list[Tensor]]:
    """Two groups (the second with a larger lr), a complex tensor, a frozen parameter, a
    StepLR schedule; a nonconvex loss with bounded gradients."""
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.randn(3, 4, generator=generator, dtype=torch.float64).requires_grad_(),
        torch.randn(5, generator=generator, dtype=torch.complex128).requires_grad_(),
        torch.randn(2, 3, generator=generator, dtype=torch.float64).requires_grad_(),
    ]
    frozen = torch.randn(4, generator=generator, dtype=torch.float64).requires_grad_()
    optimizer = cls(
        [{"params": [params[0], frozen]}, {"params": params[1:], "lr": 0.03}], **kwargs
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        views = [torch.view_as_real(p) if p.is_complex() else p for p in params]
        sum((torch.log1p((x - 0.5) ** 2) + 0.3 * torch.sin(2 * x)).sum() for x in views).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, [*params, frozen]


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.02, "lambd": 5.0, "alpha": 0.75, "t0": 20},
        {"lr": 0.02, "lambd": 2.0, "alpha": 1.0, "t0": 50, "weight_decay": 0.1, "maximize": True},
    ],
)
def test_asgd_decaying_step_matches_torch(kwargs: dict[str, Any], foreach: bool) -> None:
    """100 steps with eta = lr / (1 + lambd lr t)^alpha decaying, both paths against
    torch's; the state's eta is also checked against that formula by hand."""
    mine, my_params = small_problem_run(ours.ASGD, {**kwargs, "foreach": foreach})
    ref, ref_params = small_problem_run(torch.optim.ASGD, {**kwargs, "foreach": foreach})
    for index, (p, q) in enumerate(zip(my_params, ref_params)):
        assert_close(p.detach(), q.detach(), f"param {index}")
    assert_same_state(mine, ref)

    for group in mine.param_groups:
        lr = group["lr"]  # after the schedule's last change
        expected = lr / (1 + kwargs["lambd"] * lr * 100) ** kwargs["alpha"]
        assert expected < 0.8 * lr, "eta should have decayed noticeably"
        for p in group["params"]:
            if p.grad is not None:
                assert mine.state[p]["eta"].item() == pytest.approx(expected, rel=1e-12)


# -- configs ---------------------------------------------------------------------------------

CONFIGS = {
    "rprop": ours.Rprop,
    "asgd": ours.ASGD,
    "adafactor": ours.Adafactor,
    "lbfgs": ours.LBFGS,
    "lbfgs_wolfe": ours.LBFGS,
    "muon": ours.Muon,
}
#: Keys a config sets away from the constructor's default.
CONFIG_OVERRIDES = {"lbfgs_wolfe": {"line_search_fn": "strong_wolfe"}}


def plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_instantiates(name: str) -> None:
    """Hydra builds the class from the config, which lists every constructor argument
    with its default (except the keys the config exists to change)."""
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    cls = CONFIGS[name]
    param = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    optimizer = hydra.utils.instantiate(cfg)([param])
    assert type(optimizer) is cls

    signature = inspect.signature(cls.__init__).parameters
    defaults = {
        key: plain(p.default) for key, p in signature.items() if key not in ("self", "params")
    }
    values = {key: value for key, value in OmegaConf.to_container(cfg).items() if key[0] != "_"}
    assert values == {**defaults, **CONFIG_OVERRIDES.get(name, {})}

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = ((param - 1) ** 2).sum()
        loss.backward()
        return loss

    before = param.detach().clone()
    optimizer.step(closure)
    assert not torch.equal(param.detach(), before)


def test_lbfgs_config_derives_max_eval() -> None:
    """``max_eval: null`` becomes torch's default, max_iter * 5 // 4, in the param group."""
    cfg = OmegaConf.load(CONFIG_DIR / "lbfgs.yaml")
    optimizer = hydra.utils.instantiate(cfg, max_iter=40)([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["max_eval"] == 50
