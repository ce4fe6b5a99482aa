"""TRL's GRPO and RLOO trainers on a text task, with our evaluation, dashboard, logger and reports.

TRL runs its own training loop (GRPOTrainer / RLOOTrainer on transformers' Trainer). Everything
around the loop is ours, so a GRPO or RLOO run directory reads like a PPO one: the same assets and
checks (`load_text_task`), the same held-out evaluation before and after, the same `eval.json`,
`summary.md`, `curve.png` and `model/`, and the same dashboard and `metrics.jsonl`, fed from
TRL's steps and logs by a TrainerCallback (rl_lab.lm.trl_callback).

Evaluation goes through an LM PPO agent built around the very model TRL trains (it never updates
it): sampling, KL to a frozen copy of the starting model, perplexity and diversity are measured
exactly as for PPO runs, so the numbers compare. TRL keeps its own frozen reference for `--beta`.

`--total-steps` counts TRL optimizer steps and `--num-envs` the completions per step (prompts x
`--num-generations`). TRL saves its checkpoints (model, optimizer, RNG) every
`--checkpoint-interval` steps into the run's `checkpoints/`, with our run counters beside them;
`--resume` continues from the latest complete one with TRL's `resume_from_checkpoint`, keeps the
starting model's evaluation and trims metrics.jsonl to the checkpoint, as `ppo` does. `eval
RUN_DIR` re-evaluates the saved `model/`. Under `accelerate
launch` TRL's trainer spreads each step over the processes itself; the run directory rules are
LM PPO's (the main process writes).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.text import scored_texts
from rl_lab.config import RunConfig, option
from rl_lab.errors import UserError
from rl_lab.lm import distributed, ppo
from rl_lab.lm.experiment import Experiment as LMExperiment
from rl_lab.lm.experiment import LMEvaluator, load_text_task
from rl_lab.loop import RunContext
from rl_lab.runner import EVAL_SEED_OFFSET, check_resume, keep_metrics_until, read_run_config

CHECKPOINTS = "checkpoints"  # TRL's checkpoint-N folders, inside the run directory
RUN_STATE = "rl_lab_run.json"  # our run counters, written after TRL's save: marks it complete

_PPO_FIELDS = {spec.name: spec for spec in dataclasses.fields(ppo.Config)}


def like_ppo(name: str, help: str | None = None):
    """LM PPO's option of that name: the same flag, default and checks (and help, unless given)."""
    spec = _PPO_FIELDS[name]
    checks = {k: v for k, v in spec.metadata.items() if k != "help"}
    return option(spec.default, help or spec.metadata["help"], **checks)


@dataclass
class TRLConfig:
    """Settings of the TRL-backed trainers (run settings: --num-envs completions per step,
    --total-steps optimizer steps)."""

    policy: str = like_ppo("policy")
    reward: str = like_ppo("reward")
    reward_score: str = like_ppo("reward_score")
    prompts: str = like_ppo("prompts")
    score_prompt: bool = like_ppo("score_prompt")
    prompt_min_tokens: int = like_ppo("prompt_min_tokens")
    prompt_max_tokens: int = like_ppo("prompt_max_tokens")
    max_new_tokens: int = like_ppo("max_new_tokens")
    lr: float = like_ppo("lr")
    num_generations: int = option(
        4, "completions per prompt: the group whose rewards set each one's advantage", min=2
    )
    beta: float = option(
        0.05,
        "KL coefficient toward the frozen starting model (0: no reference in training)",
        min=0.0,
    )
    num_iterations: int = option(
        1,
        "optimizer steps on each batch of completions (TRL's mu; above 1 the ratio is clipped)",
        min=1,
    )
    clip_range: float = like_ppo("clip_range")
    grad_accum: int = like_ppo("grad_accum")
    max_grad_norm: float = like_ppo("max_grad_norm")
    trainable_layers: int = like_ppo(
        "trainable_layers", "train only the top N transformer blocks and the final norm (0: all)"
    )
    threads: int = like_ppo("threads")

    def __post_init__(self):
        ppo.check_text_config(self)

    def trl_args(self) -> dict:
        """Fields of the algorithm's own TRL config (GRPO's loss type, RLOO's normalisation)."""
        return {}


class TaskReward:
    """Our reward as a TRL reward function; keeps what it scored for the dashboard and logger."""

    def __init__(self, reward, score_prompt: bool):
        self.reward, self.score_prompt = reward, score_prompt
        self.scored: list[tuple[str, str, float]] = []

    def __call__(self, prompts: list[str], completions: list[str], **kwargs) -> list[float]:
        texts = scored_texts(list(prompts), list(completions), self.score_prompt)
        scores = np.asarray(self.reward(texts), dtype=np.float64).tolist()
        self.scored += zip(prompts, completions, scores)
        return scores

    def take(self) -> list[tuple[str, str, float]]:
        """(prompt, completion, reward) scored since the last call."""
        scored, self.scored = self.scored, []
        return scored


