"""Classic optimisation test functions, written for autograd.

Each entry of :data:`FUNCTIONS` is a :class:`TestFunction`: callable on a tensor of shape
``(..., dim)`` and returning shape ``(...)``, with its global minimum value, every global
minimiser, the search domain, a default start and a plot window.

Conventions:

* Every formula is written with torch operations on ``x[..., i]``, so it broadcasts over
  leading dimensions and runs in any floating dtype on any device. Constants are Python
  floats, never tensors made on a fixed device.
* The domain is the usual search domain of the literature (Surjanovic & Bingham's Virtual
  Library of Simulation Experiments unless the entry says otherwise). Minimisers are given
  for that domain; the Eggholder's lies on its boundary.
* Minimisers that are not round numbers or closed forms were computed as roots of the
  gradient in 40-digit arithmetic and rounded to float64; the minimum is the exact value
  rounded to float64. Some differ from the digits usually published: Schaffer N. 4's
  minimisers are (0, ±1.2531318...), not (0, ±1.253115), and Cross-in-tray's are
  (±1.3494066..., ±1.3494066...), not (±1.3491, ±1.3491).
* Kinks get a finite subgradient from autograd. ``|u|`` is ``torch.abs``, whose derivative
  PyTorch defines as ``sign(u)``, hence 0 at ``u = 0``. ``sqrt`` of a quantity that can
  reach 0 is :func:`safe_sqrt`, whose derivative is defined as 0 at 0. Each docstring says
  where its kinks are and what autograd returns there. Second derivatives are finite
  everywhere as well, for Newton-type methods.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["FUNCTIONS", "TestFunction", "get_function", "safe_sqrt"]

logger = logging.getLogger(__name__)

Point = tuple[float, ...]
Bounds = tuple[tuple[float, float], ...]
Window = tuple[tuple[float, float], tuple[float, float]]

VLSE = "Surjanovic & Bingham, Virtual Library of Simulation Experiments, https://www.sfu.ca/~ssurjano/"
JAMIL_YANG = "Jamil & Yang (2013), Int. J. Math. Model. Numer. Optim. 4(2):150-194"
MOLGA_SMUTNICKI = "Molga & Smutnicki (2005), Test functions for optimization needs"


@dataclass(frozen=True)
class TestFunction:
    """A test function with what is known about it.

    Attributes:
        name: the task name.
        fn: the formula, mapping ``(..., dim)`` to ``(...)``.
        minimum: the global minimum value f* on the domain.
        minimizers: every global minimiser on the domain, for ``dim`` coordinates.
        domain: the search domain, one ``(low, high)`` per coordinate.
        start: the default starting point, inside the domain and not a minimiser.
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
    window: Window
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
        """The same function in ``dim`` coordinates (n-dimensional functions only).

        The minimisers, the minimum, the domain and the start are rescaled with it; the
        plot window stays that of the first two coordinates.
        """
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"task.dim must be an integer, got {dim!r}")
        if dim == self.dim:
            return self
        if not self.n_dimensional or self._rescale is None:
            raise ValueError(f"{self.name} is defined in 2 dimensions only, not dim={dim}")
        if dim < 2:
            raise ValueError(f"task.dim must be at least 2, got {dim}")
        return self._rescale(dim)


def safe_sqrt(x: Tensor) -> Tensor:
    r"""Square root of a non-negative tensor whose derivative is defined as 0 at 0.

    ``torch.sqrt`` has an infinite derivative at 0, and ``sqrt(sum(x**2))`` gives NaN
    gradients (0/0) at the origin. Here both ``where`` branches are finite, so first and
    higher derivatives are finite everywhere: :math:`1 / (2\sqrt{x})` for :math:`x > 0`
    and 0 at :math:`x = 0`. Entries below 0 map to 0 with derivative 0.
    """
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, 1.0)), 0.0)


