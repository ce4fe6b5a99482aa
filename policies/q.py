"""Q-value networks for DQN: an MLP trunk with a plain or dueling head."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.mlp import MLP, NUMPY_ACTIVATIONS, linear_numpy


class QNetwork(nn.Module):
    """obs -> Q(s, a) for every discrete action.

    Dueling (Wang et al. 2016) splits the head into a state value V(s) and advantages A(s, a),
    recombined as V + A - mean(A) so the two parts stay identifiable.
    """

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        hidden: tuple[int, ...] = (64, 64),
        dueling: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        self.trunk = MLP(obs_size, hidden, activation)
        self.dueling = dueling
        self.advantage = nn.Linear(self.trunk.out_features, num_actions)
        self.value = nn.Linear(self.trunk.out_features, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.trunk(obs)
        advantage = F.linear(features, self.advantage.weight, self.advantage.bias)
        if self.value is None:
            return advantage
        value = F.linear(features, self.value.weight, self.value.bias)
        return value + advantage - advantage.mean(dim=-1, keepdim=True)

    def greedy_numpy(self, obs: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a) in numpy (the dueling V and mean(A) terms do not change it)."""
        return linear_numpy(self.advantage, self.trunk.forward_numpy(obs)).argmax(axis=-1)

    @property
    def numpy_ok(self) -> bool:
        return self.trunk.activation in NUMPY_ACTIVATIONS
