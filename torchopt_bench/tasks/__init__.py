"""Tasks the trainer runs: test-function minimisation and network training."""

from .base import Task
from .digits import DigitsTask
from .function import FunctionTask
from .higgs import HiggsTask
from .network import NetworkTask

__all__ = ["DigitsTask", "FunctionTask", "HiggsTask", "NetworkTask", "Task"]
