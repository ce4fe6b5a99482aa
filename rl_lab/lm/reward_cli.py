"""`python -m rl_lab.run reward sentiment`: train the reward model the sentiment task uses.

The result goes to the cache (where `--reward model`, the PPO default, looks for it) unless
`--run-dir` names another place; pass that directory to `ppo sentiment --reward DIR` then.
The shared run settings (--total-steps, --num-envs, ...) do not apply and are refused: --steps
sets the training length, --seed the seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from rl_lab.errors import UserError
from rl_lab.lm.assets import reward_model_dir
from rl_lab.lm.reward_model import RewardModelConfig
from rl_lab.runner import build_configs, check_writable

Config = RewardModelConfig
PRESETS: dict = {}


class Experiment:
    """The experiment shape (rl_lab.experiment), for a supervised fine-tune."""

    impl = "lab"

    run_settings = False  # no RunConfig flags, no dashboard: `--help` lists what applies

    def __init__(self, config: RewardModelConfig, out_dir: Path):
        self.config, self.out_dir = config, out_dir

    @classmethod
    def create(cls, spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir):
        _, config = build_configs(spec, task, module, run_flags, algo_flags)
        if run_dir is None:
            out_dir = reward_model_dir()  # retraining the default replaces it atomically
        else:
            out_dir = Path(run_dir)
            if out_dir.exists() and any(out_dir.iterdir()):
                raise UserError(f"{out_dir} is not empty: choose another --run-dir")
            check_writable(out_dir)
        return cls(config, out_dir)

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        raise UserError(
            "reward-model training is not resumable: run "
            "`python -m rl_lab.run reward sentiment` again (a few minutes)"
        )

    def train(self, dashboard: bool = True) -> int:
        from rl_lab.lm.reward_model import train_reward_model

        metrics = train_reward_model(self.config, self.out_dir)
        print(
            f"reward model: held-out accuracy {metrics['accuracy']:.3f} "
            f"({metrics['seconds']:.0f} s); saved to {self.out_dir}"
        )
        return 0

    @staticmethod
    def evaluate_run_dir(run_dir, episodes, seed, video) -> None:
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            raise UserError(f"{run_dir} holds no trained reward model (no metrics.json)")
        print(json.dumps(json.loads(path.read_text()), indent=2))
