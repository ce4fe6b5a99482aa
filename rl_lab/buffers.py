"""Replay buffers (uniform, n-step, prioritized) and the on-policy rollout buffer.

Every buffer owns its own seeded numpy Generator, so the same seed draws the same samples,
and its whole state (arrays, cursor, rng) goes into checkpoints via state_dict().
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rl_lab import functional as fn


@dataclass
class Transition:
    """One vectorized env step: row i belongs to env i.

    `next_obs` is the observation the step really led to: on an episode end it is the final
    observation (not the reset one), so truncated episodes can bootstrap from it.
    """

    obs: object
    action: np.ndarray
    reward: np.ndarray
    next_obs: object
    terminated: np.ndarray
    truncated: np.ndarray


@dataclass
class ReplaySample:
    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # n-step discounted sum
    next_obs: torch.Tensor  # observation n steps later (or at the episode end)
    terminated: torch.Tensor
    discount: torch.Tensor  # gamma ** (number of rewards summed)
    weights: torch.Tensor  # importance weights (ones for uniform replay)
    indices: np.ndarray


class ReplayBuffer:
    """Ring buffer of transitions with optional n-step returns.

    N-step folding happens on insert, per env: a window of the last n steps is kept; once
    full, its oldest step becomes a stored transition carrying the discounted sum of n
    rewards. When an episode ends (terminated or truncated) the window is flushed: each
    remaining step is stored with the shorter sum up to the end, bootstrapping from the
    final observation unless the episode terminated.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        num_envs: int,
        seed: int,
        n_step: int = 1,
        gamma: float = 0.99,
        obs_dtype=np.float32,
    ):
        self.capacity, self.n_step, self.gamma = capacity, n_step, gamma
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.discount = np.zeros(capacity, dtype=np.float32)
        self.cursor = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)
        self._windows: list[list[tuple]] = [[] for _ in range(num_envs)]

    def __len__(self) -> int:
        return self.size

    def add(self, batch: Transition) -> None:
        """Insert one vectorized step (n-step windows are folded per env)."""
        if self.n_step == 1:
            for i in range(len(batch.action)):
                self._store(
                    batch.obs[i],
                    batch.action[i],
                    batch.reward[i],
                    batch.next_obs[i],
                    batch.terminated[i],
                    self.gamma,
                )
            return
        for i, window in enumerate(self._windows):
            window.append((batch.obs[i], batch.action[i], float(batch.reward[i])))
            ended = bool(batch.terminated[i] or batch.truncated[i])
            if len(window) == self.n_step:
                self._store_window_head(window, batch.next_obs[i], bool(batch.terminated[i]))
            if ended:
                while window:
                    self._store_window_head(window, batch.next_obs[i], bool(batch.terminated[i]))

    def _store_window_head(self, window: list, next_obs, terminated: bool) -> None:
        obs, action, _ = window[0]
        rewards = [step[2] for step in window]
        self._store(
            obs,
            action,
            fn.nstep_return(rewards, self.gamma),
            next_obs,
            terminated,
            self.gamma ** len(rewards),
        )
        window.pop(0)

    def _store(self, obs, action, reward, next_obs, terminated, discount) -> None:
        slot = self.cursor
        self.obs[slot] = obs
        self.action[slot] = action
        self.reward[slot] = reward
        self.next_obs[slot] = next_obs
        self.terminated[slot] = terminated
        self.discount[slot] = discount
        self._on_store(slot)
        self.cursor = (self.cursor + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _on_store(self, slot: int) -> None:
        """Hook for prioritized replay."""

    def sample(self, batch_size: int) -> ReplaySample:
        indices = self.rng.integers(0, self.size, size=batch_size)
        return self._gather(indices, np.ones(batch_size, dtype=np.float32))

    def _gather(self, indices: np.ndarray, weights: np.ndarray) -> ReplaySample:
        return ReplaySample(
            obs=torch.from_numpy(self.obs[indices]),
            action=torch.from_numpy(self.action[indices]),
            reward=torch.from_numpy(self.reward[indices]),
            next_obs=torch.from_numpy(self.next_obs[indices]),
            terminated=torch.from_numpy(self.terminated[indices]),
            discount=torch.from_numpy(self.discount[indices]),
            weights=torch.from_numpy(weights),
            indices=indices,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay ignores priorities."""

    def state_dict(self) -> dict:
        return {
            "windows": [self._window_state(window) for window in self._windows],
            "obs": self.obs[: self.size],
            "next_obs": self.next_obs[: self.size],
            "action": self.action[: self.size],
            "reward": self.reward[: self.size],
            "terminated": self.terminated[: self.size],
            "discount": self.discount[: self.size],
            "cursor": self.cursor,
            "size": self.size,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        size = int(state["size"])
        for name in ("obs", "next_obs", "action", "reward", "terminated", "discount"):
            getattr(self, name)[:size] = state[name]
        self.cursor, self.size = int(state["cursor"]), size
        self.rng.bit_generator.state = state["rng"]
        for window in self._windows:
            window.clear()
        # Checkpoints written before exact resume (format 1) have no windows in flight.
        for window, saved in zip(self._windows, state.get("windows", [])):
            window[:] = [
                (obs, action, float(reward))
                for obs, action, reward in zip(saved["obs"], saved["action"], saved["reward"])
            ]

    def _window_state(self, window: list[tuple]) -> dict:
        """An n-step window in flight (up to n-1 steps not stored yet) as arrays."""
        if not window:
            shape = self.obs.shape[1:]
            return {
                "obs": np.zeros((0, *shape), self.obs.dtype),
                "action": np.zeros(0, np.int64),
                "reward": np.zeros(0, np.float64),
            }
        return {
            "obs": np.stack([np.asarray(step[0], dtype=self.obs.dtype) for step in window]),
            "action": np.array([step[1] for step in window], dtype=np.int64),
            "reward": np.array([step[2] for step in window], dtype=np.float64),
        }


class SumTree:
    """Binary tree over priorities: O(log n) update and prefix-sum search."""

    def __init__(self, capacity: int):
        self.capacity = 1
        while self.capacity < capacity:
            self.capacity *= 2
        self.nodes = np.zeros(2 * self.capacity, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.nodes[1])

    def set(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        for index, priority in zip(np.atleast_1d(indices), np.atleast_1d(priorities)):
            node = int(index) + self.capacity
            self.nodes[node] = priority
            node //= 2
            while node >= 1:
                self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1]
                node //= 2

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.nodes[np.asarray(indices) + self.capacity]

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """Leaf index whose cumulative priority range holds each prefix sum (vectorized)."""
        nodes = np.ones(len(prefix_sums), dtype=np.int64)
        remaining = np.array(prefix_sums, dtype=np.float64)
        while nodes[0] < self.capacity:
            left = 2 * nodes
            left_sum = self.nodes[left]
            go_right = remaining >= left_sum
            remaining = np.where(go_right, remaining - left_sum, remaining)
            nodes = np.where(go_right, left + 1, left)
        return nodes - self.capacity


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016): P(i) ~ p_i^alpha.

    New transitions get the largest priority seen so far, so each is replayed at least
    once soon; importance weights (N P(i))^-beta, normalised by their max, undo the bias.
    """

    def __init__(self, *args, alpha: float = 0.6, eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha, self.eps = alpha, eps
        self.tree = SumTree(self.capacity)
        self.max_priority = 1.0
        self.beta = 0.4

    def _on_store(self, slot: int) -> None:
        self.tree.set(np.array([slot]), np.array([self.max_priority**self.alpha]))

    def sample(self, batch_size: int) -> ReplaySample:
        # Stratified: one draw from each of batch_size equal slices of the total mass.
        edges = np.linspace(0.0, self.tree.total, batch_size + 1)
        draws = self.rng.uniform(edges[:-1], edges[1:])
        indices = np.minimum(self.tree.find(draws), self.size - 1)
        probabilities = self.tree.get(indices) / self.tree.total
        weights = (self.size * probabilities) ** (-self.beta)
        weights = (weights / weights.max()).astype(np.float32)
        return self._gather(indices, weights)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(td_errors) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.set(indices, priorities**self.alpha)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.update(
            priorities=self.tree.get(np.arange(self.size)),
            max_priority=self.max_priority,
            beta=self.beta,
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.tree = SumTree(self.capacity)
        self.tree.set(np.arange(self.size), np.asarray(state["priorities"]))
        self.max_priority, self.beta = float(state["max_priority"]), float(state["beta"])


class RolloutBuffer:
    """Fixed-length on-policy storage of [T, num_envs] steps, with GAE on demand.

    Bootstrapping needs V of the observation each step led to. Where the episode went on,
    that is the next step's value, already computed when acting, so only episode ends need
    their own: `add` takes `end_values`, V of the *final* observation (used on truncation;
    termination zeroes the bootstrap anyway), and `compute_advantages` takes the values of
    the observations after the last step. Steps are stored in numpy (a row write costs a
    fraction of a torch one) and handed to the update as zero-copy torch views. The buffer
    owns the seeded generator that orders minibatches.
    """

    def __init__(
        self,
        steps: int,
        num_envs: int,
        obs_shape: tuple,
        action_shape: tuple,
        action_dtype=np.float32,
        seed: int = 0,
    ):
        self.steps, self.num_envs = steps, num_envs
        shape = (steps, num_envs)
        self.obs = np.zeros((*shape, *obs_shape), dtype=np.float32)
        self.actions = np.zeros((*shape, *action_shape), dtype=action_dtype)
        self.logprobs = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.end_values = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=np.float32)
        self.episode_end = np.zeros(shape, dtype=np.float32)
        self.next_values = torch.zeros(shape)
        self.advantages = torch.zeros(shape)
        self.returns = torch.zeros(shape)
        self.pos = 0
        self.generator = torch.Generator().manual_seed(seed)

    def full(self) -> bool:
        return self.pos == self.steps

    def add(
        self, obs, actions, logprobs, values, rewards, terminated, truncated, end_values=None
    ) -> None:
        """Store one vectorized step; `end_values[i]` = V(final obs) where env i's episode ended."""
        t = self.pos
        self.obs[t] = obs
        self.actions[t] = actions
        self.logprobs[t] = logprobs
        self.values[t] = values
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.episode_end[t] = np.logical_or(terminated, truncated)
        self.end_values[t] = 0.0 if end_values is None else end_values
        self.pos += 1

    def compute_advantages(self, last_values, gamma: float, lam: float) -> None:
        """GAE over the stored steps; `last_values` = V(observations after the last step)."""
        last_values = np.asarray(last_values, dtype=np.float32).reshape(1, -1)
        following = np.concatenate([self.values[1:], last_values])
        next_values = np.where(self.episode_end > 0, self.end_values, following)
        self.next_values = torch.from_numpy(next_values.astype(np.float32))
        self.advantages, self.returns = fn.gae(
            torch.from_numpy(self.rewards),
            torch.from_numpy(self.values),
            self.next_values,
            torch.from_numpy(self.terminated),
            torch.from_numpy(self.episode_end),
            gamma,
            lam,
        )

    def minibatches(self, batch_size: int):
        """Yield dicts of flattened [T*num_envs] tensors, in a fresh random order each call."""
        flat = {
            "obs": torch.from_numpy(self.obs).flatten(0, 1),
            "actions": torch.from_numpy(self.actions).flatten(0, 1),
            "logprobs": torch.from_numpy(self.logprobs).flatten(),
            "values": torch.from_numpy(self.values).flatten(),
            "advantages": self.advantages.flatten(),
            "returns": self.returns.flatten(),
        }
        order = torch.randperm(self.steps * self.num_envs, generator=self.generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield {name: tensor[index] for name, tensor in flat.items()}

    def reset(self) -> None:
        self.pos = 0

    STORED = ("obs", "actions", "logprobs", "values", "rewards", "end_values", "terminated")

    def state_dict(self) -> dict:
        """The steps collected so far (a resumed run finishes this very rollout) and the rng."""
        t = self.pos
        return {
            "generator": self.generator.get_state(),
            "pos": t,
            "episode_end": self.episode_end[:t].copy(),
            **{name: getattr(self, name)[:t].copy() for name in self.STORED},
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        t = self.pos = int(state.get("pos", 0))  # format 1 checkpoints kept no steps
        if t:
            self.episode_end[:t] = state["episode_end"]
            for name in self.STORED:
                getattr(self, name)[:t] = state[name]
