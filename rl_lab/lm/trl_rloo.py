"""RLOO (TRL's RLOOTrainer) on a text task: each completion's baseline is the mean reward of the
other completions of its prompt (leave one out); the KL to the reference is a reward penalty.

The loop is TRL's; assets, evaluation, dashboard, logs and reports are rl_lab's
(rl_lab.lm.trl_trainers). transformers and trl are imported only when a run is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from rl_lab.config import option
from rl_lab.lm.trl_grpo import PRESETS as GRPO_PRESETS
from rl_lab.lm.trl_trainers import TRLConfig


@dataclass
class Config(TRLConfig):
    """RLOO settings (run settings: --num-envs completions per step, --total-steps steps)."""

    normalize_advantages: bool = option(
        False, "scale each batch's advantages to zero mean and unit variance"
    )

    def trl_args(self) -> dict:
        return {"normalize_advantages": self.normalize_advantages}


def trainer_classes():
    from trl import RLOOConfig, RLOOTrainer

    return RLOOConfig, RLOOTrainer


# GRPO's preset with fewer steps for the same 15 minutes: an RLOO step also runs the policy once
# without gradients, for the KL penalty in the reward (~10 s vs ~8 s per step on 2 cores).
PRESETS = {
    "sentiment": {
        "run": {**GRPO_PRESETS["sentiment"]["run"], "total_steps": 48},
        "algo": dict(GRPO_PRESETS["sentiment"]["algo"]),
    },
}
