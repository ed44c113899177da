"""Tasks the trainer runs: test-function minimisation and network training."""

from .base import Task
from .function import FunctionTask

__all__ = ["FunctionTask", "Task"]
