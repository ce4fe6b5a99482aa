"""TRL's training loop seen by our callbacks: a transformers TrainerCallback that turns TRL's
steps and logs into RunContext counters, one-step episodes and our metric names.

Imported only when a TRL run trains (it imports transformers).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from transformers import TrainerCallback

from rl_lab.checkpoint import atomic_write_text
from rl_lab.lm.experiment import sample_lines
from rl_lab.loop import Callback, RunContext

# TRL's log keys that mean what one of ours means; every other number is kept as "trl/<key>".
RENAMES = {
    "reward": "charts/mean_reward",
    "reward_std": "charts/reward_std",
    "frac_reward_zero_std": "charts/frac_reward_zero_std",
    "completions/mean_length": "charts/completion_tokens",
    "completions/clipped_ratio": "charts/truncated_fraction",
    "kl": "charts/kl_per_token",
    "loss": "losses/loss",
    "entropy": "losses/entropy",
    "clip_ratio/region_mean": "losses/clip_fraction",
    "grad_norm": "losses/grad_norm",
    "step_time": "time/step_seconds",
}


def translate(logs: Mapping) -> dict[str, float]:
    """TRL's logged numbers under our names (non-numbers and NaN dropped)."""
    metrics = {}
    for key, value in logs.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[RENAMES.get(key, f"trl/{key}")] = float(value)
    # TRL reports KL per completion token; PPO runs (and eval.json) report it per completion.
    if "charts/kl_per_token" in metrics and "charts/completion_tokens" in metrics:
        metrics["charts/kl"] = metrics["charts/kl_per_token"] * metrics["charts/completion_tokens"]
    return metrics


class TRLBridge(TrainerCallback):
    """Hands TRL's progress to our callbacks the way rl_lab.loop.train does."""

    def __init__(
        self,
        run: RunContext,
        callbacks: list[Callback],
        board,
        scorer,
        completions: Callable[[int], int],
        kl_coef: float,
        run_state_file: str,
    ):
        self.run, self.callbacks, self.board, self.scorer = run, callbacks, board, scorer
        self.completions, self.kl_coef, self.run_state_file = completions, kl_coef, run_state_file
        self.step_started = time.perf_counter()
        self.window = (time.perf_counter(), run.env_steps, run.updates)
        self.closed = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.window = (time.perf_counter(), self.run.env_steps, self.run.updates)
        for callback in self.callbacks:
            callback.on_train_start(self.run)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        run = self.run
        run.timers["learn"] += time.perf_counter() - self.step_started  # sampling included
        run.updates, run.env_steps = state.global_step, self.completions(state.global_step)
        scored = self.scorer.take()
        for _, _, reward in scored:
            run.episodes += 1
            for callback in self.callbacks:
                callback.on_episode_end(run, reward, 1)
        if scored and self.board is not None:  # None on all but the main process
            self.board.samples = sample_lines(scored[:3])
        for callback in self.callbacks:
            callback.on_step(run)
        if any(callback.should_stop(run) for callback in self.callbacks):
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        run = self.run
        metrics = translate(logs or {})
        started, steps, updates = self.window
        now = time.perf_counter()
        new_steps = run.updates > updates  # else the summary TRL logs after the last step
        if new_steps:
            seconds = max(now - started, 1e-9)
            metrics["time/sps"] = (run.env_steps - steps) / seconds
            metrics["time/ups"] = (run.updates - updates) / seconds
            self.window = (now, run.env_steps, run.updates)
        if "charts/kl" in metrics:
            metrics["charts/kl_coef"] = self.kl_coef
        run.latest.update(metrics)
        for callback in self.callbacks:
            callback.on_log(run, dict(run.latest) if new_steps else metrics)

    def on_save(self, args, state, control, **kwargs):
        """Our counters into the checkpoint TRL has just written: a resume restores them, and
        their presence says the checkpoint is complete."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        atomic_write_text(folder / self.run_state_file, json.dumps(self.run.counters()) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Our callbacks' on_train_end, once (TRL's, or ours after an interrupt)."""
        if not self.closed:
            self.closed = True
            for callback in self.callbacks:
                callback.on_train_end(self.run)
