"""Where a DQN gradient step's time goes: the Acrobot preset's update, taken apart.

    python experiments/profile_dqn_update.py            # about a minute on an idle machine

The agent is the real one (`rl_lab.algos.dqn`), its replay buffer filled with 20,000 real
Acrobot transitions from a random policy. Three measurements, each the median of 5 repeats
of 200 gradient steps:
1. the preset's step (256x256, batch 128) on 1 and 2 torch threads;
2. one knob at a time on 1 thread: network width, batch size, the optimizer (the lab's
   FlatAdam against torch.optim.Adam foreach/fused) and double-DQN targets;
3. torch.profiler's top operators by self CPU time in the preset's step (1 thread).
Results: experiments/results/profile_dqn_update.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl_lab.algos.dqn import PRESETS, DQNConfig, make_agent
from rl_lab.buffers import Transition

RESULTS = Path(__file__).parent / "results"
STEPS, REPEATS, FILL = 200, 5, 20_000


def filled_agent(**changes):
    """A DQN agent with the Acrobot preset (plus changes) and a replay buffer of random play."""
    config = DQNConfig(**{**PRESETS["acrobot"]["algo"], **changes})
    env = gym.make("Acrobot-v1")
    agent = make_agent(config, env.observation_space, env.action_space, 1, 100_000, seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(FILL):
        action = int(rng.integers(3))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(
            Transition(
                obs=obs[None],
                action=np.array([action]),
                reward=np.array([reward], np.float32),
                next_obs=next_obs[None],
                terminated=np.array([terminated]),
                truncated=np.array([truncated]),
            )
        )
        obs = env.reset()[0] if terminated or truncated else next_obs
    agent.config = dataclasses.replace(agent.config, gradient_steps=STEPS)
    return agent


def ms_per_step(agent, threads: int) -> float:
    torch.set_num_threads(threads)
    agent.update()  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        agent.update()
        times.append((time.perf_counter() - start) / STEPS * 1e3)
    return statistics.median(times)


def top_operators(agent, count: int = 8) -> dict[str, float]:
    """The operators with the most self CPU time in a preset step (1 thread), as shares of
    the step's total; the matrix products of forward and backward passes are aten::addmm and
    aten::mm."""
    torch.set_num_threads(1)
    agent.update()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        agent.update()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    whole = sum(e.self_cpu_time_total for e in events)
    return {e.key: round(100 * e.self_cpu_time_total / whole, 1) for e in events[:count]}


def main() -> None:
    rows = []

    def measure(label: str, threads: int = 1, **changes):
        ms = ms_per_step(filled_agent(**changes), threads)
        rows.append({"setting": label, "threads": threads, "ms_per_gradient_step": round(ms, 3)})
        print(f"{label:<44} threads={threads}  {ms:6.3f} ms per gradient step", flush=True)

    measure("preset (256x256, batch 128, FlatAdam, double)")
    measure("preset (256x256, batch 128, FlatAdam, double)", threads=2)
    measure("hidden 64x64", hidden=(64, 64))
    measure("hidden 128x128", hidden=(128, 128))
    measure("batch 64", batch_size=64)
    measure("batch 256", batch_size=256)
    measure("torch.optim.Adam foreach", optimizer="foreach")
    measure("torch.optim.Adam fused", optimizer="fused")
    measure("no double-DQN targets", double=False)
    split = top_operators(filled_agent())
    print("top operators, % of a preset step's CPU time (1 thread):", split)
    result = {
        "torch": torch.__version__,
        "rows": rows,
        "top_operators_percent": split,
        "steps_per_repeat": STEPS,
        "repeats": REPEATS,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_dqn_update.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# DQN update profile (Acrobot preset)",
        "",
        "`python experiments/profile_dqn_update.py`: median of "
        f"{REPEATS} x {STEPS} gradient steps.",
        "",
        "| setting | threads | ms per gradient step |",
        "|---|---|---|",
        *(f"| {r['setting']} | {r['threads']} | {r['ms_per_gradient_step']} |" for r in rows),
        "",
        "Top operators by share of a preset step's CPU time (torch.profiler, 1 thread): "
        + ", ".join(f"{k} {v}%" for k, v in split.items()),
        "",
    ]
    (RESULTS / "profile_dqn_update.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
