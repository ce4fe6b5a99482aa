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
from rl_lab import checkpoint, implementations
from rl_lab.config import RunConfig, from_dict, to_dict
from rl_lab.dashboard import Dashboard
from rl_lab.errors import DIVERGED, RunFault, UserError
from rl_lab.evaluation import EvalResult, Evaluator, evaluate
from rl_lab.experiment import write_results
from rl_lab.lock import lock_run_dir, unlock_run_dir
from rl_lab.logging import MetricLogger, read_metrics
from rl_lab.loop import Callback, Every, RunContext, train
from rl_lab.presets import preset
from rl_lab.registry import AlgoSpec, get_algo, get_task
from rl_lab.report import summary_text

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
    except (ValueError, OSError) as error:
        raise UserError(
            f"{path} is corrupt (not JSON: {error}): start a new run or restore the file"
        ) from None
    shape = {"algo": str, "task": str, "run": dict, "algo_config": dict}
    wrong = (
        [name for name, kind in shape.items() if not isinstance(config.get(name), kind)]
        if isinstance(config, dict)
        else list(shape)
    )
    if wrong:
        raise UserError(
            f"{path} is corrupt ({', '.join(wrong)} missing or of the wrong type): "
            "start a new run or restore the file"
        )
    return config


def build_configs(spec: AlgoSpec, task: Task, module, run_flags: dict, algo_flags: dict):
    """(RunConfig, algorithm config) of a new run: the preset for this pair, flags on top,
    every value checked. What `python -m rl_lab.run ALGO TASK` builds before anything else."""
    defaults = preset(spec.name, task.name, task.kind)
    run_config = build_config(RunConfig, {**defaults["run"], **run_flags})
    algo_config = build_config(module.Config, {**defaults["algo"], **algo_flags})
    check_budget(task, run_config)
    return run_config, algo_config


def check_budget(task: Task, run_config: RunConfig) -> None:
    """Gym envs step together, so a run overshoots --total-steps by up to num_envs - 1 steps;
    more envs than steps would multiply the budget. (Text tasks count iterations instead.)"""
    c = run_config
    if task.kind == "gym" and c.num_envs > c.total_steps:
        raise UserError(
            f"--num-envs {c.num_envs} exceeds --total-steps {c.total_steps}: every env steps at "
            "least once, so the run would take num_envs steps; lower --num-envs or raise "
            "--total-steps"
        )


def saved_configs(run_dir, saved: dict, task: Task, config_cls: type, run_flags: dict):
    """(RunConfig, algorithm config) from a run's config.json, never trusted: a wrong key,
    type or value is one line naming the file."""
    try:
        run_config = from_dict(RunConfig, {**saved["run"], **run_flags})
        algo_config = from_dict(config_cls, saved["algo_config"])
    except (ValueError, TypeError) as error:
        raise UserError(
            f"{Path(run_dir) / 'config.json'} does not fit this version of rl_lab ({error}): "
            "start a new run or restore the file"
        ) from None
    check_budget(task, run_config)
    return run_config, algo_config


