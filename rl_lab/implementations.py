"""Who implements each algorithm: `lab` (ours), `sb3` (Stable-Baselines3), `trl` (TRL).

The one table that names, per algorithm, implementation and task kind, the module holding
the algorithm's `Config` and `PRESETS` and the Experiment class that builds, trains,
evaluates, saves and resumes it. The command line and the runner look here; nobody asks a
module what it happens to define. Classes are named as "module:Class" and imported on use,
so `list` and `--help` do not import torch, SB3 or TRL.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rl_lab.errors import UserError
from rl_lab.experiment import Experiment


@dataclass(frozen=True)
class Implementation:
    algo: str
    name: str  # lab, sb3, trl
    kind: str  # task kind: gym, text
    config_module: str  # defines Config and PRESETS (sb3 shares the lab's: one preset, mapped)
    experiment: str  # "module:Class"

    def module(self):
        return importlib.import_module(self.config_module)

    def experiment_class(self) -> type[Experiment]:
        module_name, class_name = self.experiment.split(":")
        return vars(importlib.import_module(module_name))[class_name]


GYM = "rl_lab.runner:Experiment"
SB3 = "rl_lab.sb3:SB3Experiment"
LM = "rl_lab.lm.experiment:Experiment"
TRL = "rl_lab.lm.trl_trainers:TRLExperiment"

# The first implementation listed for an algorithm is its default.
IMPLEMENTATIONS: dict[str, list[Implementation]] = {
    "dqn": [
        Implementation("dqn", "lab", "gym", "rl_lab.algos.dqn", GYM),
        Implementation("dqn", "sb3", "gym", "rl_lab.algos.dqn", SB3),
    ],
    "ppo": [
        Implementation("ppo", "lab", "gym", "rl_lab.algos.ppo", GYM),
        Implementation("ppo", "lab", "text", "rl_lab.lm.ppo", LM),
        Implementation("ppo", "sb3", "gym", "rl_lab.algos.ppo", SB3),
    ],
    "grpo": [Implementation("grpo", "trl", "text", "rl_lab.lm.trl_grpo", TRL)],
    "rloo": [Implementation("rloo", "trl", "text", "rl_lab.lm.trl_rloo", TRL)],
    "reward": [
        Implementation(
            "reward", "lab", "text", "rl_lab.lm.reward_cli", "rl_lab.lm.reward_cli:Experiment"
        )
    ],
}


def names(algo: str) -> list[str]:
    """The implementation names of an algorithm, default first."""
    return list(dict.fromkeys(impl.name for impl in IMPLEMENTATIONS[algo]))


def default_name(algo: str, kind: str) -> str:
    """`lab` where the lab implements ALGO on this kind of task, else the first that does."""
    for impl in IMPLEMENTATIONS[algo]:
        if impl.kind == kind:
            return impl.name
    return names(algo)[0]


def kinds(algo: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(impl.kind for impl in IMPLEMENTATIONS[algo]))


def find(algo: str, name: str | None, kind: str, task_name: str = "") -> Implementation:
    """The implementation of `algo` called `name` (None: the default) for this task kind."""
    name = name or default_name(algo, kind)
    if name not in names(algo):
        raise UserError(
            f"{algo} has no implementation {name!r}; choose one of {', '.join(names(algo))}"
        )
    for impl in IMPLEMENTATIONS[algo]:
        if impl.name == name and impl.kind == kind:
            return impl
    runs = sorted({impl.kind for impl in IMPLEMENTATIONS[algo] if impl.name == name})
    raise UserError(
        f"{algo} --impl {name} does not run {kind} tasks such as {task_name!r}; "
        f"it runs {', '.join(runs)} tasks"
    )
