"""The MLP trunk every control agent in the lab builds on (DQN's Q nets, PPO's actor-critic)."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    """Flatten, then Linear+activation layers; `out_features` is the last hidden size."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = [nn.Flatten()]
        size = in_features
        for width in hidden:
            layers += [nn.Linear(size, width), ACTIVATIONS[activation]()]
            size = width
        self.net = nn.Sequential(*layers)
        self.out_features = size

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights, zero biases: the usual PPO initialisation."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)


def flat_size(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape)) if shape else 1
