"""Networks for the training tasks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "SmallCNN"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
#: The functional form :meth:`MLP.forward` applies. ReLU works in place on the output of
#: the linear layer before it: that output is not saved for the backward pass (addmm's
#: backward reads its input and weight), and ReLU's own backward reads its result, so the
#: values and gradients are those of ``nn.ReLU`` without one allocation per layer.
_FUNCTIONAL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "silu": F.silu,
}


class MLP(nn.Sequential):
    """A multilayer perceptron: ``in_features -> hidden[0] -> ... -> out_features``, with
    an activation after every hidden layer and none after the last (it returns logits).

    The default, four hidden layers of 64 ReLU units, is the course notebook's network.
    Layers use PyTorch's default initialisation, seeded by the run's seed.

    The layers are the modules of the sequence (their parameters and ``state_dict`` keys
    are ``nn.Sequential``'s), but :meth:`forward` applies them in functional form
    (``F.linear`` and the activation's function) instead of calling each submodule: the
    same operations and results, without the per-module call overhead, which is a few
    percent of a training step at small batches. Hooks registered on the submodules
    therefore do not fire; hooks on the MLP itself do.
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
        self.activation = activation
        # A plain tuple (not registered again as submodules): the layers forward applies.
        self._linears: tuple[nn.Linear, ...] = tuple(layers[::2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = _FUNCTIONAL[self.activation]
        *hidden, last = self._linears
        for layer in hidden:
            x = act(F.linear(x, layer.weight, layer.bias))
        out = F.linear(x, last.weight, last.bias)
        # One output unit: a logit per event, shape (batch,) like the labels.
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class SmallCNN(nn.Module):
    """A small convolutional network for little square images (the 8x8 digits):
    ``conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> max-pool 2 -> linear`` to logits.

    Both convolutions keep the image size (padding 1); the pooling halves it.

    Args:
        image_size: the side of the (square, one-channel) input images; inputs may come
            flat, ``(batch, image_size**2)``, or as ``(batch, 1, image_size, image_size)``.
        channels: the output channels of the two convolutions.
        num_classes: the number of logits.
    """

    def __init__(
        self, image_size: int = 8, channels: Sequence[int] = (16, 32), num_classes: int = 10
    ) -> None:
        super().__init__()
        if len(channels) != 2 or any(int(c) < 1 for c in channels):
            raise ValueError(f"Invalid channels {list(channels)}: give two sizes >= 1")
        if image_size < 2 or image_size % 2:
            raise ValueError(f"Invalid image_size {image_size}: an even number >= 2")
        c1, c2 = (int(c) for c in channels)
        self.image_size = image_size
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(c2 * (image_size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, self.image_size, self.image_size)
        return self.classifier(self.features(x).flatten(1))
