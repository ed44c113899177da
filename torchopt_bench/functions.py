"""Classic optimisation test functions, written for autograd.

Each entry of :data:`FUNCTIONS` is a :class:`TestFunction`: callable on a tensor of shape
``(..., dim)`` and returning shape ``(...)``, with its global minimum value, every global
minimiser, the search domain, a default start and a plot window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

__all__ = ["FUNCTIONS", "TestFunction", "get_function"]

Point = tuple[float, ...]
Bounds = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class TestFunction:
    """A test function with what is known about it.

    Attributes:
        name: the task name.
        fn: the formula, mapping ``(..., dim)`` to ``(...)``.
        minimum: the global minimum value f*.
        minimizers: every global minimiser, for ``dim`` coordinates.
        domain: the search domain, one ``(low, high)`` per coordinate.
        start: the default starting point.
        window: the plot window, ``((x_low, x_high), (y_low, y_high))``.
        smooth: whether f is continuously differentiable on the domain.
        dim: the number of coordinates.
        n_dimensional: whether :meth:`with_dim` can change ``dim``.
        reference: where the formula and the minimum come from.
    """

    __test__ = False  # not a pytest test class

    name: str
    fn: Callable[[Tensor], Tensor]
    minimum: float
    minimizers: list[Point]
    domain: Bounds
    start: Point
    window: tuple[tuple[float, float], tuple[float, float]]
    smooth: bool = True
    dim: int = 2
    n_dimensional: bool = False
    reference: str = ""
    _rescale: Callable[[int], TestFunction] | None = field(default=None, repr=False)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} takes points of {self.dim} coordinates, got shape "
                f"{tuple(x.shape)}; set task.dim={x.shape[-1]} if the function is "
                "n-dimensional"
            )
        return self.fn(x)

    def with_dim(self, dim: int) -> TestFunction:
        """The same function in ``dim`` coordinates (n-dimensional functions only)."""
        if dim == self.dim:
            return self
        if not self.n_dimensional or self._rescale is None:
            raise ValueError(f"{self.name} is defined in 2 dimensions only, not dim={dim}")
        if dim < 2:
            raise ValueError(f"task.dim must be at least 2, got {dim}")
        return self._rescale(dim)


def _nd(
    name: str,
    fn: Callable[[Tensor], Tensor],
    minimum: float,
    minimizer_coord: float,
    bound: float,
    start_2d: Point,
    window: tuple[tuple[float, float], tuple[float, float]],
    reference: str,
    smooth: bool = True,
) -> TestFunction:
    """An n-dimensional function whose minimiser repeats one coordinate value."""

    def make(dim: int) -> TestFunction:
        start = start_2d if dim == 2 else tuple(start_2d[i % 2] for i in range(dim))
        return TestFunction(
            name=name,
            fn=fn,
            minimum=minimum,
            minimizers=[(minimizer_coord,) * dim],
            domain=((-bound, bound),) * dim,
            start=start,
            window=window,
            smooth=smooth,
            dim=dim,
            n_dimensional=True,
            reference=reference,
            _rescale=make,
        )

    return make(2)


def sphere(x: Tensor) -> Tensor:
    r"""Sphere: :math:`f(x) = \sum_i x_i^2`; minimum 0 at the origin."""
    return (x * x).sum(-1)


def rosenbrock(x: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    r"""Rosenbrock: :math:`f(x) = \sum_{i<n} b (x_{i+1} - x_i^2)^2 + (a - x_i)^2`.

    In 2-D, :math:`(1 - x)^2 + 100 (y - x^2)^2`, minimum 0 at (1, 1), at the end of a long
    curved valley (Rosenbrock, 1960).
    """
    head, tail = x[..., :-1], x[..., 1:]
    return (b * (tail - head * head) ** 2 + (a - head) ** 2).sum(-1)


def beale(x: Tensor) -> Tensor:
    r"""Beale: :math:`(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`;
    minimum 0 at (3, 0.5)."""
    u, v = x[..., 0], x[..., 1]
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2


def himmelblau(x: Tensor) -> Tensor:
    r"""Himmelblau: :math:`(x^2 + y - 11)^2 + (x + y^2 - 7)^2`; minimum 0 at four points
    (Himmelblau, 1972)."""
    u, v = x[..., 0], x[..., 1]
    return (u * u + v - 11) ** 2 + (u + v * v - 7) ** 2


FUNCTIONS: dict[str, TestFunction] = {
    "sphere": _nd(
        "sphere", sphere, 0.0, 0.0, 5.12, (-1.5, 1.0), ((-2.0, 2.0), (-2.0, 2.0)),
        "Jamil & Yang (2013), A literature survey of benchmark functions, f136",
    ),
    "rosenbrock": _nd(
        "rosenbrock", rosenbrock, 0.0, 1.0, 5.0, (-0.5, 0.5), ((-2.0, 2.0), (-1.0, 3.0)),
        "Rosenbrock (1960), Comput. J. 3(3):175; Jamil & Yang (2013), f105",
    ),
    "beale": TestFunction(
        name="beale",
        fn=beale,
        minimum=0.0,
        minimizers=[(3.0, 0.5)],
        domain=((-4.5, 4.5), (-4.5, 4.5)),
        start=(1.0, 1.5),
        window=((-4.5, 4.5), (-4.5, 4.5)),
        reference="Beale (1958); Jamil & Yang (2013), f10",
    ),
    "himmelblau": TestFunction(
        name="himmelblau",
        fn=himmelblau,
        minimum=0.0,
        minimizers=[
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.283185991286170),
            (3.584428340330492, -1.848126526964404),
        ],
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        start=(0.0, 0.0),
        window=((-5.0, 5.0), (-5.0, 5.0)),
        reference="Himmelblau (1972), Applied Nonlinear Programming",
    ),
}


def get_function(name: str, dim: int | None = None) -> TestFunction:
    """Look a function up by task name, in ``dim`` coordinates if given."""
    try:
        function = FUNCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(FUNCTIONS))
        raise ValueError(f"Unknown test function {name!r}; choose one of: {known}") from None
    return function if dim is None else function.with_dim(dim)
