"""Tiny environments with known answers, for must-learn tests and debugging.

Registered with Gymnasium as `rl_lab/Identity-v0`, `rl_lab/IdentityContinuous-v0` and
`rl_lab/ConstantReward-v0`, so they also work as tasks on the command line.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class IdentityEnv(gym.Env):
    """Observe a one-hot target; reward 1 for choosing it. Optimal return = episode_length."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 4, episode_length: int = 10, render_mode=None):
        self.size, self.episode_length = size, episode_length
        self.observation_space = spaces.Box(0.0, 1.0, (size,), np.float32)
        self.action_space = spaces.Discrete(size)
        self._target, self._t = 0, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.size, dtype=np.float32)
        obs[self._target] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._target = int(self.np_random.integers(self.size))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self._target)
        self._t += 1
        self._target = int(self.np_random.integers(self.size))
        truncated = self._t >= self.episode_length
        return self._obs(), reward, False, truncated, {}


class IdentityContinuousEnv(gym.Env):
    """Observe x in [-1, 1]; reward -(a - x)^2. Optimal return = 0."""

    metadata = {"render_modes": []}

    def __init__(self, episode_length: int = 10, render_mode=None):
        self.episode_length = episode_length
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._x, self._t = 0.0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._x = 0, float(self.np_random.uniform(-1, 1))
        return np.array([self._x], dtype=np.float32), {}

    def step(self, action):
        reward = -float((np.clip(action, -1, 1)[0] - self._x) ** 2)
        self._t += 1
        self._x = float(self.np_random.uniform(-1, 1))
        truncated = self._t >= self.episode_length
        return np.array([self._x], dtype=np.float32), reward, False, truncated, {}


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step and a fixed length: the value of step t is known exactly.

    `terminal=True` ends with termination (no bootstrap), otherwise with truncation.
    """

    metadata = {"render_modes": []}

    def __init__(self, episode_length: int = 5, terminal: bool = True, render_mode=None):
        self.episode_length, self.terminal = episode_length, terminal
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._t = 0

    def _obs(self):
        return np.array([self._t / self.episode_length], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        done = self._t >= self.episode_length
        return self._obs(), 1.0, done and self.terminal, done and not self.terminal, {}


def register_toy_envs() -> None:
    for env_id, entry in [
        ("rl_lab/Identity-v0", IdentityEnv),
        ("rl_lab/IdentityContinuous-v0", IdentityContinuousEnv),
        ("rl_lab/ConstantReward-v0", ConstantRewardEnv),
    ]:
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=entry)
