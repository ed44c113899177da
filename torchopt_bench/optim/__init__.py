"""The optimizers of torchopt_bench: ``torch.optim.Optimizer`` subclasses.

Every module of this package that defines an optimizer registers its class with
:func:`~torchopt_bench.optim._base.register`; importing the package imports them all, so
:data:`OPTIMIZERS` maps each class name to its class. :func:`compile_seconds` is the
time the fused paths have spent compiling in this process (a training loop keeps it out
of its step times).
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import FOREACH_MAX_NUMEL, OPTIMIZERS, BenchOptimizer, Capabilities, register
from ._fused import compile_seconds

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

globals().update(OPTIMIZERS)

__all__ = [
    "FOREACH_MAX_NUMEL",
    "OPTIMIZERS",
    "BenchOptimizer",
    "Capabilities",
    "compile_seconds",
    "register",
    *sorted(OPTIMIZERS),
]
