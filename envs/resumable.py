"""A vector env that can be saved mid-episode and restored exactly, without pickle.

Gymnasium envs draw all their randomness from `env.np_random`, and their physics are
deterministic given the actions. So an episode in flight is fully described by how it
started (the seed its reset got, or the state of `np_random` just before an unseeded reset)
and the actions taken since. A checkpoint keeps that much per env; restoring replays it:
same start, same actions, so the same state, observation, time-limit counter and rng state
as the run that was killed. The replayed observations are checked against the saved ones.
"""

from __future__ import annotations

import sys
from copy import deepcopy

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate


class EpisodeRecorder(gym.Wrapper):
    """Remembers how the current episode started and every action taken since."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.start: dict = {}
        self.actions: list = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # Before the reset draws from it: replaying sets this state back, then resets.
        self.start = (
            {"seed": seed}
            if seed is not None
            else {"rng": self.env.unwrapped.np_random.bit_generator.state}
        )
        self.actions = []
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.actions.append(np.array(action, copy=True))  # the caller may reuse its array
        return self.env.step(action)

    def state_dict(self) -> dict:
        actions = np.stack(self.actions) if self.actions else np.zeros((0, *self.action_shape))
        return {"start": self.start, "actions": actions}

    @property
    def action_shape(self) -> tuple:
        return self.action_space.shape or ()

    def replay(self, state: dict):
        """Bring the env back to where `state` was saved; return its current observation."""
        start = state["start"]
        if "seed" in start:
            obs, _ = self.reset(seed=start["seed"])
        else:
            self.env.unwrapped.np_random.bit_generator.state = start["rng"]
            obs, _ = self.reset()
        for action in np.asarray(state["actions"]):  # the dtype the env got, exactly
            obs, _, terminated, truncated, _ = self.step(action)
            if terminated or truncated:
                raise RuntimeError("a replayed episode ended early: the env is not deterministic")
        return obs


class ResumableVectorEnv(SyncVectorEnv):
    """SyncVectorEnv (same-step autoreset) whose episodes in flight go into checkpoints."""

    def __init__(self, env_fns):
        super().__init__(
            [lambda fn=fn: EpisodeRecorder(fn()) for fn in env_fns],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )

    def state_dict(self) -> dict:
        return {
            "episodes": [env.state_dict() for env in self.envs],
            "obs": deepcopy(self._observations),
        }

    def load_state_dict(self, state: dict):
        """Replay each env's episode in flight; return the observations to act on next."""
        self._env_obs = [env.replay(episode) for env, episode in zip(self.envs, state["episodes"])]
        self._observations = concatenate(
            self.single_observation_space, self._env_obs, self._observations
        )
        self._autoreset_envs = np.zeros(self.num_envs, dtype=np.bool_)
        saved = state["obs"]
        if isinstance(saved, np.ndarray) and not np.array_equal(saved, self._observations):
            print(
                "warning: the replayed episodes do not reproduce the saved observations "
                "(this env is not deterministic); the run goes on from the replayed ones",
                file=sys.stderr,
            )
        return deepcopy(self._observations)
