"""The table of optimizer cases that the parity tests are driven from.

Each row pairs an optimizer of the package with the ``torch.optim`` class it must match,
lists hyperparameter variants to run both with, and states what the pair supports. Tests
read only these fields; none of them branches on an optimizer's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

import torchopt_bench.optim as ours

Kwargs = dict[str, Any]


@dataclass(frozen=True)
class OptimizerCase:
    """One optimizer of the package and the torch.optim class it is checked against."""

    #: Test id.
    name: str
    #: The class of the package.
    cls: type[Optimizer]
    #: The torch.optim class it must match to float64 precision.
    reference: type[Optimizer]
    #: Hyperparameters; both classes are built with each of them in turn. A variant with a
    #: nonzero ``weight_decay`` or ``maximize=True`` is how those features are covered.
    variants: tuple[Kwargs, ...]
    #: Hyperparameters that a second param group overrides (must differ from the first).
    group_overrides: Kwargs = field(default_factory=lambda: {"lr": 0.02})
    #: (kwargs, expected message) rows: the constructor raises ``ValueError`` with exactly
    #: this message, as the reference class does for the same kwargs.
    invalid: tuple[tuple[Kwargs, str], ...] = ()
    #: Both classes accept complex parameters (updated as pairs of real entries).
    supports_complex: bool = True
    #: Both classes accept ``foreach=True`` (a multi-tensor path).
    supports_foreach: bool = True
    #: Both classes accept ``maximize=True``.
    supports_maximize: bool = True
    #: ``step`` must be given a closure that re-evaluates the loss.
    needs_closure: bool = False
    #: The state of a parameter holds ``step`` as a 0-d tensor.
    has_state_step: bool = True
    #: The state of every parameter is created in the constructor (torch.optim.Adagrad),
    #: so a parameter that never gets a gradient has state; otherwise it has none.
    eager_state: bool = False
    #: Shapes of the parameters of the test problems (2-D only for matrix-only methods).
    shapes: tuple[tuple[int, ...], ...] = ((3, 4), (5,), (2, 3, 2), (1,))
    #: Relative tolerance on parameters and state after the run.
    rtol: float = 1e-10
    #: Runs take seconds (e.g. bfloat16 matrix products on CPU): the case's parity tests
    #: are marked ``slow``.
    slow: bool = False

    def __str__(self) -> str:
        return self.name


LR_INVALID = ({"lr": -0.1}, "Invalid learning rate: -0.1")
WEIGHT_DECAY_INVALID = ({"weight_decay": -0.5}, "Invalid weight_decay value: -0.5")
EPS_INVALID = ({"eps": -1e-8}, "Invalid epsilon value: -1e-08")


CASES: list[OptimizerCase] = [
    OptimizerCase(
        name="SGD",
        cls=ours.SGD,
        reference=torch.optim.SGD,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.9},
            {"lr": 0.01, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
            {"lr": 0.01, "momentum": 0.9, "nesterov": True, "maximize": True},
            {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
        ),
        group_overrides={"lr": 0.02, "momentum": 0.5},
        invalid=(
            LR_INVALID,
            ({"momentum": -0.9}, "Invalid momentum value: -0.9"),
            WEIGHT_DECAY_INVALID,
            (
                {"momentum": 0.9, "dampening": 0.1, "nesterov": True},
                "Nesterov momentum requires a momentum and zero dampening",
            ),
            ({"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
        ),
        has_state_step=False,
    ),
    OptimizerCase(
        name="Adam",
        cls=ours.Adam,
        reference=torch.optim.Adam,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "betas": (0.5, 0.9), "weight_decay": 0.01},
        invalid=(
            LR_INVALID,
            EPS_INVALID,
            ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
            ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
            WEIGHT_DECAY_INVALID,
        ),
    ),
]


ADAM_INVALID = (
    LR_INVALID,
    EPS_INVALID,
    ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    WEIGHT_DECAY_INVALID,
)

CASES += [
    OptimizerCase(
        name="Adagrad",
        cls=ours.Adagrad,
        reference=torch.optim.Adagrad,
        variants=(
            {"lr": 0.05},
            {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.1},
            {"lr": 0.05, "initial_accumulator_value": 0.5, "eps": 1e-6, "maximize": True},
        ),
        group_overrides={"lr": 0.1, "lr_decay": 0.05, "eps": 1e-8},
        invalid=(
            LR_INVALID,
            ({"lr_decay": -0.1}, "Invalid lr_decay value: -0.1"),
            WEIGHT_DECAY_INVALID,
            (
                {"initial_accumulator_value": -1.0},
                "Invalid initial_accumulator_value value: -1.0",
            ),
            EPS_INVALID,
        ),
        eager_state=True,
    ),
    OptimizerCase(
        name="RMSprop",
        cls=ours.RMSprop,
        reference=torch.optim.RMSprop,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "centered": True, "weight_decay": 0.1},
            {"lr": 0.01, "momentum": 0.9},
            {"lr": 0.005, "momentum": 0.5, "centered": True, "alpha": 0.9, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "alpha": 0.9, "momentum": 0.3},
        invalid=(
            LR_INVALID,
            EPS_INVALID,
            ({"momentum": -0.9}, "Invalid momentum value: -0.9"),
            WEIGHT_DECAY_INVALID,
            ({"alpha": -0.5}, "Invalid alpha value: -0.5"),
        ),
    ),
    OptimizerCase(
        name="Adadelta",
        cls=ours.Adadelta,
        reference=torch.optim.Adadelta,
        variants=(
            {"lr": 1.0},
            {"lr": 0.5, "rho": 0.95, "weight_decay": 0.1},
            {"lr": 1.0, "eps": 1e-4, "maximize": True},
        ),
        group_overrides={"lr": 0.5, "rho": 0.8},
        invalid=(
            LR_INVALID,
            ({"rho": 1.5}, "Invalid rho value: 1.5"),
            ({"rho": -0.1}, "Invalid rho value: -0.1"),
            EPS_INVALID,
            WEIGHT_DECAY_INVALID,
        ),
    ),
    OptimizerCase(
        name="AdamW",
        cls=ours.AdamW,
        reference=torch.optim.AdamW,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
            {"lr": 0.01, "weight_decay": 0.0, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "weight_decay": 0.2},
        invalid=ADAM_INVALID,
    ),
    OptimizerCase(
        name="Adamax",
        cls=ours.Adamax,
        reference=torch.optim.Adamax,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1},
            {"lr": 0.01, "eps": 1e-3, "maximize": True},
        ),
        # beta2 well below 1 turns Adamax into a sign-like method whose runs amplify
        # rounding differences; torch's own two paths then part at 1e-8.
        group_overrides={"lr": 0.02, "betas": (0.8, 0.99)},
        invalid=ADAM_INVALID,
    ),
    OptimizerCase(
        name="NAdam",
        cls=ours.NAdam,
        reference=torch.optim.NAdam,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum_decay": 0.04, "weight_decay": 0.1},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "betas": (0.8, 0.99), "momentum_decay": 0.01},
        invalid=(
            *ADAM_INVALID,
            ({"momentum_decay": -0.1}, "Invalid momentum_decay value: -0.1"),
        ),
    ),
    OptimizerCase(
        name="RAdam",
        cls=ours.RAdam,
        reference=torch.optim.RAdam,
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "betas": (0.8, 0.9)},
        invalid=ADAM_INVALID,
    ),
]


# -- second group
# Rows for further torch.optim counterparts are appended here.
CASES += [
    OptimizerCase(
        name="Rprop",
        cls=ours.Rprop,
        reference=torch.optim.Rprop,
        variants=(
            {"lr": 0.01},
            {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-4, 0.2)},
            {"lr": 0.01, "step_sizes": (1e-3, 0.05), "maximize": True},
        ),
        group_overrides={"lr": 0.02, "etas": (0.4, 1.1)},
        invalid=(
            LR_INVALID,
            ({"etas": (1.5, 1.2)}, "Invalid eta values: 1.5, 1.2"),
            ({"etas": (0.5, 0.9)}, "Invalid eta values: 0.5, 0.9"),
        ),
    ),
    # ASGD's eta is a float32 tensor unless the default dtype is float64, and torch's
    # foreach path computes its decay in that dtype while the per-tensor path computes it
    # in double: the two differ by ~1e-8 whenever lambd * alpha != 0. The variants keep
    # eta constant (lambd = 0 or alpha = 0); the decaying eta is checked against torch
    # with float64 scalars in test_optim_parity_extra.py.
    OptimizerCase(
        name="ASGD",
        cls=ours.ASGD,
        reference=torch.optim.ASGD,
        variants=(
            {"lr": 0.01, "lambd": 0.0, "t0": 20},
            {"lr": 0.01, "lambd": 0.5, "alpha": 0.0, "t0": 50, "weight_decay": 0.1},
            {"lr": 0.02, "lambd": 0.0, "t0": 10, "maximize": True},
        ),
        group_overrides={"lr": 0.02, "t0": 30},
        invalid=(LR_INVALID, WEIGHT_DECAY_INVALID),
    ),
    OptimizerCase(
        name="Adafactor",
        cls=ours.Adafactor,
        reference=torch.optim.Adafactor,
        variants=(
            {"lr": 0.01},
            {"lr": 0.05, "beta2_decay": -0.5, "weight_decay": 0.1, "d": 2.0},
            {"lr": 0.03, "eps": (1e-3, 1e-2), "maximize": True},
        ),
        group_overrides={"lr": 0.02, "beta2_decay": -0.6},
        invalid=(
            ({"lr": -0.1}, "Learning rate should be >= 0 but is: -0.1"),
            ({"beta2_decay": 0.5}, "beta2_decay should be <= 0 but is: 0.5"),
            ({"eps": (-1.0, 1e-3)}, "epsilon1 should be >= 0 but is: -1.0"),
            ({"eps": (None, -1e-3)}, "epsilon2 should be >= 0 but is: -0.001"),
            ({"d": 0.5}, "Clipping threshold d should be >= 1 but is: 0.5"),
            ({"weight_decay": -0.5}, "weight_decay should be >= 0 but is: -0.5"),
        ),
        supports_complex=False,
    ),
    # Matrices only; the Newton-Schulz iteration runs in bfloat16 in both classes.
    OptimizerCase(
        name="Muon",
        cls=ours.Muon,
        reference=torch.optim.Muon,
        variants=(
            {"lr": 0.02, "weight_decay": 0.0},
            {"lr": 0.02, "weight_decay": 0.1, "nesterov": False},
            {"lr": 0.01, "momentum": 0.9, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 3},
            {"lr": 0.02, "ns_coefficients": (2.0, -1.5, 0.5), "eps": 1e-5},
        ),
        group_overrides={"lr": 0.05, "momentum": 0.8, "adjust_lr_fn": "original"},
        invalid=(
            ({"lr": -0.1}, "Learning rate should be >= 0 but is: -0.1"),
            ({"momentum": -0.9}, "momentum should be >= 0 but is: -0.9"),
            ({"weight_decay": -0.5}, "weight decay should be >= 0 but is: -0.5"),
            (
                {"adjust_lr_fn": "sqrt"},
                "Adjust learning rate function sqrt is not supported",
            ),
        ),
        supports_complex=False,
        supports_foreach=False,
        supports_maximize=False,
        has_state_step=False,
        shapes=((3, 4), (5, 2), (4, 4), (2, 6)),
        slow=True,
    ),
]


# -- the fused path
# One row per optimizer with ``capabilities.fused``: the fused path against the class's
# own per-tensor loop. Every row of the compiled kind costs one compilation (a few
# seconds), so each holds a single variant that switches on the structural options
# (AMSGrad, centring, momentum, clipping, ...) and the group override changes values
# only; rows of torch's fused kernels are free and list several variants.


@dataclass(frozen=True)
class FusedCase:
    """An optimizer whose ``fused=True`` path must follow its per-tensor loop."""

    cls: type[Optimizer]
    variants: tuple[Kwargs, ...]
    #: Values (not structure) that the second param group overrides.
    group_overrides: Kwargs = field(default_factory=lambda: {"lr": 0.02})
    #: The state of every parameter is created in the constructor (as torch.optim.Adagrad).
    eager_state: bool = False

    def __str__(self) -> str:
        return self.cls.__name__


FUSED_CASES: list[FusedCase] = [
    FusedCase(
        ours.SGD,
        (
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
            {"lr": 0.01, "momentum": 0.9, "nesterov": True, "maximize": True},
        ),
    ),
    FusedCase(
        ours.Adam,
        (
            {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
        {"lr": 0.02, "betas": (0.5, 0.9)},
    ),
    FusedCase(ours.AdamW, ({"lr": 0.01, "weight_decay": 0.1},)),
    FusedCase(
        ours.Adagrad,
        (
            {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.1},
            {"lr": 0.05, "initial_accumulator_value": 0.5, "maximize": True},
        ),
        eager_state=True,
    ),
    FusedCase(
        ours.RMSprop,
        ({"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1, "maximize": True},),
        {"lr": 0.02, "alpha": 0.9, "momentum": 0.3},
    ),
    FusedCase(ours.Adadelta, ({"lr": 0.5, "weight_decay": 0.1, "maximize": True},), {"rho": 0.8}),
    FusedCase(ours.Adamax, ({"lr": 0.01, "weight_decay": 0.1},), {"betas": (0.8, 0.99)}),
    FusedCase(
        ours.NAdam,
        ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},),
        {"lr": 0.02, "momentum_decay": 0.01},
    ),
    # Over 10 steps with beta2 = 0.999, RAdam steps without rectification for 5 of them.
    FusedCase(ours.RAdam, ({"lr": 0.01, "weight_decay": 0.1},)),
    FusedCase(ours.Rprop, ({"lr": 0.01, "maximize": True},), {"etas": (0.4, 1.1)}),
    # t0 = 3: the average tracks the iterate for 4 steps, then averages.
    FusedCase(ours.ASGD, ({"lr": 0.01, "lambd": 0.01, "t0": 3, "weight_decay": 0.1},)),
    FusedCase(ours.AdaBelief, ({"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},)),
    FusedCase(ours.ADOPT, ({"lr": 0.01, "weight_decay": 0.1, "maximize": True},)),
    FusedCase(ours.Lion, ({"lr": 0.001, "weight_decay": 0.1},)),
    FusedCase(ours.ScheduleFreeAdamW, ({"lr": 0.01, "warmup_steps": 3, "weight_decay": 0.1},)),
    FusedCase(ours.Yogi, ({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},)),
]
