"""One LM tuning run from config to run directory: build, evaluate, train, evaluate, report.

The same shape as rl_lab.runner.Experiment (run.py calls both the same way) and the same loop,
logger, dashboard and checkpointer; what differs is what a text task needs: models and a reward
instead of Gym envs, before/after evaluation on held-out prompts, and the tuned model saved with
`save_pretrained`. Everything a user can get wrong (assets, prompt file, reward labels, context
length, policy kind) is checked before the run directory is created.

Under `accelerate launch --num_processes N` every process runs this class: the main process
names the run directory (broadcast), each process samples its share of every batch from its
share of the prompts and evaluates its share of the held-out prompts (gathered), statistics are
all-reduced in the agent, and only the main process writes files or draws the dashboard.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from rl_lab import checkpoint, implementations
from rl_lab.config import RunConfig
from rl_lab.errors import UserError
from rl_lab.experiment import interrupted, write_results
from rl_lab.lm import distributed
from rl_lab.lock import unlock_run_dir
from rl_lab.loop import Callback, Every, RunContext, train
from rl_lab.presets import preset
from rl_lab.runner import (
    EVAL_SEED_OFFSET,
    Checkpointer,
    build_config,
    check_resume,
    check_steps_left,
    check_writable,
    default_run_dir,
    keep_metrics_until,
    load_state,
    read_run_config,
    saved_configs,
    start_run_dir,
)

BEFORE_FILE = "eval_before.json"
SAMPLE_ROWS = 12  # held-out prompts shown before/after in summary.md


class SampleFeed(Callback):
    """Puts the latest rollout's completions into the dashboard's samples panel."""

    def __init__(self, board, width: int = 110):
        self.board, self.width, self.seen = board, width, -1

    def on_step(self, run: RunContext) -> None:
        if run.updates == self.seen:
            return
        self.seen = run.updates
        self.board.samples = sample_lines(run.agent.samples, self.width)


def sample_lines(samples, width: int = 110) -> list[str]:
    """Dashboard lines for (prompt, completion, reward) triples: reward, then the text."""
    lines = []
    for prompt, completion, reward in samples:
        text = " ".join(f"{prompt} ▸{completion}".split())
        lines.append(f"{reward:+6.2f}  {text[:width]}")
    return lines


class LMEvaluator(Callback):
    """Held-out evaluation every `interval` completions; results go to the logger and board
    (None on the processes other than the main one, which take their share of the prompts)."""

    def __init__(self, evaluate, interval: int, logger, board):
        self.evaluate = evaluate
        self.logger, self.board = logger, board
        self.schedule = Every(interval)
        self.start: dict | None = None

    def show(self, run: RunContext, metrics: dict, at_start: bool = False) -> None:
        """Held-out metrics on the dashboard: the starting model's, then start -> latest."""
        if at_start or self.start is None:
            self.start = metrics
        if not at_start or run.last_eval is None:  # a resumed run keeps its latest evaluation
            run.last_eval = metrics["mean_reward"]
            run.best_eval = max(metrics["mean_reward"], run.best_eval or -float("inf"))
        rows = {}
        for key, label in (("positive_fraction", "positive"), ("mean_reward", "reward")):
            rows[f"held-out {label}"] = f"{self.start[key]:.2f} → {metrics[key]:.2f}"
        rows["held-out KL"] = f"{metrics['kl']:.2f}"
        rows["evaluated at"] = f"{run.env_steps:,} completions"
        if self.board is not None:  # only the main process draws
            self.board.eval_rows = rows

    def on_train_start(self, run: RunContext) -> None:
        self.schedule.start(run.env_steps)

    def on_step(self, run: RunContext) -> None:
        if not self.schedule.due(run.env_steps):
            return
        started = time.perf_counter()
        result = self.evaluate()
        run.timers["eval"] += time.perf_counter() - started
        self.show(run, result.metrics)
        run.latest.update({f"eval/{key}": value for key, value in result.metrics.items()})
        if self.logger is None:  # a process other than the main one: it only helps evaluate
            return
        for key, value in result.metrics.items():
            self.logger.record(f"eval/{key}", value)
        for callback in (self.board, self.logger):
            callback.on_eval(run, result)