def _n_dimensional(
    name: str,
    fn: Callable[[Tensor], Tensor],
    *,
    minimum_per_coordinate: float,
    minimizer_coordinate: float,
    bounds: tuple[float, float],
    start: Point,
    window: Window,
    reference: str,
    smooth: bool = True,
) -> TestFunction:
    """An n-dimensional function whose minimiser repeats one coordinate value.

    ``minimum`` is ``dim * minimum_per_coordinate``; the start repeats the two
    coordinates of the 2-D start in turn.
    """

    def make(dim: int) -> TestFunction:
        return TestFunction(
            name=name,
            fn=fn,
            minimum=minimum_per_coordinate * dim,
            minimizers=[(minimizer_coordinate,) * dim],
            domain=(bounds,) * dim,
            start=tuple(start[i % 2] for i in range(dim)),
            window=window,
            smooth=smooth,
            dim=dim,
            n_dimensional=True,
            reference=reference,
            _rescale=make,
        )

    return make(2)


# --- n-dimensional functions --------------------------------------------------------------


def sphere(x: Tensor) -> Tensor:
    r"""Sphere: :math:`f(x) = \sum_i x_i^2`; minimum 0 at the origin."""
    return (x * x).sum(-1)


def rosenbrock(x: Tensor, a: float = 1.0, b: float = 100.0) -> Tensor:
    r"""Rosenbrock: :math:`f(x) = \sum_{i<n} b (x_{i+1} - x_i^2)^2 + (a - x_i)^2`.

    In 2-D, :math:`(1 - x)^2 + 100 (y - x^2)^2`, minimum 0 at (1, 1), at the end of a long
    curved valley. From 4 coordinates on it also has a local minimum near (-1, 1, ..., 1).
    """
    head, tail = x[..., :-1], x[..., 1:]
    return (b * (tail - head * head) ** 2 + (a - head) ** 2).sum(-1)


def rastrigin(x: Tensor) -> Tensor:
    r"""Rastrigin: :math:`f(x) = 10 n + \sum_i \left(x_i^2 - 10 \cos(2 \pi x_i)\right)`.

    A sphere on a grid of cosine bumps: a local minimum near every integer point, the
    global one 0 at the origin.
    """
    return (x * x - 10.0 * torch.cos(2.0 * math.pi * x)).sum(-1) + 10.0 * x.shape[-1]


def ackley(x: Tensor) -> Tensor:
    r"""Ackley: :math:`f(x) = -20 \exp\left(-0.2 \sqrt{\tfrac1n \sum_i x_i^2}\right)
    - \exp\left(\tfrac1n \sum_i \cos(2 \pi x_i)\right) + 20 + e`.

    Minimum 0 at the origin, which is the tip of a cone: the square root is not
    differentiable there. It is :func:`safe_sqrt`, so autograd returns the gradient 0 at
    the origin, a valid subgradient (and the origin is the minimiser).
    """
    radius = safe_sqrt((x * x).mean(-1))
    waves = torch.cos(2.0 * math.pi * x).mean(-1)
    return -20.0 * torch.exp(-0.2 * radius) - torch.exp(waves) + 20.0 + math.e


def griewank(x: Tensor) -> Tensor:
    r"""Griewank: :math:`f(x) = 1 + \sum_i x_i^2 / 4000 - \prod_i \cos(x_i / \sqrt{i})`,
    with :math:`i = 1, \dots, n`.

    Minimum 0 at the origin; a wide bowl covered with shallow local minima.
    """
    index = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype, device=x.device)
    return 1.0 + (x * x).sum(-1) / 4000.0 - torch.cos(x / index.sqrt()).prod(-1)


def styblinski_tang(x: Tensor) -> Tensor:
    r"""Styblinski-Tang: :math:`f(x) = \tfrac12 \sum_i \left(x_i^4 - 16 x_i^2 + 5 x_i\right)`.

    Separable; each coordinate has its global minimum -39.166165703771415 at
    x_i = -2.903534027771177, so f* = -39.166165703771415 n.
    """
    return 0.5 * (x**4 - 16.0 * x * x + 5.0 * x).sum(-1)


# --- 2-D functions --------------------------------------------------------------------------


def beale(x: Tensor) -> Tensor:
    r"""Beale: :math:`(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`;
    minimum 0 at (3, 0.5)."""
    u, v = x[..., 0], x[..., 1]
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2