def load_state(agent, run: RunContext, state: dict, run_dir) -> None:
    """Load a checkpoint into the agent and the run's counters, after checking it against their
    own fresh state: the same keys, tensors of the same shape and dtype, arrays of the same
    dtype and row shape, numbers where numbers belong. A mismatch is one line, exit 2."""
    fresh = {"agent": agent.state_dict(), "run": run.counters()}
    problem = state_mismatch(fresh, {key: state.get(key) for key in fresh}, "")
    if problem is None:
        try:
            agent.load_state_dict(state["agent"])
            run.restore_counters(state["run"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
            problem = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if problem is not None:
        raise UserError(
            f"the checkpoint in {Path(run_dir) / 'checkpoints'} does not fit the run's "
            f"config.json ({problem}): restore the run directory or start a new run"
        )


def state_mismatch(expected, found, path: str) -> str | None:
    """Where a loaded state differs in structure from a freshly built one (None: it fits).
    Lists may differ in length, an empty mapping may have gained keys, and None matches anything
    (e.g. a best evaluation not yet made)."""
    number = (int, float, np.integer, np.floating)
    if isinstance(expected, number) and not isinstance(expected, bool):
        ok = isinstance(found, number) and not isinstance(found, bool)
        return None if ok else f"{path} should be a number, got {found!r:.40}"
    if isinstance(expected, (bool, str)):
        ok = isinstance(found, type(expected))
        return None if ok else f"{path} should be a {type(expected).__name__}, got {found!r:.40}"
    if isinstance(expected, dict):
        if not isinstance(found, dict):
            return f"{path} is not a mapping"
        missing, extra = set(expected) - set(found), set(found) - set(expected)
        if missing or (extra and expected):  # an empty mapping grows (a torch optimizer's state)
            names = lambda keys: sorted(map(str, keys))  # noqa: E731
            return f"{path}: missing keys {names(missing)}, unexpected keys {names(extra)}"
        for key, value in expected.items():
            problem = state_mismatch(value, found[key], f"{path}.{key}".lstrip("."))
            if problem:
                return problem
        return None
    if isinstance(expected, torch.Tensor):
        if not isinstance(found, torch.Tensor):
            return f"{path} is not a tensor"
        if found.shape != expected.shape or found.dtype != expected.dtype:
            return (
                f"{path} has shape {tuple(found.shape)} {found.dtype}, expected "
                f"{tuple(expected.shape)} {expected.dtype}"
            )
        return None
    if isinstance(expected, np.ndarray):  # buffers hold as many rows as they had filled
        if expected.ndim == 0:  # a running statistic, which may come back as a plain number
            ok = isinstance(found, (np.ndarray, *number)) and np.size(found) == 1
            return None if ok else f"{path} should be a number, got {found!r:.40}"
        if not isinstance(found, np.ndarray):
            return f"{path} is not an array"
        if found.shape[1:] != expected.shape[1:] or found.ndim != expected.ndim:
            return f"{path} has rows of shape {found.shape[1:]}, expected {expected.shape[1:]}"
        if found.dtype != expected.dtype:
            return f"{path} has dtype {found.dtype}, expected {expected.dtype}"
    return None


def check_steps_left(run_dir, total: int, done: int, unit: str = "steps") -> None:
    """`--resume DIR --total-steps N` must not ask for fewer steps than the run has done."""
    if total < done:
        raise UserError(
            f"--total-steps {total} is below the {done:,} {unit} {run_dir} has done already: "
            f"pass --total-steps {done} or more"
        )


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


def make_dir(path: Path, flag: str) -> None:
    """Create a directory, or say in one line that it cannot be and which flag to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {path} ({error.strerror}): choose another {flag}") from None


def start_run_dir(run_dir: Path, spec, task, impl: str, run_config, algo_config) -> None:
    """Once everything is checked and built: create the run directory, take its lock, and
    write config.json (everything needed to repeat the run)."""
    make_dir(run_dir, "--run-dir")
    lock_run_dir(run_dir)
    config = {
        "algo": spec.name,
        "task": task.name,
        "impl": impl,
        "run": to_dict(run_config),
        "algo_config": to_dict(algo_config),
    }
    checkpoint.atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")


def check_resume(run_dir, spec, task, run_flags: dict, algo_flags: dict) -> dict:
    """The saved config.json of a run that `--resume` may continue with these flags."""
    saved = read_run_config(run_dir)
    lock_run_dir(Path(run_dir))  # before anything reads or trims the run's files
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
    """Saves everything a resume needs every `interval` env steps and when training ends:
    the run's counters, the loop's episodes in flight and the agent. A state with a NaN or
    infinite parameter is never saved: the run stops (run.fault) and the last good
    checkpoint stays the newest."""

    def __init__(self, run_dir: Path, interval: int):
        self.directory, self.schedule = run_dir / "checkpoints", Every(interval)

    def on_train_start(self, run: RunContext) -> None:
        self.schedule.start(run.env_steps)

    def save(self, run: RunContext) -> None:
        if run.fault or run.torn:  # a poisoned or half-done step is never saved
            return
        started = time.perf_counter()
        agent = run.agent.state_dict()
        if not checkpoint.all_finite(agent):
            run.fault = (
                f"a parameter became NaN or infinite by {run.env_steps:,} steps "
                f"(update {run.updates})"
            )
            return
        state = {"format": 2, "run": run.counters()}
        if run.in_flight is not None:  # the lab's loop (another library's loop keeps its own)
            state["loop"] = run.in_flight.state_dict()
        checkpoint.save(self.directory, {**state, "agent": agent})
        run.timers["other"] += time.perf_counter() - started

    def on_step(self, run: RunContext) -> None:
        if self.schedule.due(run.env_steps):
            self.save(run)

    def on_train_end(self, run: RunContext) -> None:
        self.save(run)


def fault_message(run: RunContext, run_dir: Path) -> str:
    """The one line for a run stopped by a non-finite loss or parameter."""
    kept = checkpoint.latest_step(run_dir / "checkpoints")
    where = (
        "no checkpoint had been saved yet"
        if kept is None
        else (f"the last good checkpoint (step {kept:,}) is kept")
    )
    return (
        f"training diverged: {run.fault}; {where}. Resume from it with "
        f"`python -m rl_lab.run --resume {run_dir}`, or start a new run with a lower "
        "--lr or --max-grad-norm"
    )


def interrupted_message(run: RunContext, run_dir: Path) -> str:
    if run.torn:  # a second Ctrl-C broke into a step: its state was not saved
        kept = checkpoint.latest_step(run_dir / "checkpoints")
        saved = "no checkpoint saved yet" if kept is None else f"checkpoint {kept:,} kept"
    else:
        saved = "checkpoint saved"
    return (
        f"interrupted at {run.env_steps:,} steps; {saved}. Continue with "
        f"`python -m rl_lab.run --resume {run_dir}`"
    )


class Experiment:
    run_settings = True  # takes RunConfig's flags (the reward-model command does not)
    impl = "lab"  # the implementation name config.json records (rl_lab.implementations)

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
        run_config, algo_config = build_configs(spec, task, module, run_flags, algo_flags)
        run_dir = (
            Path(run_dir) if run_dir else default_run_dir(spec.name, task.name, run_config.seed)
        )
        check_writable(run_dir)
        experiment = cls(spec, task, module, run_config, algo_config, run_dir)
        start_run_dir(run_dir, spec, task, cls.impl, run_config, algo_config)
        return experiment

    @classmethod
    def resume(cls, run_dir, spec, task, module, run_flags, algo_flags):
        saved = check_resume(run_dir, spec, task, run_flags, algo_flags)
        directory = Path(run_dir) / "checkpoints"
        checkpoint.remove_partial_saves(directory)  # a save that was killed half-way
        # Killed after config.json but before its first checkpoint: start again from step 0.
        state = checkpoint.load(directory) if checkpoint.newest(directory) else None
        run_config, algo_config = saved_configs(run_dir, saved, task, module.Config, run_flags)
        experiment = cls(spec, task, module, run_config, algo_config, Path(run_dir))
        if state is None:
            print(f"{run_dir} has no checkpoint yet: training it from step 0")
        else:
            load_state(experiment.agent, experiment.run, state, run_dir)
            print(f"resuming {run_dir} from step {experiment.run.env_steps:,}")
            experiment.run.resume_loop = state.get("loop")  # absent before format 2
        check_steps_left(run_dir, run_config.total_steps, experiment.run.env_steps)
        experiment.run.total_steps = run_config.total_steps
        keep_metrics_until(Path(run_dir) / "metrics.jsonl", experiment.run.env_steps)
        return experiment

    # ------------------------------------------------------------------ training

    def greedy_policy(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.act(obs, explore=False)

    def train(self, dashboard: bool = True, extra_callbacks: list[Callback] = ()) -> int:
        """Train, evaluate, report; the run directory's lock is released when this returns
        (the process may go on: tests, sweeps). `extra_callbacks` also hear every evaluation
        (tune's pruner)."""
        try:
            return self.train_and_evaluate(dashboard, extra_callbacks)
        finally:
            unlock_run_dir(self.run_dir)

    def train_and_evaluate(self, dashboard: bool, extra_callbacks: list[Callback] = ()) -> int:
        c, run = self.run_config, self.run
        eval_seed = c.seed + EVAL_SEED_OFFSET
        board = Dashboard(live=None if dashboard else False)
        metrics = self.run_dir / "metrics.jsonl"
        if run.env_steps and metrics.is_file():  # a resumed run's dashboard goes on from there
            rows = read_metrics(metrics)
            board.returns = [
                r["charts/episodic_return"] for r in rows if "charts/episodic_return" in r
            ]
            board.recent.extend(board.returns[-board.recent.maxlen :])
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
            self.fit(callbacks)
        except OSError as error:  # metrics.jsonl on a full disk (checkpoints raise RunFault)
            raise checkpoint.write_fault(self.run_dir, error, "the run's files") from None
        finally:
            board.close()
        if run.fault:
            raise RunFault(fault_message(run, self.run_dir), DIVERGED)
        if run.interrupted:
            print(interrupted_message(run, self.run_dir))
            return 130
        try:
            started = time.perf_counter()
            result = evaluate(
                self.greedy_policy,
                lambda: make_env(self.task),
                c.eval_episodes,
                c.seed + FINAL_EVAL_SEED_OFFSET,
            )
            run.timers["eval"] += time.perf_counter() - started
            self.write_results(result)
        except KeyboardInterrupt:  # the final checkpoint is saved: a resume re-evaluates
            print(interrupted_message(run, self.run_dir))
            return 130
        except OSError as error:
            raise checkpoint.write_fault(self.run_dir, error, "the results") from None
        print(
            f"final evaluation: mean return {result.mean_return:.2f} ± "
            f"{result.std_return:.2f} over {result.episodes} episodes "
            f"({run.env_steps:,} steps, {run.elapsed:.1f} s, stopped: {run.stop_reason}); "
            f"results in {self.run_dir}"
        )
        return 0

    def fit(self, callbacks: list[Callback]) -> None:
        """Train with these callbacks (the seam another implementation replaces)."""
        c = self.run_config
        train(
            self.agent,
            make_vector_env(self.task, c.num_envs),
            self.run,
            callbacks,
            log_every=c.log_interval,
        )

    def write_results(self, result: EvalResult) -> None:
        run = self.run
        solved = self.task.solved_at is not None and result.mean_return >= self.task.solved_at
        report = {
            **result.to_dict(),
            "env_steps": run.env_steps,
            "updates": run.updates,
            # Every Gym agent counts its optimizer steps (lab DQN and PPO, the SB3 adapter);
            # the loop's Agent protocol leaves it out, as LM PPO reports iterations instead.
            "gradient_steps": self.agent.gradient_steps,
            "wall_seconds": run.elapsed,
            "timers": run.timers,
            "stop_reason": run.stop_reason,
            "solved_at": self.task.solved_at,
            "solved": solved,
            "first_solved_step": run.first_solved_step,
            "first_solved_seconds": run.first_solved_seconds,
            "best_eval": run.best_eval,
        }
        config = json.loads((self.run_dir / "config.json").read_text())
        write_results(
            self.run_dir,
            report,
            read_metrics(self.run_dir / "metrics.jsonl"),
            run.title,
            self.task.solved_at,
            summary_text(run.title, report, config),
        )

    @classmethod
    def evaluate_run_dir(
        cls, run_dir: str, episodes: int | None, seed: int | None, video: bool
    ) -> None:
        """Greedy evaluation of a saved run's latest checkpoint, written to reeval.json."""
        saved = read_run_config(run_dir)
        spec, task = get_algo(saved["algo"]), get_task(saved["task"])
        module = implementations.find(spec.name, saved.get("impl"), task.kind).module()
        state = checkpoint.load(Path(run_dir) / "checkpoints")
        run_config, algo_config = saved_configs(run_dir, saved, task, module.Config, {})
        experiment = cls(spec, task, module, run_config, algo_config, Path(run_dir))
        load_state(experiment.agent, experiment.run, state, run_dir)
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


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop metric rows written after the checkpoint we resume from (they will be redone)."""
    if path.is_file():
        rows = [row for row in read_metrics(path) if row.get("step", 0) <= step]
        checkpoint.atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def evaluate_run_dir(run_dir: str, episodes: int | None, seed: int | None, video: bool) -> None:
    """`python -m rl_lab.run eval RUN_DIR`: the run's own implementation re-evaluates it."""
    saved = read_run_config(run_dir)
    task = get_task(saved["task"])
    impl = implementations.find(saved["algo"], saved.get("impl"), task.kind, task.name)
    impl.experiment_class().evaluate_run_dir(run_dir, episodes, seed, video)


def headless_rendering() -> None:
    """Render frames without a display unless the user chose a backend: SDL (pygame: classic
    control, Box2D) renders to memory with dummy drivers, which also keeps it from printing
    errors about XDG_RUNTIME_DIR and sound cards; MuJoCo renders through EGL (read when its
    renderer is made, so setting it after the env module was imported still counts)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")


def check_rendering(task: Task) -> None:
    """Render one frame, or say in one line what is missing."""
    env = make_env(task, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.render()
    except Exception as error:  # each GL backend fails its own way (ImportError, FatalError..)
        backend = os.environ.get("MUJOCO_GL", "glfw")
        raise UserError(
            f"cannot render {task.name} for a video (MUJOCO_GL={backend}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
            "the evaluation's numbers are written. Install EGL (apt-get install libegl1) or "
            "OSMesa (apt-get install libosmesa6) and set MUJOCO_GL=egl or osmesa"
        ) from None
    finally:
        env.close()


def record_video(policy, task: Task, path: Path, seed: int, fps: int = 30) -> Path:
    """One greedy episode rendered to MP4 (frames streamed to ffmpeg, written atomically)."""
    import imageio.v2 as imageio

    headless_rendering()
    check_rendering(task)
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