class Experiment:
    """LM PPO on a text task; built (and validated) in full before anything is written."""

    steps_name = "PPO iterations"  # what run.updates counts, for summary.md and the last line
    run_settings = True  # takes RunConfig's flags, as a Gym run does
    impl = "lab"  # recorded in config.json (rl_lab.implementations)

    def __init__(self, spec, task, module, run_config: RunConfig, algo_config, run_dir: Path):
        from envs.text import TextEnv

        self.spec, self.task, self.module = spec, task, module
        self.run_config, self.config, self.run_dir = run_config, algo_config, Path(run_dir)
        c, rc = algo_config, run_config
        if rc.num_envs % c.mini_batch_size:
            raise UserError(
                f"--num-envs {rc.num_envs} (prompts per iteration) must be a "
                f"multiple of --mini-batch-size {c.mini_batch_size}"
            )
        self.world = distributed.world()
        if c.mini_batch_size % (self.world * c.grad_accum):
            raise UserError(
                f"--mini-batch-size {c.mini_batch_size} must be a multiple of the "
                f"{self.world} processes x --grad-accum {c.grad_accum}: each process takes an "
                "equal share of every minibatch"
            )
        if (rc.num_envs // self.world) % c.completions_per_prompt:
            raise UserError(
                f"--num-envs {rc.num_envs} over {self.world} processes must give each process "
                f"a multiple of --completions-per-prompt {c.completions_per_prompt}"
            )
        pretrained, self.tokenizer, self.reward, self.train_prompts, self.eval_prompts = (
            load_text_task(c, rc)
        )
        self.agent = module.make_agent(c, pretrained, self.tokenizer, rc.seed)
        # Each process draws its share of every batch from its own share of the prompts; the
        # loop counts this process's completions (per_iteration), --num-envs all of them.
        self.per_iteration = rc.num_envs // self.world
        self.env = TextEnv(
            distributed.shard(self.train_prompts),
            self.reward,
            self.per_iteration,
            c.score_prompt,
            repeats=c.completions_per_prompt,
        )
        self.run = RunContext(
            self.agent,
            rc.total_steps * self.per_iteration,
            self.per_iteration,
            rc.seed,
            self.run_dir,
            title=f"{spec.name} · {task.name} · {c.policy} · seed {rc.seed}"
            + (f" · {self.world} processes" if self.world > 1 else ""),
        )
        self.eval_seed = rc.seed + EVAL_SEED_OFFSET

    # ------------------------------------------------------------ construction

    @classmethod
    def create(cls, spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir):
        """The same steps as a Gym run (configs from preset + flags, checks, build, then
        config.json), under every process of a launch: the main process names the run
        directory, every process checks and builds, only the main one writes."""
        defaults = preset(spec.name, task.name, task.kind)
        run_config = build_config(RunConfig, {**defaults["run"], **run_flags})
        algo_config = build_config(algo_config_cls, {**defaults["algo"], **algo_flags})
        default = default_run_dir(spec.name, task.name, run_config.seed)
        run_dir = distributed.broadcast(Path(run_dir) if run_dir else default)
        check_writable(run_dir)
        experiment = cls(spec, task, module, run_config, algo_config, run_dir)
        distributed.wait()  # every process has checked the directory before it is written
        if distributed.is_main():
            start_run_dir(run_dir, spec, task, cls.impl, run_config, algo_config)
        distributed.wait()
        return experiment

    @classmethod
    def build_saved(cls, run_dir, run_flags: dict | None = None) -> Experiment:
        """A saved run's experiment rebuilt from its config.json (no trained weights yet)."""
        from rl_lab.registry import get_algo, get_task

        saved = read_run_config(run_dir)
        spec, task = get_algo(saved["algo"]), get_task(saved["task"])
        module = implementations.find(spec.name, saved.get("impl"), task.kind).module()
        run_config, algo_config = saved_configs(
            run_dir, saved, task, module.Config, run_flags or {}
        )
        return cls(spec, task, module, run_config, algo_config, Path(run_dir))

    @classmethod
    def load(cls, run_dir, run_flags: dict | None = None) -> Experiment:
        """Rebuild a saved run's experiment and load its latest checkpoint."""
        read_run_config(run_dir)
        state = checkpoint.load(Path(run_dir) / "checkpoints")
        experiment = cls.build_saved(run_dir, run_flags)
        load_state(experiment.agent, experiment.run, state, run_dir)
        experiment.saved_processes = int(state["agent"].get("processes", 1))
        return experiment

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        check_resume(run_dir, spec, task, run_flags, algo_flags)
        experiment = cls.load(run_dir, run_flags)
        done = experiment.run.env_steps // experiment.per_iteration
        check_steps_left(run_dir, experiment.run_config.total_steps, done, "iterations")
        # Each process's share of the prompts and its sampling seeds depend on their number.
        if experiment.saved_processes != experiment.world:
            raise UserError(
                f"{run_dir} was trained with {experiment.saved_processes} process(es), this "
                f"launch has {experiment.world}: resume it with that many (`accelerate launch "
                f"--num_processes {experiment.saved_processes}`, or `python -m rl_lab.run` for one)"
            )
        experiment.run.total_steps = experiment.run_config.total_steps * experiment.per_iteration
        if distributed.is_main():
            keep_metrics_until(Path(run_dir) / "metrics.jsonl", experiment.run.env_steps)
        distributed.wait()
        return experiment

    # ------------------------------------------------------------ training

    @functools.cached_property
    def judge(self):
        """(name, scorer) that judges held-out text besides the reward, or None (build_judge)."""
        from rl_lab.lm.rewards import build_judge

        return build_judge(self.config.reward)

    def evaluate(self):
        from rl_lab.lm.evaluation import evaluate_lm

        return evaluate_lm(
            self.agent,
            self.reward,
            self.eval_prompts,
            self.eval_seed,
            batch_size=64,
            score_prompt=self.config.score_prompt,
            judge=self.judge[1] if self.judge else None,
        )

    def train(self, dashboard: bool = True) -> int:
        """Train, evaluate, report; the run directory's lock is released when this returns."""
        try:
            status = self.train_and_evaluate(dashboard)
        finally:
            unlock_run_dir(self.run_dir)
        distributed.close()
        return status

    def train_and_evaluate(self, dashboard: bool) -> int:
        from rl_lab.dashboard import Dashboard
        from rl_lab.logging import MetricLogger

        rc, run, n = self.run_config, self.run, self.per_iteration
        before = self.evaluate_before()
        if distributed.is_main():
            # The loop counts this process's completions; the logged statistics are global.
            unit = "completions" if self.world == 1 else "completions per process"
            board = Dashboard(live=None if dashboard else False, unit=unit)
            logger = MetricLogger(self.run_dir)
            evaluator = LMEvaluator(self.evaluate, rc.eval_interval * n, logger, board)
            evaluator.show(run, before, at_start=True)
            callbacks = [
                board,
                logger,
                SampleFeed(board),
                evaluator,
                Checkpointer(self.run_dir, rc.checkpoint_interval * n),
            ]
        else:  # the other processes train and take their share of evaluations, silently
            board = None
            callbacks = [LMEvaluator(self.evaluate, rc.eval_interval * n, None, None)]
        try:
            train(self.agent, self.env, run, callbacks, log_every=rc.log_interval * n)
        finally:
            if board is not None:
                board.close()
        if run.interrupted:
            if not distributed.is_main():
                return 130
            return interrupted(self.run_dir, f"after {run.updates} iterations")
        return self.finish(before)

    def completions_done(self) -> int:
        """Completions sampled so far by all processes (the loop counts this process's)."""
        return self.run.env_steps * self.world

    def evaluate_before(self) -> dict:
        """The starting model's held-out evaluation, computed once per run (a resume reuses it)."""
        before_path = self.run_dir / BEFORE_FILE
        if distributed.broadcast(before_path.is_file()):
            return json.loads(before_path.read_text())
        if distributed.is_main():
            print(
                f"evaluating the starting model on {len(self.eval_prompts)} held-out prompts",
                flush=True,
            )
        started = time.perf_counter()
        before = self.evaluate().to_dict()
        self.run.timers["eval"] += time.perf_counter() - started
        if distributed.is_main():
            checkpoint.atomic_write_text(before_path, json.dumps(before, indent=2) + "\n")
        return before

    def finish(self, before: dict) -> int:
        """Final held-out evaluation, the tuned model, eval.json, summary.md; exit status 0."""
        run = self.run
        started = time.perf_counter()
        after = self.evaluate().to_dict()
        run.timers["eval"] += time.perf_counter() - started
        if not distributed.is_main():  # the main process writes the results
            return 0
        self.save_model()
        self.write_results(before, after)
        b, a = before, after
        print(
            f"held-out positive fraction {b['positive_fraction']:.2f} -> "
            f"{a['positive_fraction']:.2f}, mean reward {b['mean_reward']:.2f} -> "
            f"{a['mean_reward']:.2f}, KL {a['kl']:.2f}, perplexity {b['perplexity']:.1f} -> "
            f"{a['perplexity']:.1f} ({run.updates} {self.steps_name}, {run.elapsed:.0f} s); "
            f"results in {self.run_dir}"
        )
        return 0

    def save_model(self) -> None:
        """The tuned LM (LoRA merged in) and its tokenizer in save_pretrained form."""
        from rl_lab.lm.assets import quiet_transformers, replace_dir, temp_dir_beside

        model = self.agent.policy.pretrained
        if hasattr(model, "merge_and_unload"):  # PEFT: a plain model loads without peft
            model = model.merge_and_unload()
        out = self.run_dir / "model"
        tmp = temp_dir_beside(out)
        with quiet_transformers():  # no "Writing model shards" bar in the run's output
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out)

    def write_results(self, before: dict, after: dict) -> None:
        from rl_lab.logging import read_metrics
        from rl_lab.report import write_lm_curve

        run = self.run
        metrics = lambda result: {k: v for k, v in result.items() if k != "samples"}  # noqa: E731
        report = {
            "before": metrics(before),
            "after": metrics(after),
            "wall_seconds": run.elapsed,
            "iterations": run.updates,
            "completions": self.completions_done(),
            "processes": self.world,
            "stop_reason": run.stop_reason,
            "timers": run.timers,
            "eval_seed": self.eval_seed,
            "reward_model": reward_model_card(self.config.reward),
            "independent_scorer": self.judge[0] if self.judge else None,
            "samples": {
                "before": before["samples"][:SAMPLE_ROWS],
                "after": after["samples"][:SAMPLE_ROWS],
            },
        }
        config = json.loads((self.run_dir / "config.json").read_text())
        summary = summary_markdown(
            run.title,
            report,
            config,
            self.steps_name,
            checkpoints=(self.run_dir / "checkpoints").is_dir(),
        )
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        write_results(
            self.run_dir,
            report,
            rows,
            run.title,
            None,
            summary,
            curve=lambda path, rows: write_lm_curve(path, rows, run.title, before, after),
        )

    # ------------------------------------------------------------ `python -m rl_lab.run eval`

    @classmethod
    def evaluate_run_dir(
        cls, run_dir: str, episodes: int | None, seed: int | None, video: bool
    ) -> None:
        """Re-evaluate a saved LM run's trained weights on held-out prompts."""
        if video:
            raise UserError("--video records Gym episodes; text runs have no frames to record")
        flags = {"eval_episodes": episodes} if episodes else {}
        experiment = cls.load(run_dir, flags)
        if seed is not None:
            experiment.eval_seed = seed
        result = experiment.evaluate()
        if not distributed.is_main():
            return
        out = Path(run_dir) / "reeval.json"
        checkpoint.atomic_write_text(out, json.dumps(result.to_dict(), indent=2) + "\n")
        m = result.metrics
        print(
            f"{experiment.spec.name} {experiment.task.name}: positive fraction "
            f"{m['positive_fraction']:.2f}, mean reward {m['mean_reward']:.2f}, KL {m['kl']:.2f}, "
            f"perplexity {m['perplexity']:.1f}, distinct-2 {m['distinct_2']:.2f} over "
            f"{m['prompts']} prompts (seed {experiment.eval_seed}); written to {out}"
        )