def goldstein_price(x: Tensor) -> Tensor:
    r"""Goldstein-Price: :math:`\left[1 + (x + y + 1)^2 (19 - 14x + 3x^2 - 14y + 6xy + 3y^2)
    \right] \left[30 + (2x - 3y)^2 (18 - 32x + 12x^2 + 48y - 36xy + 27y^2)\right]`.

    Minimum 3 at (0, -1); local minima 30 at (-0.6, -0.4) and 84 at (1.8, 0.2).
    """
    u, v = x[..., 0], x[..., 1]
    first = 1.0 + (u + v + 1.0) ** 2 * (
        19.0 - 14.0 * u + 3.0 * u * u - 14.0 * v + 6.0 * u * v + 3.0 * v * v
    )
    second = 30.0 + (2.0 * u - 3.0 * v) ** 2 * (
        18.0 - 32.0 * u + 12.0 * u * u + 48.0 * v - 36.0 * u * v + 27.0 * v * v
    )
    return first * second


def booth(x: Tensor) -> Tensor:
    r"""Booth: :math:`(x + 2y - 7)^2 + (2x + y - 5)^2`; a convex quadratic, minimum 0 at
    (1, 3)."""
    u, v = x[..., 0], x[..., 1]
    return (u + 2.0 * v - 7.0) ** 2 + (2.0 * u + v - 5.0) ** 2


def bukin6(x: Tensor) -> Tensor:
    r"""Bukin N. 6: :math:`100 \sqrt{|y - 0.01 x^2|} + 0.01 |x + 10|`.

    Minimum 0 at (-10, 1), on the ridge :math:`y = 0.01 x^2` along which f is only
    :math:`0.01 |x + 10|`. Across the ridge the slope is infinite; ``sqrt(|.|)`` is
    :func:`safe_sqrt` of ``torch.abs``, so on the ridge autograd returns 0 for that term,
    and ``|x + 10|`` has derivative 0 at x = -10. The gradient at the minimiser is 0.
    """
    u, v = x[..., 0], x[..., 1]
    return 100.0 * safe_sqrt(torch.abs(v - 0.01 * u * u)) + 0.01 * torch.abs(u + 10.0)


def matyas(x: Tensor) -> Tensor:
    r"""Matyas: :math:`0.26 (x^2 + y^2) - 0.48 xy`; a flat convex quadratic, minimum 0 at
    the origin."""
    u, v = x[..., 0], x[..., 1]
    return 0.26 * (u * u + v * v) - 0.48 * u * v


def levi13(x: Tensor) -> Tensor:
    r"""Levi N. 13: :math:`\sin^2(3 \pi x) + (x - 1)^2 \left(1 + \sin^2(3 \pi y)\right)
    + (y - 1)^2 \left(1 + \sin^2(2 \pi y)\right)`; minimum 0 at (1, 1)."""
    u, v = x[..., 0], x[..., 1]
    return (
        torch.sin(3.0 * math.pi * u) ** 2
        + (u - 1.0) ** 2 * (1.0 + torch.sin(3.0 * math.pi * v) ** 2)
        + (v - 1.0) ** 2 * (1.0 + torch.sin(2.0 * math.pi * v) ** 2)
    )


def himmelblau(x: Tensor) -> Tensor:
    r"""Himmelblau: :math:`(x^2 + y - 11)^2 + (x + y^2 - 7)^2`; minimum 0 at four points,
    (3, 2) and three irrational ones."""
    u, v = x[..., 0], x[..., 1]
    return (u * u + v - 11) ** 2 + (u + v * v - 7) ** 2


def three_hump_camel(x: Tensor) -> Tensor:
    r"""Three-hump camel: :math:`2x^2 - 1.05x^4 + x^6 / 6 + xy + y^2`; minimum 0 at the
    origin, local minima 0.2986 near (±1.75, ∓0.87)."""
    u, v = x[..., 0], x[..., 1]
    return 2.0 * u * u - 1.05 * u**4 + u**6 / 6.0 + u * v + v * v


