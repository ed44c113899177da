"""The optimizers of torchopt_bench: ``torch.optim.Optimizer`` subclasses.

Every module of this package that defines an optimizer registers its class with
:func:`~torchopt_bench.optim._base.register`; importing the package imports them all, so
:data:`OPTIMIZERS` maps each class name to its class.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import OPTIMIZERS, BenchOptimizer, Capabilities, register

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

globals().update(OPTIMIZERS)

__all__ = ["OPTIMIZERS", "BenchOptimizer", "Capabilities", "register", *sorted(OPTIMIZERS)]
