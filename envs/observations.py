"""One observation adapter for every agent: the networks see a Box, never a raw state id.

Discrete observations become one-hot vectors, MultiDiscrete a one-hot per component,
MultiBinary its bits, and Tuple/Dict spaces of these and of Box the concatenation of their
parts, with Gymnasium's own `flatten_space`/`FlattenObservation`, cast to float32. Box
observations pass unchanged. Applied in `envs.tasks.make_env`, so training, evaluation and
video see the same observations.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import DtypeObservation, FlattenObservation

from rl_lab.errors import UserError

SUPPORTED = "Box, Discrete, MultiDiscrete, MultiBinary, and Tuple or Dict of these"
FLAT = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def flattenable(space: gym.Space) -> bool:
    """Whether the adapter turns this space into a flat Box (see SUPPORTED)."""
    if isinstance(space, FLAT):
        return True
    if isinstance(space, spaces.Tuple):
        return all(flattenable(part) for part in space.spaces)
    if isinstance(space, spaces.Dict):
        return all(flattenable(part) for part in space.spaces.values())
    return False


def adapt_observations(env: gym.Env, task_name: str) -> gym.Env:
    """`env` with observations the agents take: Box as-is, the rest flattened to float32."""
    space = env.observation_space
    if isinstance(space, spaces.Box):
        return env
    if not flattenable(space):
        env.close()
        raise UserError(
            f"task {task_name!r} has observations of type {space}, which rl_lab's agents do "
            f"not take; supported: {SUPPORTED}"
        )
    return DtypeObservation(FlattenObservation(env), np.float32)


def require_box(space: gym.Space, algo: str) -> None:
    """Agents take the adapter's output; anything else is a caller that skipped make_env."""
    if not isinstance(space, spaces.Box):
        raise UserError(
            f"{algo} takes Box observations, got {space}: build envs with envs.tasks.make_env, "
            f"which adapts {SUPPORTED}"
        )