def load_text_task(c, rc: RunConfig):
    """(policy model, tokenizer, reward, train prompts, held-out prompts) for algorithm config
    `c` (policy, reward, prompts, prompt lengths, max_new_tokens), every asset checked."""
    from rl_lab.lm.assets import load_policy, quiet_transformers
    from rl_lab.lm.prompts import load_prompts
    from rl_lab.lm.rewards import build_reward
    from rl_lab.lm.setup import prepare

    prepare(c.policy, c.reward, reviews=not c.prompts)  # what is missing, once, in the cache
    with quiet_transformers():
        pretrained, tokenizer = load_policy(c.policy)
        reward = build_reward(c.reward, score=c.reward_score)
    path = c.prompts or None
    lengths = dict(min_tokens=c.prompt_min_tokens, max_tokens=c.prompt_max_tokens)
    train_prompts = load_prompts(tokenizer, "train", seed=rc.seed, path=path, **lengths)
    # Every run evaluates on the same held-out prompts (a user's file serves both roles).
    eval_prompts = load_prompts(
        tokenizer, "eval", n=rc.eval_episodes, seed=0, path=path, **lengths
    )[: rc.eval_episodes]
    check_context(
        pretrained.config, tokenizer, train_prompts + eval_prompts, c.max_new_tokens, c.policy
    )
    return pretrained, tokenizer, reward, train_prompts, eval_prompts


