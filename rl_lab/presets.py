"""Tuned defaults per (algorithm, task): the bare command should solve the task.

Each preset sets fields of RunConfig ("run") and of the algorithm's config ("algo"); flags
given on the command line override them. Measured results are in README.md.
"""

from __future__ import annotations

PRESETS: dict[tuple[str, str], dict[str, dict]] = {
    ("dqn", "cartpole"): {
        "run": {"total_steps": 50_000, "eval_interval": 2_000, "stop_when_solved": True},
        "algo": {},
    },
    ("dqn", "acrobot"): {
        "run": {"total_steps": 100_000, "eval_interval": 10_000, "eval_episodes": 10},
        "algo": {"lr": 6.3e-4, "batch_size": 128, "buffer_size": 50_000, "learning_starts": 1_000,
                 "train_freq": 4, "gradient_steps": 4, "target_update_interval": 250,
                 "exploration_fraction": 0.12, "epsilon_end": 0.1, "hidden": (256, 256)},
    },
    ("dqn", "mountaincar"): {
        "run": {"total_steps": 120_000, "eval_interval": 10_000, "eval_episodes": 10},
        "algo": {"lr": 4e-3, "batch_size": 128, "buffer_size": 10_000, "learning_starts": 1_000,
                 "gamma": 0.98, "train_freq": 16, "gradient_steps": 8, "target_update_interval": 300,
                 "exploration_fraction": 0.2, "epsilon_end": 0.07, "hidden": (256, 256)},
    },
    ("dqn", "lunarlander"): {
        "run": {"total_steps": 200_000, "eval_interval": 20_000, "eval_episodes": 10},
        "algo": {"lr": 6.3e-4, "batch_size": 128, "buffer_size": 50_000,
                 "learning_starts": 1_000, "train_freq": 4, "gradient_steps": 1,
                 "target_update_interval": 250, "exploration_fraction": 0.12, "epsilon_end": 0.1,
                 "hidden": (256, 256)},
    },
}


def preset(algo: str, task: str) -> dict[str, dict]:
    """The preset for this pair, or empty overrides (config defaults) if there is none."""
    found = PRESETS.get((algo, task), {})
    return {"run": dict(found.get("run", {})), "algo": dict(found.get("algo", {}))}
