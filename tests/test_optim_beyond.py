"""The optimizers that torch.optim does not have.

Each is checked three ways: against its authors' published package (or
``pytorch_optimizer`` where there is none) over 100 float64 steps, in the setting of the
reference documented in the class; against a short float64 transcription of the paper's
algorithm written in this file; and on a few steps worked out by hand. The generic tests
are driven by :data:`ROWS` and read only its fields and the classes' ``capabilities``.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra.utils
import prodigyopt
import pytest
import pytorch_optimizer
import schedulefree
import torch
from omegaconf import OmegaConf
from torch import Tensor

import torchopt_bench.optim as ours
from torchopt_bench.functions import rosenbrock
from torchopt_bench.optim import OPTIMIZERS, BenchOptimizer

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using backward\\(\\) with create_graph=True:UserWarning"
)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "optimizer"
DTYPE = torch.float64
SHAPES = ((3, 4), (5,), (2, 3))
Kwargs = dict[str, Any]


# -- the test problem ----------------------------------------------------------------------


class Problem:
    r"""A smooth, bounded-below function of several tensors:

    .. math::
        f(\theta) = \sum \tfrac12 a \theta^2 + \tfrac14 b \theta^4 + c \theta
            + \tfrac{\kappa}{2} \Big(\sum w \theta\Big)^2

    with :math:`a` of either sign (double wells), :math:`b > 0`, and a coupling of all
    entries when ``coupled`` (else the Hessian is diagonal: :math:`a + 3 b \theta^2`).
    """

    def __init__(self, seed: int = 0, coupled: bool = True, shapes=SHAPES) -> None:
        gen = torch.Generator().manual_seed(seed)

        def draw(shape, low=None, high=None):
            if low is None:
                return torch.randn(shape, generator=gen, dtype=DTYPE)
            return low + (high - low) * torch.rand(shape, generator=gen, dtype=DTYPE)

        self.a = [draw(s) for s in shapes]
        self.b = [draw(s, 0.5, 1.5) for s in shapes]
        self.c = [draw(s) for s in shapes]
        self.w = [draw(s) / 4 for s in shapes]
        self.x0 = [draw(s) for s in shapes]
        self.kappa = 1.0 if coupled else 0.0

    def loss(self, params: list[Tensor]) -> Tensor:
        total = sum(
            (0.5 * a * p * p + 0.25 * b * p**4 + c * p).sum()
            for a, b, c, p in zip(self.a, self.b, self.c, params)
        )
        coupling = sum((w * p).sum() for w, p in zip(self.w, params))
        return total + 0.5 * self.kappa * coupling**2

    def grad(self, params: list[Tensor]) -> list[Tensor]:
        leaves = [p.detach().clone().requires_grad_() for p in params]
        return list(torch.autograd.grad(self.loss(leaves), leaves))

    def hessian_diagonal(self, params: list[Tensor]) -> list[Tensor]:
        """Exact for the uncoupled problem."""
        assert self.kappa == 0
        return [a + 3 * b * p * p for a, b, p in zip(self.a, self.b, params)]


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.detach().flatten() for t in tensors]).clone()


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def assert_trajectories_close(actual: list[Tensor], expected: list[Tensor], rtol: float):
    assert len(actual) == len(expected)
    errors = [relative_error(a, e) for a, e in zip(actual, expected)]
    worst = max(range(len(errors)), key=errors.__getitem__)
    assert errors[worst] <= rtol, f"step {worst + 1}: relative error {errors[worst]:.3g}"


def run(
    make: Callable[[list[Tensor]], torch.optim.Optimizer],
    cls: type[BenchOptimizer],
    problem: Problem,
    steps: int,
    *,
    sign: float = 1.0,
    x0: list[Tensor] | None = None,
    seed: int = 1234,
) -> list[Tensor]:
    """Run an optimizer (ours or a reference) as a trainer following ``cls.capabilities``
    would; return the flat parameters after each step, and in eval mode after the last."""
    caps = cls.capabilities
    torch.manual_seed(seed)
    params = [x.clone().requires_grad_() for x in (x0 or problem.x0)]
    optimizer = make(params)
    if caps.has_train_eval:
        optimizer.train()

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = sign * problem.loss(params)
        loss.backward(create_graph=caps.needs_create_graph)
        return loss

    trajectory = []
    for _ in range(steps):
        if caps.needs_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        trajectory.append(flat(params))
    optimizer.zero_grad(set_to_none=True)
    if caps.has_train_eval:
        optimizer.eval()
        trajectory.append(flat(params))
    return trajectory


# -- transcriptions of the papers' algorithms ----------------------------------------------
# Each takes the problem, the number of optimizer steps and the class's keyword arguments,
# and returns the flat parameters after every step, written from the paper's pseudocode.


def paper_lion(problem, steps, lr, betas, weight_decay=0.0):
    """Chen et al. (2023), Algorithm 2 (Lion with decoupled weight decay)."""
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    m = [torch.zeros_like(x) for x in theta]
    out = []
    for _ in range(steps):
        g = problem.grad(theta)
        for i in range(len(theta)):
            c = beta1 * m[i] + (1 - beta1) * g[i]
            theta[i] = theta[i] - lr * (torch.sign(c) + weight_decay * theta[i])
            m[i] = beta2 * m[i] + (1 - beta2) * g[i]
        out.append(flat(theta))
    return out


def paper_adabelief(problem, steps, lr, betas, eps):
    """Zhuang et al. (2020), Algorithm 2 (AdaBelief), without weight decay."""
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    m = [torch.zeros_like(x) for x in theta]
    s = [torch.zeros_like(x) for x in theta]
    out = []
    for t in range(1, steps + 1):
        g = problem.grad(theta)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            s[i] = beta2 * s[i] + (1 - beta2) * (g[i] - m[i]) ** 2 + eps
            m_hat = m[i] / (1 - beta1**t)
            s_hat = s[i] / (1 - beta2**t)
            theta[i] = theta[i] - lr * m_hat / (torch.sqrt(s_hat) + eps)
        out.append(flat(theta))
    return out


def paper_yogi(problem, steps, lr, betas, eps, initial_accumulator, bias_correction):
    """Zaheer et al. (2018), Algorithm 2 (Yogi), as printed: no bias correction."""
    assert not bias_correction
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    m = [torch.zeros_like(x) for x in theta]
    v = [torch.full_like(x, initial_accumulator) for x in theta]
    out = []
    for _ in range(steps):
        g = problem.grad(theta)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = v[i] - (1 - beta2) * torch.sign(v[i] - g[i] ** 2) * g[i] ** 2
            theta[i] = theta[i] - lr * m[i] / (torch.sqrt(v[i]) + eps)
        out.append(flat(theta))
    return out


def paper_adopt(problem, steps, lr, betas, eps, clip_exponent):
    """Taniguchi et al. (2024), ADOPT with clipping: v_0 = g_0^2, then for t = 1, 2, ...
    the clipped normalised gradient enters m. The class counts the initialising step, so
    its bound at the paper's t is (t + 1)^p."""
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    v = [gi**2 for gi in problem.grad(theta)]
    m = [torch.zeros_like(x) for x in theta]
    out = [flat(theta)]
    for t in range(1, steps):
        g = problem.grad(theta)
        clip = (t + 1) ** clip_exponent
        for i in range(len(theta)):
            normed = g[i] / torch.clamp(torch.sqrt(v[i]), min=eps)
            m[i] = beta1 * m[i] + (1 - beta1) * torch.clamp(normed, -clip, clip)
            theta[i] = theta[i] - lr * m[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
        out.append(flat(theta))
    return out


def paper_lamb(problem, steps, lr, betas, eps, weight_decay, clamp_value=10.0):
    """You et al. (2019), Algorithm 2 (LAMB), phi(z) = min(z, clamp_value)."""
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    m = [torch.zeros_like(x) for x in theta]
    v = [torch.zeros_like(x) for x in theta]
    out = []
    for t in range(1, steps + 1):
        g = problem.grad(theta)
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            m_hat, v_hat = m[i] / (1 - beta1**t), v[i] / (1 - beta2**t)
            r = m_hat / (torch.sqrt(v_hat) + eps) + weight_decay * theta[i]
            phi = min(float(theta[i].norm()), clamp_value)
            theta[i] = theta[i] - lr * phi / float(r.norm()) * r
        out.append(flat(theta))
    return out


def paper_schedulefree(problem, steps, lr, betas, eps, weight_decay, warmup_steps):
    """Defazio et al. (2024), Algorithm 1 (Schedule-Free AdamW) with the three sequences
    x, y, z kept explicitly, in the convention the class documents (that of the authors'
    AdamWScheduleFree): the second moment bias-corrected inside the root instead of a
    sqrt(1 - beta2^t) factor in gamma_t, and averaging weights max_i gamma_i^2."""
    beta1, beta2 = betas
    z = [x.clone() for x in problem.x0]
    x = [xi.clone() for xi in problem.x0]
    v = [torch.zeros_like(xi) for xi in x]
    weight_sum, lr_max, out = 0.0, 0.0, []
    for t in range(1, steps + 1):
        y = [(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x)]
        g = problem.grad(y)
        gamma = lr * min(1.0, t / warmup_steps) if warmup_steps else lr
        lr_max = max(lr_max, gamma)
        weight_sum += lr_max**2
        c = lr_max**2 / weight_sum
        for i in range(len(z)):
            v[i] = beta2 * v[i] + (1 - beta2) * g[i] ** 2
            denom = torch.sqrt(v[i] / (1 - beta2**t)) + eps
            z[i] = z[i] - gamma * g[i] / denom - gamma * weight_decay * y[i]
            x[i] = (1 - c) * x[i] + c * z[i]
        out.append(flat([(1 - beta1) * zi + beta1 * xi for zi, xi in zip(z, x)]))
    return [*out, flat(x)]


def paper_prodigy(problem, steps, lr, betas, eps, d0):
    """Mishchenko & Defazio (2023), Prodigy in its Adam version."""
    beta1, beta2 = betas
    beta3 = math.sqrt(beta2)
    x0 = [x.clone() for x in problem.x0]
    x = [xi.clone() for xi in x0]
    m = [torch.zeros_like(xi) for xi in x]
    v = [torch.zeros_like(xi) for xi in x]
    s = [torch.zeros_like(xi) for xi in x]
    r, d, out = 0.0, d0, []
    for _ in range(steps):
        g = problem.grad(x)
        inner = sum(float((gi * (x0i - xi)).sum()) for gi, x0i, xi in zip(g, x0, x))
        r = beta3 * r + (1 - beta3) * lr * d**2 * inner
        for i in range(len(x)):
            s[i] = beta3 * s[i] + (1 - beta3) * lr * d**2 * g[i]
            m[i] = beta1 * m[i] + (1 - beta1) * d * g[i]
            v[i] = beta2 * v[i] + (1 - beta2) * d**2 * g[i] ** 2
        d_next = max(d, r / sum(float(si.abs().sum()) for si in s))
        for i in range(len(x)):
            x[i] = x[i] - lr * d * m[i] / (torch.sqrt(v[i]) + d * eps)
        d = d_next
        out.append(flat(x))
    return out


def paper_sophia(
    problem, steps, lr, betas, rho, eps, weight_decay, update_period, hessian_distribution
):
    """Liu et al. (2023), Algorithm 3 (Sophia) with the exact Hessian diagonal as the
    estimator: what Hutchinson's estimator returns with Rademacher probes when the
    Hessian is diagonal."""
    assert hessian_distribution == "rademacher"
    beta1, beta2 = betas
    theta = [x.clone() for x in problem.x0]
    m = [torch.zeros_like(x) for x in theta]
    h = [torch.zeros_like(x) for x in theta]
    out = []
    for t in range(1, steps + 1):
        g = problem.grad(theta)
        h_hat = problem.hessian_diagonal(theta) if t % update_period == 1 % update_period else None
        for i in range(len(theta)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            if h_hat is not None:
                h[i] = beta2 * h[i] + (1 - beta2) * h_hat[i]
            theta[i] = theta[i] - lr * weight_decay * theta[i]
            ratio = m[i] / torch.clamp(rho * h[i], min=eps)
            theta[i] = theta[i] - lr * torch.clamp(ratio, -1, 1)
        out.append(flat(theta))
    return out


def paper_newton(problem, steps, lr, damping):
    """Damped Newton on the flattened parameters, the Hessian from
    torch.autograd.functional.hessian."""
    sizes = [x.numel() for x in problem.x0]

    def f(vector):
        pieces = torch.split(vector, sizes)
        return problem.loss([p.view_as(x) for p, x in zip(pieces, problem.x0)])

    theta, out = flat(problem.x0), []
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(f, theta)
        hessian = torch.autograd.functional.hessian(f, theta)
        eye = torch.eye(theta.numel(), dtype=DTYPE)
        theta = theta - lr * torch.linalg.solve(hessian + damping * eye, g)
        out.append(theta.clone())
    return out


# -- the references, in the settings the classes document ----------------------------------


def ref_lion(params, lr, betas, weight_decay=0.0):
    return pytorch_optimizer.Lion(params, lr=lr, betas=betas, weight_decay=weight_decay)


def ref_adabelief(params, lr, betas, eps, weight_decay=0.0, amsgrad=False, **kw):
    return pytorch_optimizer.AdaBelief(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        weight_decouple=kw.get("decoupled_weight_decay", True),
        ams_bound=amsgrad,
        rectify=False,
    )


def ref_yogi(params, lr, betas, eps, initial_accumulator, weight_decay=0.0, **kw):
    assert initial_accumulator == 0  # pytorch_optimizer also starts m at this value
    return pytorch_optimizer.Yogi(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        initial_accumulator=0.0,
        weight_decay=weight_decay,
        weight_decouple=kw.get("decoupled_weight_decay", False),
    )


def ref_adopt(params, lr, betas, eps, clip_exponent=0.25, weight_decay=0.0, **kw):
    return pytorch_optimizer.ADOPT(
        params,
        lr=lr,
        betas=betas,
        eps=eps,
        clip_lambda=None if clip_exponent is None else (lambda step: step**clip_exponent),
        weight_decay=weight_decay,
        weight_decouple=kw.get("decoupled_weight_decay", False),
    )


def ref_lamb(params, lr, betas, eps, weight_decay, bias_correction):
    assert eps == 0 and not bias_correction
    return pytorch_optimizer.Lamb(
        params,
        lr=lr,
        betas=betas,
        eps=0.0,
        weight_decay=weight_decay,
        weight_decouple=False,
        adam_debias=True,
    )


def ref_schedulefree(params, **kw):
    return schedulefree.AdamWScheduleFree(params, foreach=False, **kw)


def ref_prodigy(params, decoupled_weight_decay=True, **kw):
    return prodigyopt.Prodigy(params, decouple=decoupled_weight_decay, **kw)


def ref_sophia(params, lr, betas, rho, eps, weight_decay, update_period, hessian_distribution):
    return pytorch_optimizer.SophiaH(
        params,
        lr=lr / rho,
        betas=betas,
        weight_decay=weight_decay * rho,
        weight_decouple=True,
        p=rho,
        update_period=update_period,
        num_samples=1,
        hessian_distribution=hessian_distribution,
        eps=eps / rho,
    )


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One optimizer of this file, its references and the data its tests need."""

    #: Test id.
    name: str
    #: The class under test; the tests read its ``capabilities``.
    cls: type[BenchOptimizer]
    #: File name (without .yaml) of its configuration in conf/optimizer.
    config: str
    #: Builds the published implementation from the class's keyword arguments, in the
    #: matching setting documented in the class; None where no package has the method.
    reference: Callable[..., torch.optim.Optimizer] | None
    #: Keyword arguments of the reference runs (each run once with ours and the reference).
    variants: tuple[Kwargs, ...]
    #: The transcription of the paper's algorithm, and the keyword arguments to run it with.
    paper: Callable[..., list[Tensor]]
    paper_kwargs: Kwargs
    #: The transcription needs a problem with a diagonal Hessian.
    paper_uncoupled: bool = False
    #: Keyword arguments of the generic tests (maximize, foreach, complex, state_dict).
    kwargs: Kwargs = field(default_factory=dict)
    #: (kwargs, message): the constructor raises ValueError containing the message.
    invalid: tuple[tuple[Kwargs, str], ...] = ()
    #: Optimizer steps of the reference and transcription runs.
    steps: int = 100
    rtol: float = 1e-10

    def __str__(self) -> str:
        return self.name


LR_INVALID = ({"lr": -0.1}, "Invalid learning rate: -0.1")
BETA0_INVALID = ({"betas": (1.0, 0.99)}, "Invalid beta parameter at index 0: 1.0")
BETA1_INVALID = ({"betas": (0.9, -0.5)}, "Invalid beta parameter at index 1: -0.5")
WEIGHT_DECAY_INVALID = ({"weight_decay": -0.5}, "Invalid weight_decay value: -0.5")
EPS_INVALID = ({"eps": -1e-8}, "Invalid epsilon value: -1e-08")
COMMON_INVALID = (LR_INVALID, BETA0_INVALID, BETA1_INVALID, WEIGHT_DECAY_INVALID)

ROWS: list[Row] = [
    Row(
        name="Lion",
        cls=ours.Lion,
        config="lion",
        reference=ref_lion,
        variants=(
            {"lr": 0.01, "betas": (0.9, 0.99)},
            {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.5},
        ),
        paper=paper_lion,
        paper_kwargs={"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.5},
        kwargs={"lr": 0.01, "weight_decay": 0.1},
        invalid=COMMON_INVALID,
    ),
    Row(
        name="AdaBelief",
        cls=ours.AdaBelief,
        config="adabelief",
        reference=ref_adabelief,
        variants=(
            {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True},
            {
                "lr": 0.01,
                "betas": (0.9, 0.999),
                "eps": 1e-16,
                "weight_decay": 0.1,
                "decoupled_weight_decay": False,
            },
        ),
        paper=paper_adabelief,
        paper_kwargs={"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6},
        kwargs={"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
        invalid=(*COMMON_INVALID, EPS_INVALID),
    ),
    Row(
        name="Yogi",
        cls=ours.Yogi,
        config="yogi",
        reference=ref_yogi,
        variants=(
            {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-3, "initial_accumulator": 0.0},
            {
                "lr": 0.02,
                "betas": (0.8, 0.99),
                "eps": 1e-6,
                "initial_accumulator": 0.0,
                "weight_decay": 0.1,
            },
            {
                "lr": 0.01,
                "betas": (0.9, 0.999),
                "eps": 1e-3,
                "initial_accumulator": 0.0,
                "weight_decay": 0.1,
                "decoupled_weight_decay": True,
            },
        ),
        paper=paper_yogi,
        paper_kwargs={
            "lr": 0.01,
            "betas": (0.9, 0.999),
            "eps": 1e-3,
            "initial_accumulator": 1e-2,
            "bias_correction": False,
        },
        kwargs={"lr": 0.01, "weight_decay": 0.1},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"initial_accumulator": -1.0}, "Invalid initial_accumulator value: -1.0"),
        ),
    ),
    Row(
        name="ADOPT",
        cls=ours.ADOPT,
        config="adopt",
        reference=ref_adopt,
        variants=(
            {"lr": 0.01, "betas": (0.9, 0.9999), "eps": 1e-6},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "clip_exponent": None},
            {
                "lr": 0.01,
                "betas": (0.9, 0.999),
                "eps": 1e-6,
                "clip_exponent": 0.1,
                "weight_decay": 0.1,
                "decoupled_weight_decay": True,
            },
            {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.1},
        ),
        paper=paper_adopt,
        paper_kwargs={"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "clip_exponent": 0.1},
        kwargs={"lr": 0.01, "weight_decay": 0.1},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"clip_exponent": -0.25}, "Invalid clip_exponent value: -0.25"),
        ),
    ),
    Row(
        name="Lamb",
        cls=ours.Lamb,
        config="lamb",
        reference=ref_lamb,
        variants=(
            {
                "lr": 0.01,
                "betas": (0.9, 0.999),
                "eps": 0.0,
                "weight_decay": 0.1,
                "bias_correction": False,
            },
            {
                "lr": 0.02,
                "betas": (0.8, 0.99),
                "eps": 0.0,
                "weight_decay": 0.0,
                "bias_correction": False,
            },
        ),
        paper=paper_lamb,
        paper_kwargs={"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.1},
        kwargs={"lr": 0.01, "weight_decay": 0.1},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"clamp_value": 0.0}, "Invalid clamp_value value: 0.0"),
        ),
    ),
    Row(
        name="ScheduleFreeAdamW",
        cls=ours.ScheduleFreeAdamW,
        config="schedulefree_adamw",
        reference=ref_schedulefree,
        variants=(
            {"lr": 0.05, "betas": (0.9, 0.999), "eps": 1e-8},
            {
                "lr": 0.05,
                "betas": (0.8, 0.99),
                "eps": 1e-6,
                "weight_decay": 0.1,
                "warmup_steps": 10,
                "r": 1.0,
                "weight_lr_power": 1.0,
            },
        ),
        paper=paper_schedulefree,
        paper_kwargs={
            "lr": 0.05,
            "betas": (0.9, 0.999),
            "eps": 1e-8,
            "weight_decay": 0.1,
            "warmup_steps": 10,
        },
        kwargs={"lr": 0.05, "weight_decay": 0.1, "warmup_steps": 5},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"betas": (0.0, 0.999)}, "Invalid beta parameter at index 0: 0.0"),
            ({"warmup_steps": -1}, "Invalid warmup_steps value: -1"),
        ),
    ),
    Row(
        name="Prodigy",
        cls=ours.Prodigy,
        config="prodigy",
        reference=ref_prodigy,
        variants=(
            {"lr": 1.0, "betas": (0.9, 0.999), "eps": 1e-8},
            {
                "lr": 0.5,
                "betas": (0.9, 0.99),
                "eps": 1e-8,
                "weight_decay": 0.1,
                "decoupled_weight_decay": False,
                "use_bias_correction": True,
            },
            {
                "lr": 1.0,
                "betas": (0.0, 0.999),
                "beta3": 0.9,
                "eps": 1e-8,
                "weight_decay": 0.01,
                "safeguard_warmup": True,
                "d0": 1e-4,
                "d_coef": 0.5,
                "growth_rate": 1.05,
            },
        ),
        paper=paper_prodigy,
        # eps = 0: the package scales eps by the new d where the paper has the old one.
        paper_kwargs={"lr": 1.0, "betas": (0.9, 0.999), "eps": 0.0, "d0": 1e-6},
        kwargs={"lr": 1.0, "weight_decay": 0.1},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"beta3": 1.5}, "Invalid beta parameter at index 2: 1.5"),
            ({"d0": 0.0}, "Invalid d0 value: 0.0"),
            ({"d_coef": -1.0}, "Invalid d_coef value: -1.0"),
            ({"growth_rate": 0.5}, "Invalid growth_rate value: 0.5"),
        ),
    ),
    Row(
        name="Sophia",
        cls=ours.Sophia,
        config="sophia",
        reference=ref_sophia,
        variants=(
            {
                "lr": 0.01,
                "betas": (0.96, 0.99),
                "rho": 0.05,
                "eps": 1e-12,
                "weight_decay": 0.0,
                "update_period": 10,
                "hessian_distribution": "gaussian",
            },
            {
                "lr": 0.02,
                "betas": (0.9, 0.95),
                "rho": 0.5,
                "eps": 1e-8,
                "weight_decay": 0.1,
                "update_period": 3,
                "hessian_distribution": "rademacher",
            },
        ),
        paper=paper_sophia,
        paper_kwargs={
            "lr": 0.01,
            "betas": (0.9, 0.95),
            "rho": 0.1,
            "eps": 1e-8,
            "weight_decay": 0.1,
            "update_period": 3,
            "hessian_distribution": "rademacher",
        },
        paper_uncoupled=True,
        kwargs={"lr": 0.01, "rho": 0.1, "weight_decay": 0.1, "update_period": 2},
        invalid=(
            *COMMON_INVALID,
            EPS_INVALID,
            ({"rho": 0.0}, "Invalid rho value: 0.0"),
            ({"update_period": 0}, "Invalid update_period value: 0"),
            ({"hessian_distribution": "uniform"}, "Invalid hessian_distribution value: 'uniform'"),
        ),
    ),
    Row(
        name="Newton",
        cls=ours.Newton,
        config="newton",
        reference=None,
        variants=(),
        paper=paper_newton,
        paper_kwargs={"lr": 0.5, "damping": 1.0},
        kwargs={"lr": 0.5, "damping": 1.0},
        invalid=(
            LR_INVALID,
            ({"damping": -1.0}, "Invalid damping value: -1.0"),
            ({"line_search_fn": "wolfe"}, "Invalid line_search_fn value: 'wolfe'"),
            ({"max_params": 1}, "parameters have 2 entries in all, more than max_params=1"),
        ),
        steps=20,
    ),
]

REFERENCE_CASES = [
    pytest.param(row, variant, id=f"{row.name}-{i}")
    for row in ROWS
    if row.reference is not None
    for i, variant in enumerate(row.variants)
]


def rows_with(capability: str) -> list[Row]:
    return [row for row in ROWS if getattr(row.cls.capabilities, capability)]


# -- (1) the published implementations -----------------------------------------------------


@pytest.mark.parametrize(("row", "variant"), REFERENCE_CASES)
def test_matches_reference(row: Row, variant: Kwargs) -> None:
    problem = Problem(seed=1)
    expected = run(lambda p: row.reference(p, **variant), row.cls, problem, row.steps)
    actual = run(lambda p: row.cls(p, **variant), row.cls, problem, row.steps)
    assert_trajectories_close(actual, expected, row.rtol)
    # The run went somewhere: the comparison is not between two stationary trajectories.
    assert relative_error(actual[-1], flat(problem.x0)) > 1e-3


def test_every_row_without_reference_says_so() -> None:
    for row in ROWS:
        if row.reference is None:
            assert "no package" in row.cls.reference


# -- (2) the papers' algorithms ------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_matches_paper_transcription(row: Row) -> None:
    problem = Problem(seed=2, coupled=not row.paper_uncoupled)
    expected = row.paper(problem, row.steps, **row.paper_kwargs)
    actual = run(lambda p: row.cls(p, **row.paper_kwargs), row.cls, problem, row.steps)
    assert_trajectories_close(actual, expected, row.rtol)
    assert relative_error(actual[-1], flat(problem.x0)) > 1e-3


# -- capabilities, as a trainer uses them --------------------------------------------------


@pytest.mark.parametrize("row", rows_with("maximize"), ids=str)
def test_maximize_is_minimizing_the_negation(row: Row) -> None:
    problem = Problem(seed=3)
    descend = run(lambda p: row.cls(p, **row.kwargs), row.cls, problem, 30)
    ascend = run(lambda p: row.cls(p, maximize=True, **row.kwargs), row.cls, problem, 30, sign=-1)
    assert_trajectories_close(ascend, descend, 1e-12)


@pytest.mark.parametrize("row", rows_with("foreach"), ids=str)
def test_foreach_matches_single_tensor(row: Row) -> None:
    problem = Problem(seed=4)
    loop = run(lambda p: row.cls(p, foreach=False, **row.kwargs), row.cls, problem, 30)
    multi = run(lambda p: row.cls(p, foreach=True, **row.kwargs), row.cls, problem, 30)
    assert_trajectories_close(multi, loop, 1e-12)


@pytest.mark.parametrize("row", rows_with("complex"), ids=str)
def test_complex_entries_are_pairs_of_real_entries(row: Row) -> None:
    real_problem = Problem(seed=5, shapes=((4, 2), (3, 2)))
    real = run(lambda p: row.cls(p, **row.kwargs), row.cls, real_problem, 20)

    class ComplexProblem(Problem):
        def loss(self, params):
            return real_problem.loss([torch.view_as_real(p) for p in params])

    x0 = [torch.view_as_complex(x.clone()) for x in real_problem.x0]
    complex_run = run(lambda p: row.cls(p, **row.kwargs), row.cls, ComplexProblem(), 20, x0=x0)
    as_real = [torch.view_as_real(step).flatten() for step in complex_run]
    assert_trajectories_close(as_real, real, 1e-12)


@pytest.mark.parametrize("row", rows_with("elementwise"), ids=str)
def test_elementwise_rows_of_a_batch_are_independent(row: Row) -> None:
    """Rosenbrock from three starts as one (3, 2) tensor equals three separate runs."""
    starts = torch.tensor([[-0.5, 0.5], [1.5, -0.5], [0.0, 2.0]], dtype=DTYPE)

    class Rows(Problem):
        def __init__(self, x0):
            self.x0 = [x0]

        def loss(self, params):
            return rosenbrock(params[0]).sum()

    batched = run(lambda p: row.cls(p, **row.kwargs), row.cls, Rows(starts), 20)
    for i, start in enumerate(starts):
        alone = run(lambda p: row.cls(p, **row.kwargs), row.cls, Rows(start), 20)
        assert_trajectories_close([t.view(3, 2)[i] for t in batched], alone, 1e-12)


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_state_dict_resumes_the_run(row: Row) -> None:
    problem = Problem(seed=6)
    whole = run(lambda p: row.cls(p, **row.kwargs), row.cls, problem, 12)

    torch.manual_seed(1234)
    params = [x.clone().requires_grad_() for x in problem.x0]
    first = row.cls(params, **row.kwargs)
    caps = row.cls.capabilities

    def advance(optimizer, steps):
        for _ in range(steps):

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss = problem.loss(params)
                loss.backward(create_graph=caps.needs_create_graph)
                return loss

            if caps.needs_closure:
                optimizer.step(closure)
            else:
                closure()
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    advance(first, 6)
    second = row.cls(params, **row.kwargs)
    second.load_state_dict(first.state_dict())
    advance(second, 6)
    if caps.has_train_eval:
        second.eval()
    assert relative_error(flat(params), whole[-1]) <= 1e-12


@pytest.mark.parametrize("row", rows_with("needs_closure"), ids=str)
def test_step_without_closure_raises(row: Row) -> None:
    x = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires a closure"):
        row.cls([x], **row.kwargs).step()


@pytest.mark.parametrize("row", rows_with("needs_create_graph"), ids=str)
def test_missing_create_graph_raises(row: Row) -> None:
    """A trainer that ignores needs_create_graph gets an error, not a silent wrong step."""
    problem = Problem(seed=7)
    params = [x.clone().requires_grad_() for x in problem.x0]
    optimizer = row.cls(params, **row.kwargs)

    def closure():
        optimizer.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph=True"):
        if row.cls.capabilities.needs_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()


@pytest.mark.parametrize("row", rows_with("has_train_eval"), ids=str)
def test_train_eval_modes(row: Row) -> None:
    problem = Problem(seed=8)
    params = [x.clone().requires_grad_() for x in problem.x0]
    optimizer = row.cls(params, **row.kwargs)
    optimizer.eval()  # before any step: nothing to switch
    optimizer.train()
    assert relative_error(flat(params), flat(problem.x0)) == 0
    for _ in range(5):
        optimizer.zero_grad()
        problem.loss(params).backward()
        optimizer.step()
    y = flat(params)
    optimizer.eval()
    x = flat(params)
    assert relative_error(x, y) > 1e-6
    optimizer.eval()  # idempotent
    assert relative_error(flat(params), x) == 0
    with pytest.raises(RuntimeError, match="eval mode"):
        optimizer.step()
    optimizer.train()
    assert relative_error(flat(params), y) <= 1e-14


# -- construction: registry, configs, invalid values ---------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_registered(row: Row) -> None:
    assert OPTIMIZERS[row.cls.__name__] is row.cls
    assert row.cls.reference


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_config_instantiates_and_lists_every_argument(row: Row) -> None:
    cfg = OmegaConf.load(CONF_DIR / f"{row.config}.yaml")
    param = torch.zeros(2, 2, requires_grad=True)
    optimizer = hydra.utils.instantiate(cfg)([param])
    assert type(optimizer) is row.cls

    signature = inspect.signature(row.cls.__init__)
    expected = {
        name: p.default
        for name, p in signature.parameters.items()
        if name not in ("self", "params")
    }
    listed = {k: v for k, v in OmegaConf.to_container(cfg).items() if not k.startswith("_")}
    assert listed.keys() == expected.keys()
    for name, default in expected.items():
        value = tuple(listed[name]) if isinstance(listed[name], list) else listed[name]
        assert value == default, f"{name}: config has {value!r}, the class {default!r}"


@pytest.mark.parametrize(
    ("row", "kwargs", "message"),
    [
        pytest.param(row, kwargs, message, id=f"{row.name}-{next(iter(kwargs))}")
        for row in ROWS
        for kwargs, message in row.invalid
    ],
)
def test_invalid_hyperparameters_raise(row: Row, kwargs: Kwargs, message: str) -> None:
    param = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=re.escape(message)):
        row.cls([param], **kwargs)


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_unknown_argument_raises(row: Row) -> None:
    with pytest.raises(TypeError):
        row.cls([torch.zeros(2, requires_grad=True)], learning_rate=0.1)


# -- (3) steps worked out by hand ----------------------------------------------------------


def linear_steps(optimizer_cls, theta0, slope, steps, **kwargs):
    """Steps on f(theta) = sum(slope * theta): a constant gradient ``slope``."""
    theta = torch.tensor(theta0, dtype=DTYPE, requires_grad=True)
    slope = torch.tensor(slope, dtype=DTYPE)
    optimizer = optimizer_cls([theta], **kwargs)
    out = []
    for _ in range(steps):
        optimizer.zero_grad()
        (slope * theta).sum().backward()
        optimizer.step()
        out.append(theta.detach().clone())
    return out, optimizer


def test_lion_moves_every_entry_by_lr() -> None:
    problem = Problem(seed=9)
    trajectory = run(lambda p: ours.Lion(p, lr=0.01), ours.Lion, problem, 5)
    previous = flat(problem.x0)
    for current in trajectory:
        torch.testing.assert_close(
            (current - previous).abs(), torch.full_like(current, 0.01), rtol=0, atol=1e-15
        )
        previous = current


def test_lion_weight_decay_acts_outside_the_sign() -> None:
    # g = -0.1 at theta = 2: decay outside the sign gives 2 * (1 - 0.1 * 0.5) + 0.1 = 2.0;
    # inside it (sign(g + 0.5 * theta) = +1) would give 1.9.
    (theta1, theta2), optimizer = linear_steps(
        ours.Lion, [2.0], [-0.1], 2, lr=0.1, weight_decay=0.5
    )
    assert theta1.item() == pytest.approx(2.0, abs=1e-15)
    # The momentum never sees the decay: after two steps m = (1 - b2)(1 + b2) g.
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"].item() == (
        pytest.approx(-0.1 * (1 - 0.99) * (1 + 0.99), abs=1e-15)
    )
    assert theta2.item() == pytest.approx(2.0 * 0.95 + 0.1, abs=1e-15)


def test_adabelief_first_step() -> None:
    # m_1 = (1 - b1) g and s_1 = (1 - b2)(b1 g)^2 + eps, so after bias correction the
    # step is lr * g / (sqrt(b1^2 g^2 + eps / (1 - b2)) + eps).
    lr, (b1, b2), eps, g = 0.1, (0.9, 0.999), 1e-4, 0.5
    (theta1,), _ = linear_steps(ours.AdaBelief, [1.0], [g], 1, lr=lr, betas=(b1, b2), eps=eps)
    expected = 1.0 - lr * g / (math.sqrt(b1**2 * g**2 + eps / (1 - b2)) + eps)
    assert theta1.item() == pytest.approx(expected, rel=1e-14)


def test_yogi_second_moment_moves_additively() -> None:
    # v_0 = 1e-6 < g^2 = 4: v_1 = 1e-6 + (1 - b2) * 4; then g = 0 leaves v unchanged
    # (Adam's v would shrink by b2).
    theta = torch.tensor([1.0], dtype=DTYPE, requires_grad=True)
    optimizer = ours.Yogi([theta], lr=0.1)
    theta.grad = torch.tensor([2.0], dtype=DTYPE)
    optimizer.step()
    state = optimizer.state[theta]
    assert state["exp_avg_sq"].item() == pytest.approx(1e-6 + 0.001 * 4, rel=1e-14)
    expected = 1.0 - 0.1 * (0.2 / 0.1) / (math.sqrt((1e-6 + 0.004) / 0.001) + 1e-3)
    assert theta.item() == pytest.approx(expected, rel=1e-14)
    theta.grad = torch.tensor([0.0], dtype=DTYPE)
    optimizer.step()
    assert state["exp_avg_sq"].item() == pytest.approx(1e-6 + 0.001 * 4, rel=1e-14)


def test_adopt_first_step_only_initialises_then_clips() -> None:
    theta = torch.tensor([1.0, 1.0], dtype=DTYPE, requires_grad=True)
    optimizer = ours.ADOPT([theta], lr=0.1)
    theta.grad = torch.tensor([2.0, 0.01], dtype=DTYPE)
    optimizer.step()
    assert theta.tolist() == [1.0, 1.0]
    theta.grad = torch.tensor([1.0, 1.0], dtype=DTYPE)
    optimizer.step()
    # Normalised gradients 1/2 and 1/0.01 = 100, the latter clipped to 2^(1/4).
    m = 0.1 * torch.tensor([0.5, 2**0.25], dtype=DTYPE)
    torch.testing.assert_close(theta.detach(), 1.0 - 0.1 * m, rtol=1e-14, atol=0)


def test_lamb_step_length_is_lr_times_clamped_weight_norm() -> None:
    small = torch.tensor([3.0, -4.0], dtype=DTYPE)  # norm 5
    large = torch.tensor([30.0, 40.0], dtype=DTYPE)  # norm 50, clamped to 10
    zero = torch.zeros(2, dtype=DTYPE)  # trust ratio 1
    params = [t.clone().requires_grad_() for t in (small, large, zero)]
    optimizer = ours.Lamb(params, lr=0.01, eps=1e-6)
    grads = [torch.tensor([1.0, 2.0], dtype=DTYPE)] * 3
    for p, g in zip(params, grads):
        p.grad = g.clone()
    optimizer.step()
    # First step with bias correction: r = g / (|g| + eps), entry by entry.
    r = grads[0] / (grads[0].abs() + 1e-6)
    tolerance = {"rtol": 1e-13, "atol": 1e-15}
    torch.testing.assert_close(params[0].detach(), small - 0.01 * 5 * r / r.norm(), **tolerance)
    torch.testing.assert_close(params[1].detach(), large - 0.01 * 10 * r / r.norm(), **tolerance)
    torch.testing.assert_close(params[2].detach(), zero - 0.01 * r, **tolerance)


def test_schedulefree_two_steps_by_hand() -> None:
    # f = theta^2 / 2 from theta = 1, eps = 0. Step 1: the normalised gradient is 1 and
    # c = 1, so z = x = y = 1 - lr. Step 2: g = 1 - lr, v from two gradients, c = 1/2.
    lr, (b1, b2) = 0.1, (0.9, 0.999)
    theta = torch.tensor([1.0], dtype=DTYPE, requires_grad=True)
    optimizer = ours.ScheduleFreeAdamW([theta], lr=lr, betas=(b1, b2), eps=0.0)
    for _ in range(2):
        optimizer.zero_grad()
        (theta**2 / 2).sum().backward()
        optimizer.step()
    z1 = x1 = 1 - lr
    g2 = z1
    v2 = b2 * (1 - b2) * 1.0 + (1 - b2) * g2**2
    z2 = z1 - lr * g2 / math.sqrt(v2 / (1 - b2**2))
    x2 = (x1 + z2) / 2
    assert theta.item() == pytest.approx((1 - b1) * z2 + b1 * x2, rel=1e-14)
    optimizer.eval()
    assert theta.item() == pytest.approx(x2, rel=1e-14)


def test_prodigy_first_two_steps_by_hand() -> None:
    # Step 1: x = x0, so the numerator is 0 and d stays d0; the step is
    # d0 lr (1 - b1) g / (sqrt(1 - b2) |g| + eps). Step 2 estimates d from step 1.
    lr, (b1, b2), eps, d0 = 1.0, (0.9, 0.999), 1e-8, 1e-6
    b3 = math.sqrt(b2)
    theta = torch.tensor([1.0], dtype=DTYPE, requires_grad=True)
    optimizer = ours.Prodigy([theta], lr=lr, betas=(b1, b2), eps=eps, d0=d0)
    g1, g2 = 0.5, 0.25
    theta.grad = torch.tensor([g1], dtype=DTYPE)
    optimizer.step()
    x1 = 1.0 - d0 * lr * (1 - b1) * g1 / (math.sqrt(1 - b2) * g1 + eps)
    assert theta.item() == pytest.approx(x1, rel=1e-14)
    assert optimizer.param_groups[0]["d"] == d0

    theta.grad = torch.tensor([g2], dtype=DTYPE)
    optimizer.step()
    numerator = d0 * lr * g2 * (1.0 - x1)  # (d / d0) * d lr * <g, x0 - x>
    s = b3 * (d0 * lr * g1) + d0 * lr * g2
    assert optimizer.param_groups[0]["d"] == pytest.approx(max(d0, numerator / s), rel=1e-14)


def test_sophia_clips_and_follows_the_momentum_where_curvature_is_negative() -> None:
    # f = theta_0^2 + theta_1^2 - theta_2^2 (Hessian diag 2, 2, -2), Rademacher probes:
    # the estimate is exact. Step 1: m = (1 - b1) g, h = (1 - b2) diag.
    lr, (b1, b2), rho = 0.05, (0.9, 0.99), 1.0
    theta0 = torch.tensor([1e-4, 1.0, 0.5], dtype=DTYPE)
    theta = theta0.clone().requires_grad_()
    optimizer = ours.Sophia(
        [theta], lr=lr, betas=(b1, b2), rho=rho, hessian_distribution="rademacher"
    )
    optimizer.zero_grad()
    (theta[0] ** 2 + theta[1] ** 2 - theta[2] ** 2).backward(create_graph=True)
    optimizer.step()
    ratio_0 = (1 - b1) * 2e-4 / (rho * (1 - b2) * 2)  # 1e-3: not clipped
    expected = theta0 - lr * torch.tensor([ratio_0, 1.0, -1.0], dtype=DTYPE)
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        optimizer.state[theta]["hessian"], (1 - b2) * torch.tensor([2.0, 2.0, -2.0], dtype=DTYPE)
    )


def quadratic(params: list[Tensor]) -> Tensor:
    """f = 1/2 v^T A v - b^T v over v = (params[0], params[1]), A positive definite."""
    v = torch.cat([p.flatten() for p in params])
    return 0.5 * v @ QUADRATIC_A @ v - QUADRATIC_B @ v


QUADRATIC_A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=DTYPE)
QUADRATIC_B = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)


def newton_run(start, fn, steps, **kwargs):
    params = [t.clone().requires_grad_() for t in start]
    optimizer = ours.Newton(params, **kwargs)

    def closure():
        optimizer.zero_grad()
        loss = fn(params)
        loss.backward(create_graph=True)
        return loss

    values = []
    for _ in range(steps):
        optimizer.step(closure)
        values.append(fn(params).item())
    return params, values


def test_newton_solves_a_quadratic_in_one_step() -> None:
    start = [torch.tensor([5.0, -3.0], dtype=DTYPE), torch.tensor([2.0], dtype=DTYPE)]
    params, _ = newton_run(start, quadratic, 1)
    minimum = torch.linalg.solve(QUADRATIC_A, QUADRATIC_B)
    torch.testing.assert_close(flat(params), minimum, rtol=1e-13, atol=1e-14)


def test_newton_damped_step_by_hand() -> None:
    # f = (x^2 + 4 y^2) / 2 at (1, 1), damping 1: d = -(g_i / (a_i + 1)) = (-1/2, -4/5).
    params, _ = newton_run(
        [torch.tensor([1.0, 1.0], dtype=DTYPE)],
        lambda p: 0.5 * (p[0][0] ** 2 + 4 * p[0][1] ** 2),
        1,
        damping=1.0,
    )
    torch.testing.assert_close(params[0].detach(), torch.tensor([0.5, 0.2], dtype=DTYPE))


def test_newton_reaches_rosenbrock_minimum_in_few_steps() -> None:
    params, values = newton_run(
        [torch.tensor([-0.5, 0.5], dtype=DTYPE)], lambda p: rosenbrock(p[0]), 7
    )
    torch.testing.assert_close(params[0].detach(), torch.ones(2, dtype=DTYPE), rtol=0, atol=1e-10)
    assert values[-1] < 1e-20


def test_newton_backtracking_descends_monotonically_to_rosenbrock_minimum() -> None:
    start = torch.tensor([-0.5, 0.5], dtype=DTYPE)
    params, values = newton_run(
        [start], lambda p: rosenbrock(p[0]), 25, line_search_fn="backtracking"
    )
    assert values[0] < rosenbrock(start).item()
    assert all(later <= earlier for earlier, later in zip(values, values[1:]))
    torch.testing.assert_close(params[0].detach(), torch.ones(2, dtype=DTYPE), rtol=0, atol=1e-8)


def test_newton_closure_without_backward() -> None:
    """The closure may just return the loss: Newton differentiates it itself."""
    params = [torch.tensor([5.0, -3.0, 2.0], dtype=DTYPE, requires_grad=True)]
    optimizer = ours.Newton(params)
    optimizer.step(lambda: quadratic(params))
    minimum = torch.linalg.solve(QUADRATIC_A, QUADRATIC_B)
    torch.testing.assert_close(params[0].detach(), minimum, rtol=1e-13, atol=1e-14)


def test_newton_row_by_row_hessian_when_batching_fails(monkeypatch) -> None:
    """Where an operation has no batching rule, the Hessian is built one row at a time."""
    grad = torch.autograd.grad

    def unbatched(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", unbatched)
    start = [torch.tensor([5.0, -3.0], dtype=DTYPE), torch.tensor([2.0], dtype=DTYPE)]
    params, _ = newton_run(start, quadratic, 1)
    minimum = torch.linalg.solve(QUADRATIC_A, QUADRATIC_B)
    torch.testing.assert_close(flat(params), minimum, rtol=1e-13, atol=1e-14)