def six_hump_camel(x: Tensor) -> Tensor:
    r"""Six-hump camel: :math:`(4 - 2.1x^2 + x^4 / 3) x^2 + xy + (4y^2 - 4) y^2`.

    Minimum -1.0316284534898774 at two points symmetric about the origin,
    (±0.0898420131003181, ∓0.7126564030207396).
    """
    u, v = x[..., 0], x[..., 1]
    return (4.0 - 2.1 * u * u + u**4 / 3.0) * u * u + u * v + (4.0 * v * v - 4.0) * v * v


def easom(x: Tensor) -> Tensor:
    r"""Easom: :math:`-\cos x \cos y \exp\left(-(x - \pi)^2 - (y - \pi)^2\right)`.

    Minimum -1 at (π, π), in a narrow well; f is close to 0 (and flat) elsewhere.
    """
    u, v = x[..., 0], x[..., 1]
    return -torch.cos(u) * torch.cos(v) * torch.exp(-((u - math.pi) ** 2) - (v - math.pi) ** 2)


def cross_in_tray(x: Tensor) -> Tensor:
    r"""Cross-in-tray: :math:`-10^{-4} \left(|s| e^{a} + 1\right)^{0.1}` with
    :math:`s = \sin x \sin y` and :math:`a = |100 - \sqrt{x^2 + y^2} / \pi|`.

    Minimum -2.062611870822737 at (±1.3494066171539107, ±1.3494066171539107), all four
    sign combinations. Since :math:`e^{a}` reaches :math:`e^{100}`, beyond float32, the
    power is evaluated as :math:`\exp(0.1 \log(1 + |s| e^{a}))` with ``logaddexp``, which
    is exact and finite in any dtype. Kinks: f has ridges where :math:`s = 0` (the axes and
    the lines x or y = kπ); there ``torch.abs`` gives derivative 0 for :math:`|s|`, so the
    gradient is that of the constant :math:`-10^{-4}`, i.e. 0. The radius is
    :func:`safe_sqrt`, derivative 0 at the origin.
    """
    u, v = x[..., 0], x[..., 1]
    exponent = torch.abs(100.0 - safe_sqrt(u * u + v * v) / math.pi)
    size = torch.abs(torch.sin(u) * torch.sin(v))

    # log(|s| e^a + 1) = logaddexp(log|s| + a, 0), which is 0 where s = 0; both branches
    # stay finite there, so first and second derivatives do too
    nonzero = size > 0
    log_size = torch.log(torch.where(nonzero, size, 1.0))
    log_power = torch.logaddexp(log_size + exponent, torch.zeros_like(exponent))
    log_power = torch.where(nonzero, log_power, 0.0)
    return -1e-4 * torch.exp(0.1 * log_power)


def eggholder(x: Tensor) -> Tensor:
    r"""Eggholder: :math:`-(y + 47) \sin\sqrt{|x/2 + y + 47|} - x \sin\sqrt{|x - (y + 47)|}`.

    Minimum -959.6406627208508 at (512, 404.2318051137578), on the boundary x = 512 of
    the domain; the gradient there is not 0 in x (f would keep falling beyond 512), only
    in y. Kinks: along the lines where either argument of ``sqrt(|.|)`` is 0 the slope
    is infinite; that term is :func:`safe_sqrt` of ``torch.abs``, so autograd returns 0
    for its derivative there.
    """
    u, v = x[..., 0], x[..., 1]
    shifted = v + 47.0
    first = -shifted * torch.sin(safe_sqrt(torch.abs(u / 2.0 + shifted)))
    second = -u * torch.sin(safe_sqrt(torch.abs(u - shifted)))
    return first + second


