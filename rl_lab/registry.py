"""The two tables of the lab: algorithms and tasks. No plugin system: add a line here."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from envs.tasks import Task, gym_task
from rl_lab import implementations
from rl_lab.errors import UserError


@dataclass(frozen=True)
class AlgoSpec:
    """An algorithm as the command line lists it. Who implements it, and where its `Config`
    and `PRESETS` live, is rl_lab.implementations' table (imported lazily there)."""

    name: str
    description: str

    @property
    def modules(self) -> dict[str, str]:
        """The default implementation's config module per task kind ("gym", "text")."""
        return {
            kind: implementations.find(self.name, None, kind).config_module
            for kind in self.task_kinds
        }

    @property
    def task_kinds(self) -> tuple[str, ...]:
        return implementations.kinds(self.name)

    @property
    def impl_names(self) -> list[str]:
        return implementations.names(self.name)


ALGOS: dict[str, AlgoSpec] = {
    spec.name: spec
    for spec in [
        AlgoSpec("dqn", "Deep Q-Network: double, dueling, n-step, prioritized replay"),
        AlgoSpec(
            "ppo",
            "Proximal Policy Optimization: Gym control, and LM tuning against a reward",
        ),
        AlgoSpec(
            "grpo",
            "Group Relative Policy Optimization (TRL's GRPOTrainer): LM tuning, no value model",
        ),
        AlgoSpec(
            "rloo",
            "REINFORCE Leave-One-Out (TRL's RLOOTrainer): LM tuning, no value model",
        ),
        AlgoSpec("reward", "train the reward model (a sentiment classifier) for a text task"),
    ]
}

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task("cartpole", "CartPole-v1", {}, 475.0, "gym", "balance a pole (discrete)"),
        Task("acrobot", "Acrobot-v1", {}, -100.0, "gym", "swing a double pendulum up (discrete)"),
        Task("mountaincar", "MountainCar-v0", {}, -110.0, "gym", "drive up a hill (discrete)"),
        Task(
            "lunarlander", "LunarLander-v3", {}, 200.0, "gym", "land on the pad (discrete, Box2D)"
        ),
        Task("pendulum", "Pendulum-v1", {}, -200.0, "gym", "swing up a pendulum (continuous)"),
        Task(
            "mountaincar-continuous",
            "MountainCarContinuous-v0",
            {},
            90.0,
            "gym",
            "drive up a hill (continuous)",
        ),
        Task(
            "lunarlander-continuous",
            "LunarLander-v3",
            {"continuous": True},
            200.0,
            "gym",
            "land on the pad (continuous, Box2D)",
        ),
        Task(
            "sentiment",
            "imdb-sentiment",
            {},
            None,
            "text",
            "continue movie-review openings; a sentiment classifier rewards positive text",
        ),
    ]
}


def closest(name: str, options) -> str:
    """' (did you mean X?)' for the nearest known name, or '' when nothing is close."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def get_algo(name: str) -> AlgoSpec:
    if name not in ALGOS:
        raise UserError(
            f"unknown algorithm {name!r}{closest(name, ALGOS)}; choose one of {', '.join(ALGOS)}"
        )
    return ALGOS[name]


def get_task(name: str) -> Task:
    """A named task, or any Gymnasium id (names with a '-v' version) as-is."""
    if name in TASKS:
        return TASKS[name]
    if "-v" in name:
        return gym_task(name)
    raise UserError(
        f"unknown task {name!r}{closest(name, TASKS)}; choose one of "
        f"{', '.join(TASKS)} or pass a Gymnasium id such as CartPole-v1"
    )