class TRLExperiment(LMExperiment):
    """A TRL trainer (the algorithm module's `trainer_classes()`) on a text task."""

    impl = "trl"  # recorded in config.json (rl_lab.implementations)

    def __init__(self, spec, task, module, run_config: RunConfig, algo_config, run_dir: Path):
        self.spec, self.task, self.module = spec, task, module
        self.run_config, self.config, self.run_dir = run_config, algo_config, Path(run_dir)
        self.steps_name = f"{spec.name.upper()} steps"
        c, rc = algo_config, run_config
        # TRL shards each step's completions over the processes of a launch itself.
        self.world = distributed.world()
        for flag, value in (
            ("--num-generations", c.num_generations),
            ("--grad-accum", c.grad_accum),
            (f"{self.world} processes x --grad-accum", self.world * c.grad_accum),
        ):
            if rc.num_envs % value:
                raise UserError(
                    f"--num-envs {rc.num_envs} (completions per step) must be a multiple of "
                    f"{flag} {value}"
                )
        pretrained, self.tokenizer, self.reward, self.train_prompts, self.eval_prompts = (
            load_text_task(c, rc)
        )
        per_step = rc.num_envs // c.num_generations
        if len(self.train_prompts) < per_step:  # else TRL's sampler yields no batch at all
            raise UserError(
                f"a step needs {per_step} prompts (--num-envs {rc.num_envs} / --num-generations "
                f"{c.num_generations}) but there are only {len(self.train_prompts)}: add "
                "prompts or lower --num-envs"
            )
        self.model = pretrained
        # Evaluation only (TRL trains self.model in place). Built with --trainable-layers, it
        # freezes the lower blocks of that shared model, so TRL's optimizer gets only the rest.
        evaluation = ppo.Config(
            policy=c.policy,
            max_new_tokens=c.max_new_tokens,
            trainable_layers=c.trainable_layers,
            threads=c.threads,
        )
        self.agent = ppo.make_agent(evaluation, pretrained, self.tokenizer, rc.seed, train=False)
        self.per_iteration = rc.num_envs
        self.run = RunContext(
            self.agent,
            self.completions(rc.total_steps),
            rc.num_envs,
            rc.seed,
            self.run_dir,
            title=f"{spec.name} · {task.name} · {c.policy} · seed {rc.seed}",
        )
        self.eval_seed = rc.seed + EVAL_SEED_OFFSET
        self.resume_from: Path | None = None  # a TRL checkpoint folder, set by resume()
        self.trl_config = self.build_trl_config()  # TRL's own checks, before anything is written

    def completions_done(self) -> int:
        """Completions sampled so far by all processes (TRL's step counts are global)."""
        return self.run.env_steps

    def completions(self, steps: int) -> int:
        """Completions sampled by optimizer step `steps` (each batch serves num_iterations)."""
        return -(-steps // self.config.num_iterations) * self.run_config.num_envs

    def build_trl_config(self):
        config_cls, _ = self.module.trainer_classes()
        c, rc = self.config, self.run_config
        # transformers 5 renamed gradient_checkpointing (on by TRL's default): off by either name.
        names = {spec.name for spec in dataclasses.fields(config_cls)}
        new_name = "activation_checkpointing" in names
        checkpointing = "activation_checkpointing" if new_name else "gradient_checkpointing"
        try:
            return config_cls(
                output_dir=str(self.run_dir / CHECKPOINTS),
                max_steps=rc.total_steps,
                per_device_train_batch_size=rc.num_envs // (c.grad_accum * self.world),
                gradient_accumulation_steps=c.grad_accum,
                num_generations=c.num_generations,
                max_completion_length=c.max_new_tokens,
                learning_rate=c.lr,
                lr_scheduler_type="constant",  # as LM PPO: no decay toward the end of a budget
                beta=c.beta,
                num_iterations=c.num_iterations,
                epsilon=c.clip_range,
                max_grad_norm=c.max_grad_norm,
                # Sampled as LM PPO samples: the full distribution, no top-k/top-p cut.
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                disable_dropout=True,
                **{checkpointing: False},  # slower, and nothing to save at these sizes
                bf16=False,  # TRL's default is bf16 autocast, even on CPU
                seed=rc.seed,
                logging_steps=rc.log_interval,
                save_strategy="steps",
                save_steps=rc.checkpoint_interval,
                save_total_limit=2,  # the newest may lack our marker if a kill came mid-save
                report_to="none",
                disable_tqdm=True,
                dataloader_pin_memory=False,
                # The processes as rl_lab.lm.distributed set them up (on CPUs too), not anew.
                accelerator_config={"use_configured_state": True},
                ddp_find_unused_parameters=False,  # every trainable parameter is used
                **c.trl_args(),
            )
        except ValueError as error:
            raise UserError(f"TRL rejects these settings: {str(error).splitlines()[0]}") from None

    # ------------------------------------------------------------ construction

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        """The run rebuilt from config.json, set to continue from its latest TRL checkpoint."""
        check_resume(run_dir, spec, task, run_flags, algo_flags)
        folder = latest_checkpoint(Path(run_dir))
        if folder is None:
            raise UserError(
                f"{run_dir} has no complete checkpoint yet (TRL saves one every "
                "--checkpoint-interval steps): start a new run"
            )
        experiment = cls.build_saved(run_dir, run_flags)
        experiment.run.restore_counters(json.loads((folder / RUN_STATE).read_text()))
        keep_metrics_until(Path(run_dir) / "metrics.jsonl", experiment.run.env_steps)
        experiment.resume_from = folder
        return experiment

    @classmethod
    def load(cls, run_dir, run_flags: dict | None = None) -> TRLExperiment:
        """A finished run: its starting model as the reference, the tuned weights from model/."""
        from transformers import AutoModelForCausalLM

        from rl_lab.lm.assets import quiet_transformers

        read_run_config(run_dir)
        tuned = Path(run_dir) / "model"
        if not (tuned / "config.json").is_file():
            raise UserError(
                f"{run_dir} has no model/ (the run did not finish): continue it with "
                f"`python -m rl_lab.run --resume {run_dir}`"
            )
        experiment = cls.build_saved(run_dir, run_flags)
        with quiet_transformers():
            weights = AutoModelForCausalLM.from_pretrained(tuned).state_dict()
        experiment.model.load_state_dict(weights)
        return experiment

    # ------------------------------------------------------------ training

    def train_and_evaluate(self, dashboard: bool) -> int:
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback

        from rl_lab.dashboard import Dashboard
        from rl_lab.lm.assets import quiet_transformers
        from rl_lab.lm.trl_callback import TRLBridge
        from rl_lab.logging import MetricLogger

        rc, run = self.run_config, self.run
        before = self.evaluate_before()
        scorer = TaskReward(self.reward, self.config.score_prompt)
        interval = rc.eval_interval * rc.num_envs
        if distributed.is_main():
            board = Dashboard(live=None if dashboard else False, unit="completions")
            logger = MetricLogger(self.run_dir)
            evaluator = LMEvaluator(self.evaluate, interval, logger, board)
            evaluator.show(run, before, at_start=True)
            callbacks = [board, logger, evaluator]
        else:  # the other processes train and take their share of evaluations, silently
            board = None
            callbacks = [LMEvaluator(self.evaluate, interval, None, None)]
        bridge = TRLBridge(
            run, callbacks, board, scorer, self.completions, self.config.beta, RUN_STATE
        )
        _, trainer_cls = self.module.trainer_classes()
        with quiet_transformers():
            trainer = trainer_cls(
                model=self.model,
                reward_funcs=scorer,
                args=self.trl_config,
                train_dataset=Dataset.from_dict({"prompt": self.train_prompts}),
                processing_class=self.tokenizer,
                callbacks=[bridge],
            )
        for printer in (PrinterCallback, ProgressCallback):  # the dashboard reports instead
            trainer.remove_callback(printer)
        try:
            with warnings.catch_warnings():
                # TRL calls transformers names that transformers deprecates: not the user's to fix.
                warnings.filterwarnings("ignore", ".*deprecated.*", FutureWarning)
                resume = str(self.resume_from) if self.resume_from else None
                trainer.train(resume_from_checkpoint=resume)
        except KeyboardInterrupt:
            run.interrupted, run.stop_reason = True, "interrupted"
        finally:
            bridge.close()
            if board is not None:
                board.close()
        if run.interrupted:
            if not distributed.is_main():
                return 130
            folder = latest_checkpoint(self.run_dir)
            saved = folder.name.split("-")[-1] if folder else None
            print(
                f"interrupted after {run.updates} {self.steps_name}; "
                + (
                    f"continue from the checkpoint of step {saved} with "
                    f"`python -m rl_lab.run --resume {self.run_dir}`"
                    if saved
                    else "no checkpoint was saved yet (see --checkpoint-interval): start a new run"
                )
            )
            return 130
        run.stop_reason = "budget" if run.updates >= rc.total_steps else "stopped"
        if distributed.is_main():
            keep_newest_checkpoint(self.run_dir)
        self.model.eval()
        return self.finish(before)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest TRL checkpoint of a run that TRL finished writing (our marker is in it)."""
    done = [
        folder
        for folder in (run_dir / CHECKPOINTS).glob("checkpoint-*")
        if (folder / RUN_STATE).is_file() and folder.name.split("-")[-1].isdigit()
    ]
    return max(done, key=lambda folder: int(folder.name.split("-")[-1]), default=None)


def keep_newest_checkpoint(run_dir: Path) -> None:
    """At a run's end, drop every checkpoint but the newest complete one (what `--resume
    --total-steps` continues from). Each holds the whole model and its optimizer, 0.7 GB for
    SmolLM2-135M; TRL keeps two while training in case the newest is cut short."""
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return
    for folder in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
        if folder != newest:
            shutil.rmtree(folder)