def holder_table(x: Tensor) -> Tensor:
    r"""Hölder table: :math:`-\left|\sin x \cos y \exp\left(|1 - \sqrt{x^2 + y^2} / \pi|
    \right)\right|`.

    Minimum -19.208502567886732 at (±8.055023475736563, ±9.664590019241272), all four sign
    combinations. Kinks: where :math:`\sin x \cos y = 0` (ridges, f = 0) and on the circle
    :math:`\sqrt{x^2 + y^2} = \pi`; ``torch.abs`` gives derivative 0 at 0 in both, and the
    radius is :func:`safe_sqrt`, derivative 0 at the origin.
    """
    u, v = x[..., 0], x[..., 1]
    radius = safe_sqrt(u * u + v * v)
    return -torch.abs(torch.sin(u) * torch.cos(v) * torch.exp(torch.abs(1.0 - radius / math.pi)))


def mccormick(x: Tensor) -> Tensor:
    r"""McCormick: :math:`\sin(x + y) + (x - y)^2 - 1.5x + 2.5y + 1`.

    Minimum :math:`-\sqrt3/2 - \pi/3` at :math:`(1/2 - \pi/3, -1/2 - \pi/3)`, where
    :math:`\cos(x + y) = -1/2` and :math:`x - y = 1` (closed form).
    """
    u, v = x[..., 0], x[..., 1]
    return torch.sin(u + v) + (u - v) ** 2 - 1.5 * u + 2.5 * v + 1.0


def schaffer2(x: Tensor) -> Tensor:
    r"""Schaffer N. 2: :math:`0.5 + \dfrac{\sin^2(x^2 - y^2) - 0.5}{(1 + 0.001(x^2 + y^2))^2}`.

    Minimum 0 at the origin (f > 0 elsewhere since the denominator exceeds 1); smooth, the
    ripples get faster away from the origin.
    """
    u, v = x[..., 0], x[..., 1]
    ripple = torch.sin(u * u - v * v) ** 2
    return 0.5 + (ripple - 0.5) / (1.0 + 0.001 * (u * u + v * v)) ** 2


def schaffer4(x: Tensor) -> Tensor:
    r"""Schaffer N. 4: :math:`0.5 + \dfrac{\cos^2(\sin |x^2 - y^2|) - 0.5}
    {(1 + 0.001(x^2 + y^2))^2}`.

    Minimum 0.29257863203598056 at four points on the axes, (0, ±1.2531318314637332) and
    (±1.2531318314637332, 0), where the numerator is near its least value
    :math:`\cos^2 1 - 0.5` while the denominator is still small. Since
    :math:`\cos^2(\sin t)` is even in t, the :math:`|\cdot|` changes nothing and f is
    smooth; it is computed without it.
    """
    u, v = x[..., 0], x[..., 1]
    ripple = torch.cos(torch.sin(u * u - v * v)) ** 2
    return 0.5 + (ripple - 0.5) / (1.0 + 0.001 * (u * u + v * v)) ** 2


def branin(x: Tensor) -> Tensor:
    r"""Branin (RCOS): :math:`a (y - b x^2 + c x - r)^2 + s (1 - t) \cos x + s` with
    :math:`a = 1, b = 5.1 / (4 \pi^2), c = 5 / \pi, r = 6, s = 10, t = 1 / (8 \pi)`.

    Minimum :math:`s t = 5 / (4 \pi)` at three points, where :math:`\cos x = -1` and the
    square vanishes: (-π, 12.275), (π, 2.275) and (3π, 2.475).
    """
    u, v = x[..., 0], x[..., 1]
    b, c, t = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi, 1.0 / (8.0 * math.pi)
    return (v - b * u * u + c * u - 6.0) ** 2 + 10.0 * (1.0 - t) * torch.cos(u) + 10.0


def _reference(*sources: str) -> str:
    return "; ".join(sources)