def check_context(
    model_config, tokenizer, prompts: list[str], max_new_tokens: int, name: str
) -> None:
    """A one-line error when the longest prompt plus the completion overflows the context."""
    context = next(
        (
            getattr(model_config, key)
            for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
            if isinstance(getattr(model_config, key, None), int)
        ),
        None,
    )
    if context is None:
        return
    longest = max(len(ids) for ids in tokenizer(prompts)["input_ids"])
    if longest + max_new_tokens > context:
        raise UserError(
            f"prompts of up to {longest} tokens plus --max-new-tokens "
            f"{max_new_tokens} exceed the {context}-token context of policy "
            f"{name!r}: lower --max-new-tokens or use shorter prompts"
        )


def reward_model_card(reward: str) -> dict | None:
    """The default reward model's card (how it was trained and how well it scores held-out
    reviews), None for other rewards."""
    from rl_lab.lm.assets import read_card, reward_model_dir
    from rl_lab.lm.setup import DEFAULT_REWARDS

    return read_card(reward_model_dir()) if reward in DEFAULT_REWARDS else None


def reward_model_lines(card: dict | None) -> list[str]:
    """summary.md's section on the default reward model, from its card."""
    if not card:
        return []
    return [
        "## Reward model",
        "",
        f"Held-out accuracy **{card.get('accuracy', float('nan')):.3f}** on "
        f"{card.get('held_out', '?')}. Trained on {card.get('train_examples', '?')} "
        f"{card.get('train_data', '?')}; {card.get('steps', '?')} steps in "
        f"{card.get('seconds', float('nan')):.0f} s ({card.get('cpu_seconds', float('nan')):.0f} "
        f"CPU s, load average {card.get('load_average', float('nan')):.1f}"
        f"{', bf16 autocast' if card.get('bf16') else ''}). Base: "
        f"{card.get('base', '?')}; settings: `{json.dumps(card.get('config', {}))}`.",
        "",
    ]


