"""Evaluation harness: run a (greedy) policy for N episodes on separately seeded envs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from rl_lab.loop import Callback, Every, RunContext


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    seed: int

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    def to_dict(self) -> dict:
        return {
            "mean_return": self.mean_return,
            "std_return": self.std_return,
            "min_return": float(np.min(self.returns)),
            "max_return": float(np.max(self.returns)),
            "mean_length": float(np.mean(self.lengths)),
            "episodes": self.episodes,
            **asdict(self),
        }


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """The reset seed of each episode of an evaluation, drawn from `seed` by numpy's
    SeedSequence. Not seed + j: two runs whose seeds differ by one would then share all but one
    of their evaluation episodes (run 100's episodes 1-9 are run 101's 0-8), and the seeds of a
    `compare` would not be independent tests."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(episodes)]


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env_fn: Callable,
    episodes: int,
    seed: int,
    parallel: int = 10,
    frame_sink: Callable | None = None,
) -> EvalResult:
    """Run `episodes` episodes; episode j starts from env.reset(seed=episode_seeds(seed, episodes)[j]).

    Up to `parallel` envs run side by side so the policy acts on a batch, but every episode
    keeps its own seed, so the result does not depend on `parallel`. `frame_sink(frame)`,
    if given, receives rendered frames of the first env's episodes (for videos).
    """
    count = min(parallel, episodes) if frame_sink is None else 1
    env_list = [env_fn() for _ in range(count)]
    returns, lengths = [0.0] * episodes, [0] * episodes
    assigned = list(range(count))  # episode index each env is running, or None when idle
    seeds = episode_seeds(seed, episodes)
    observations = [env.reset(seed=seeds[j])[0] for env, j in zip(env_list, assigned)]
    next_episode = count
    try:
        while any(j is not None for j in assigned):
            active = [i for i, j in enumerate(assigned) if j is not None]
            actions = policy(np.stack([observations[i] for i in active]))
            for action, i in zip(actions, active):
                j = assigned[i]
                observations[i], reward, terminated, truncated, _ = env_list[i].step(action)
                returns[j] += float(reward)
                lengths[j] += 1
                if frame_sink is not None:
                    frame_sink(env_list[i].render())
                if terminated or truncated:
                    if next_episode < episodes:
                        assigned[i] = next_episode
                        observations[i] = env_list[i].reset(seed=seeds[next_episode])[0]
                        next_episode += 1
                    else:
                        assigned[i] = None
    finally:
        for env in env_list:
            env.close()
    return EvalResult(returns, lengths, seed)


class Evaluator(Callback):
    """Greedy evaluation every `interval` env steps; optional early stop once solved."""

    def __init__(
        self,
        policy: Callable,
        env_fn: Callable,
        episodes: int,
        interval: int,
        seed: int,
        stop_when_solved: bool = False,
        patience: int = 1,
    ):
        self.policy, self.env_fn = policy, env_fn
        self.episodes, self.seed = episodes, seed
        self.stop_when_solved, self.patience = stop_when_solved, patience
        self.schedule = Every(interval)
        self.callbacks: list[Callback] = []  # who hears on_eval (set by the runner)

    def on_train_start(self, run: RunContext) -> None:
        self.schedule.start(run.env_steps)

    def on_step(self, run: RunContext) -> None:
        if not self.schedule.due(run.env_steps):
            return
        started = time.perf_counter()
        # Each evaluation uses fresh seeds, so a streak of them is several independent tests.
        result = evaluate(self.policy, self.env_fn, self.episodes, self.seed + run.env_steps)
        run.timers["eval"] += time.perf_counter() - started
        run.last_eval = result.mean_return
        run.best_eval = max(
            run.best_eval if run.best_eval is not None else -np.inf, result.mean_return
        )
        solved = run.solved_at is not None and result.mean_return >= run.solved_at
        run.solved_streak = run.solved_streak + 1 if solved else 0  # checkpoints keep it
        if solved and run.first_solved_step is None:
            run.first_solved_step = run.env_steps
            run.first_solved_seconds = run.elapsed - run.timers["eval"]
        run.latest.update(
            {"eval/mean_return": result.mean_return, "eval/std_return": result.std_return}
        )
        for callback in self.callbacks:
            callback.on_eval(run, result)

    def should_stop(self, run: RunContext) -> bool:
        if self.stop_when_solved and run.solved_streak >= self.patience:
            run.stop_reason = "solved"
            return True
        return False
