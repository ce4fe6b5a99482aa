"""What a task is, and how to build its Gymnasium environments."""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym

import envs  # noqa: F401  (registers the toy envs)
from envs.observations import adapt_observations
from envs.resumable import ResumableVectorEnv
from rl_lab.errors import UserError


@dataclass(frozen=True)
class Task:
    """A named environment: a Gymnasium id with kwargs, or a text task (kind="text")."""

    name: str
    env_id: str
    kwargs: dict = field(default_factory=dict)
    solved_at: float | None = None  # mean eval return that counts as solved
    kind: str = "gym"
    description: str = ""


def gym_task(env_id: str) -> Task:
    """A task for any registered Gymnasium id, passed as-is on the command line."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as error:
        raise UserError(
            f"unknown Gymnasium id {env_id!r} ({error}); see `python -m rl_lab.run list`"
        ) from None
    return Task(env_id, env_id, {}, spec.reward_threshold, "gym", f"Gymnasium {env_id}")


def make_env(task: Task, render_mode: str | None = None) -> gym.Env:
    """The task's env with observations the agents take (envs.observations)."""
    try:
        extra = {"render_mode": render_mode} if render_mode else {}
        env = gym.make(task.env_id, **extra, **task.kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise UserError(f"task {task.name!r} needs a missing package: {error}") from None
    return adapt_observations(env, task.name)


def make_vector_env(task: Task, num_envs: int) -> gym.vector.VectorEnv:
    """Several copies stepped together; an episode end resets in the same step.

    SAME_STEP autoreset puts the real final observation in infos["final_obs"], which the
    loop needs so that truncated episodes can bootstrap from it. The episodes in flight go
    into checkpoints, so a resumed run continues them exactly (envs/resumable.py).
    """
    return ResumableVectorEnv([lambda: make_env(task) for _ in range(num_envs)])