def summary_markdown(
    title: str,
    report: dict,
    config: dict,
    steps_name: str = "PPO iterations",
    checkpoints: bool = True,
) -> str:
    """summary.md: metrics before/after, held-out completions before/after, the config."""
    from rl_lab.lm.evaluation import METRICS

    cell = lambda text: " ".join(str(text).split()).replace("|", "\\|")  # noqa: E731
    before, after = report["before"], report["after"]
    lines = [
        f"# {title}",
        "",
        f"{report['iterations']} {steps_name} ({report['completions']:,} completions), "
        f"{report['wall_seconds'] / 60:.1f} min wall, stopped: {report['stop_reason']}. "
        f"Held-out prompts: {before['prompts']}.",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    lines += [f"| {key} | {before[key]:.3f} | {after[key]:.3f} |" for key in METRICS]
    judge = report.get("independent_scorer")
    lines += [
        f"| {key} ({judge}, not the reward) | {before[key]:.3f} | {after[key]:.3f} |"
        for key in ("judge_positive_fraction", "judge_score")
        if judge and key in before and key in after
    ]
    lines += [
        "",
        "## Held-out prompts, completions before and after (reward)",
        "",
        "| prompt | before | after |",
        "|---|---|---|",
    ]
    for b, a in zip(report["samples"]["before"], report["samples"]["after"]):
        lines.append(
            f"| {cell(b['prompt'])} | {cell(b['completion'])} ({b['reward']:+.2f}) | "
            f"{cell(a['completion'])} ({a['reward']:+.2f}) |"
        )
    lines += [
        "",
        "Files: `config.json`, `metrics.jsonl`, `tensorboard/`, "
        + ("`checkpoints/`, " if checkpoints else "")
        + "`eval.json`, `model/` (save_pretrained), `curve.png`.",
        "",
        "![reward per iteration, KL, held-out evaluations](curve.png)",
        "",
        *reward_model_lines(report.get("reward_model")),
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
