"""One experiment from config to run directory: build, train, evaluate, report.

Order matters for "nothing half-written": configs are validated and the env and agent are
built *before* the run directory is created, so a user mistake leaves no files behind.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from envs.tasks import Task, make_env, make_vector_env
from rl_lab import checkpoint
from rl_lab.config import RunConfig, from_dict, to_dict
from rl_lab.dashboard import Dashboard
from rl_lab.errors import UserError
from rl_lab.evaluation import EvalResult, Evaluator, evaluate
from rl_lab.logging import MetricLogger, read_metrics
from rl_lab.loop import Callback, Every, RunContext, train
from rl_lab.presets import preset
from rl_lab.registry import AlgoSpec, get_algo, get_task
from rl_lab.report import write_curve, write_summary

# Evaluation envs never share seeds with training envs: periodic evaluations use
# seed + EVAL_SEED_OFFSET + env_steps, the final one seed + FINAL_EVAL_SEED_OFFSET.
EVAL_SEED_OFFSET = 1_000_000
FINAL_EVAL_SEED_OFFSET = 1_000_000_000


def build_config(cls: type, values: dict):
    """A config from values, turning validation errors into one-line user errors."""
    try:
        return cls(**values)
    except ValueError as error:
        raise UserError(str(error)) from None


def read_run_config(run_dir: str) -> dict:
    path = Path(run_dir) / "config.json"
    if not run_dir or not path.is_file():
        raise UserError(
            f"{run_dir or '(none given)'} is not a run directory (no config.json): "
            "pass a directory written by `python -m rl_lab.run ALGO TASK`"
        )
    try:
        config = json.loads(path.read_text())
        config["algo"], config["task"], config["run"], config["algo_config"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is corrupt: start a new run or restore the file") from None
    return config


def default_run_dir(algo: str, task: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{algo}-{task.replace('/', '_')}-s{seed}-{stamp}"


def check_writable(run_dir: Path) -> None:
    """Fail before training if the run directory cannot be created or written."""
    if (run_dir / "config.json").exists():
        raise UserError(
            f"{run_dir} already holds a run: continue it with --resume {run_dir} "
            "or choose another --run-dir"
        )
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the run directory {run_dir} ({parent} is not writable): "
            "choose another --run-dir"
        )


def check_resume(run_dir, spec, task, run_flags: dict, algo_flags: dict) -> dict:
    """The saved config.json of a run that `--resume` may continue with these flags."""
    saved = read_run_config(run_dir)
    if (saved["algo"], saved["task"]) != (spec.name, task.name):
        raise UserError(
            f"{run_dir} is a {saved['algo']} {saved['task']} run: resume it with "
            f"`python -m rl_lab.run --resume {run_dir}`"
        )
    extra = set(algo_flags) | (set(run_flags) - {"total_steps"})
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(extra))
        raise UserError(
            f"--resume continues with the saved config; drop {flags} "
            "(only --total-steps may change)"
        )
    return saved


class Checkpointer(Callback):
    """Saves everything a resume needs every `interval` env steps and when training ends."""

    def __init__(self, run_dir: Path, interval: int):
        self.directory, self.schedule = run_dir / "checkpoints", Every(interval)

    def on_train_start(self, run: RunContext) -> None:
        self.schedule.start(run.env_steps)

    def save(self, run: RunContext) -> None:
        started = time.perf_counter()
        checkpoint.save(
            self.directory, {"format": 1, "run": run.counters(), "agent": run.agent.state_dict()}
        )
        run.timers["other"] += time.perf_counter() - started

    def on_step(self, run: RunContext) -> None:
        if self.schedule.due(run.env_steps):
            self.save(run)

    def on_train_end(self, run: RunContext) -> None:
        self.save(run)


class Experiment:
    def __init__(
        self, spec: AlgoSpec, task: Task, module, run_config: RunConfig, algo_config, run_dir: Path
    ):
        self.spec, self.task, self.module = spec, task, module
        self.run_config, self.algo_config, self.run_dir = run_config, algo_config, run_dir
        torch.set_num_threads(1)  # small MLPs: a second thread only adds overhead
        probe = make_env(task)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        c = run_config
        self.agent = module.make_agent(
            algo_config,
            self.observation_space,
            self.action_space,
            c.num_envs,
            c.total_steps,
            c.seed,
        )
        self.run = RunContext(
            self.agent,
            c.total_steps,
            c.num_envs,
            c.seed,
            run_dir,
            title=f"{spec.name} · {task.name} · seed {c.seed}",
            solved_at=task.solved_at,
        )

    @classmethod
    def create(cls, spec, task, module, algo_config_cls, run_flags, algo_flags, run_dir):
        defaults = preset(spec.name, task.name, task.kind)
        run_config = build_config(RunConfig, {**defaults["run"], **run_flags})
        algo_config = build_config(algo_config_cls, {**defaults["algo"], **algo_flags})
        run_dir = (
            Path(run_dir) if run_dir else default_run_dir(spec.name, task.name, run_config.seed)
        )
        check_writable(run_dir)
        experiment = cls(spec, task, module, run_config, algo_config, run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"cannot create {run_dir} ({error.strerror}): choose another --run-dir"
            ) from None
        config = {
            "algo": spec.name,
            "task": task.name,
            "run": to_dict(run_config),
            "algo_config": to_dict(algo_config),
        }
        checkpoint.atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
        return experiment

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        saved = check_resume(run_dir, spec, task, run_flags, algo_flags)
        state = checkpoint.load(Path(run_dir) / "checkpoints")
        config_cls = module.Config
        try:
            run_config = from_dict(RunConfig, {**saved["run"], **run_flags})
            algo_config = from_dict(config_cls, saved["algo_config"])
        except (ValueError, TypeError) as error:
            raise UserError(
                f"{run_dir}/config.json does not fit this version ({error}): start a new run"
            ) from None
        experiment = cls(spec, task, module, run_config, algo_config, Path(run_dir))
        experiment.agent.load_state_dict(state["agent"])
        experiment.run.restore_counters(state["run"])
        experiment.run.total_steps = run_config.total_steps
        keep_metrics_until(Path(run_dir) / "metrics.jsonl", experiment.run.env_steps)
        return experiment

    # ------------------------------------------------------------------ training

    def greedy_policy(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.act(obs, explore=False)

    def train(self, dashboard: bool = True, extra_callbacks: list[Callback] = ()) -> int:
        """Train, evaluate, write the results; `extra_callbacks` also hear every evaluation
        (tune's pruner)."""
        c, run = self.run_config, self.run
        eval_seed = c.seed + EVAL_SEED_OFFSET
        board = Dashboard(live=None if dashboard else False)
        logger = MetricLogger(self.run_dir)
        evaluator = Evaluator(
            self.greedy_policy,
            lambda: make_env(self.task),
            c.eval_episodes,
            c.eval_interval,
            eval_seed,
            c.stop_when_solved,
            c.solved_patience,
        )
        evaluator.callbacks = [board, logger, *extra_callbacks]
        callbacks = [
            board,
            logger,
            evaluator,
            Checkpointer(self.run_dir, c.checkpoint_interval),
            *extra_callbacks,
        ]
        try:
            train(
                self.agent,
                make_vector_env(self.task, c.num_envs),
                run,
                callbacks,
                log_every=c.log_interval,
            )
        finally:
            board.close()
        if run.interrupted:
            print(
                f"interrupted at {run.env_steps:,} steps; checkpoint saved. Continue with "
                f"`python -m rl_lab.run --resume {self.run_dir}`"
            )
            return 130
        started = time.perf_counter()
        result = evaluate(
            self.greedy_policy,
            lambda: make_env(self.task),
            c.eval_episodes,
            c.seed + FINAL_EVAL_SEED_OFFSET,
        )
        run.timers["eval"] += time.perf_counter() - started
        self.write_results(result)
        print(
            f"final evaluation: mean return {result.mean_return:.2f} ± "
            f"{result.std_return:.2f} over {result.episodes} episodes "
            f"({run.env_steps:,} steps, {run.elapsed:.1f} s, stopped: {run.stop_reason}); "
            f"results in {self.run_dir}"
        )
        return 0

    def write_results(self, result: EvalResult) -> None:
        run = self.run
        solved = self.task.solved_at is not None and result.mean_return >= self.task.solved_at
        report = {
            **result.to_dict(),
            "env_steps": run.env_steps,
            "updates": run.updates,
            "gradient_steps": getattr(self.agent, "gradient_steps", run.updates),
            "wall_seconds": run.elapsed,
            "timers": run.timers,
            "stop_reason": run.stop_reason,
            "solved_at": self.task.solved_at,
            "solved": solved,
            "first_solved_step": run.first_solved_step,
            "first_solved_seconds": run.first_solved_seconds,
            "best_eval": run.best_eval,
        }
        checkpoint.atomic_write_text(
            self.run_dir / "eval.json", json.dumps(report, indent=2) + "\n"
        )
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        write_curve(self.run_dir / "curve.png", rows, run.title, self.task.solved_at)
        write_summary(
            self.run_dir / "summary.md",
            run.title,
            report,
            json.loads((self.run_dir / "config.json").read_text()),
        )


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
    if path.is_file():
        rows = [row for row in read_metrics(path) if row.get("step", 0) <= step]
        checkpoint.atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def evaluate_run_dir(run_dir: str, episodes: int | None, seed: int | None, video: bool) -> None:
    """`python -m rl_lab.run eval RUN_DIR`: greedy evaluation of the latest checkpoint."""
    import importlib

    saved = read_run_config(run_dir)
    spec, task = get_algo(saved["algo"]), get_task(saved["task"])
    module = importlib.import_module(spec.modules[task.kind])
    if hasattr(module, "Experiment"):  # text tasks evaluate in their own way
        return module.Experiment.evaluate_run_dir(run_dir, episodes, seed, video)
    state = checkpoint.load(Path(run_dir) / "checkpoints")
    config_cls = module.Config
    run_config = from_dict(RunConfig, saved["run"])
    experiment = Experiment(
        spec, task, module, run_config, from_dict(config_cls, saved["algo_config"]), Path(run_dir)
    )
    experiment.agent.load_state_dict(state["agent"])
    episodes = episodes or run_config.eval_episodes
    seed = run_config.seed + 2 * FINAL_EVAL_SEED_OFFSET if seed is None else seed
    result = evaluate(experiment.greedy_policy, lambda: make_env(task), episodes, seed)
    out = Path(run_dir) / "reeval.json"
    checkpoint.atomic_write_text(out, json.dumps(result.to_dict(), indent=2) + "\n")
    print(
        f"{saved['algo']} {saved['task']}: mean return {result.mean_return:.2f} ± "
        f"{result.std_return:.2f} over {episodes} episodes (seed {seed}); written to {out}"
    )
    if video:
        path = record_video(
            experiment.greedy_policy, task, Path(run_dir) / "videos" / "eval.mp4", seed
        )
        print(f"video of one greedy episode: {path}")


def record_video(policy, task: Task, path: Path, seed: int, fps: int = 30) -> Path:
    """One greedy episode rendered to MP4 (frames streamed to ffmpeg, written atomically)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    try:
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
            evaluate(
                policy,
                lambda: make_env(task, render_mode="rgb_array"),
                1,
                seed,
                frame_sink=writer.append_data,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
