"""The one training loop of the lab, and the Callback base every observer builds on.

The loop knows nothing about observations: it hands whatever the environment returns to the
agent and back. Gym tasks and the text task (prompts in, completions out, one-step episodes)
run through the same lines below.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rl_lab.buffers import Transition


class Agent(Protocol):
    def act(self, obs, *, explore: bool = True) -> np.ndarray: ...
    def observe(self, batch: Transition) -> None: ...
    def ready(self) -> bool: ...
    def update(self) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class RunContext:
    """What callbacks may read about the run in progress (never the loop's locals)."""

    agent: Any
    total_steps: int  # env steps (one per env per loop iteration)
    num_envs: int
    seed: int
    run_dir: Path | None = None
    title: str = ""
    solved_at: float | None = None
    env_steps: int = 0
    updates: int = 0
    episodes: int = 0
    best_eval: float | None = None
    last_eval: float | None = None
    first_solved_step: int | None = None
    first_solved_seconds: float | None = None  # wall time to first solve, evaluation excluded
    latest: dict[str, float] = field(default_factory=dict)  # last value of every metric
    timers: dict[str, float] = field(
        default_factory=lambda: {"act": 0.0, "learn": 0.0, "eval": 0.0, "other": 0.0}
    )
    elapsed_before: float = 0.0  # wall time spent before a resume
    started_at: float = field(default_factory=time.perf_counter)
    stop_reason: str | None = None
    interrupted: bool = False
    solved_streak: int = 0  # consecutive evaluations at or above solved_at
    fault: str | None = None  # why the run had to stop (a non-finite loss, say): one line
    torn: bool = False  # stopped in the middle of a step: its state must not be saved
    in_flight: InFlight | None = None  # the loop's state between steps (set by train)
    resume_loop: dict | None = None  # a checkpoint's loop state for train() to restore

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started_at

    def counters(self) -> dict:
        """The counters a checkpoint keeps so that a resumed run carries on from them."""
        return {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episodes": self.episodes,
            "best_eval": self.best_eval,
            "last_eval": self.last_eval,
            "first_solved_step": self.first_solved_step,
            "first_solved_seconds": self.first_solved_seconds,
            "solved_streak": self.solved_streak,
            "latest": dict(self.latest),
            "timers": dict(self.timers),
            "elapsed": self.elapsed,
        }

    def restore_counters(self, counters: Mapping) -> None:
        for name in (
            "env_steps",
            "updates",
            "episodes",
            "best_eval",
            "last_eval",
            "first_solved_step",
            "first_solved_seconds",
        ):
            setattr(self, name, counters[name])
        # Absent from checkpoints written before exact resume (format 1).
        self.solved_streak = int(counters.get("solved_streak", 0))
        self.latest = dict(counters.get("latest", {}))
        self.timers = dict(counters["timers"])
        self.elapsed_before = float(counters["elapsed"])
        self.started_at = time.perf_counter()


class Callback:
    """No-op base: override what you need."""

    def on_train_start(self, run: RunContext) -> None: ...
    def on_step(self, run: RunContext) -> None: ...
    def on_episode_end(self, run: RunContext, episode_return: float, length: int) -> None: ...
    def on_log(self, run: RunContext, metrics: Mapping[str, float]) -> None: ...
    def on_eval(self, run: RunContext, result) -> None: ...
    def on_train_end(self, run: RunContext) -> None: ...
    def should_stop(self, run: RunContext) -> bool:
        return False


class Every:
    """Comes due once each time the step count crosses a multiple of `interval` (never when
    `interval` <= 0). What comes next depends only on the step count, so `start` lines a
    resumed run up with the uninterrupted one exactly. Shared by the loop's log lines, the
    evaluators and the checkpointer."""

    def __init__(self, interval: int):
        self.interval, self.next = interval, interval

    def start(self, steps: int) -> None:
        if self.interval > 0:
            self.next = (steps // self.interval + 1) * self.interval

    def due(self, steps: int) -> bool:
        if self.interval <= 0 or steps < self.next:
            return False
        self.start(steps)
        return True


@dataclass
class InFlight:
    """What the loop holds between two steps. A checkpoint keeps it (with the agent's state),
    so a resumed run continues the very episodes that were running when it was killed."""

    env: Any  # ResumableVectorEnv, TextEnv: anything with state_dict / load_state_dict
    obs: Any
    episode_return: np.ndarray
    episode_length: np.ndarray

    @classmethod
    def begin(cls, env, run: RunContext) -> InFlight:
        """Fresh episodes, or the saved ones replayed when the run resumes."""
        state = run.resume_loop
        if state is None:  # a new run (or a checkpoint from before exact resume)
            obs, _ = env.reset(seed=run.seed + run.env_steps)
            zeros = np.zeros(run.num_envs)
            return cls(env, obs, zeros, np.zeros(run.num_envs, dtype=np.int64))
        return cls(
            env,
            env.load_state_dict(state["env"]),
            np.array(state["episode_return"], dtype=np.float64),
            np.array(state["episode_length"], dtype=np.int64),
        )

    def state_dict(self) -> dict:
        return {
            "env": self.env.state_dict(),
            "episode_return": self.episode_return.copy(),
            "episode_length": self.episode_length.copy(),
        }


# Metrics that are undefined (NaN) in healthy runs: explained variance when returns are constant.
MAY_BE_NAN = frozenset({"losses/explained_variance"})


def non_finite(metrics: Mapping[str, float]) -> str | None:
    """The first loss metric that is NaN or infinite, as 'name=value', else None."""
    for key, value in metrics.items():
        if key.startswith("losses/") and not math.isfinite(value):
            if not (math.isnan(value) and key in MAY_BE_NAN):
                return f"{key}={value}"
    return None


def real_next_obs(next_obs, infos: dict, done: np.ndarray):
    """The observations each step led to: final observations where an episode just ended.

    With same-step autoreset, `next_obs` already holds the reset observation of a finished
    env; bootstrapping a truncated episode needs the final one from infos instead.
    """
    if not done.any() or "final_obs" not in infos:
        return next_obs
    result = np.array(next_obs, copy=True)
    for i in np.flatnonzero(done):
        result[i] = infos["final_obs"][i]
    return result


class CtrlC:
    """Turns the first Ctrl-C into a request to stop after the current step.

    A KeyboardInterrupt raised wherever the main thread happens to be can land inside a lock
    of a queue (the TensorBoard writer's, say), which then hangs on close; a flag checked
    between steps cannot. A second Ctrl-C raises KeyboardInterrupt as usual.
    """

    def __init__(self):
        self.pressed = False
        self.installed = threading.current_thread() is threading.main_thread()  # else can't
        if self.installed:
            self.previous = signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def restore(self) -> None:
        if self.installed:
            previous = self.previous if self.previous is not None else signal.default_int_handler
            signal.signal(signal.SIGINT, previous)


def train(agent, env, run: RunContext, callbacks: list[Callback], log_every: int = 1000) -> None:
    """Step the env(s), feed the agent, update when it is ready, tell the callbacks.

    Ctrl-C ends the loop cleanly after the current step (run.interrupted), and on_train_end
    still runs, so the checkpointer saves and the dashboard gives the terminal back. A loss
    that turns NaN or infinite stops the loop at once (run.fault), before anything saves it.
    """
    flight = run.in_flight = InFlight.begin(env, run)
    log = Every(log_every)
    log.start(run.env_steps)
    window_start, steps_at_window, updates_at_window = (
        time.perf_counter(),
        run.env_steps,
        run.updates,
    )
    for callback in callbacks:
        callback.on_train_start(run)
    ctrl_c = CtrlC()
    try:
        # Stop conditions come before the budget and before each step, so a run resumed from
        # the checkpoint of its last step (killed in its final evaluation, say) stops where and
        # why it stopped.
        while not ctrl_c.pressed:
            if run.fault or any(callback.should_stop(run) for callback in callbacks):
                break
            if run.env_steps >= run.total_steps:
                break
            tick = time.perf_counter()
            obs = flight.obs
            actions = agent.act(obs, explore=True)
            next_obs, rewards, terminated, truncated, infos = env.step(actions)
            done = np.logical_or(terminated, truncated)
            agent.observe(
                Transition(
                    obs,
                    actions,
                    rewards,
                    real_next_obs(next_obs, infos, done),
                    terminated,
                    truncated,
                )
            )
            flight.obs = next_obs
            run.env_steps += run.num_envs
            flight.episode_return += rewards
            flight.episode_length += 1
            tock = time.perf_counter()
            run.timers["act"] += tock - tick

            if agent.ready():
                metrics = agent.update()
                run.updates += 1
                run.latest.update(metrics)
                run.timers["learn"] += time.perf_counter() - tock
                bad = non_finite(metrics)
                if bad:  # never hand a poisoned agent to the callbacks (or a checkpoint)
                    run.fault = f"{bad} at {run.env_steps:,} steps (update {run.updates})"
                    break

            for i in np.flatnonzero(done):
                run.episodes += 1
                for callback in callbacks:
                    callback.on_episode_end(
                        run, float(flight.episode_return[i]), int(flight.episode_length[i])
                    )
                flight.episode_return[i], flight.episode_length[i] = 0.0, 0

            if log.due(run.env_steps):
                now = time.perf_counter()
                seconds = max(now - window_start, 1e-9)
                run.latest["time/sps"] = (run.env_steps - steps_at_window) / seconds
                run.latest["time/ups"] = (run.updates - updates_at_window) / seconds
                window_start, steps_at_window, updates_at_window = now, run.env_steps, run.updates
                for callback in callbacks:
                    callback.on_log(run, dict(run.latest))

            for callback in callbacks:
                callback.on_step(run)
    except KeyboardInterrupt:  # a second Ctrl-C: the step it broke into is half done
        ctrl_c.pressed = run.torn = True
    finally:
        ctrl_c.restore()
        env.close()
    if run.fault:
        run.stop_reason = "fault"
    elif ctrl_c.pressed:
        run.interrupted = True
        run.stop_reason = "interrupted"
    if run.stop_reason is None:
        run.stop_reason = "budget" if run.env_steps >= run.total_steps else "stopped"
    for callback in callbacks:
        callback.on_train_end(run)
