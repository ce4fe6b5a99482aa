"""Actor-critic networks for PPO: a categorical head for Discrete actions, a Gaussian head
(state-independent learned log-std) for Box actions, and a value head, on MLP trunks.

The log-prob and entropy math is written out by hand rather than through torch.distributions:
the update calls it thousands of times on small batches, where the distribution objects'
construction and argument checks cost more than the arithmetic. `distribution()` still hands
out the torch.distributions equivalent (tests check the two agree). Acting runs in numpy on
views of the weights (`act_numpy`): for the few rows of one env step that is several times
cheaper than a torch call, and it always sees the latest in-place optimizer update.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from policies.mlp import MLP, NUMPY_ACTIVATIONS, linear_numpy, orthogonal_init

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class ActorCritic(nn.Module):
    """Policy and value heads on separate MLP trunks (or one shared trunk).

    Orthogonal init as in the PPO implementation studies: trunks gain sqrt(2), the policy
    head 0.01 (a near-uniform / near-zero-mean first policy), the value head 1.
    Subclasses define how the policy head's output becomes actions and log-probs.
    """

    def __init__(
        self,
        obs_size: int,
        head_size: int,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
    ):
        super().__init__()
        self.policy_trunk = MLP(obs_size, hidden, activation)
        # A shared trunk is not registered twice: duplicated tensors break safetensors saves.
        self.value_trunk = None if shared_trunk else MLP(obs_size, hidden, activation)
        self.policy_head = nn.Linear(self.policy_trunk.out_features, head_size)
        self.value_head = nn.Linear(self.policy_trunk.out_features, 1)
        orthogonal_init(self.policy_trunk, math.sqrt(2))
        if self.value_trunk is not None:
            orthogonal_init(self.value_trunk, math.sqrt(2))
        orthogonal_init(self.policy_head, 0.01)
        orthogonal_init(self.value_head, 1.0)
        self.numpy_acting = True  # act through numpy views (forward_numpy); off: torch

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy head output, value [B]) in one pass over the trunk(s)."""
        features = self.policy_trunk(obs)
        value_features = features if self.value_trunk is None else self.value_trunk(obs)
        return self.policy_output(features), self.value_output(value_features)

    # F.linear rather than module calls: per-call overhead matters at these sizes.
    def policy_output(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.policy_head.weight, self.policy_head.bias)

    def value_output(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.value_head.weight, self.value_head.bias).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs), shape [B]."""
        trunk = self.policy_trunk if self.value_trunk is None else self.value_trunk
        return self.value_output(trunk(obs))

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-prob of `actions`, entropy, value), each [B]: what the PPO update needs."""
        head, value = self(obs)
        log_prob, entropy = self.head_log_prob_entropy(head, actions)
        return log_prob, entropy, value

    def log_prob_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(actions | obs), entropy of pi(. | obs)), each [B]."""
        return self.head_log_prob_entropy(self.policy_output(self.policy_trunk(obs)), actions)

    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action (argmax / Gaussian mean)."""
        return self.head_greedy(self.policy_output(self.policy_trunk(obs)))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """pi(. | obs) as a torch.distributions object (for inspection and tests)."""
        return self.head_distribution(self.policy_output(self.policy_trunk(obs)))

    # ------------------------------------------------------------ acting, in numpy

    def forward_numpy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """forward() on a float32 numpy batch, without autograd."""
        if not self.numpy_acting or self.policy_trunk.activation not in NUMPY_ACTIVATIONS:
            with torch.inference_mode():
                head, value = self(torch.from_numpy(obs))
            return head.numpy(), value.numpy()
        features = self.policy_trunk.forward_numpy(obs)
        trunk = self.value_trunk
        value_features = features if trunk is None else trunk.forward_numpy(obs)
        head, value = (
            linear_numpy(self.policy_head, features),
            linear_numpy(self.value_head, value_features),
        )
        return head, value[:, 0]

    def act_numpy(
        self, obs: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled actions, their log-probs and the values, for a batch of observations."""
        head, values = self.forward_numpy(obs)
        actions, log_probs = self.head_sample_numpy(head, rng)
        return actions, log_probs, values

    def greedy_numpy(self, obs: np.ndarray) -> np.ndarray:
        return self.head_greedy(self.forward_numpy(obs)[0])

    def value_numpy(self, obs: np.ndarray) -> np.ndarray:
        return self.forward_numpy(obs)[1]

    # What a head type defines (head_greedy serves torch and numpy alike):
    def head_log_prob_entropy(self, head, actions):
        raise NotImplementedError

    def head_sample_numpy(self, head, rng):
        raise NotImplementedError

    def head_greedy(self, head):
        raise NotImplementedError

    def head_distribution(self, head):
        raise NotImplementedError


class CategoricalActorCritic(ActorCritic):
    """Discrete actions: the policy head outputs one logit per action."""

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
    ):
        super().__init__(obs_size, num_actions, hidden, activation, shared_trunk)

    def head_log_prob_entropy(self, logits, actions):
        log_probs = torch.log_softmax(logits, dim=-1)
        chosen = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return chosen, entropy

    def head_sample_numpy(self, logits, rng):
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        # Inverse-CDF sampling: count the cumulative probabilities below a uniform draw.
        cdf = np.exp(log_probs).cumsum(axis=-1)
        actions = np.minimum(
            (rng.random((len(logits), 1)) > cdf).sum(axis=-1), logits.shape[-1] - 1
        )
        return actions, np.take_along_axis(log_probs, actions[:, None], axis=-1)[:, 0]

    def head_greedy(self, logits):
        return logits.argmax(-1)

    def head_distribution(self, logits):
        return Categorical(logits=logits, validate_args=False)


class GaussianActorCritic(ActorCritic):
    """Box actions: the head outputs the mean; log-std is one learned vector for all states.

    Actions are sampled unbounded; clipping to the env's bounds is the caller's business, so
    the log-probs stay those of the actions actually drawn.
    """

    def __init__(
        self,
        obs_size: int,
        action_dim: int,
        hidden: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
        log_std_init: float = 0.0,
    ):
        super().__init__(obs_size, action_dim, hidden, activation, shared_trunk)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def head_log_prob_entropy(self, mean, actions):
        log_std = self.log_std.expand_as(mean)
        z = (actions - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.pow(2) - log_std - HALF_LOG_2PI).sum(-1)
        entropy = (0.5 + HALF_LOG_2PI + log_std).sum(-1)
        return log_prob, entropy

    def head_sample_numpy(self, mean, rng):
        log_std = self.log_std.detach().numpy()
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        log_prob = (-0.5 * noise**2 - log_std - HALF_LOG_2PI).sum(axis=-1)
        return mean + noise * np.exp(log_std), log_prob

    def head_greedy(self, mean):
        return mean

    def head_distribution(self, mean):
        std = self.log_std.exp().expand_as(mean)
        return Independent(Normal(mean, std, validate_args=False), 1)
