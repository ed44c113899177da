"""Networks for the training tasks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """A multilayer perceptron: ``in_features -> hidden[0] -> ... -> out_features``, with
    an activation after every hidden layer and none after the last (it returns logits).

    The default, four hidden layers of 64 ReLU units, is the course notebook's network.
    Layers use PyTorch's default initialisation, seeded by the run's seed.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64, 64, 64, 64),
        out_features: int = 1,
        activation: str = "relu",
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"Invalid activation {activation!r}: choose one of {sorted(_ACTIVATIONS)}"
            )
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"Invalid hidden layer sizes {list(hidden)}: all must be >= 1")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _ACTIVATIONS[activation]()]
            width = int(h)
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        # One output unit: a logit per event, shape (batch,) like the labels.
        return out.squeeze(-1) if out.shape[-1] == 1 else out
