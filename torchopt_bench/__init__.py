"""torchopt_bench: implement, verify and compare gradient-based optimizers."""

__version__ = "0.1.0"
