"""The one shape of an experiment, whoever implements the algorithm.

rl_lab.implementations names, per algorithm, implementation and task kind, a class with this
shape; `python -m rl_lab.run` builds it with `create` (or `resume`), calls `train`, and
`eval RUN_DIR` calls `evaluate_run_dir`. Nothing asks a class or module what it has.

Followers: rl_lab.runner.Experiment (lab DQN/PPO on Gym), rl_lab.sb3.SB3Experiment (its
subclass: SB3 builds and trains, the rest is the runner's), rl_lab.lm.experiment.Experiment
(LM PPO), rl_lab.lm.trl_trainers.TRLExperiment (TRL's GRPO/RLOO, its subclass) and
rl_lab.lm.reward_cli.Experiment (the reward model). Every one that trains a policy writes its
results with `write_results` below and ends an interrupted run through `interrupted`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rl_lab.checkpoint import atomic_write_text


class Experiment(Protocol):
    impl: str  # "lab", "sb3", "trl": recorded in config.json, read back by --resume and eval

    @classmethod
    def create(cls, spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir):
        """Validate the preset + flags, build everything, then write config.json (a user
        mistake raises UserError before anything is written)."""

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        """Rebuild a saved run from config.json and load its latest checkpoint."""

    @classmethod
    def evaluate_run_dir(cls, run_dir, episodes, seed, video) -> None:
        """`python -m rl_lab.run eval RUN_DIR`: evaluate the saved policy again."""

    def train(self, dashboard: bool = True) -> int:
        """Train with the lab's callbacks, evaluate, write results; the exit status."""


def write_results(
    run_dir: Path,
    report: dict,
    rows: list[dict],
    title: str,
    solved_at,
    summary: str,
    curve: Callable[[Path, list[dict]], None] | None = None,
) -> None:
    """The results every run leaves: eval.json, curve.png (from metrics rows; `curve` draws it
    where episode returns are not the story, as for LM runs), summary.md."""
    from rl_lab.report import write_curve

    atomic_write_text(run_dir / "eval.json", json.dumps(report, indent=2) + "\n")
    if curve is None:
        write_curve(run_dir / "curve.png", rows, title, solved_at)
    else:
        curve(run_dir / "curve.png", rows)
    atomic_write_text(run_dir / "summary.md", summary)


def interrupted(run_dir: Path, progress: str, resumable: bool = True) -> int:
    """The one message of a run stopped by Ctrl-C (after its checkpoint), and status 130."""
    if resumable:
        advice = f"checkpoint saved. Continue with `python -m rl_lab.run --resume {run_dir}`"
    else:
        advice = f"this implementation keeps no checkpoints (metrics so far are in {run_dir}): "
        advice += "start a new run"
    print(f"interrupted {progress}; {advice}")
    return 130
