"""The MLP trunk every control agent in the lab builds on (DQN's Q nets, PPO's actor-critic)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu}
NUMPY_ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}


class MLP(nn.Module):
    """Flatten, then Linear+activation layers; `out_features` is the last hidden size.

    forward() calls F.linear on the layers' parameters directly instead of going through
    nn.Sequential: with tiny networks the per-module call overhead is a large share of an
    update, and this keeps the same parameters, state_dict and autograd.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out_features = sizes[-1]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.flatten(1)
        act = ACTIVATIONS[self.activation]
        for layer in self.layers:
            x = act(F.linear(x, layer.weight, layer.bias))
        return x

    def forward_numpy(self, obs: np.ndarray) -> np.ndarray:
        """The same forward pass in numpy: batch-1 acting is several times faster than a torch
        call. It reads numpy views of the weights, which follow in-place optimizer updates."""
        x = obs.reshape(len(obs), -1)
        act = NUMPY_ACTIVATIONS[self.activation]
        for weight_t, bias in numpy_views(self.layers):
            x = act(x @ weight_t + bias)
        return x


def numpy_views(layers) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W^T, b) numpy views sharing memory with each Linear's parameters, cached per layer.

    The cache is keyed by the parameters' storage address, so replacing a parameter (rather
    than updating it in place, as optimizers and load_state_dict do) refreshes the views.
    """
    views = []
    for layer in layers:
        key = (layer.weight.data_ptr(), layer.bias.data_ptr())
        cached = layer.__dict__.get("_numpy_views")
        if cached is None or cached[0] != key:
            cached = (key, (layer.weight.detach().numpy().T, layer.bias.detach().numpy()))
            layer.__dict__["_numpy_views"] = cached
        views.append(cached[1])
    return views


def linear_numpy(layer: nn.Linear, x: np.ndarray) -> np.ndarray:
    ((weight_t, bias),) = numpy_views([layer])
    return x @ weight_t + bias


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights, zero biases: the usual PPO initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


def flat_size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape)) if shape else 1
