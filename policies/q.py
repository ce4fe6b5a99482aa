"""Q-value networks for DQN: an MLP trunk with a plain or dueling head."""

from __future__ import annotations

import torch
from torch import nn

from policies.mlp import MLP


class QNetwork(nn.Module):
    """obs -> Q(s, a) for every discrete action.

    Dueling (Wang et al. 2016) splits the head into a state value V(s) and advantages A(s, a),
    recombined as V + A - mean(A) so the two parts stay identifiable.
    """

    def __init__(self, obs_size: int, num_actions: int, hidden: tuple[int, ...] = (64, 64),
                 dueling: bool = False, activation: str = "relu"):
        super().__init__()
        self.trunk = MLP(obs_size, hidden, activation)
        self.dueling = dueling
        self.advantage = nn.Linear(self.trunk.out_features, num_actions)
        self.value = nn.Linear(self.trunk.out_features, 1) if dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.trunk(obs)
        advantage = self.advantage(features)
        if self.value is None:
            return advantage
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)