FUNCTIONS: dict[str, TestFunction] = {
    "sphere": _n_dimensional(
        "sphere",
        sphere,
        minimum_per_coordinate=0.0,
        minimizer_coordinate=0.0,
        bounds=(-5.12, 5.12),
        start=(-1.5, 1.0),
        window=((-2.0, 2.0), (-2.0, 2.0)),
        reference=_reference(
            "De Jong (1975), PhD thesis, function F1",
            MOLGA_SMUTNICKI + ", De Jong's function 1",
            VLSE + "spheref.html",
        ),
    ),
    "rosenbrock": _n_dimensional(
        "rosenbrock",
        rosenbrock,
        minimum_per_coordinate=0.0,
        minimizer_coordinate=1.0,
        bounds=(-5.0, 10.0),
        start=(-0.5, 0.5),
        window=((-2.0, 2.0), (-1.0, 3.0)),
        reference=_reference(
            "Rosenbrock (1960), Comput. J. 3(3):175-184",
            JAMIL_YANG + ", Rosenbrock function",
            VLSE + "rosen.html",
        ),
    ),
    "rastrigin": _n_dimensional(
        "rastrigin",
        rastrigin,
        minimum_per_coordinate=0.0,
        minimizer_coordinate=0.0,
        bounds=(-5.12, 5.12),
        start=(2.2, -1.3),
        window=((-5.12, 5.12), (-5.12, 5.12)),
        reference=_reference(
            "Rastrigin (1974), Systems of Extremal Control",
            MOLGA_SMUTNICKI + ", Rastrigin's function 6",
            VLSE + "rastr.html",
        ),
    ),
    "ackley": _n_dimensional(
        "ackley",
        ackley,
        minimum_per_coordinate=0.0,
        minimizer_coordinate=0.0,
        bounds=(-32.768, 32.768),
        start=(3.2, -2.4),
        window=((-5.0, 5.0), (-5.0, 5.0)),
        smooth=False,
        reference=_reference(
            "Ackley (1987), A Connectionist Machine for Genetic Hillclimbing",
            JAMIL_YANG + ", Ackley 1 function",
            VLSE + "ackley.html",
        ),
    ),
    "beale": TestFunction(
        name="beale",
        fn=beale,
        minimum=0.0,
        minimizers=[(3.0, 0.5)],
        domain=((-4.5, 4.5), (-4.5, 4.5)),
        start=(1.0, 1.5),
        window=((-4.5, 4.5), (-4.5, 4.5)),
        reference=_reference("Beale (1958)", JAMIL_YANG + ", Beale function", VLSE + "beale.html"),
    ),
    "goldstein_price": TestFunction(
        name="goldstein_price",
        fn=goldstein_price,
        minimum=3.0,
        minimizers=[(0.0, -1.0)],
        domain=((-2.0, 2.0), (-2.0, 2.0)),
        start=(-1.0, 1.0),
        window=((-2.0, 2.0), (-2.0, 2.0)),
        reference=_reference(
            "Goldstein & Price (1971), Math. Comp. 25(115):569-574",
            MOLGA_SMUTNICKI + ", Goldstein-Price's function",
            VLSE + "goldpr.html",
        ),
    ),
    "booth": TestFunction(
        name="booth",
        fn=booth,
        minimum=0.0,
        minimizers=[(1.0, 3.0)],
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        start=(-6.0, -4.0),
        window=((-10.0, 10.0), (-10.0, 10.0)),
        reference=_reference(JAMIL_YANG + ", Booth function", VLSE + "booth.html"),
    ),
    "bukin6": TestFunction(
        name="bukin6",
        fn=bukin6,
        minimum=0.0,
        minimizers=[(-10.0, 1.0)],
        domain=((-15.0, -5.0), (-3.0, 3.0)),
        start=(-7.0, 2.5),
        window=((-15.0, -5.0), (-3.0, 3.0)),
        smooth=False,
        reference=_reference(JAMIL_YANG + ", Bukin 6 function", VLSE + "bukin6.html"),
    ),
    "matyas": TestFunction(
        name="matyas",
        fn=matyas,
        minimum=0.0,
        minimizers=[(0.0, 0.0)],
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        start=(7.0, -4.0),
        window=((-10.0, 10.0), (-10.0, 10.0)),
        reference=_reference(
            "Matyas (1965), Autom. Remote Control 26:246-253",
            JAMIL_YANG + ", Matyas function",
            VLSE + "matya.html",
        ),
    ),
    "levi13": TestFunction(
        name="levi13",
        fn=levi13,
        minimum=0.0,
        minimizers=[(1.0, 1.0)],
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        start=(-4.0, 5.0),
        window=((-10.0, 10.0), (-10.0, 10.0)),
        reference=_reference(VLSE + "levy13.html"),
    ),
    "griewank": _n_dimensional(
        "griewank",
        griewank,
        minimum_per_coordinate=0.0,
        minimizer_coordinate=0.0,
        bounds=(-600.0, 600.0),
        start=(40.0, -30.0),
        window=((-50.0, 50.0), (-50.0, 50.0)),
        reference=_reference(
            "Griewank (1981), J. Optim. Theory Appl. 34(1):11-39",
            JAMIL_YANG + ", Griewank function",
            MOLGA_SMUTNICKI + ", Griewangk's function 8",
            VLSE + "griewank.html",
        ),
    ),
    "himmelblau": TestFunction(
        name="himmelblau",
        fn=himmelblau,
        minimum=0.0,
        minimizers=[
            (3.0, 2.0),
            (-2.805118086952745, 3.131312518250573),
            (-3.779310253377747, -3.2831859912861696),
            (3.5844283403304917, -1.8481265269644036),
        ],
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        start=(0.0, 0.0),
        window=((-5.0, 5.0), (-5.0, 5.0)),
        reference=_reference(
            "Himmelblau (1972), Applied Nonlinear Programming",
            JAMIL_YANG + ", Himmelblau function",
        ),
    ),
    "three_hump_camel": TestFunction(
        name="three_hump_camel",
        fn=three_hump_camel,
        minimum=0.0,
        minimizers=[(0.0, 0.0)],
        domain=((-5.0, 5.0), (-5.0, 5.0)),
        start=(-2.0, 2.0),
        window=((-3.0, 3.0), (-3.0, 3.0)),
        reference=_reference(JAMIL_YANG + ", Three-hump camel function", VLSE + "camel3.html"),
    ),
    "six_hump_camel": TestFunction(
        name="six_hump_camel",
        fn=six_hump_camel,
        minimum=-1.0316284534898774,
        minimizers=[
            (0.08984201310031806, -0.7126564030207396),
            (-0.08984201310031806, 0.7126564030207396),
        ],
        domain=((-3.0, 3.0), (-2.0, 2.0)),
        start=(-1.5, -1.0),
        window=((-2.0, 2.0), (-1.2, 1.2)),
        reference=_reference(
            "Dixon & Szego (1978), Towards Global Optimisation 2",
            MOLGA_SMUTNICKI + ", Six-hump camel back function",
            VLSE + "camel6.html",
        ),
    ),
    "easom": TestFunction(
        name="easom",
        fn=easom,
        minimum=-1.0,
        minimizers=[(math.pi, math.pi)],
        domain=((-100.0, 100.0), (-100.0, 100.0)),
        start=(2.0, 2.5),
        window=((0.0, 6.0), (0.0, 6.0)),
        reference=_reference(
            "Easom (1990), MSc thesis, University of Louisville",
            MOLGA_SMUTNICKI + ", Easom's function",
            VLSE + "easom.html",
        ),
    ),
    "cross_in_tray": TestFunction(
        name="cross_in_tray",
        fn=cross_in_tray,
        minimum=-2.062611870822737,
        minimizers=[
            (1.3494066171539107, 1.3494066171539107),
            (1.3494066171539107, -1.3494066171539107),
            (-1.3494066171539107, 1.3494066171539107),
            (-1.3494066171539107, -1.3494066171539107),
        ],
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        start=(0.5, 2.5),
        window=((-4.0, 4.0), (-4.0, 4.0)),
        smooth=False,
        reference=_reference("Mishra (2006), MPRA paper 2718", JAMIL_YANG, VLSE + "crossit.html"),
    ),
    "eggholder": TestFunction(
        name="eggholder",
        fn=eggholder,
        minimum=-959.6406627208508,
        minimizers=[(512.0, 404.2318051137578)],
        domain=((-512.0, 512.0), (-512.0, 512.0)),
        start=(400.0, 300.0),
        window=((-512.0, 512.0), (-512.0, 512.0)),
        smooth=False,
        reference=_reference(
            "Whitley et al. (1996), Artif. Intell. 85:245-276",
            JAMIL_YANG + ", Egg holder function",
            VLSE + "egg.html",
        ),
    ),
    "holder_table": TestFunction(
        name="holder_table",
        fn=holder_table,
        minimum=-19.208502567886732,
        minimizers=[
            (8.055023475736563, 9.664590019241272),
            (8.055023475736563, -9.664590019241272),
            (-8.055023475736563, 9.664590019241272),
            (-8.055023475736563, -9.664590019241272),
        ],
        domain=((-10.0, 10.0), (-10.0, 10.0)),
        start=(5.0, 5.0),
        window=((-10.0, 10.0), (-10.0, 10.0)),
        smooth=False,
        reference=_reference("Mishra (2006), MPRA paper 2718", VLSE + "holder.html"),
    ),
    "mccormick": TestFunction(
        name="mccormick",
        fn=mccormick,
        minimum=-1.9132229549810364,
        minimizers=[(-0.5471975511965977, -1.5471975511965979)],
        domain=((-1.5, 4.0), (-3.0, 4.0)),
        start=(3.0, 3.0),
        window=((-1.5, 4.0), (-3.0, 4.0)),
        reference=_reference(JAMIL_YANG + ", McCormick function", VLSE + "mccorm.html"),
    ),
    "schaffer2": TestFunction(
        name="schaffer2",
        fn=schaffer2,
        minimum=0.0,
        minimizers=[(0.0, 0.0)],
        domain=((-100.0, 100.0), (-100.0, 100.0)),
        start=(1.5, 2.0),
        window=((-3.0, 3.0), (-3.0, 3.0)),
        reference=_reference(JAMIL_YANG + ", Schaffer 2 function", VLSE + "schaffer2.html"),
    ),
    "schaffer4": TestFunction(
        name="schaffer4",
        fn=schaffer4,
        minimum=0.29257863203598056,
        minimizers=[
            (0.0, 1.2531318314637332),
            (0.0, -1.2531318314637332),
            (1.2531318314637332, 0.0),
            (-1.2531318314637332, 0.0),
        ],
        domain=((-100.0, 100.0), (-100.0, 100.0)),
        start=(1.5, 2.0),
        window=((-3.0, 3.0), (-3.0, 3.0)),
        reference=_reference(JAMIL_YANG + ", Schaffer 4 function", VLSE + "schaffer4.html"),
    ),
    "styblinski_tang": _n_dimensional(
        "styblinski_tang",
        styblinski_tang,
        minimum_per_coordinate=-39.166165703771415,
        minimizer_coordinate=-2.903534027771177,
        bounds=(-5.0, 5.0),
        start=(0.5, 3.0),
        window=((-5.0, 5.0), (-5.0, 5.0)),
        reference=_reference(
            "Styblinski & Tang (1990), Neural Networks 3(4):467-483",
            JAMIL_YANG + ", Styblinski-Tang function",
            VLSE + "stybtang.html",
        ),
    ),
    "branin": TestFunction(
        name="branin",
        fn=branin,
        minimum=0.3978873577297383,
        minimizers=[(-math.pi, 12.275), (math.pi, 2.275), (3.0 * math.pi, 2.475)],
        domain=((-5.0, 10.0), (0.0, 15.0)),
        start=(0.0, 10.0),
        window=((-5.0, 10.0), (0.0, 15.0)),
        reference=_reference(
            "Branin (1972), IBM J. Res. Dev. 16(5):504-522",
            MOLGA_SMUTNICKI + ", Branins's rcos function",
            VLSE + "branin.html",
        ),
    ),
}


def get_function(name: str, dim: int | None = None) -> TestFunction:
    """Look a function up by task name, in ``dim`` coordinates if given."""
    try:
        function = FUNCTIONS[name]
    except KeyError:
        known = ", ".join(sorted(FUNCTIONS))
        raise ValueError(f"Unknown test function {name!r}; choose one of: {known}") from None
    function = function if dim is None else function.with_dim(dim)
    logger.debug("Test function %s in %d dimensions", function.name, function.dim)
    return function
