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
from rl_lab.lm.reward_model import CARD_FILE, RewardModelConfig
from rl_lab.lm.setup import installed_version
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
        from rl_lab.lm.progress import PrepProgress
        from rl_lab.lm.reward_model import train_reward_model
        from rl_lab.lm.setup import REWARD_MODEL_PACKAGES, WAITING, install_packages

        progress = PrepProgress(live=None if dashboard else False)
        missing = [name for name in REWARD_MODEL_PACKAGES if installed_version(name) is None]
        if missing:
            install_packages(missing, progress)
        c = self.config
        with progress.stage(f"train the reward model into {self.out_dir}", c.steps) as stage:
            card = train_reward_model(
                c,
                self.out_dir,
                log=stage.note,
                on_step=lambda loss: stage.advance(1, f"loss {loss:.3f}"),
                on_wait=lambda: stage.note(WAITING),
            )
        print(
            f"reward model: held-out accuracy {card['accuracy']:.3f} "
            f"({card['seconds']:.0f} s, {card['cpu_seconds']:.0f} CPU s); saved to {self.out_dir}"
        )
        return 0

    @staticmethod
    def evaluate_run_dir(run_dir, episodes, seed, video) -> None:
        path = Path(run_dir) / CARD_FILE
        if not path.is_file():
            raise UserError(f"{run_dir} holds no trained reward model (no {CARD_FILE})")
        print(json.dumps(json.loads(path.read_text()), indent=2))
