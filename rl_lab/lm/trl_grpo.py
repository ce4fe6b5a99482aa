"""GRPO (TRL's GRPOTrainer) on a text task: each prompt's completions are scored against each
other, the group's mean reward is the baseline and its spread the scale; no value model.

The loop is TRL's; assets, evaluation, dashboard, logs and reports are rl_lab's
(rl_lab.lm.trl_trainers). transformers and trl are imported only when a run is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from rl_lab.config import option
from rl_lab.lm.trl_trainers import TRLConfig


@dataclass
class Config(TRLConfig):
    """GRPO settings (run settings: --num-envs completions per step, --total-steps steps)."""

    loss_type: str = option(
        "dapo",
        "how token losses are averaged: 'dapo' over all tokens of the step, 'grpo' per "
        "completion, 'dr_grpo' by a constant, 'bnpo' over the micro-batch's tokens",
        choices=("dapo", "grpo", "dr_grpo", "bnpo"),
    )
    scale_rewards: str = option(
        "group",
        "divide advantages by the reward std of the prompt's group, of the whole batch, or not",
        choices=("group", "batch", "none"),
    )

    def trl_args(self) -> dict:
        return {"loss_type": self.loss_type, "scale_rewards": self.scale_rewards}


def trainer_classes():
    from trl import GRPOConfig, GRPOTrainer

    return GRPOConfig, GRPOTrainer


# Sized like `ppo sentiment` (15 minutes on 2 busy CPU cores with SmolLM2-135M and the MiniLM
# reward; a step of 16 completions took 7-9 s at load average 2): the same top 8 trainable
# blocks, learning rate and KL coefficient, 4 prompts x 4 completions per optimizer step.
PRESETS = {
    "sentiment": {
        "run": {
            "total_steps": 60,
            "num_envs": 16,
            "eval_episodes": 128,
            "eval_interval": 0,
            "checkpoint_interval": 10,
            "log_interval": 1,
        },
        "algo": {"trainable_layers": 8, "lr": 1e-4, "num_generations": 4, "beta": 0.05},
    },
}
