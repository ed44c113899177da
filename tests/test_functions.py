"""Tests of the test-function library, driven from one table.

Each row of :data:`CASES` holds what is known about a function independently of the
library: values at a few points worked out by hand from the published formula, the number
of global minimisers and the published minimum value (to the digits the literature gives),
gradients at kinks from the subgradient convention, and the tolerances of the grid search.
The library's own minimisers and minimum are then checked numerically: on a dense grid
over the domain, by local refinement, and by random search in 5 dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor

from torchopt_bench.functions import FUNCTIONS, TestFunction, get_function, safe_sqrt

scipy_optimize = pytest.importorskip("scipy.optimize")

Point = tuple[float, ...]
PI = math.pi
E = math.e


@dataclass(frozen=True)
class FunctionCase:
    """What the tests know about one function of the library."""

    #: Key in FUNCTIONS.
    name: str
    #: (point, f(point)) pairs, the value worked out by hand from the formula.
    values: tuple[tuple[Point, float], ...]
    #: Published global minimum value and the precision it is published to.
    published_minimum: float
    published_precision: float
    #: How many global minimisers the function has on its domain.
    n_minimizers: int
    #: The grid check: every grid point with f <= grid minimum + grid_tol lies within
    #: grid_radius of a listed minimiser, and near each listed minimiser the plain grid
    #: (without the minimiser's own coordinates) reaches that band, so that the tolerance
    #: is wide enough to reveal a minimiser missing from the list.
    grid_tol: float
    grid_radius: float
    grid_points: int = 2001
    #: Points where f is not differentiable, with the gradient autograd must return under
    #: the documented convention (None: only required to be finite).
    kinks: tuple[tuple[Point, Point | None], ...] = (((0.0, 0.0), None), ((1.0, -1.0), None))
    #: f is differentiable near its minimisers, so a local refinement can converge there.
    smooth_minima: bool = True
    #: with_dim can change the number of coordinates.
    n_dimensional: bool = False

    def __str__(self) -> str:
        return self.name


def branin_value(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * PI**2), 5 / PI, 1 / (8 * PI)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


CASES: list[FunctionCase] = [
    FunctionCase(
        "sphere",
        values=(((1.0, 2.0), 5.0), ((-3.0, 0.5), 9.25)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=1e-3,
        grid_radius=0.1,
        n_dimensional=True,
    ),
    FunctionCase(
        "rosenbrock",
        # (1 - x)^2 + 100 (y - x^2)^2
        values=(((0.0, 0.0), 1.0), ((-1.0, 1.0), 4.0), ((1.0, 2.0), 100.0)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=1e-3,
        grid_radius=0.15,
        n_dimensional=True,
    ),
    FunctionCase(
        "rastrigin",
        # 20 + sum x^2 - 10 cos(2 pi x): cos(pi) = -1, cos(2 pi) = 1
        values=(((0.5, 0.5), 40.5), ((1.0, -1.0), 2.0)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.1,
        grid_radius=0.1,
        n_dimensional=True,
    ),
    FunctionCase(
        "ackley",
        # at (1, 1) the mean of cos(2 pi x) is 1; at (0.5, 0.5) it is -1, sqrt(mean x^2) = 0.5
        values=(
            ((1.0, 1.0), 20 - 20 * math.exp(-0.2)),
            ((0.5, 0.5), -20 * math.exp(-0.1) - math.exp(-1) + 20 + E),
        ),
        published_minimum=0.0,
        published_precision=1e-12,
        n_minimizers=1,
        grid_tol=0.5,
        grid_radius=0.5,
        kinks=(((0.0, 0.0), (0.0, 0.0)),),
        smooth_minima=False,
        n_dimensional=True,
    ),
    FunctionCase(
        "beale",
        values=(((0.0, 0.0), 1.5**2 + 2.25**2 + 2.625**2), ((2.0, 0.0), 0.703125)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=5e-4,
        grid_radius=0.1,
    ),
    FunctionCase(
        "goldstein_price",
        # (0, 0): (1 + 19) * 30; (1, 1): (1 + 9 * 3) * (30 + 1 * 37)
        values=(((0.0, 0.0), 600.0), ((1.0, 1.0), 28.0 * 67.0)),
        published_minimum=3.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.1,
        grid_radius=0.04,
    ),
    FunctionCase(
        "booth",
        values=(((0.0, 0.0), 74.0), ((1.0, 1.0), 20.0)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.01,
        grid_radius=0.2,
    ),
    FunctionCase(
        "bukin6",
        # 100 sqrt|y - x^2/100| + |x + 10| / 100
        values=(
            ((-10.0, 0.0), 100.0),
            ((-5.0, 0.25), 0.05),
            ((-15.0, 0.25), 100 * math.sqrt(2) + 0.05),
        ),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=1e-3,
        grid_radius=0.2,
        # 3001 points per axis put (-10, 1) on the plain grid: the minimum sits on a ridge
        # of zero width that other grids only graze far from it.
        grid_points=3001,
        # on the ridge y = x^2/100 the sqrt term contributes 0; |x + 10| contributes
        # sign(x + 10) / 100
        kinks=(
            ((-10.0, 1.0), (0.0, 0.0)),
            ((-5.0, 0.25), (0.01, 0.0)),
            ((-15.0, 2.25), (-0.01, 0.0)),
            ((-10.0, 0.0), None),
        ),
        smooth_minima=False,
    ),
    FunctionCase(
        "matyas",
        values=(((1.0, 1.0), 0.04), ((1.0, -1.0), 1.0)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=2e-4,
        grid_radius=0.2,
    ),
    FunctionCase(
        "levi13",
        # sin(0) = 0; sin^2(1.5 pi) = 1, sin(pi) = 0: 1 + 0.25 * 2 + 0.25 * 1
        values=(((0.0, 0.0), 2.0), ((0.5, 0.5), 1.75)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.02,
        grid_radius=0.2,
    ),
    FunctionCase(
        "griewank",
        # 1 + |x|^2 / 4000 - cos(x) cos(y / sqrt 2)
        values=(((PI, 0.0), 2 + PI**2 / 4000), ((0.0, PI * math.sqrt(2)), 2 + 2 * PI**2 / 4000)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.02,
        grid_radius=12.0,
        n_dimensional=True,
    ),
    FunctionCase(
        "himmelblau",
        values=(((0.0, 0.0), 170.0), ((1.0, 1.0), 106.0)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=4,
        grid_tol=0.01,
        grid_radius=0.1,
    ),
    FunctionCase(
        "three_hump_camel",
        values=(((1.0, 1.0), 2 - 1.05 + 1 / 6 + 2), ((-1.0, 2.0), 2 - 1.05 + 1 / 6 - 2 + 4)),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=3e-3,
        grid_radius=0.1,
    ),
    FunctionCase(
        "six_hump_camel",
        values=(
            ((1.0, 1.0), 4 - 2.1 + 1 / 3 + 1),
            ((0.0, 1.0), 0.0),
            ((1.0, 0.0), 4 - 2.1 + 1 / 3),
        ),
        published_minimum=-1.0316,
        published_precision=1e-4,
        n_minimizers=2,
        grid_tol=1e-3,
        grid_radius=0.06,
    ),
    FunctionCase(
        "easom",
        values=(((PI, 0.0), math.exp(-(PI**2))), ((0.0, 0.0), -math.exp(-2 * PI**2))),
        published_minimum=-1.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=0.1,
        grid_radius=2.0,
    ),
    FunctionCase(
        "cross_in_tray",
        # at (pi/2, pi/2): sin x sin y = 1, radius pi / sqrt 2; on the axes sin x sin y = 0
        values=(
            ((PI / 2, PI / 2), -1e-4 * (math.exp(100 - 1 / math.sqrt(2)) + 1) ** 0.1),
            ((0.0, 1.0), -1e-4),
        ),
        published_minimum=-2.06261,
        published_precision=1e-5,
        n_minimizers=4,
        grid_tol=1e-3,
        grid_radius=0.2,
        # on the ridges sin x sin y = 0 the derivative of |.| is taken as 0
        kinks=(((0.0, 0.0), (0.0, 0.0)), ((0.0, 2.0), (0.0, 0.0)), ((2.0, 0.0), (0.0, 0.0))),
    ),
    FunctionCase(
        "eggholder",
        # at (100, 53) the second square root is of 0
        values=(
            ((0.0, 0.0), -47 * math.sin(math.sqrt(47))),
            ((100.0, 53.0), -100 * math.sin(math.sqrt(150))),
        ),
        published_minimum=-959.6407,
        published_precision=1e-4,
        n_minimizers=1,
        grid_tol=1.0,
        grid_radius=10.0,
        # at (0, -47) both square roots are of 0 and every term has derivative 0 there
        kinks=(((0.0, -47.0), (0.0, 0.0)), ((-94.0, 0.0), None), ((100.0, 53.0), None)),
    ),
    FunctionCase(
        "holder_table",
        # at (pi/2, 0): radius pi/2, |1 - 1/2| = 1/2
        values=(((PI / 2, 0.0), -math.exp(0.5)), ((0.0, 3.0), 0.0)),
        published_minimum=-19.2085,
        published_precision=1e-4,
        n_minimizers=4,
        grid_tol=0.05,
        grid_radius=0.2,
        # sin 0 = 0: the outer |.| has derivative 0 there; (pi, 0) is on the circle r = pi
        kinks=(((0.0, 0.0), (0.0, 0.0)), ((0.0, 5.0), (0.0, 0.0)), ((PI, 0.0), None)),
    ),
    FunctionCase(
        "mccormick",
        values=(((0.0, 0.0), 1.0), ((1.0, 1.0), math.sin(2.0) + 2.0)),
        published_minimum=-1.9133,
        published_precision=1e-4,
        n_minimizers=1,
        grid_tol=1e-3,
        grid_radius=0.07,
    ),
    FunctionCase(
        "schaffer2",
        values=(
            ((1.0, 1.0), 0.5 - 0.5 / 1.002**2),
            ((1.0, 0.0), 0.5 + (math.sin(1) ** 2 - 0.5) / 1.001**2),
        ),
        published_minimum=0.0,
        published_precision=0.0,
        n_minimizers=1,
        grid_tol=1e-3,
        grid_radius=2.0,
    ),
    FunctionCase(
        "schaffer4",
        values=(
            ((1.0, 1.0), 0.5 + 0.5 / 1.002**2),
            ((1.0, 0.0), 0.5 + (math.cos(math.sin(1)) ** 2 - 0.5) / 1.001**2),
        ),
        published_minimum=0.292579,
        published_precision=1e-6,
        n_minimizers=4,
        grid_tol=6e-4,
        grid_radius=0.5,
    ),
    FunctionCase(
        "styblinski_tang",
        # (x^4 - 16 x^2 + 5 x) / 2 per coordinate
        values=(((0.0, 0.0), 0.0), ((1.0, 1.0), -10.0), ((-1.0, 2.0), -29.0)),
        published_minimum=-39.16616570377142 * 2,
        published_precision=1e-12,
        n_minimizers=1,
        grid_tol=0.05,
        grid_radius=0.1,
        n_dimensional=True,
    ),
    FunctionCase(
        "branin",
        values=(((0.0, 0.0), branin_value(0.0, 0.0)), ((PI, 0.0), 2.275**2 + 10 / (8 * PI))),
        published_minimum=0.397887,
        published_precision=1e-6,
        n_minimizers=3,
        grid_tol=3e-3,
        grid_radius=0.15,
    ),
]

N_DIMENSIONAL = [case for case in CASES if case.n_dimensional]
DTYPES = [torch.float32, torch.float64]


def test_the_table_covers_the_library() -> None:
    assert sorted(case.name for case in CASES) == sorted(FUNCTIONS)


def lookup(case: FunctionCase, dim: int | None = None) -> TestFunction:
    return get_function(case.name, dim)


def value_and_grad(function: TestFunction, point: Point) -> tuple[float, np.ndarray]:
    x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    value = function(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad.numpy()


def refine(function: TestFunction, start: Point) -> np.ndarray:
    """L-BFGS-B in float64 within the domain, with autograd gradients."""

    def objective(point: np.ndarray) -> tuple[float, np.ndarray]:
        return value_and_grad(function, tuple(point))

    result = scipy_optimize.minimize(
        objective,
        np.asarray(start, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        bounds=function.domain,
        options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 2000},
    )
    return result.x


def distance_to_minimizers(function: TestFunction, points: Tensor) -> Tensor:
    minimizers = torch.tensor(function.minimizers, dtype=points.dtype)
    return torch.cdist(points, minimizers).min(-1).values


# --- the listed minima ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_minimizers_attain_the_minimum(case: FunctionCase) -> None:
    function = lookup(case)
    assert len(function.minimizers) == case.n_minimizers
    assert len(set(function.minimizers)) == case.n_minimizers
    assert function.minimum == pytest.approx(
        case.published_minimum, abs=case.published_precision + 1e-12
    )
    for point in function.minimizers:
        assert len(point) == function.dim
        assert all(low <= c <= high for c, (low, high) in zip(point, function.domain))
        value, _ = value_and_grad(function, point)
        assert value == pytest.approx(function.minimum, abs=1e-10)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_minimizers_are_stationary(case: FunctionCase) -> None:
    """Zero gradient in each free coordinate; on a bound it points out of the domain."""
    function = lookup(case)
    for point in function.minimizers:
        _, grad = value_and_grad(function, point)
        for c, g, (low, high) in zip(point, grad, function.domain):
            if c == high:
                assert g < 0
            elif c == low:
                assert g > 0
            else:
                assert abs(g) < 1e-9 * max(1.0, abs(function.minimum))


@pytest.mark.parametrize("case", [c for c in CASES if c.smooth_minima], ids=str)
def test_refinement_returns_to_each_minimizer(case: FunctionCase) -> None:
    function = lookup(case)
    offset = np.array([1e-3, -7e-4])
    for point in function.minimizers:
        low, high = np.array(function.domain).T
        start = np.clip(np.asarray(point) + offset, low, high)
        refined = refine(function, tuple(start))
        np.testing.assert_allclose(refined, point, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_grid_finds_no_lower_value_and_no_unlisted_minimizer(case: FunctionCase) -> None:
    function = lookup(case)
    plain = [
        torch.linspace(low, high, case.grid_points, dtype=torch.float64)
        for low, high in function.domain
    ]
    listed = [
        torch.tensor(sorted({p[i] for p in function.minimizers}), dtype=torch.float64)
        for i in range(2)
    ]
    # the plain grid, and the lines through the listed minimisers' coordinates
    xs, ys = torch.meshgrid(plain[0], plain[1], indexing="ij")
    blocks = [
        torch.stack([xs, ys], -1).reshape(-1, 2),
        torch.cartesian_prod(listed[0], torch.cat([plain[1], listed[1]])),
        torch.cartesian_prod(plain[0], listed[1]),
    ]
    points = torch.cat(blocks)
    values = function(points)
    n_plain = blocks[0].shape[0]

    # nothing below f*, and f* is reached
    scale = max(1.0, abs(function.minimum))
    grid_minimum = values.min().item()
    assert grid_minimum >= function.minimum - 1e-12 * scale
    assert grid_minimum == pytest.approx(function.minimum, abs=1e-12 * scale)

    # every grid point near the grid minimum is near a listed minimiser
    near = values <= grid_minimum + case.grid_tol
    far = distance_to_minimizers(function, points[near]) > case.grid_radius
    assert not far.any(), f"unlisted low points: {points[near][far][:5].tolist()}"

    # the plain grid reaches that band near each listed minimiser, so the band is wide
    # enough for an unlisted minimiser to have shown up
    plain_values = values[:n_plain].reshape(case.grid_points, case.grid_points)
    for x, y in function.minimizers:
        rows = (plain[0] - x).abs() <= case.grid_radius
        columns = (plain[1] - y).abs() <= case.grid_radius
        assert plain_values[rows][:, columns].min().item() <= grid_minimum + case.grid_tol


@pytest.mark.parametrize("case", N_DIMENSIONAL, ids=str)
def test_random_search_in_five_dimensions(case: FunctionCase) -> None:
    function = lookup(case, dim=5)
    (point,) = function.minimizers
    value, grad = value_and_grad(function, point)
    assert value == pytest.approx(function.minimum, abs=1e-10)
    assert np.abs(grad).max() < 1e-9 * max(1.0, abs(function.minimum))

    generator = torch.Generator().manual_seed(0)
    low, high = torch.tensor(function.domain, dtype=torch.float64).T
    samples = low + (high - low) * torch.rand(4000, 5, generator=generator, dtype=torch.float64)
    values = function(samples)
    assert values.min().item() > function.minimum
    best = samples[values.argsort()[:8]]
    for start in best:
        refined = refine(function, tuple(start.tolist()))
        refined_value, _ = value_and_grad(function, tuple(refined))
        assert refined_value >= function.minimum - 1e-9
        if refined_value <= function.minimum + 1e-6:
            np.testing.assert_allclose(refined, point, atol=1e-3)


# --- values, gradients, shapes --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_values_worked_by_hand(case: FunctionCase) -> None:
    function = lookup(case)
    for point, expected in case.values:
        value, _ = value_and_grad(function, point)
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_at_kinks_follow_the_convention(case: FunctionCase) -> None:
    function = lookup(case)
    for point, expected in case.kinks:
        _, grad = value_and_grad(function, point)
        assert np.isfinite(grad).all(), f"gradient {grad} at {point}"
        if expected is not None:
            np.testing.assert_allclose(grad, expected, atol=1e-12)
    kinks = torch.tensor([point for point, _ in case.kinks], dtype=torch.float64)
    assert torch.isfinite(hessian_rows(function, kinks)).all()


def hessian_rows(function: TestFunction, points: Tensor) -> Tensor:
    """The Hessian at each of ``points`` (shape (N, d, d)), by double backward."""
    points = points.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(function(points).sum(), points, create_graph=True)
    rows = [
        torch.autograd.grad(grad[:, j].sum(), points, retain_graph=True)[0]
        for j in range(points.shape[-1])
    ]
    return torch.stack(rows, -2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_finite_over_the_domain(case: FunctionCase, dtype: torch.dtype) -> None:
    function = lookup(case)
    generator = torch.Generator().manual_seed(1)
    low, high = torch.tensor(function.domain, dtype=dtype).T
    points = low + (high - low) * torch.rand(5000, 2, generator=generator, dtype=dtype)
    points = torch.cat([points, torch.tensor(function.minimizers, dtype=dtype)])
    points.requires_grad_(True)
    values = function(points)
    (grad,) = torch.autograd.grad(values.sum(), points)
    assert values.dtype == dtype and grad.dtype == dtype
    assert torch.isfinite(values).all()
    assert torch.isfinite(grad).all()
    # second derivatives too, for Newton-type methods
    assert torch.isfinite(hessian_rows(function, points)).all()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_batched_matches_point_by_point(case: FunctionCase) -> None:
    function = lookup(case)
    generator = torch.Generator().manual_seed(2)
    low, high = torch.tensor(function.domain, dtype=torch.float64).T
    points = low + (high - low) * torch.rand(3, 4, 2, generator=generator, dtype=torch.float64)
    batched = function(points)
    assert batched.shape == (3, 4)
    looped = torch.stack([function(p) for p in points.reshape(-1, 2)]).reshape(3, 4)
    torch.testing.assert_close(batched, looped, rtol=1e-13, atol=1e-13)

    # float32 agrees with float64 at the same points of the plot window, to float32
    # precision relative to the function's scale there
    low, high = torch.tensor(function.window, dtype=torch.float64).T
    window = low + (high - low) * torch.rand(100, 2, generator=generator, dtype=torch.float64)
    single = function(window.float())
    double = function(window.float().double())
    scale = double.abs().max().item() + 1.0
    torch.testing.assert_close(single.double(), double, rtol=0.0, atol=1e-5 * scale)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_no_tensor_is_made_on_a_fixed_device(case: FunctionCase) -> None:
    """On the meta device any tensor created on the CPU would make the call fail."""
    function = lookup(case, dim=3 if case.n_dimensional else None)
    x = torch.empty(6, function.dim, device="meta", dtype=torch.float64)
    out = function(x)
    assert out.device.type == "meta" and out.shape == (6,)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_start_and_window(case: FunctionCase) -> None:
    function = lookup(case)
    assert len(function.start) == function.dim
    assert all(low <= c <= high for c, (low, high) in zip(function.start, function.domain))
    assert distance_to_minimizers(function, torch.tensor([function.start])).item() > 0.1
    (x_low, x_high), (y_low, y_high) = function.window
    for x, y in [function.start[:2], *[p[:2] for p in function.minimizers]]:
        assert x_low <= x <= x_high and y_low <= y <= y_high
    assert function.reference


# --- dimensions and look-up -------------------------------------------------------------------


@pytest.mark.parametrize("case", N_DIMENSIONAL, ids=str)
def test_with_dim_rescales(case: FunctionCase) -> None:
    two = lookup(case)
    five = two.with_dim(5)
    assert five.dim == 5 and five.n_dimensional
    assert len(five.domain) == 5 and len(five.start) == 5
    assert [len(p) for p in five.minimizers] == [5]
    assert five.minimum == pytest.approx(two.minimum * 5 / 2, abs=1e-12)
    assert get_function(case.name, 5).minimizers == five.minimizers
    assert five.with_dim(2).minimizers == two.minimizers
    with pytest.raises(ValueError, match="at least 2"):
        two.with_dim(1)


def test_styblinski_tang_minimum_scales_with_dim() -> None:
    for dim in (2, 3, 7):
        function = get_function("styblinski_tang", dim)
        assert function.minimum == pytest.approx(-39.16616570377142 * dim, abs=1e-10)
        assert function.minimizers == [(-2.903534027771177,) * dim]


@pytest.mark.parametrize("case", [c for c in CASES if not c.n_dimensional], ids=str)
def test_with_dim_refuses_two_dimensional_functions(case: FunctionCase) -> None:
    function = lookup(case)
    assert function.with_dim(2) is function
    with pytest.raises(ValueError, match=f"{case.name} is defined in 2 dimensions only"):
        function.with_dim(3)
    with pytest.raises(ValueError, match="dim=3"):
        get_function(case.name, 3)


@pytest.mark.parametrize(
    ("name", "dim", "message"),
    [
        ("nope", None, "Unknown test function 'nope'"),
        ("sphere", 1, "task.dim must be at least 2, got 1"),
        ("sphere", 2.5, "task.dim must be an integer, got 2.5"),
        ("sphere", True, "task.dim must be an integer, got True"),
    ],
)
def test_bad_lookups_raise(name: str, dim: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_function(name, dim)  # type: ignore[arg-type]


def test_wrong_number_of_coordinates_raises() -> None:
    with pytest.raises(ValueError, match=r"takes points of 2 coordinates, got shape \(4, 3\)"):
        FUNCTIONS["beale"](torch.zeros(4, 3))


def test_safe_sqrt_derivatives() -> None:
    x = torch.tensor([0.0, 0.25, 4.0], dtype=torch.float64, requires_grad=True)
    y = safe_sqrt(x)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    torch.testing.assert_close(grad, torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))
    # second derivative -1/4 x^(-3/2), finite (0) at 0
    (second,) = torch.autograd.grad(grad.sum(), x)
    torch.testing.assert_close(second, torch.tensor([0.0, -2.0, -1 / 32], dtype=torch.float64))
